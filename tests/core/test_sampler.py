from __future__ import annotations

import logging
import random

import pytest

from ddagent import Span, Tracer
from ddagent.sampler import KNUTH_FACTOR, AllSampler, PrioritySampler, RateSampler
from tests.core.conftest import make_tracer

FIXED = random.Random(1234)
TRACE_IDS = [(FIXED.getrandbits(32) << 96) | FIXED.getrandbits(64) for _ in range(5000)]


def knuth_keeps(trace_id: int, rate: float) -> bool:
    # The formula written out independently: low 64 bits, Knuth's factor, modulo 2**64.
    return ((trace_id % 2**64) * KNUTH_FACTOR) % 2**64 <= rate * (2**64 - 1)


def run_traces(tracer: Tracer, trace_ids: list[int], service: str | None = None) -> dict:
    kept = {}
    for trace_id in trace_ids:
        root = tracer.start_span("op", child_of=None, service=service)
        # give the root a fixed id, as if it had been generated so
        root.trace_id = root._trace.trace_id = trace_id
        root.finish()
        kept[trace_id] = root.metrics["_sampling_priority_v1"]
    return kept


def test_rate_sampler_keeps_exactly_what_the_knuth_formula_keeps(tracer: Tracer) -> None:
    tracer.sampler = RateSampler(0.5)
    priorities = run_traces(tracer, TRACE_IDS)
    expected = {t: 2 if knuth_keeps(t, 0.5) else -1 for t in TRACE_IDS}
    assert priorities == expected
    assert 0.45 < sum(p == 2 for p in priorities.values()) / len(TRACE_IDS) < 0.55
    # rejected traces are still handed to the writer, with their priority
    assert len(tracer.writer.chunks) == len(TRACE_IDS)
    root = tracer.writer.chunks[0][0]
    assert root.metrics["_dd.rule_psr"] == 0.5 and root.metrics["_sample_rate"] == 0.5
    kept = [c[0] for c in tracer.writer.chunks if c[0].metrics["_sampling_priority_v1"] == 2]
    dropped = [c[0] for c in tracer.writer.chunks if c[0].metrics["_sampling_priority_v1"] == -1]
    assert all(s.meta["_dd.p.dm"] == "-3" for s in kept)
    assert all("_dd.p.dm" not in s.meta for s in dropped)


def test_rate_zero_keeps_nothing_and_rates_are_clamped(tracer: Tracer) -> None:
    assert RateSampler(-3).sample_rate == 0.0
    assert RateSampler(7).sample_rate == 1.0
    tracer.sampler = RateSampler(0)
    assert set(run_traces(tracer, TRACE_IDS[:500]).values()) == {-1}
    tracer.sampler = AllSampler()
    assert set(run_traces(tracer, TRACE_IDS[:500]).values()) == {2}


@pytest.mark.parametrize("bad", [float("nan"), "half", None])
def test_invalid_rate_warns_and_keeps_everything(bad, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ddagent.sampler"):
        sampler = RateSampler(bad)
    assert sampler.sample_rate == 1.0
    assert "[0, 1]" in caplog.text


def test_sample_rate_from_env_is_a_rule() -> None:
    t = make_tracer({"DD_TRACE_SAMPLE_RATE": "0.25"})
    assert isinstance(t.sampler, RateSampler) and t.sampler.sample_rate == 0.25


def test_priority_sampling_before_any_agent_answer(tracer: Tracer) -> None:
    assert set(run_traces(tracer, TRACE_IDS[:200]).values()) == {1}
    root = tracer.writer.chunks[0][0]
    assert root.meta["_dd.p.dm"] == "-0" and "_dd.agent_psr" not in root.metrics


def test_priority_sampling_from_rate_by_service() -> None:
    t = make_tracer({"DD_SERVICE": "web", "DD_ENV": "prod"})
    t.agent_sampler.update_rates({"service:web,env:prod": 0.3, "service:,env:": 0.9})
    web = run_traces(t, TRACE_IDS)
    assert web == {i: 1 if knuth_keeps(i, 0.3) else 0 for i in TRACE_IDS}
    root = t.writer.chunks[0][0]
    assert root.metrics["_dd.agent_psr"] == 0.3
    other = run_traces(t, TRACE_IDS, service="worker")  # falls back to the default key
    assert other == {i: 1 if knuth_keeps(i, 0.9) else 0 for i in TRACE_IDS}
    kept = next(c[0] for c in t.writer.chunks if c[0].metrics["_sampling_priority_v1"] == 1)
    assert kept.meta["_dd.p.dm"] == "-1"


def test_agent_rates_reach_the_agent_sampler_through_the_writer_callback() -> None:
    t = Tracer(make_tracer().config)
    writer = t.writer  # the AgentWriter: its callback is the agent sampler's update
    writer.on_rate_by_service({"service:,env:": 0.0})
    assert t.agent_sampler.rates == {"service:,env:": 0.0}
    writer.stop(0)


def test_children_share_the_roots_decision(tracer: Tracer) -> None:
    tracer.sampler = RateSampler(0)
    with tracer.trace("root") as root:
        with tracer.trace("child") as child:
            assert child.sampled is False and root.sampled is False


def test_seed_style_custom_sampler(tracer: Tracer) -> None:
    class OddSampler:
        def sample(self, span: Span) -> None:
            span.sampled = span.trace_id % 2 == 1

    tracer.sampler = OddSampler()
    priorities = run_traces(tracer, TRACE_IDS[:100])
    assert priorities == {t: 2 if t % 2 else -1 for t in TRACE_IDS[:100]}


def test_priority_sampler_direct() -> None:
    sampler = PrioritySampler(env="")
    span = Span(None, "x")
    sampler.sample(span)  # no trace buffer: nothing to record, no error
