"""Run Datadog's test agent (``ddapm-test-agent``) for end-to-end tests and read traces back.

The test agent accepts payloads exactly as the real trace agent does, validates them and serves
them back over HTTP. Tests talk to it through :class:`TestAgent`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKS = "trace_count_header,meta_tracer_version_header,trace_content_length,trace_stall"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_test_agent() -> str:
    """The ``ddapm-test-agent`` executable: $DDAGENT_TEST_AGENT_BIN, the repo's venv, or PATH."""
    candidates = [
        os.environ.get("DDAGENT_TEST_AGENT_BIN"),
        str(REPO / ".venv-testagent" / "bin" / "ddapm-test-agent"),
        shutil.which("ddapm-test-agent"),
    ]
    for c in candidates:
        if c and os.path.exists(c):
            return c
    raise RuntimeError(
        "ddapm-test-agent not found: run .ci/run once, or "
        "`python -m venv .venv-testagent && .venv-testagent/bin/pip install ddapm-test-agent`"
    )


class TestAgentProcess:
    """One ``ddapm-test-agent`` process on free loopback ports."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            ENABLED_CHECKS=CHECKS,
            PORT=str(self.port),
            OTLP_HTTP_PORT=str(free_port()),
            OTLP_GRPC_PORT=str(free_port()),
            HOST="127.0.0.1",
            SNAPSHOT_DIR=str(REPO / "snapshots"),
        )
        env.update(extra_env or {})
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"ddapm-test-agent-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(
            [find_test_agent(), "--port", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"test agent exited: {self.log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + "/info", timeout=1).read()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"test agent did not start within {timeout}s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


class TestAgent:
    """A test's view of the agent: one session, its traces, and the agent's check failures."""

    __test__ = False  # not a pytest test class

    def __init__(self, process: TestAgentProcess) -> None:
        self.process = process
        self.url = process.url
        self.port = process.port
        self.token = ""
        self.start_session()

    def _get(self, path: str, **params: str) -> tuple[int, bytes]:
        query = urllib.parse.urlencode(params)
        url = f"{self.url}{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def start_session(self, rate_by_service: dict[str, float] | None = None) -> None:
        """Start a fresh session; untokened payloads (every tracer's) count toward it.

        The agent answers an untokened trace request with the rates of the token-less session,
        so the rates are set there first (``{}`` resets them), then the tokened session starts.
        """
        status, body = self._get(
            "/test/session/start", agent_sample_rate_by_service=json.dumps(rate_by_service or {})
        )
        assert status == 200, body
        self.token = uuid.uuid4().hex
        status, body = self._get("/test/session/start", test_session_token=self.token)
        assert status == 200, body
        self._get("/test/trace_check/clear")

    def traces(self) -> list[list[dict]]:
        status, body = self._get("/test/session/traces", test_session_token=self.token)
        assert status == 200, body.decode(errors="replace")
        return json.loads(body)

    def wait_for_traces(self, count: int, timeout: float = 10.0) -> list[list[dict]]:
        """Poll until at least ``count`` traces arrived; return them (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        traces: list[list[dict]] = []
        while time.monotonic() < deadline:
            traces = self.traces()
            if len(traces) >= count:
                return traces
            time.sleep(0.05)
        raise AssertionError(f"expected {count} traces, got {len(traces)}: {traces!r:.2000}")

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[dict]:
        """Poll until at least ``count`` spans arrived; return them flattened."""
        deadline = time.monotonic() + timeout
        spans: list[dict] = []
        while time.monotonic() < deadline:
            spans = [s for t in self.traces() for s in t]
            if len(spans) >= count:
                return spans
            time.sleep(0.05)
        raise AssertionError(f"expected {count} spans, got {len(spans)}: {spans!r:.2000}")

    def requests(self) -> list[dict]:
        status, body = self._get("/test/session/requests", test_session_token=self.token)
        assert status == 200, body
        return json.loads(body)

    def check_failures(self) -> str:
        """The agent's check failures as text; empty when every check passed."""
        status, body = self._get("/test/trace_check/failures")
        return "" if status == 200 else body.decode(errors="replace")

    def assert_no_check_failures(self) -> None:
        failures = self.check_failures()
        assert not failures, failures


def python_env(agent: TestAgent, **extra: str) -> dict[str, str]:
    """Environment for a child Python process that traces to ``agent`` with this checkout."""
    env = dict(os.environ)
    env["DD_TRACE_AGENT_URL"] = agent.url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


PYTHON = sys.executable
