"""Fixtures for integration tests: the global tracer sending to the test agent, probes on/off."""

from __future__ import annotations

import pytest

from ddagent import probes
from ddagent.hooks import rewrite
from ddagent.tracer import tracer as global_tracer
from ddagent.writer.agent import AgentWriter
from tests.listwriter import ListWriter


@pytest.fixture
def agent_tracer(test_agent):
    """The global tracer, writing to this test's agent; call ``flush(10)`` before reading."""
    writer = AgentWriter(test_agent.url)
    global_tracer.writer = writer
    yield global_tracer
    writer.stop(10)


@pytest.fixture
def list_writer():
    """The global tracer writing into a list."""
    writer = ListWriter()
    global_tracer.writer = writer
    return writer


@pytest.fixture(params=["rewrite", "wrapt"])
def probe_mechanism(request, monkeypatch):
    """Run a test with code rewriting, then again with the wrapt fallback for Python functions."""
    if request.param == "wrapt":
        monkeypatch.setattr(rewrite, "SUPPORTED", False)
    return request.param


def enabled(name: str):
    """A fixture body: enable ``name`` for one test, disable it afterwards."""
    probes.enable(name)
    yield
    probes.disable(name)


def spans_named(traces: list[list[dict]], name: str) -> list[dict]:
    return [s for t in traces for s in t if s["name"] == name]
