"""The examples run with the README's one command and send the traces they promise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.testagent import REPO, python_env


def launch(example: str, agent) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddagent", f"examples/{example}"], cwd=REPO,
                          env=python_env(agent), capture_output=True, text=True, timeout=120)


def test_thumbnails(test_agent, redis_url):
    result = launch("thumbnails.py", test_agent)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "saved 5 batches of thumbnails\n"
    spans = test_agent.wait_for_spans(5 * 4 + 1)  # per batch: wrap, save, INSERT, INCRBY
    names = [s["name"] for s in spans]
    assert names.count("__main__.save_thumbnails") == 5
    saves = [s for s in spans if s["name"] == "thumbnails.save"]
    assert {s["meta"]["thumbnails.sizes"] for s in saves} >= {"[64, 128, 256]"}
    assert all(s["metrics"]["thumbnails.count"] == 3 for s in saves)
    assert names.count("redis.command") == 5 and "sqlite.query" in names
    test_agent.assert_no_check_failures()


def test_flask_app(test_agent, redis_url):
    pytest.importorskip("flask")
    result = launch("flask_app.py", test_agent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "GET /notes -> 200", "GET /notes/1 -> 200", "GET /notes/2 -> 200",
        "GET /notes/1 -> 200", "GET /notes/99 -> 404", "GET /crash -> 500"]
    traces = test_agent.wait_for_traces(6 + 2)  # six requests; creating the database
    requests = {}
    for trace in traces:
        for span in trace:
            if span["name"] == "flask.request":
                requests.setdefault(span["resource"], []).append((span, trace))
    assert sorted((r, len(v)) for r, v in requests.items()) == [
        ("GET /crash", 1), ("GET /notes", 1), ("GET /notes/<int:note_id>", 4)]
    [(crash, _)] = requests["GET /crash"]
    assert crash["error"] == 1 and crash["meta"]["http.status_code"] == "500"
    shown = [trace for span, trace in requests["GET /notes/<int:note_id>"]
             if span["meta"]["http.status_code"] == "200"]
    for trace in shown:  # one trace per request: the view, its query and its Redis command
        names = {s["name"] for s in trace}
        assert {"flask.request", "__main__.show_note", "sqlite.query", "redis.command"} <= names
        assert len({s["trace_id"] for s in trace}) == 1
    test_agent.assert_no_check_failures()
