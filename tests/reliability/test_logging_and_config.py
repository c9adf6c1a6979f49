"""Quiet degradation: few log lines while the agent is down, one warning per bad DD_* variable."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ddagent.config import Config
from ddagent.context import ACTIVE_SPAN
from ddagent.tracer import Tracer
from ddagent.writer.agent import AgentWriter
from tests.reliability.faultproxy import Fault

FLUSHES = 60  # a minute of the default 1 s flush interval, compressed


@pytest.mark.parametrize("fault", [Fault.REFUSE, Fault.STATUS_500])
def test_an_agent_down_for_a_minute_logs_a_handful_of_lines(fault, fault_proxy, caplog):
    fault_proxy.set_fault(fault)
    tracer = Tracer(Config.from_env({"DD_SERVICE": "quiet"}))
    writer = tracer.writer = AgentWriter(fault_proxy.url, timeout=0.5)
    token = ACTIVE_SPAN.set(None)
    try:
        with caplog.at_level(logging.DEBUG, logger="ddagent"):
            for _ in range(FLUSHES):
                for _ in range(5):
                    with tracer.trace("quiet.request"):
                        pass
                writer.flush(timeout=5)
    finally:
        ACTIVE_SPAN.reset(token)
        writer.stop(1)
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    print(f"\nagent {fault.name} for {FLUSHES} flushes: {len(lines)} log line(s)",
          file=sys.stderr)
    assert 1 <= len(lines) <= 3, [r.getMessage() for r in lines]


# Garbage for every DD_* variable ddagent reads; the grep below makes a new one fail this test
# until it is listed here.
GARBAGE = {
    "DD_AGENT_HOST": None,  # any host name is accepted
    "DD_AGENT_PORT": "eighty",
    "DD_ENV": None, "DD_SERVICE": None, "DD_VERSION": None,  # any text is accepted
    "DD_TAGS": "no-colon-here",
    "DD_TRACE_AGENT_HOSTNAME": None,
    "DD_TRACE_AGENT_PORT": "99999",
    "DD_TRACE_AGENT_TIMEOUT_SECONDS": "-1",
    "DD_TRACE_AGENT_URL": "ftp:/nowhere",
    "DD_TRACE_DEBUG": "maybe",
    "DD_TRACE_ENABLED": "perhaps",
    "DD_TRACE_PARTIAL_FLUSH_MIN_SPANS": "0",
    "DD_TRACE_SAMPLE_RATE": "1.5",
    "DD_TRACE_SHUTDOWN_TIMEOUT": "soon",
    "DD_TRACE_WRITER_INTERVAL_SECONDS": "0",
    "DD_TRACE_SQL_NORMALIZE": "sometimes",
    "DD_TRACE_HTTP_CLIENT_ERROR_STATUSES": "400-abc",
    "DD_TRACE_HTTP_SERVER_ERROR_STATUSES": "five hundred",
    # Named in comments only (ddagent uses the constant): nothing to parse.
    "DD_TRACE_SPAN_TRACEBACK_MAX_SIZE": None, "DD_TRACE_X_DATADOG_TAGS_MAX_LENGTH": None,
    "DD_TRACE_SUMMARY": "maybe",
    "DD_TRACE_NATIVE_ENCODER": "maybe",
    "DD_TRACE_NATIVE_SPAN": "maybe",
    "DD_TRACE_SPANS_FILE": None,  # a path
    "DD_PATCH_MODULES": "redis:maybe",
    "DD_PROBES_CONTROL_POLL_SECONDS": "never",
    "DD_PROBES_CONTROL_FILE": None,  # a path; a missing file is a runtime matter
    "DD_DJANGO_INCLUDE_USER_NAME": "dunno",
    "DD_DJANGO_DATABASE_SERVICE_NAME": None, "DD_DJANGO_DATABASE_SERVICE_NAME_PREFIX": None,
    "DD_PYRAMID_SERVICE": None, "DD_SQLALCHEMY_SERVICE": None,
}


def variables_read() -> set[str]:
    source = Path(__file__).resolve().parents[2] / "ddagent"
    found = set()
    for path in source.rglob("*.py"):
        found.update(re.findall(r"\bDD_[A-Z0-9]+(?:_[A-Z0-9]+)+\b", path.read_text()))
    return found - {"DD_TRACE_"}


def test_every_variable_is_listed():
    assert variables_read() - set(GARBAGE) == set()


# Exercise the code paths that read the variables, then trace and flush to the agent.
PROGRAM = textwrap.dedent('''
    import ddagent.auto  # noqa: F401 - reads the launcher's and the integrations' variables
    from ddagent import tracer
    from ddagent.propagation import HTTPPropagator

    with tracer.trace("config.check") as span:
        headers = {}
        HTTPPropagator.inject(span, headers)
    tracer.flush(5)
    print("ok")
''')


@pytest.mark.parametrize("name", sorted(n for n, v in GARBAGE.items() if v is not None))
def test_garbage_gives_one_clear_warning_and_a_working_default(name, test_agent, tmp_path):
    script = tmp_path / "app.py"
    # A hook module reads its variables when its library is imported.
    library = "import django.core.handlers.base\n" if name.startswith("DD_DJANGO_") else ""
    script.write_text(library + PROGRAM)
    env = {**_child_env(test_agent), name: GARBAGE[name]}
    if name in ("DD_AGENT_PORT", "DD_TRACE_AGENT_PORT"):  # DD_TRACE_AGENT_URL would win
        del env["DD_TRACE_AGENT_URL"]
        env["DD_AGENT_HOST"] = "127.0.0.1"
    if name == "DD_PROBES_CONTROL_POLL_SECONDS":  # read only when there is a control file
        env["DD_PROBES_CONTROL_FILE"] = str(tmp_path / "probes.control")
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    warnings = [line for line in result.stderr.splitlines() if name in line]
    assert len(warnings) == 1, result.stderr
    assert GARBAGE[name] in warnings[0] or repr(GARBAGE[name]) in warnings[0]


def _child_env(test_agent) -> dict[str, str]:
    from tests.testagent import python_env

    env = python_env(test_agent)
    for key in list(env):
        if key.startswith("DD_") and key != "DD_TRACE_AGENT_URL":
            del env[key]
    return env
