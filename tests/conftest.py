from __future__ import annotations

import os
import socket

import pytest

from tests.testagent import TestAgent, TestAgentProcess


@pytest.fixture(scope="session")
def test_agent_process():
    proc = TestAgentProcess()
    yield proc
    proc.stop()


@pytest.fixture
def test_agent(test_agent_process, monkeypatch) -> TestAgent:
    """A fresh test-agent session; ``DD_TRACE_AGENT_URL`` points at it for this test."""
    monkeypatch.setenv("DD_TRACE_AGENT_URL", test_agent_process.url)
    return TestAgent(test_agent_process)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis server (started before every session and by .ci/run)."""
    host, port = "127.0.0.1", int(os.environ.get("REDIS_PORT", "6379"))
    if not _reachable(host, port):
        pytest.fail(f"Redis is not running on {host}:{port}; see README.rst 'Running the tests'")
    return f"redis://{host}:{port}/0"
