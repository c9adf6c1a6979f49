from __future__ import annotations

import pytest

from ddagent.writer import AgentWriter
from tests.writer.helpers import LocalAgent


@pytest.fixture
def make_writer():
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
        agent = LocalAgent(**behaviour)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.close()
