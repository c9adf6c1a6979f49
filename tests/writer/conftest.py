from __future__ import annotations

import pytest

from ddagent.writer import AgentWriter, agent
from tests.writer.helpers import LocalAgent


@pytest.fixture(params=["native", "python"])
def writer_path(request, monkeypatch) -> str:
    """Each test once with the native write() and buffer (ddagent/writer/_encoder.c), once with
    their Python twins (the fallback where the extension is not built)."""
    if request.param == "native":
        if agent.SendBuffer is agent.PythonSendBuffer:
            pytest.skip("the native writer is not built (or DD_TRACE_NATIVE_ENCODER=false)")
    else:
        monkeypatch.setattr(agent, "SendBuffer", agent.PythonSendBuffer)
        monkeypatch.setattr(AgentWriter, "write", agent.python_write)
    return request.param


@pytest.fixture
def make_writer(writer_path):
    """Build AgentWriters that are stopped (quickly) at the end of the test."""
    writers: list[AgentWriter] = []

    def make(url: str, **options: object) -> AgentWriter:
        writer = AgentWriter(url, **options)
        writers.append(writer)
        return writer

    yield make
    for writer in writers:
        writer.stop(timeout=1)


@pytest.fixture
def local_agent():
    """Start LocalAgents with given behaviour; closed at the end of the test."""
    agents: list[LocalAgent] = []

    def start(**behaviour: object) -> LocalAgent:
        local = LocalAgent(**behaviour)
        agents.append(local)
        return local

    yield start
    for local in agents:
        local.close()
