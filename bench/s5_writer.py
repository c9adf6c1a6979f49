"""Scenario 5: the writer.

- throughput: spans encoded and sent per second of writer CPU, where writer CPU = process CPU
  (all threads, including the final flush) minus the app thread's CPU while it made the spans.
  A tracer that encodes in the app thread (ddtrace does) shows a cheap writer here and pays in
  scenario 1 instead, so the row "all CPU per span" is printed too.
- memory: peak RSS growth while making spans with the agent down (the tracer points at a closed
  port): 1 million spans, or 100,000 with ``--quick``.
"""

from __future__ import annotations

import os
import time
from typing import Optional

from bench import tracers
from bench.child import Unavailable, rss_kib, sized
from bench.runner import Context, Results, Row, Target
from bench.s1_manual_spans import many_traces
from tests.testagent import free_port

TITLE = "5. writer (traces of 10 spans, 2 tags each)"
CASES = ["throughput", "memory, agent down"]
ROWS = [
    Row("throughput", "k_spans_per_cpu_s", "throughput: spans per writer-CPU second", "k/s", None),
    Row("throughput", "all_cpu_us", "throughput: all CPU per span", "µs", "ddtrace"),
    Row("memory, agent down", "rss_growth_mb",
        f"memory, agent down: peak RSS growth after {sized(100_000, 1_000_000):,} spans", "MB"),
]
SPANS_PER_TRACE = 10


def throughput(t: tracers.Tracing) -> dict:
    if t.tracer is None:
        raise Unavailable("no tracer, no writer")
    traces = sized(3_000, 20_000)
    many_traces(t, SPANS_PER_TRACE, 20)  # warm-up
    t.flush()
    process, app = time.process_time(), time.thread_time()
    many_traces(t, SPANS_PER_TRACE, traces)
    app = time.thread_time() - app
    t.flush()
    process = time.process_time() - process
    spans = traces * SPANS_PER_TRACE
    return {"k_spans_per_cpu_s": spans / (process - app) / 1e3, "all_cpu_us": process * 1e6 / spans}


def memory(t: tracers.Tracing) -> dict:
    many_traces(t, SPANS_PER_TRACE, 100)  # warm-up: what a started tracer holds anyway
    before = rss_kib("VmRSS")
    many_traces(t, SPANS_PER_TRACE, sized(100_000, 1_000_000) // SPANS_PER_TRACE)
    return {"rss_growth_mb": (rss_kib("VmHWM") - before) / 1024}


def child(contender: str) -> dict:
    case = os.environ["BENCH_CASE"]
    t = tracers.start(contender)
    try:
        return {case: throughput(t) if case == "throughput" else memory(t)}
    except Unavailable as e:
        return {case: {"na": str(e)}}


def measure(ctx: Context, contender: str) -> dict:
    name = __name__.rsplit(".", 1)[-1]
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the agent is down
    out = ctx.run_child(name, contender, env=ctx.env(contender, BENCH_CASE="throughput"))
    down = ctx.env(contender, BENCH_CASE="memory, agent down", DD_TRACE_AGENT_URL=closed,
                   BENCH_OTLP_URL=closed)
    out.update(ctx.run_child(name, contender, env=down))
    return out


def _rss(r: Results) -> Optional[float]:
    return r.median("memory, agent down", "ddagent", "rss_growth_mb")


TARGETS = [Target("5. peak RSS growth with the agent down", 30, _rss, unit="MB")]
