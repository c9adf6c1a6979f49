"""The Flask test app served by gunicorn under ``python -m ddagent``, and a traced client
process calling it with requests: one distributed trace across the two processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integrations.conftest import spans_named
from tests.testagent import free_port, python_env

pytest.importorskip("flask")
pytest.importorskip("gunicorn")
pytest.importorskip("requests")

APPS = Path(__file__).resolve().parent.parent / "apps"


# A gunicorn config logging each sendfile() attempt: gunicorn tries it only for a body that is
# an instance of its wsgi.file_wrapper.
SENDFILE_LOGGING = textwrap.dedent('''
    import sys
    from gunicorn.http import wsgi

    def logged_sendfile(response, respiter, _sendfile=wsgi.Response.sendfile):
        sent = _sendfile(response, respiter)
        print("test: sendfile", sent, file=sys.stderr, flush=True)
        return sent

    wsgi.Response.sendfile = logged_sendfile  # not named sendfile: that is a gunicorn setting
''')


@pytest.fixture
def server(test_agent, redis_url, tmp_path):
    port = free_port()
    (tmp_path / "gunicorn_conf.py").write_text(SENDFILE_LOGGING)
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "ddagent", "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--config", str(tmp_path / "gunicorn_conf.py"),
         "--chdir", str(APPS), "flask_app:app"],
        env=python_env(test_agent, REDIS_URL=redis_url), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(url, proc, tmp_path / "gunicorn.log")
        yield url
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def _wait_until_serving(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited: {log_path.read_text()}")
        try:
            urllib.request.urlopen(url + "/", timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"gunicorn did not start: {log_path.read_text()}")


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_gunicorn_requests(server, test_agent):
    test_agent.wait_for_traces(1)  # the readiness probe's request
    test_agent.start_session()
    assert fetch(server + "/users/3?x=1") == (200, b"<p>user 3</p>")
    assert fetch(server + "/nope")[0] == 404
    assert fetch(server + "/fail")[0] == 500
    assert fetch(server + "/stream") == (200, b"0\n1\n2\n")
    traces = test_agent.wait_for_traces(4)
    roots = {s["resource"]: s for s in spans_named(traces, "flask.request")}
    assert set(roots) == {"GET /users/<int:user_id>", "GET 404", "GET /fail", "GET /stream"}
    for root in roots.values():
        assert root["service"] == "flask"
        assert root["type"] == "web"
        assert root["parent_id"] == 0
        assert root["meta"]["span.kind"] == "server"
    user = roots["GET /users/<int:user_id>"]
    assert user["meta"]["http.url"] == server + "/users/3"
    assert user["meta"]["http.status_code"] == "200"
    assert user["error"] == 0
    assert roots["GET 404"]["error"] == 0
    assert roots["GET /fail"]["error"] == 1
    assert roots["GET /fail"]["meta"]["error.type"] == "builtins.ValueError"
    stream = roots["GET /stream"]
    chunks = [s for s in spans_named(traces, "stream.chunk") if s["trace_id"] == stream["trace_id"]]
    assert len(chunks) == 3
    assert {c["parent_id"] for c in chunks} == {stream["span_id"]}
    template = spans_named(traces, "flask.render_template")[0]
    assert template["trace_id"] == user["trace_id"]
    test_agent.assert_no_check_failures()


CLIENT = textwrap.dedent('''
    import sys
    import requests

    response = requests.get(sys.argv[1] + "/backend?user=1")
    print(response.text)
''')


def test_one_trace_across_client_and_server(server, test_agent, tmp_path):
    test_agent.wait_for_traces(1)
    test_agent.start_session()
    (tmp_path / "client.py").write_text(CLIENT)
    result = subprocess.run([sys.executable, "-m", "ddagent", "client.py", server], cwd=tmp_path,
                            env=python_env(test_agent), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "redis=1"

    spans = test_agent.wait_for_spans(6)  # client, server root, its sub-spans, redis, sqlite
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not spans_named([spans], "sqlite.query"):
        spans = [s for t in test_agent.traces() for s in t]
        time.sleep(0.1)
    [client] = spans_named([spans], "requests.request")
    [server_root] = spans_named([spans], "flask.request")
    assert {s["trace_id"] for s in spans} == {client["trace_id"]}
    assert client["parent_id"] == 0
    assert client["resource"] == "GET /backend"
    assert client["meta"]["http.url"] == server + "/backend"
    assert server_root["parent_id"] == client["span_id"]
    assert server_root["resource"] == "GET /backend"
    assert [s["resource"] for s in spans_named([spans], "redis.command")] == ["SET", "GET"]
    [query] = spans_named([spans], "sqlite.query")
    assert query["resource"].startswith("select")
    [view] = spans_named([spans], "flask_app.backend")
    for span in spans_named([spans], "redis.command") + spans_named([spans], "sqlite.query"):
        assert span["parent_id"] == view["span_id"]
    assert view["parent_id"] == server_root["span_id"]
    assert not spans_named([spans], "urllib3.request")
    test_agent.assert_no_check_failures()


def test_gunicorn_sends_a_file(server, test_agent, tmp_path):
    # send_file hands gunicorn its own wsgi.file_wrapper; the layer must return it as is (for
    # sendfile()) and still end the request span when gunicorn closes it.
    test_agent.wait_for_traces(1)
    test_agent.start_session()
    assert fetch(server + "/file") == (200, (APPS / "flask_app.py").read_bytes())
    traces = test_agent.wait_for_traces(1)
    # Logged before gunicorn closes the body, so before the span can be sent.
    assert "test: sendfile True" in (tmp_path / "gunicorn.log").read_text()
    [root] = spans_named(traces, "flask.request")
    assert root["resource"] == "GET /file"
    assert root["meta"]["http.status_code"] == "200"
    assert root["error"] == 0
    [view] = spans_named(traces, "flask_app.this_file")
    assert view["parent_id"] == root["span_id"]
    assert view["start"] + view["duration"] <= root["start"] + root["duration"]
    test_agent.assert_no_check_failures()
