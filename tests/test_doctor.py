"""``python -m ddagent doctor`` / ``--info`` and ``ddagent.doctor.report()`` inside a program."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import subprocess
import sys
import threading

import pytest

from ddagent import doctor
from tests.testagent import REPO

UNREACHABLE = "http://127.0.0.1:9"


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
    environ.update({"PYTHONPATH": str(REPO), "DD_TRACE_AGENT_URL": UNREACHABLE, **env})
    return subprocess.run([sys.executable, *args], cwd=REPO, env=environ, capture_output=True,
                          text=True, timeout=120)


def test_doctor_with_the_agent_up(test_agent):
    result = run("-m", "ddagent", "doctor", DD_TRACE_AGENT_URL=test_agent.url, DD_ENV="qa",
                 DD_SERVCE="typo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"agent_url = '{test_agent.url}'  (env DD_TRACE_AGENT_URL)" in out
    assert "env = 'qa'  (env DD_ENV)" in out
    assert "agent_timeout = 2.0  (default)" in out
    assert "DD_SERVCE='typo'" in out  # set, but no setting comes from it
    assert f"Agent: {test_agent.url} answers" in out
    endpoints = next(line for line in out.splitlines() if line.startswith("  endpoints: "))
    assert "/v0.4/traces" in endpoints
    redis_row = next(line for line in out.splitlines() if line.startswith("  redis "))
    assert redis_row.split()[1:5] == ["redis", _version("redis"), "supported", "yes"]
    assert "bottle (not installed)" in out and "no hook yet" in out
    assert "from ddagent import doctor; print(doctor.report())" in out
    assert "Counters:" not in out  # those of the doctor itself would mislead


def test_doctor_with_the_agent_down():
    result = run("-m", "ddagent", "doctor")
    assert result.returncode == 0, result.stderr
    assert f"Agent: {UNREACHABLE} does not answer (" in result.stdout
    assert "Integrations:" in result.stdout


def test_doctor_names_the_span_core_and_trace_encoder():
    python = run("-m", "ddagent", "doctor", DD_TRACE_NATIVE_ENCODER="false",
                 DD_TRACE_NATIVE_SPAN="false").stdout
    assert "Span core: Python (DD_TRACE_NATIVE_SPAN=false)" in python
    assert "Trace encoder: Python (DD_TRACE_NATIVE_ENCODER=false)" in python
    # CI builds both (tests/core/test_native_span.py and tests/writer/test_native_encoder.py
    # insist on it there).
    default = run("-m", "ddagent", "doctor").stdout
    assert "Span core: native (ddagent/_span.c)" in default or not os.environ.get("CI")
    assert "Trace encoder: native (ddagent/writer/_encoder.c)" in default or not os.environ.get(
        "CI")


def test_info_is_an_alias_of_doctor():
    info, doctor_ = run("-m", "ddagent", "--info"), run("-m", "ddagent", "doctor")
    strip = lambda text: text.split("\n", 1)[1]  # noqa: E731 - the first line names the pid
    assert strip(info.stdout) == strip(doctor_.stdout)


def test_report_inside_a_program_shows_import_order_and_counters(test_agent, tmp_path):
    app = tmp_path / "app.py"
    app.write_text(
        "import redis\n"  # before instrumentation
        "import ddagent.auto\n"
        "import sqlite3\n"
        "from ddagent import doctor, tracer\n"
        "with tracer.trace('job'):\n"
        "    sqlite3.connect(':memory:').execute('SELECT 1')\n"
        "tracer.flush()\n"
        "print(doctor.report())\n"
    )
    result = run(str(app), DD_TRACE_AGENT_URL=test_agent.url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Imported before instrumentation started: redis\n" in out
    sqlite_row = next(line for line in out.splitlines() if line.startswith("  sqlite3 "))
    assert sqlite_row.split()[-3:] == ["yes", "yes", "0"]  # enabled, instrumented, no errors
    counters = out[out.index("Counters:"):]
    assert "spans.finished = 2" in counters and "spans.sent = 2" in counters
    test_agent.wait_for_spans(2)


def test_nothing_counts_as_early_when_everything_came_after(tmp_path):
    app = tmp_path / "app.py"
    app.write_text("import ddagent.auto\nimport redis\nfrom ddagent import doctor\n"
                   "print(doctor.report())\n")
    out = run(str(app)).stdout
    assert "Imported before instrumentation started: none of the supported libraries" in out
    assert "Counters: none yet" in out


class _InfoHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        body = json.dumps({"version": "7.99.0", "endpoints": ["/v0.3/traces"]}).encode()
        self.send_response(200 if self.path == "/info" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _UnixHTTPServer(socketserver.UnixStreamServer):
    def get_request(self):  # BaseHTTPRequestHandler wants a (host, port) client address
        request, _ = super().get_request()
        return request, ("local", 0)


def test_agent_on_a_unix_socket(tmp_path):
    path = str(tmp_path / "apm.socket")
    server = _UnixHTTPServer(path, _InfoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        lines = doctor.agent_lines(f"unix://{path}")
    finally:
        server.shutdown()
        server.server_close()
    assert lines == [
        f"Agent: unix://{path} answers (agent version 7.99.0)",
        "  endpoints: /v0.3/traces",
        "  warning: no /v0.4/traces endpoint; the writer falls back to /v0.3",
    ]


@pytest.mark.parametrize("url", ["unix:///nonexistent/apm.socket", UNREACHABLE])
def test_agent_that_does_not_answer(url):
    [line] = doctor.agent_lines(url)
    assert line.startswith(f"Agent: {url} does not answer (")


def _version(distribution: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(distribution)
