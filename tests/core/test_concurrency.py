"""Many threads and asyncio tasks tracing at once: every trace complete, nothing mixed."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

from ddagent import Tracer


def assert_well_formed(chunks: list[list], expected_traces: int, spans_per_trace: int) -> None:
    assert len(chunks) == expected_traces  # one chunk per trace: completed once, never split
    for chunk in chunks:
        trace_ids = {s.trace_id for s in chunk}
        assert len(trace_ids) == 1, "a chunk mixes traces"
        assert len(chunk) == spans_per_trace
        by_id = {s.span_id: s for s in chunk}
        roots = [s for s in chunk if s.parent_id is None]
        assert len(roots) == 1
        owner = roots[0].meta["owner"]
        for span in chunk:
            assert span.meta["owner"] == owner, "a span from another thread/task"
            if span.parent_id is not None:
                parent = by_id[span.parent_id]
                assert int(span.meta["depth"]) == int(parent.meta["depth"]) + 1


def nested(tracer: Tracer, owner: str, depth: int) -> None:
    with tracer.trace(f"level{depth}") as span:
        span.set_tag("owner", owner)
        span.set_tag("depth", depth)
        assert tracer.current_span() is span
        if depth < 2:
            nested(tracer, owner, depth + 1)
            nested(tracer, owner, depth + 1)


def test_50_threads_x_200_nested_traces(tracer: Tracer) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            assert tracer.current_span() is None  # threads do not inherit the active span
            for i in range(200):
                nested(tracer, f"thread{n}.{i}", 0)
            assert tracer.current_span() is None
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert_well_formed(tracer.writer.chunks, 50 * 200, 7)
    assert len(tracer._open_traces) == 0
    per_thread = defaultdict(int)
    for chunk in tracer.writer.chunks:
        per_thread[chunk[0].meta["owner"].split(".")[0]] += 1
    assert set(per_thread.values()) == {200}


def test_200_concurrent_asyncio_tasks(tracer: Tracer) -> None:
    async def handler(n: int) -> None:
        with tracer.trace("request") as root:
            root.set_tag("owner", f"task{n}")
            root.set_tag("depth", 0)
            for _ in range(3):
                with tracer.trace("step") as span:
                    span.set_tag("owner", f"task{n}")
                    span.set_tag("depth", 1)
                    await asyncio.sleep(0)  # let every other task run in between
                    with tracer.trace("io") as io:
                        io.set_tag("owner", f"task{n}")
                        io.set_tag("depth", 2)
                        await asyncio.sleep(0)
                    assert tracer.current_span() is span
            assert tracer.current_root_span() is root

    async def main() -> None:
        await asyncio.gather(*(handler(n) for n in range(200)))

    asyncio.run(main())
    assert_well_formed(tracer.writer.chunks, 200, 7)


def test_task_spawned_inside_a_span_is_its_child(tracer: Tracer) -> None:
    async def child() -> None:
        with tracer.trace("child"):
            await asyncio.sleep(0)

    async def main() -> None:
        with tracer.trace("parent") as parent:
            await asyncio.gather(child(), child())
        return parent

    parent = asyncio.run(main())
    [chunk] = tracer.writer.chunks
    assert sorted(s.name for s in chunk) == ["child", "child", "parent"]
    assert all(s.parent_id == parent.span_id for s in chunk if s.name == "child")
