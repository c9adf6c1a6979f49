"""Scenario 1: manual spans — start+finish with two tags, a parent with a child, traces of 10
and 100 spans. Cost per span: process CPU (all threads, export included) / spans."""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional

from bench import tracers
from bench.child import cpu_per_op, sized
from bench.runner import Context, Results, Row, Target, ratio

TITLE = "1. manual spans (export to the live agent included)"
CASES = ["1 span + 2 tags", "parent + child", "trace of 10", "trace of 100"]
SPANS_PER_TRACE = {"1 span + 2 tags": 1, "parent + child": 2, "trace of 10": 10,
                   "trace of 100": 100}
# ddtrace is the reference: the baseline (an empty loop) costs next to nothing per span.
ROWS = [Row(case, "cpu_us", f"{case}: CPU per span", "µs", ratio_to="ddtrace") for case in CASES]


def one_trace(t: tracers.Tracing, spans: int) -> None:
    """One trace: a root and ``spans - 1`` children, each span with two tags."""
    with t.span("bench.root") as root:
        t.tag(root, "component", "bench")
        t.tag(root, "bench.size", "n")
        for _ in range(spans - 1):
            with t.span("bench.child") as child:
                t.tag(child, "component", "bench")
                t.tag(child, "bench.size", "n")


def many_traces(t: tracers.Tracing, spans: int, traces: int) -> None:
    for _ in range(traces):
        one_trace(t, spans)


def child(contender: str) -> dict:
    t = tracers.start(contender)
    out = {}
    for case in CASES:
        spans = SPANS_PER_TRACE[case]
        traces = max(1, sized(3_000, 30_000) // spans)
        cpu_per_op(partial(many_traces, t, spans, 20), 20 * spans, t.flush)  # warm-up
        out[case] = {"cpu_us": cpu_per_op(partial(many_traces, t, spans, traces),
                                          traces * spans, t.flush)}
    return out


def measure(ctx: Context, contender: str) -> dict:
    return ctx.run_child(__name__.rsplit(".", 1)[-1], contender)


def _vs(other: str, case: str = "1 span + 2 tags") -> Callable[[Results], Optional[float]]:
    """ddagent's cost per span as a fraction of ``other``'s."""
    return lambda r: ratio(r.median(case, "ddagent", "cpu_us"), r.median(case, other, "cpu_us"))


TARGETS = [
    Target("1. span cost vs ddtrace (1 span + 2 tags)", 0.1, _vs("ddtrace")),
    Target("1. span cost vs OpenTelemetry (1 span + 2 tags)", 0.05, _vs("otel")),
    Target("1. span cost vs ddtrace (trace of 100)", 0.1, _vs("ddtrace", "trace of 100")),
    Target("1. span cost vs OpenTelemetry (trace of 100)", 0.05, _vs("otel", "trace of 100")),
]
