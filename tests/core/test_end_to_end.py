"""The core and the real writer against Datadog's test agent."""

from __future__ import annotations

import os

import pytest

from ddagent import Tracer
from ddagent.config import Config
from ddagent.sampler import KNUTH_FACTOR


@pytest.fixture
def e2e_tracer(test_agent):
    # test_agent points DD_TRACE_AGENT_URL at itself for this test
    t = Tracer(Config.from_env({**os.environ, "DD_SERVICE": "thumbs", "DD_ENV": "",
                                "DD_VERSION": "2.0", "DD_TAGS": "team:media"}))
    yield t
    t.shutdown(5.0)


def test_seed_example_arrives_as_one_trace(test_agent, e2e_tracer) -> None:
    tracer = e2e_tracer

    def resize_image(img, size):
        return f"{img}@{size}"

    stored = []

    @tracer.wrap()
    def save_thumbnails(img, sizes):
        thumbnails = [resize_image(img, size) for size in sizes]
        with tracer.trace("thumbnails.save") as span:
            span.set_meta("thumbnails.sizes", str(sizes))
            span.set_metric("thumbnails.count", len(thumbnails))
            stored.extend(thumbnails)

    save_thumbnails("cat.png", [32, 64, 128])
    assert tracer.flush(10.0)
    [trace] = test_agent.wait_for_traces(1)
    assert len(trace) == 2
    root = next(s for s in trace if s["parent_id"] in (0, None))
    child = next(s for s in trace if s is not root)
    assert child["parent_id"] == root["span_id"] and child["trace_id"] == root["trace_id"]
    assert root["name"] == root["resource"] == f"{__name__}.save_thumbnails"
    assert child["name"] == child["resource"] == "thumbnails.save"
    assert root["service"] == child["service"] == "thumbs"
    assert child["meta"]["thumbnails.sizes"] == "[32, 64, 128]"
    assert child["metrics"]["thumbnails.count"] == 3
    assert root["error"] == child["error"] == 0
    assert root["duration"] >= child["duration"] > 0
    first = trace[0]
    assert first["metrics"]["_sampling_priority_v1"] == 1
    assert first["meta"]["language"] == "python" and len(first["meta"]["_dd.p.tid"]) == 16
    assert first["metrics"]["process_id"] == os.getpid()
    assert root["metrics"]["_dd.top_level"] == 1
    for span in trace:
        assert span["meta"]["team"] == "media" and span["meta"]["version"] == "2.0"
    test_agent.assert_no_check_failures()


def test_errors_arrive_with_their_tags(test_agent, e2e_tracer) -> None:
    with pytest.raises(ZeroDivisionError):
        with e2e_tracer.trace("divide"):
            1 / 0  # noqa: B018
    assert e2e_tracer.flush(10.0)
    [[span]] = test_agent.wait_for_traces(1)
    assert span["error"] == 1
    assert span["meta"]["error.type"] == "builtins.ZeroDivisionError"
    assert span["meta"]["error.message"] == "division by zero"
    assert "ZeroDivisionError" in span["meta"]["error.stack"]
    test_agent.assert_no_check_failures()


def test_agent_rates_change_later_sampling_decisions(test_agent, e2e_tracer) -> None:
    tracer = e2e_tracer
    test_agent.start_session(rate_by_service={"service:thumbs,env:": 0.5, "service:,env:": 1.0})
    try:
        check_rate_driven_sampling(test_agent, tracer)
    finally:
        test_agent.start_session()


def check_rate_driven_sampling(test_agent, tracer: Tracer) -> None:
    with tracer.trace("before-answer"):
        pass
    assert tracer.flush(10.0)  # the answer carries the session's rate_by_service
    assert tracer.agent_sampler.rates == {"service:thumbs,env:": 0.5, "service:,env:": 1.0}
    for _ in range(40):
        with tracer.trace("after-answer"):
            pass
    with tracer.trace("other", service="elsewhere"):
        pass
    assert tracer.flush(10.0)
    traces = test_agent.wait_for_traces(42)
    by_name: dict[str, list[dict]] = {}
    for trace in traces:
        by_name.setdefault(trace[0]["name"], []).append(trace[0])
    [before] = by_name["before-answer"]
    assert before["metrics"]["_sampling_priority_v1"] == 1 and before["meta"]["_dd.p.dm"] == "-0"
    after = by_name["after-answer"]
    assert len(after) == 40  # rejected traces are sent too, with priority 0
    for span in after:
        keep = (span["trace_id"] * KNUTH_FACTOR) % 2**64 <= 0.5 * (2**64 - 1)
        assert span["metrics"]["_sampling_priority_v1"] == (1 if keep else 0)
        assert span["metrics"]["_dd.agent_psr"] == 0.5
    assert {s["metrics"]["_sampling_priority_v1"] for s in after} == {0, 1}
    [other] = by_name["other"]
    assert other["metrics"]["_sampling_priority_v1"] == 1
    assert other["metrics"]["_dd.agent_psr"] == 1.0
    test_agent.assert_no_check_failures()
