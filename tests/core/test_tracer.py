from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys

import pytest

import ddagent
from ddagent import Span, Tracer
from ddagent.sampler import RateSampler
from ddagent.stats import STATS
from tests.core.conftest import make_tracer
from tests.listwriter import ListWriter


def test_public_api() -> None:
    from ddagent import Pin, Span, Tracer, tracer  # noqa: F401

    assert isinstance(ddagent.tracer, Tracer)
    assert ddagent.__version__
    assert Tracer.DEFAULT_PORT == 8126
    with pytest.raises(AttributeError):
        ddagent.no_such_name  # noqa: B018


def test_importing_the_core_starts_no_thread_and_no_hooks() -> None:
    import subprocess

    code = ("import sys, threading, ddagent; "
            "assert threading.active_count() == 1, threading.enumerate(); "
            "assert 'ddagent.hooks.registry' not in sys.modules; "
            "assert 'ddagent.writer.agent' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_seed_custom_tracing_example(tracer: Tracer) -> None:
    stored = []

    @tracer.wrap()
    def save_thumbnails(img, sizes):
        thumbnails = [f"{img}@{size}" for size in sizes]
        with tracer.trace("thumbnails.save") as span:
            span.set_meta("thumbnails.sizes", str(sizes))
            span.set_metric("thumbnails.count", len(thumbnails))
            stored.extend(thumbnails)

    save_thumbnails("cat.png", [64, 128])
    [chunk] = tracer.writer.chunks
    root, child = sorted(chunk, key=lambda s: s.parent_id is not None)
    assert root.name == root.resource == f"{__name__}.save_thumbnails"
    assert root.parent_id is None and child.parent_id == root.span_id
    assert child.trace_id == root.trace_id
    assert child.name == child.resource == "thumbnails.save"
    assert root.service == child.service == "test-svc"
    assert child.meta["thumbnails.sizes"] == "[64, 128]"
    assert child.metrics["thumbnails.count"] == 2
    assert stored == ["cat.png@64", "cat.png@128"]


def test_child_inherits_trace_and_service_but_not_type(tracer: Tracer) -> None:
    with tracer.trace("root", service="web", span_type="web") as root:
        with tracer.trace("child") as child:
            assert tracer.current_span() is child
            assert tracer.current_root_span() is root
        with tracer.trace("db", service="db") as other:
            pass
    assert child.service == "web" and child.span_type is None
    assert child.trace_id == root.trace_id and child.parent_id == root.span_id
    assert other.service == "db"
    assert tracer.current_span() is None
    [chunk] = tracer.writer.chunks
    assert {s.name for s in chunk} == {"root", "child", "db"}


def test_default_service_from_config() -> None:
    t = make_tracer({"DD_SERVICE": "billing"})
    with t.trace("op") as span:
        pass
    assert span.service == "billing"


def test_chunk_tags(tracer: Tracer) -> None:
    t = make_tracer({"DD_SERVICE": "svc", "DD_ENV": "prod", "DD_VERSION": "1.2",
                     "DD_TAGS": "team:core,region:eu"})
    with t.trace("root") as root:
        with t.trace("child"):
            pass
        with t.trace("cache", service="redis"):
            pass
    [chunk] = t.writer.chunks
    first = chunk[0]
    by_name = {s.name: s for s in chunk}
    assert first.meta["_dd.p.tid"] == f"{root.trace_id >> 64:016x}"
    assert len(first.meta["_dd.p.tid"]) == 16
    assert first.metrics["_sampling_priority_v1"] == 1
    assert first.meta["_dd.p.dm"] == "-0"
    assert first.meta["language"] == "python"
    assert len(first.meta["runtime-id"]) == 32
    assert first.metrics["process_id"] == os.getpid()
    for span in chunk:
        assert span.meta["env"] == "prod"
        assert span.meta["team"] == "core" and span.meta["region"] == "eu"
    assert by_name["root"].metrics["_dd.top_level"] == 1
    assert "_dd.top_level" not in by_name["child"].metrics
    assert by_name["cache"].metrics["_dd.top_level"] == 1
    assert by_name["root"].meta["version"] == "1.2" and "version" not in by_name["cache"].meta
    for span in chunk[1:]:
        assert "language" not in span.meta and "_sampling_priority_v1" not in span.metrics


def test_explicit_tags_win_over_global_tags() -> None:
    t = make_tracer({"DD_ENV": "prod"})
    with t.trace("op") as span:
        span.set_tag("env", "staging")
    assert span.meta["env"] == "staging"


def test_finished_parent_does_not_become_active_again(tracer: Tracer) -> None:
    root = tracer.trace("root")
    child = tracer.trace("child")
    root.finish()  # out of order
    assert tracer.current_span() is child
    child.finish()
    assert tracer.current_span() is None
    # the late child still arrives with its own trace, not mixed with another
    assert [[s.name for s in c] for c in tracer.writer.chunks] == [["root", "child"]]


def test_active_span_restored_through_finished_ancestors(tracer: Tracer) -> None:
    a = tracer.trace("a")
    b = tracer.trace("b")
    c = tracer.trace("c")
    b.finish()
    c.finish()
    assert tracer.current_span() is a
    a.finish()
    assert tracer.current_span() is None


def test_late_child_of_a_flushed_trace_is_sent_as_its_own_chunk(tracer: Tracer) -> None:
    with tracer.trace("root") as root:
        pass
    late = tracer.start_span("late", child_of=root)
    late.finish()
    assert [[s.name for s in c] for c in tracer.writer.chunks] == [["root"], ["late"]]
    assert late.trace_id == root.trace_id and late.parent_id == root.span_id


def test_start_span_is_a_root_unless_child_of_and_not_active(tracer: Tracer) -> None:
    with tracer.trace("outer") as outer:
        lone = tracer.start_span("lone")
        child = tracer.start_span("child", child_of=outer)
        assert tracer.current_span() is outer
        activated = tracer.start_span("act", child_of=outer, activate=True)
        assert tracer.current_span() is activated
        activated.finish()
        assert tracer.current_span() is outer
        child.finish()
        lone.finish()
    assert lone.trace_id != outer.trace_id and lone.parent_id is None
    assert child.parent_id == outer.span_id


def test_traces_never_mix(tracer: Tracer) -> None:
    a = tracer.start_span("a")
    b = tracer.start_span("b")
    a_child = tracer.start_span("a.child", child_of=a)
    b.finish()
    a_child.finish()
    a.finish()
    assert [[s.name for s in c] for c in tracer.writer.chunks] == [["b"], ["a.child", "a"]]


def test_partial_flush() -> None:
    t = make_tracer({"DD_TRACE_PARTIAL_FLUSH_MIN_SPANS": "5"})
    with t.trace("root"):
        for i in range(12):
            with t.trace(f"c{i}"):
                pass
    sizes = [len(c) for c in t.writer.chunks]
    assert sizes == [5, 5, 3]
    for chunk in t.writer.chunks:
        assert "_sampling_priority_v1" in chunk[0].metrics  # every chunk root
    assert len({s.span_id for c in t.writer.chunks for s in c}) == 13


def test_open_traces_are_bounded_and_evictions_counted() -> None:
    t = make_tracer(max_open_traces=3)
    before = STATS.get("spans.dropped.open_trace_evicted")
    lone = [t.start_span(f"lone{i}") for i in range(5)]
    assert len(t._open_traces) == 0  # a root alone in its trace holds no buffer
    roots = []
    for i in range(4):  # the fourth evicts the first
        root = t.start_span(f"r{i}")
        t.start_span(f"c{i}", child_of=root).finish()  # waits in the root's buffer
        roots.append(root)
    assert len(t._open_traces) == 3
    for r in roots + lone:
        r.finish()
    assert [[s.name for s in c] for c in t.writer.chunks] == [
        ["c1", "r1"], ["c2", "r2"], ["c3", "r3"], *([f"lone{i}"] for i in range(5))]
    assert STATS.get("spans.dropped.open_trace_evicted") - before == 2  # c0, then r0
    # a new span under an evicted trace starts a fresh chunk of the same trace
    again = t.start_span("again", child_of=roots[0])
    again.finish()
    assert t.writer.chunks[-1] == [again] and again.trace_id == roots[0].trace_id


def test_disabled_tracer_creates_spans_but_drops_traces(tracer: Tracer) -> None:
    tracer.configure(enabled=False)
    before = STATS.get("spans.dropped.disabled")
    with tracer.trace("op") as span:
        assert tracer.current_span() is span
    assert tracer.writer.chunks == []
    assert STATS.get("spans.dropped.disabled") - before == 1
    tracer.enabled = True
    with tracer.trace("op"):
        pass
    assert len(tracer.writer.chunks) == 1


def test_configure_changes_only_what_is_given(tracer: Tracer) -> None:
    writer = tracer.writer
    sampler = tracer.sampler
    tracer.configure(port=9999)
    assert tracer.agent_url == "http://localhost:9999"
    tracer.configure(hostname="agent.local")
    assert tracer.agent_url == "http://agent.local:9999"
    tracer.configure(port="7000")  # Django passes strings
    assert tracer.agent_url == "http://agent.local:7000"
    assert tracer.writer is writer and tracer.sampler is sampler and tracer.enabled
    new_sampler = RateSampler(0.5)
    tracer.configure(sampler=new_sampler)
    assert tracer.sampler is new_sampler and tracer.writer is writer


def test_configure_bad_port_warns(tracer: Tracer, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        tracer.configure(port="http")
    assert tracer.agent_url == "http://localhost:8126"
    assert "port" in caplog.text and "1 and 65535" in caplog.text


def test_configure_replaces_the_tracers_own_writer() -> None:
    t = Tracer(make_tracer().config)
    first = t.writer  # the AgentWriter, built lazily
    assert first.agent_url == t.agent_url
    t.configure(port=9999)
    assert t.writer is not first and t.writer.agent_url == "http://localhost:9999"
    t.writer.stop(0)


def test_set_service_info_is_accepted(tracer: Tracer) -> None:
    tracer.set_service_info("svc", "flask", "web")


def test_stats_snapshot(tracer: Tracer) -> None:
    before = tracer.stats().get("spans.finished", 0)
    with tracer.trace("a"):
        with tracer.trace("b"):
            pass
    assert tracer.stats()["spans.finished"] - before == 2


def test_flush_and_shutdown(tracer: Tracer) -> None:
    assert tracer.flush(1.0) is True
    tracer.shutdown(1.0)
    before = STATS.get("spans.dropped.shutdown")
    with tracer.trace("after"):
        pass
    assert tracer.writer.chunks == []
    assert STATS.get("spans.dropped.shutdown") - before == 1


def test_debug_logging(tracer: Tracer, caplog) -> None:
    tracer.debug_logging = True
    with caplog.at_level(logging.DEBUG, logger="ddagent.tracer"):
        with tracer.trace("noisy"):
            pass
    assert "writing 1 spans" in caplog.text and "noisy" in caplog.text
    logger = logging.getLogger("ddagent")
    level, handlers = logger.level, list(logger.handlers)
    try:
        assert make_tracer({"DD_TRACE_DEBUG": "true"}).debug_logging is True
    finally:  # DD_TRACE_DEBUG turns the package's logger to DEBUG for the whole process
        logger.setLevel(level)
        logger.handlers[:] = handlers


def test_a_failing_writer_never_reaches_the_app(tracer: Tracer) -> None:
    class Broken(ListWriter):
        def write(self, spans):
            raise RuntimeError("writer bug")

    tracer.writer = Broken()
    before = STATS.get("tracer.errors")
    with tracer.trace("op"):
        pass
    assert STATS.get("tracer.errors") - before == 1


def test_a_failing_sampler_keeps_the_trace(tracer: Tracer) -> None:
    class Broken:
        def sample(self, span):
            raise RuntimeError("sampler bug")

    tracer.sampler = Broken()
    with tracer.trace("op") as span:
        pass
    assert span.metrics["_sampling_priority_v1"] == 1


# -- wrap ---------------------------------------------------------------------------------


def test_wrap_without_parentheses_and_metadata(tracer: Tracer) -> None:
    @tracer.wrap
    def add(a: int, b: int = 2) -> int:
        """Adds."""
        return a + b

    assert add(1) == 3
    assert add.__name__ == "add" and add.__doc__ == "Adds."
    assert str(inspect.signature(add)) == "(a: 'int', b: 'int' = 2) -> 'int'"
    assert add.__wrapped__ is not None
    [[span]] = tracer.writer.chunks
    assert span.name == f"{__name__}.add"


def test_wrap_with_arguments_and_errors(tracer: Tracer) -> None:
    @tracer.wrap("custom", service="svc", resource="res", span_type="worker")
    def fail() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        fail()
    [[span]] = tracer.writer.chunks
    assert (span.name, span.service, span.resource, span.span_type) == (
        "custom", "svc", "res", "worker")
    assert span.error == 1 and span.meta["error.type"] == "builtins.ValueError"


def test_wrap_generator_covers_the_iteration(tracer: Tracer) -> None:
    @tracer.wrap()
    def numbers(n):
        for i in range(n):
            with tracer.trace("inside"):
                pass
            yield i
        return "done"

    assert inspect.isgeneratorfunction(numbers)
    with tracer.trace("consumer") as consumer:
        gen = numbers(3)
        assert next(gen) == 0
        # between items the consumer's span is active again, not the generator's
        assert tracer.current_span() is consumer
        with tracer.trace("consumer.work") as work:
            pass
        assert list(gen) == [1, 2]
    spans = {s.name: s for s in tracer.writer.spans}
    gen_span = spans[f"{__name__}.numbers"]
    assert gen_span.parent_id == consumer.span_id
    assert work.parent_id == consumer.span_id
    inside = [s for s in tracer.writer.spans if s.name == "inside"]
    assert len(inside) == 3 and all(s.parent_id == gen_span.span_id for s in inside)
    assert gen_span.finished and gen_span.error == 0


def test_wrap_generator_send_throw_close(tracer: Tracer) -> None:
    @tracer.wrap()
    def echo():
        received = []
        try:
            while True:
                try:
                    received.append((yield len(received)))
                except KeyError:
                    received.append("caught")
        finally:
            received.append("closed")
            result.extend(received)

    result: list = []
    gen = echo()
    assert next(gen) == 0
    assert gen.send("a") == 1
    assert gen.throw(KeyError("k")) == 2
    gen.close()
    assert result == ["a", "caught", "closed"]
    [[span]] = tracer.writer.chunks
    assert span.error == 0 and tracer.current_span() is None


def test_wrap_generator_return_value_and_error(tracer: Tracer) -> None:
    @tracer.wrap()
    def gives():
        yield 1
        return "value"

    def consume():
        return (yield from gives())

    gen = consume()
    next(gen)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "value"

    @tracer.wrap()
    def breaks():
        yield 1
        raise RuntimeError("mid-iteration")

    with pytest.raises(RuntimeError, match="mid-iteration"):
        list(breaks())
    assert tracer.writer.spans[-1].error == 1


def test_wrap_coroutine(tracer: Tracer) -> None:
    @tracer.wrap()
    async def fetch(x):
        await asyncio.sleep(0)
        with tracer.trace("inner"):
            await asyncio.sleep(0)
        return x * 2

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch(21)) == 42
    [chunk] = tracer.writer.chunks
    outer = next(s for s in chunk if s.name.endswith("fetch"))
    inner = next(s for s in chunk if s.name == "inner")
    assert inner.parent_id == outer.span_id
    assert outer.duration_ns >= inner.duration_ns


def test_wrap_async_generator(tracer: Tracer) -> None:
    @tracer.wrap()
    async def ticks(n):
        for i in range(n):
            await asyncio.sleep(0)
            with tracer.trace("tick"):
                pass
            yield i

    async def main():
        with tracer.trace("main") as main_span:
            got = [i async for i in ticks(3)]
            assert tracer.current_span() is main_span
        return got

    assert inspect.isasyncgenfunction(ticks)
    assert asyncio.run(main()) == [0, 1, 2]
    [chunk] = tracer.writer.chunks
    gen_span = next(s for s in chunk if s.name.endswith("ticks"))
    ticks_spans = [s for s in chunk if s.name == "tick"]
    assert len(ticks_spans) == 3 and all(s.parent_id == gen_span.span_id for s in ticks_spans)


def test_wrap_async_generator_aclose(tracer: Tracer) -> None:
    closed = []

    @tracer.wrap()
    async def forever():
        try:
            while True:
                yield 1
        finally:
            closed.append(True)

    async def main():
        agen = forever()
        assert await agen.__anext__() == 1
        await agen.aclose()

    asyncio.run(main())
    assert closed == [True]
    [[span]] = tracer.writer.chunks
    assert span.error == 0


# -- fork ---------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_child_forgets_open_traces_and_gets_new_ids(tracer: Tracer) -> None:
    # ``ddagent.tracer`` the attribute is the global Tracer; the module is in sys.modules.
    tracer_module = sys.modules["ddagent.tracer"]
    parent_runtime = tracer_module._runtime_id
    read_fd, write_fd = os.pipe()
    with tracer.trace("parent.root") as root:
        with tracer.trace("parent.child"):
            pass
        pid = os.fork()
        if pid == 0:  # the child: report what it sends, then leave without cleanup
            try:
                tracer.writer.chunks.clear()
                with tracer.trace("child.op"):
                    pass
                root.finish()  # inherited span: not the child's to send
                chunks = [[(s.name, s.parent_id, s.trace_id) for s in c]
                          for c in tracer.writer.chunks]
                report = repr((chunks, len(tracer._open_traces),
                               tracer_module._runtime_id != parent_runtime,
                               Span(None, "x").span_id))
                os.write(write_fd, report.encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        os.waitpid(pid, 0)
        with os.fdopen(read_fd) as f:
            chunks, open_traces, new_runtime, child_id = eval(f.read())  # noqa: S307
    assert chunks == [[("child.op", root.span_id, root.trace_id)]]
    assert open_traces == 0 and new_runtime
    assert child_id != Span(None, "x").span_id
    # the parent still sends its own whole trace
    assert sorted(s.name for s in tracer.writer.spans) == ["parent.child", "parent.root"]



@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_child_does_not_send_an_inherited_root_alone_in_its_trace(tracer: Tracer) -> None:
    read_fd, write_fd = os.pipe()
    with tracer.trace("parent.alone"):  # no child: it has no buffer for the fork to close
        pid = os.fork()
        if pid == 0:
            try:
                tracer.writer.chunks.clear()
                before = STATS.get("spans.dropped.fork")
                tracer.current_span().finish()
                os.write(write_fd, repr((len(tracer.writer.chunks),
                                         STATS.get("spans.dropped.fork") - before)).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        os.waitpid(pid, 0)
        with os.fdopen(read_fd) as f:
            sent_by_child, dropped_in_child = eval(f.read())  # noqa: S307
    assert (sent_by_child, dropped_in_child) == (0, 1)
    assert [s.name for s in tracer.writer.spans] == ["parent.alone"]


def test_a_root_alone_in_its_trace_gets_a_buffer_when_its_state_is_needed(
        tracer: Tracer) -> None:
    with tracer.trace("root") as root:
        context = root.context  # propagation decides sampling on the trace's state
        assert context.sampling_priority == 1
        with tracer.trace("child"):
            pass
        assert tracer.current_root_span() is root
    [chunk] = tracer.writer.chunks
    assert [s.name for s in chunk] == ["child", "root"]
    assert chunk[0].metrics["_sampling_priority_v1"] == 1.0
    assert chunk[0].meta["_dd.p.dm"] == "-0"


def test_a_user_sampler_decides_for_a_root_alone_in_its_trace(tracer: Tracer) -> None:
    tracer.sampler = RateSampler(0.0)
    with tracer.trace("alone"):
        pass
    [[span]] = tracer.writer.chunks
    assert span.metrics["_sampling_priority_v1"] == -1.0
    assert "_dd.p.dm" not in span.meta and span.metrics["_dd.rule_psr"] == 0.0
