from __future__ import annotations

import pytest

from ddagent import Tracer
from ddagent.context import Context
from ddagent.propagation import HTTPPropagator


def test_datadog_and_w3c_round_trip(tracer: Tracer) -> None:
    with tracer.trace("client") as span:
        headers: dict[str, str] = {}
        HTTPPropagator.inject(span, headers)
    assert headers["x-datadog-trace-id"] == str(span.trace_id & (2**64 - 1))
    assert headers["x-datadog-parent-id"] == str(span.span_id)
    assert headers["x-datadog-sampling-priority"] == "1"
    assert f"_dd.p.tid={span.trace_id >> 64:016x}" in headers["x-datadog-tags"]
    assert "_dd.p.dm=-0" in headers["x-datadog-tags"]
    assert headers["traceparent"] == f"00-{span.trace_id:032x}-{span.span_id:016x}-01"
    assert headers["tracestate"].startswith("dd=s:1;p:")

    for style in (["x-datadog-"], ["traceparent", "tracestate"]):
        only = {k: v for k, v in headers.items() if any(k.startswith(p) for p in style)}
        ctx = HTTPPropagator.extract(only)
        assert ctx is not None, style
        assert ctx.trace_id == span.trace_id  # all 128 bits, in both styles
        assert ctx.span_id == span.span_id
        assert ctx.sampling_priority == 1
        assert ctx.tags.get("_dd.p.dm") == "-0"


def test_extracted_context_continues_the_trace(tracer: Tracer) -> None:
    headers = {
        "X-Datadog-Trace-Id": "1234", "X-Datadog-Parent-Id": "5678",
        "X-Datadog-Sampling-Priority": "2", "X-Datadog-Origin": "synthetics",
        "X-Datadog-Tags": "_dd.p.dm=-4,_dd.p.tid=6b0bdaaa00000000,other=x",
    }
    ctx = HTTPPropagator.extract(headers)
    assert ctx == Context((0x6B0BDAAA00000000 << 64) | 1234, 5678, 2, "synthetics",
                          {"_dd.p.dm": "-4"})
    with tracer.trace("server", child_of=ctx) as server:
        with tracer.trace("inner") as inner:
            pass
    assert server.trace_id == ctx.trace_id and server.parent_id == 5678
    assert inner.parent_id == server.span_id
    root = tracer.writer.chunks[0][0]
    assert root.metrics["_sampling_priority_v1"] == 2  # the upstream decision stands
    assert root.meta["_dd.p.dm"] == "-4" and root.meta["_dd.origin"] == "synthetics"
    assert root.meta["_dd.p.tid"] == "6b0bdaaa00000000"
    assert server.metrics["_dd.top_level"] == 1
    # and it propagates onwards unchanged
    out: dict[str, str] = {}
    HTTPPropagator.inject(inner, out)
    assert out["x-datadog-trace-id"] == "1234" and out["x-datadog-origin"] == "synthetics"
    assert out["x-datadog-sampling-priority"] == "2"
    assert "o:synthetics" in out["tracestate"] and "t.dm:-4" in out["tracestate"]


def test_start_span_child_of_context(tracer: Tracer) -> None:
    ctx = Context(99, 7, 0)
    span = tracer.start_span("op", child_of=ctx)
    span.finish()
    assert span.trace_id == 99 and span.parent_id == 7
    assert span.metrics["_sampling_priority_v1"] == 0


def test_w3c_keeps_other_vendors_state() -> None:
    headers = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "dd=s:2;o:rum;t.dm:-4;t.usr.id:baz64~~,rojo=00f067aa0ba902b7,congo=t61",
    }
    ctx = HTTPPropagator.extract(headers)
    assert ctx.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert ctx.span_id == 0xB7AD6B7169203331
    assert ctx.sampling_priority == 2 and ctx.origin == "rum"
    assert ctx.tags == {"_dd.p.dm": "-4", "_dd.p.usr.id": "baz64=="}
    assert ctx.tracestate == "rojo=00f067aa0ba902b7,congo=t61"
    out: dict[str, str] = {}
    HTTPPropagator.inject(ctx, out)
    assert out["traceparent"] == headers["traceparent"]
    assert out["tracestate"].endswith(",rojo=00f067aa0ba902b7,congo=t61")
    assert "t.usr.id:baz64~~" in out["tracestate"]


def test_w3c_flag_wins_over_a_contradicting_dd_priority() -> None:
    ctx = HTTPPropagator.extract({
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        "tracestate": "dd=s:2"})
    assert ctx.sampling_priority == 0


def test_datadog_wins_and_takes_tracestate_of_the_same_trace() -> None:
    ctx = HTTPPropagator.extract({
        "x-datadog-trace-id": str(0x8448EB211C80319C), "x-datadog-parent-id": "1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "dd=s:1,rojo=1"})
    assert ctx.span_id == 1 and ctx.tracestate == "rojo=1"


GARBAGE = [
    {},
    {"x-datadog-trace-id": "abc", "x-datadog-parent-id": "1"},
    {"x-datadog-trace-id": "0", "x-datadog-parent-id": "1"},
    {"x-datadog-trace-id": "-5"},
    {"x-datadog-trace-id": str(2**64)},
    {"x-datadog-trace-id": "1" * 400},
    {"traceparent": "garbage"},
    {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"},
    {"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {"traceparent": "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01"},
    {"traceparent": "\x00\xff" * 50},
]


@pytest.mark.parametrize("headers", GARBAGE)
def test_garbage_headers_are_ignored(headers) -> None:
    assert HTTPPropagator.extract(headers) is None


@pytest.mark.parametrize("tags", ["_dd.p.dm", "a=b,,c", "=x", "_dd.p.x=1," + "a" * 600])
def test_malformed_datadog_tags_are_dropped_not_the_context(tags) -> None:
    ctx = HTTPPropagator.extract({"x-datadog-trace-id": "5", "x-datadog-parent-id": "6",
                                  "x-datadog-sampling-priority": "bad", "x-datadog-tags": tags})
    assert ctx is not None and ctx.trace_id == 5 and ctx.tags == {}
    assert ctx.sampling_priority is None


def test_extract_survives_non_string_headers() -> None:
    class Weird(dict):
        def items(self):
            raise RuntimeError("broken mapping")

    assert HTTPPropagator.extract(Weird()) is None
    assert HTTPPropagator.extract({"x-datadog-trace-id": 5}) is None  # type: ignore[dict-item]


def test_inject_never_raises() -> None:
    HTTPPropagator.inject(object(), {})  # type: ignore[arg-type]
    HTTPPropagator.inject(Context(1, 2), ())  # type: ignore[arg-type]


def test_oversized_datadog_tags_are_not_injected() -> None:
    headers: dict[str, str] = {}
    HTTPPropagator.inject(Context(1, 2, 1, tags={"_dd.p.big": "x" * 600}), headers)
    assert "x-datadog-tags" not in headers and headers["x-datadog-trace-id"] == "1"
