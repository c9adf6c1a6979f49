"""Isolation: whatever the app or a probe throws at the tracer, the app sees nothing unusual.

Every case sends its spans to the real test agent: the payload must pass the agent's checks, or
the span must be dropped and counted.
"""

from __future__ import annotations

import math
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddagent import probes
from ddagent.config import Config
from ddagent.context import ACTIVE_SPAN
from ddagent.hooks import registry
from ddagent.tracer import Tracer
from ddagent.writer.agent import AgentWriter
from tests.counters import StatsDelta


@pytest.fixture
def agent_tracer(test_agent):
    tracer = Tracer(Config.from_env({"DD_SERVICE": "isolation"}))
    tracer.writer = AgentWriter(test_agent.url)
    token = ACTIVE_SPAN.set(None)
    yield tracer
    ACTIVE_SPAN.reset(token)
    tracer.shutdown(5)


class BadStr:
    def __str__(self) -> str:
        raise RuntimeError("__str__ of a tag value raised")

    __repr__ = __str__


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


NASTY_VALUES = [
    BadStr(), b"\xff\xfe\x00 not utf-8", "x" * 5_000_000, nested(50_000), "\udcff lone surrogate",
    float("nan"), float("inf"), 10**400, None, object(),
]


def test_nasty_tags_and_metrics(agent_tracer, test_agent):
    stats = StatsDelta()
    with agent_tracer.trace("isolation.tags") as span:
        for i, value in enumerate(NASTY_VALUES):
            span.set_tag(f"tag{i}", value)
            span.set_metric(f"metric{i}", value)
        span.set_metric("nan", math.nan)
        span.set_tag(b"\xff bytes key", "v")
    with agent_tracer.trace("isolation.after"):
        pass
    agent_tracer.flush(10)
    names = [s["name"] for t in test_agent.traces() for s in t]
    dropped = sum(stats.dropped().values())
    assert "isolation.after" in names  # the tracer keeps working
    assert names.count("isolation.tags") + dropped == 1  # sent, or dropped and counted
    test_agent.assert_no_check_failures()


def test_recursive_instrumented_calls(agent_tracer, test_agent):
    @agent_tracer.wrap("isolation.recurse")
    def recurse(n: int) -> int:
        return 0 if n == 0 else 1 + recurse(n - 1)

    assert recurse(200) == 200
    with pytest.raises(RecursionError):
        recurse(100_000)  # the app's own RecursionError, as without the tracer
    assert recurse(3) == 3
    agent_tracer.flush(10)
    test_agent.assert_no_check_failures()


@pytest.mark.parametrize("span_first", [False, True])
def test_a_raising_probe_is_contained(span_first, test_agent, monkeypatch):
    """A probe that raises (after starting its span, or not): the app's call behaves exactly as
    untraced, and the tracer keeps working."""
    from ddagent.hooks.sqlite3 import integration
    from ddagent.tracer import tracer as global_tracer

    monkeypatch.setattr(global_tracer, "writer", AgentWriter(test_agent.url))
    stats = StatsDelta()

    def broken_on_call(*args):
        if span_first:
            integration.start_span(None, "broken.probe")
        raise ZeroDivisionError("a bug in a probe")

    probe = registry.FunctionProbe("json", "dumps", on_call=broken_on_call)
    broken = registry.Integration("broken", probes=[probe], service="broken")
    import json

    token = ACTIVE_SPAN.set(None)
    try:
        broken.enabled = True
        broken._install(probe, json)
        assert json.dumps({"a": 1}) == '{"a": 1}'
        assert json.dumps([1]) == "[1]"
        # The tracer keeps working for the app's own spans, in a trace of their own.
        with global_tracer.trace("isolation.after.probe") as after:
            pass
        assert after.parent_id is None, "the broken probe's span leaked as the active span"
        conn = sqlite3.connect(":memory:")
        assert conn.execute("select 1").fetchall() == [(1,)]
    finally:
        broken._uninstall()
        ACTIVE_SPAN.reset(token)
        global_tracer.writer.stop(5)
    assert stats["probes.errors.broken"] >= 1
    probes.status()  # still answers


tag_values = st.one_of(
    st.text(), st.binary(), st.integers(), st.floats(), st.booleans(), st.none(),
    st.lists(st.text(), max_size=3), st.dictionaries(st.text(), st.integers(), max_size=3))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.text(), service=st.one_of(st.none(), st.text()),
       resource=st.one_of(st.none(), st.text()), span_type=st.one_of(st.none(), st.text()),
       tags=st.dictionaries(st.text(), tag_values, max_size=5),
       metrics=st.dictionaries(st.text(), tag_values, max_size=5),
       error=st.booleans())
def test_any_span_fields_give_a_valid_payload_or_a_counted_drop(
        agent_tracer, name, service, resource, span_type, tags, metrics, error):
    stats = StatsDelta()
    span = agent_tracer.trace(name, service=service, resource=resource, span_type=span_type)
    span.set_tags(tags)
    for key, value in metrics.items():
        span.set_metric(key, value)
    if error:
        span.error = 1
    span.finish()
    delivered = agent_tracer.flush(10)
    assert delivered or sum(stats.dropped().values()) == 1
    assert stats["spans.sent"] + sum(stats.dropped().values()) == 1


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(meta=st.dictionaries(st.one_of(st.text(), st.binary(), st.integers()),
                            st.one_of(st.text(), st.binary(), st.integers(), st.none()),
                            max_size=4),
       metrics=st.dictionaries(st.one_of(st.text(), st.integers()),
                               st.one_of(st.floats(), st.integers(), st.text(), st.booleans()),
                               max_size=4),
       span_id=st.integers(min_value=-2, max_value=2**65),
       start=st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.floats()))
def test_hand_filled_spans_are_sent_or_counted_and_never_upset_the_agent(
        test_agent, meta, metrics, span_id, start):
    """Spans filled behind the tracer's back (the writer duck-types them): what msgpack cannot
    pack is dropped at once, what the agent refuses is repaired or dropped after its 400."""
    stats = StatsDelta()
    tracer = Tracer(Config.from_env({"DD_SERVICE": "encoder"}))
    writer = tracer.writer = AgentWriter(test_agent.url)
    span = tracer.start_span("encoder.span")
    span.meta, span.metrics, span.span_id, span.start_ns = meta, metrics, span_id, start
    span.finish()
    writer.flush(10)
    writer.stop(1)
    assert stats["spans.sent"] + sum(stats.dropped().values()) == 1
    assert not test_agent.check_failures()
