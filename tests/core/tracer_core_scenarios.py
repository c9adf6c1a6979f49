"""Traces made through every path of the tracer's per-span calls, printed as JSON with ids and
times normalised: test_native_tracer.py runs this with the native tracer core and with its Python
twin (DD_TRACE_NATIVE_SPAN=false) and compares the two outputs."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Optional

from ddagent.config import Config
from ddagent.context import ACTIVE_SPAN, Context
from ddagent.sampler import RateSampler
from ddagent.span import Span
from ddagent.stats import STATS
from ddagent.tracer import Tracer
from tests.listwriter import ListWriter

Scenario = Callable[[Tracer], None]
SCENARIOS: dict[str, tuple[Optional[dict[str, str]], Scenario]] = {}  # name: (env, scenario)


def scenario(env: Optional[dict[str, str]] = None) -> Callable[[Scenario], Scenario]:
    def register(run: Scenario) -> Scenario:
        SCENARIOS[run.__name__] = (env, run)
        return run
    return register


def make_tracer(env: Optional[dict[str, str]] = None) -> Tracer:
    tracer = Tracer(Config.from_env({"DD_SERVICE": "svc", **(env or {})}))
    tracer.writer = ListWriter()
    return tracer


@scenario()
def lone_root(t: Tracer) -> None:
    with t.trace("lone", resource="res", span_type="web") as span:
        span.set_tag("k", "v")
        span.set_metric("m", 2)


@scenario()
def positional_and_keyword_arguments(t: Tracer) -> None:
    t.trace("a", "other-svc", "res", "sql").finish()
    t.trace(name="b", span_type="cache", resource="r", service="s2").finish()
    t.trace("c", service="").finish()  # falls back to the configured service
    t.trace("d", child_of=None).finish()


@scenario()
def agent_rates(t: Tracer) -> None:
    for rate in (0.0, 1.0):  # other rates decide by the random trace id: test_native_tracer.py
        t.agent_sampler.update_rates({"service:svc,env:": rate})
        for _ in range(3):
            t.trace("sampled").finish()
    t.agent_sampler.update_rates({"service:other,env:": 0.0})  # no rate for svc: kept
    t.trace("unrated").finish()


@scenario()
def parent_and_children(t: Tracer) -> None:
    with t.trace("root") as root:
        root.set_tag("r", "1")
        with t.trace("child", service="db") as child:
            with t.trace("grandchild"):
                pass
            child.set_tag("c", "2")
        with t.trace("sibling"):
            pass


@scenario()
def children_finishing_after_the_root(t: Tracer) -> None:
    root = t.trace("root")
    child = t.trace("child")
    root.finish()
    assert t.current_span() is child
    child.finish()
    assert t.current_span() is None


@scenario()
def remote_parent(t: Tracer) -> None:
    parent = Context(trace_id=(5 << 64) | 7, span_id=9, sampling_priority=2, origin="synthetics",
                     tags={"_dd.p.dm": "-4"})
    with t.trace("continued", child_of=parent):
        with t.trace("inner"):
            pass


@scenario()
def start_span_activated_or_not(t: Tracer) -> None:
    outer = t.start_span("outer", activate=True)
    inner = t.start_span("inner", child_of=outer)
    assert t.current_span() is outer
    inner.finish()
    outer.finish()


@scenario({"DD_VERSION": "1.2", "DD_TAGS": "team:a,tier:web", "DD_ENV": "prod"})
def version_and_global_tags(t: Tracer) -> None:
    t.trace("lone").finish()
    with t.trace("root"):
        t.trace("child", service="other").finish()


@scenario()
def user_sampler(t: Tracer) -> None:
    t.configure(sampler=RateSampler(0.0))
    t.trace("rejected").finish()
    t.configure(sampler=RateSampler(1.0))
    with t.trace("kept"):
        t.trace("child").finish()


@scenario()
def chunk_observers(t: Tracer) -> None:
    seen: list[int] = []
    t.chunk_observers.append(lambda chunk: seen.append(len(chunk)))
    t.trace("observed").finish()
    assert seen == [1]


@scenario()
def disabled_and_shut_down(t: Tracer) -> None:
    t.configure(enabled=False)
    t.trace("disabled").finish()
    t.configure(enabled=True)
    t.trace("enabled").finish()
    t.shutdown(0.1)
    t.trace("after shutdown").finish()


@scenario()
def a_span_of_another_tracer_as_parent(t: Tracer) -> None:
    other = make_tracer()
    with other.trace("theirs"):
        with t.trace("ours"):
            pass


@scenario()
def a_span_built_by_hand_as_active(t: Tracer) -> None:
    by_hand = Span(None, "by-hand", trace_id=3, span_id=4)
    token = ACTIVE_SPAN.set(by_hand)
    try:
        t.trace("under it").finish()
    finally:
        ACTIVE_SPAN.reset(token)


@scenario({"DD_TRACE_PARTIAL_FLUSH_MIN_SPANS": "3"})
def partial_flush(t: Tracer) -> None:
    with t.trace("root"):
        for i in range(7):
            t.trace(f"child {i}").finish()


@scenario()
def evicted_traces(t: Tracer) -> None:
    t._open_traces.max_traces = 2
    roots = [t.start_span(f"root {i}") for i in range(3)]
    children = [t.start_span("child", child_of=root) for root in roots]
    for span in children + roots:
        span.finish()  # the first trace was evicted: its spans are dropped, counted


@scenario()
def bad_calls(t: Tracer) -> None:
    for call in (lambda: t.trace(), lambda: t.trace("x", bogus=1),
                 lambda: t.trace("x", "svc", name="y")):
        try:
            call()
        except TypeError as e:
            print(json.dumps({"error": str(e)}))
    assert t.current_span() is None


def normalised(chunks: list[list[Span]]) -> list[list[dict[str, Any]]]:
    ids: dict[int, int] = {}

    def label(value: Optional[int]) -> Optional[int]:
        return None if value is None else ids.setdefault(value, len(ids))

    result = []
    for chunk in chunks:
        spans = []
        for span in chunk:
            meta = [[k, v] for k, v in span.meta.items() if k not in ("runtime-id", "_dd.p.tid")]
            metrics = [[k, v] for k, v in span.metrics.items() if k != "process_id"]
            spans.append({
                "name": span.name, "service": span.service, "resource": span.resource,
                "type": span.span_type, "trace": label(span.trace_id & ((1 << 64) - 1)),
                "span": label(span.span_id), "parent": label(span.parent_id),
                "error": span.error, "meta": meta, "metrics": metrics,
                "has_tid": "_dd.p.tid" in span.meta, "finished": span.finished,
            })
        result.append(spans)
    return result


def main() -> None:
    for name, (env, run) in SCENARIOS.items():
        tracer = make_tracer(env)
        STATS.reset()
        run(tracer)
        print(json.dumps({"scenario": name, "active": ACTIVE_SPAN.get() is not None,
                          "chunks": normalised(tracer.writer.chunks),
                          "counts": STATS.snapshot()}))
    print(type(tracer).__mro__[1].__name__, file=sys.stderr)  # which core ran


if __name__ == "__main__":
    main()
