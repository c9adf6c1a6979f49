"""Operator control: a control file plus SIGUSR2 (or polling) switches integrations at runtime."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ddagent import probes
from ddagent.hooks import control
from tests.testagent import REPO

CHILD = textwrap.dedent('''
    import json, sqlite3, sys
    import redis
    from ddagent.hooks import control, registry, rewrite
    from ddagent.tracer import tracer

    class Count:
        spans = []
        def write(self, spans): self.spans.extend(s.name for s in spans)
        def flush(self, timeout=None): return True
        def stop(self, timeout=None): pass

    tracer.writer = Count()
    registry.patch(redis=True, sqlite3=True)
    control.install()
    client = redis.Redis(host="127.0.0.1")
    def enabled():
        return sorted(r["name"] for r in registry.status() if r["enabled"])

    for line in sys.stdin:
        del Count.spans[:]
        before = enabled()
        client.ping()
        sqlite3.connect(":memory:").execute("select 1")
        print(json.dumps({
            # null while the control thread was switching: the spans may be of either state
            "enabled": before if enabled() == before else None,
            "redis_rewritten": rewrite.is_instrumented(redis.Redis.execute_command),
            "spans": sorted(Count.spans),
        }), flush=True)
''')


class Child:
    def __init__(self, control_file, poll_seconds: str) -> None:
        env = dict(os.environ, DD_PROBES_CONTROL_FILE=str(control_file),
                   DD_PROBES_CONTROL_POLL_SECONDS=poll_seconds,
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                            os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def report(self) -> dict:
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"child exited with {self.proc.wait()}"
        return json.loads(line)

    def wait_for(self, enabled: list[str], timeout: float = 30.0) -> dict:
        """The first report whose enabled integrations are ``enabled`` (fails after timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.report()
            if report["enabled"] == enabled or time.monotonic() > deadline:
                return report
            time.sleep(0.05)

    def close(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0


def test_control_file_and_sigusr2_switch_integrations(tmp_path, redis_url):
    control_file = tmp_path / "probes.conf"
    control_file.write_text("# start with redis off\nredis=off\n")
    child = Child(control_file, poll_seconds="3600")  # only the start and the signal apply it
    try:
        report = child.wait_for(["sqlite3"])
        assert report == {"enabled": ["sqlite3"], "redis_rewritten": False,
                          "spans": ["sqlite.query"]}

        control_file.write_text("redis = on\nsqlite3=off\n")
        child.proc.send_signal(signal.SIGUSR2)
        report = child.wait_for(["redis"])
        assert report == {"enabled": ["redis"], "redis_rewritten": True,
                          "spans": ["redis.command"]}
    finally:
        child.close()


def test_the_file_is_polled_without_a_signal(tmp_path, redis_url):
    control_file = tmp_path / "probes.conf"
    control_file.write_text("")
    child = Child(control_file, poll_seconds="0.1")
    try:
        assert child.wait_for(["redis", "sqlite3"])["spans"] == ["redis.command", "sqlite.query"]
        control_file.write_text("sqlite3=off\n")
        assert child.wait_for(["redis"])["spans"] == ["redis.command"]
    finally:
        child.close()


def test_parse_accepts_the_documented_forms_and_warns_once(caplog):
    text = "redis=off\n  sqlite3 = ON  # trailing comment\n\n# comment\nflask:true\nx=maybe\n"
    with caplog.at_level(logging.WARNING, logger="ddagent.hooks.control"):
        assert control.parse(text, "probes.conf") == {"redis": False, "sqlite3": True}
    [warning] = caplog.records
    assert "'flask:true', 'x=maybe'" in warning.getMessage()
    assert "probes.conf" in warning.getMessage()
    assert "'name=on' or 'name=off'" in warning.getMessage()


def test_apply_logs_unknown_names_and_goes_on(caplog):
    with caplog.at_level(logging.WARNING, logger="ddagent.hooks.control"):
        control.apply({"nosuch": True, "sqlite3": True})
    try:
        assert "unknown integration 'nosuch'" in caplog.text
        assert [r["enabled"] for r in probes.status() if r["name"] == "sqlite3"] == [True]
    finally:
        probes.disable("sqlite3")


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bad_poll_interval_warns_and_uses_the_default(monkeypatch, caplog, value):
    monkeypatch.setenv(control.POLL_SECONDS_ENV, value)
    with caplog.at_level(logging.WARNING, logger="ddagent.hooks.control"):
        assert control._poll_seconds() == control.DEFAULT_POLL_SECONDS
    assert f"{control.POLL_SECONDS_ENV}={value!r}" in caplog.text
