"""Which span is active, and how a trace's spans are gathered before they go to the writer.

- The active span lives in a ``ContextVar``: every thread and every asyncio task sees its own.
- Each trace has a :class:`TraceBuffer` (shared by its spans in this process) that counts open
  spans and collects finished ones. When the last open span finishes, or when many finished spans
  are waiting (partial flush), the finished spans leave as one chunk. The buffer also carries the
  trace-level state: sampling priority, propagated ``_dd.p.*`` tags, origin.
- A root that is alone in its trace (most traces integrations make are single spans) has no
  buffer of its own: it points at its registry's shared marker ``OpenTraces.lone`` and is sent
  as a chunk of one when it finishes, without a buffer, a lock or a registration. It gets a real
  buffer (:meth:`TraceBuffer.adopting`) as soon as a child starts or its trace state is needed.
- :class:`OpenTraces` bounds how many traces may be open at once; the oldest is evicted (its
  waiting spans dropped and counted) when a new one would exceed the bound.
- :class:`Context` is a trace continued from elsewhere (extracted from headers): a parent that is
  not a local span.

In a forked child, every inherited buffer is closed: spans the child creates under an inherited
span go to a fresh buffer of the same trace, so the child sends only its own spans.
"""

from __future__ import annotations

import os
import threading
import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Optional

from ddagent.span import native_twin
from ddagent.stats import STATS

if TYPE_CHECKING:
    from ddagent.span import Span

ACTIVE_SPAN: ContextVar[Optional[Span]] = ContextVar("ddagent_active_span", default=None)


class Context:
    """A remote parent: the trace id (128-bit), the parent span id and the trace-level state."""

    __slots__ = ("trace_id", "span_id", "sampling_priority", "origin", "tags", "tracestate")

    def __init__(
        self,
        trace_id: int,
        span_id: Optional[int] = None,
        sampling_priority: Optional[int] = None,
        origin: Optional[str] = None,
        tags: Optional[dict[str, str]] = None,
        tracestate: Optional[str] = None,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampling_priority = sampling_priority
        self.origin = origin
        self.tags = tags if tags is not None else {}  # _dd.p.* keys only, except _dd.p.tid
        self.tracestate = tracestate  # other vendors' W3C tracestate members, kept as is

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Context) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"Context({fields})"


class PythonTraceBufferCore:
    """A trace buffer's fields and the two calls every span of a buffered trace makes into it.

    ``ddagent/_span.c``'s ``TraceBufferCore`` is its native twin, used with the native span core:
    the same work under the same lock, handing a span that finishes in a closed buffer (and
    anything unusual) to the methods here, so this class says what a buffer does.
    """

    __slots__ = (
        "trace_id", "root", "priority", "tags", "origin", "tracestate", "closed_reason",
        "_lock", "_open", "_finished", "_registry",
    )
    trace_id: int
    root: Optional[Span]
    priority: Optional[int]
    tags: dict[str, str]
    origin: Optional[str]
    tracestate: Optional[str]
    closed_reason: Optional[str]
    _lock: threading.Lock
    _open: int
    _finished: list[Span]
    _registry: OpenTraces

    # span_started and span_finished run for every child span: they take the lock with
    # acquire()/release() rather than `with`, whose __enter__/__exit__ lookups cost ~1k of the
    # ~2k instructions a locked block costs (callgrind, Python 3.11).

    def span_started(self, span: Span) -> None:
        victim = None
        lock = self._lock
        lock.acquire()
        try:
            if self.root is None:
                self.root = span
            self._open += 1
            if self._open == 1:
                victim = self._registry.add(self)
        finally:
            lock.release()
        if victim is not None:
            victim.close("open_trace_evicted")

    def span_finished(self, span: Span) -> Optional[list[Span]]:
        """Take ``span`` back; returns a chunk of finished spans when one is ready to send."""
        lock = self._lock
        lock.acquire()
        try:
            reason = self.closed_reason
            if reason is None:
                self._finished.append(span)
                self._open -= 1
                if self._open and len(self._finished) < self._registry.partial_flush_min_spans:
                    return None
                if not self._open:
                    self._registry._traces.pop(self, None)  # discard(), inlined: atomic
                    # Drop the root reference (the only span <-> buffer cycle) so refcounting
                    # frees a finished trace without the cyclic GC. Here, under the lock we
                    # hold anyway, rather than in a second locked call per trace.
                    self.root = None
                chunk, self._finished = self._finished, []
                return chunk
        finally:
            lock.release()
        # A span of a closed buffer: nobody will send it.
        STATS.incr("spans.finished")
        STATS.incr(f"spans.dropped.{reason}")
        return None


if TYPE_CHECKING:  # type checkers see the Python core, which the native one mirrors
    TraceBufferCore = PythonTraceBufferCore
else:
    TraceBufferCore = native_twin(
        "TraceBufferCore", "use_trace_buffer_twin", PythonTraceBufferCore) or PythonTraceBufferCore


class TraceBuffer(TraceBufferCore):
    """The spans of one trace in this process, and the trace's sampling and propagation state."""

    __slots__ = ("__weakref__",)

    def __init__(self, trace_id: int, registry: OpenTraces, root: Optional[Span] = None) -> None:
        self.trace_id = trace_id
        # The local root: the first span started while none was open (see span_started).
        self.root = root
        self.priority: Optional[int] = None  # None until sampling has decided
        self.tags: dict[str, str] = {}  # propagated trace tags (_dd.p.*)
        self.origin: Optional[str] = None
        self.tracestate: Optional[str] = None
        self.closed_reason: Optional[str] = None  # set when evicted or inherited across fork
        self._lock = threading.Lock()
        self._finished: list[Span] = []
        self._registry = registry
        if root is None:
            self._open = 0
            return
        # Started with its root, which nobody else can see yet: open and registered without the
        # lock and without the calls of span_started/OpenTraces.add (new traces are the hot path:
        # most traces integrations make are single spans).
        self._open = 1
        traces = registry._traces
        traces[self] = None  # atomic
        if len(traces) > registry.max_traces:
            victim = registry.evict_oldest()
            if victim is not None:
                victim.close("open_trace_evicted")

    @classmethod
    def adopting(cls, root: Span, registry: OpenTraces) -> TraceBuffer:
        """The buffer of a trace whose root was alone until now (see ``OpenTraces.lone``)."""
        if root.finished:  # nothing left open: nothing to register, no root to remember
            return cls(root.trace_id, registry)
        return cls(root.trace_id, registry, root)

    @classmethod
    def continuing(cls, parent: Context | TraceBuffer, registry: OpenTraces) -> TraceBuffer:
        """A new buffer for a trace that started elsewhere (another process or a closed buffer)."""
        trace = cls(parent.trace_id, registry)
        if isinstance(parent, Context):
            trace.priority = parent.sampling_priority
        else:
            trace.priority = parent.priority
        trace.tags = dict(parent.tags)
        trace.origin = parent.origin
        trace.tracestate = parent.tracestate
        return trace

    def set_decision(self, priority: int, mechanism: str) -> None:
        self.priority = priority
        # Like ddtrace: the decision maker travels only with traces that are kept.
        if priority > 0:
            self.tags["_dd.p.dm"] = mechanism
        else:
            self.tags.pop("_dd.p.dm", None)

    def close(self, reason: str) -> None:
        """Stop collecting: drop (and count) the waiting spans and any that finish later."""
        with self._lock:
            if self.closed_reason is not None:
                return
            self.closed_reason = reason
            dropped, self._finished = len(self._finished), []
        if dropped:
            STATS.incr("spans.finished", dropped)
            STATS.incr(f"spans.dropped.{reason}", dropped)

    def _forget_after_fork(self) -> None:
        # Runs in the child with one thread; a lock held by a vanished thread must not be reused.
        self._lock = threading.Lock()
        self.closed_reason = "fork"
        self._finished = []


class OpenTraces:
    """The buffers of the traces that have open spans, oldest first, at most ``max_traces``."""

    def __init__(self, max_traces: int = 10_000, partial_flush_min_spans: int = 300) -> None:
        self.max_traces = max_traces
        self.partial_flush_min_spans = partial_flush_min_spans
        self._lock = threading.Lock()
        self._traces: dict[TraceBuffer, None] = {}  # insertion-ordered set
        # The marker of roots alone in their trace. Never registered and never given spans;
        # replaced in a forked child, where the old one is closed like every inherited buffer.
        self.lone = TraceBuffer(0, self)
        _REGISTRIES.add(self)

    def add(self, trace: TraceBuffer) -> Optional[TraceBuffer]:
        """Register ``trace``; returns the oldest trace if it must now be evicted."""
        # Once per trace on the hot path: a dict store and len() are each atomic, so the lock
        # is taken only to evict (saves two lock round trips per trace).
        traces = self._traces
        traces[trace] = None
        if len(traces) <= self.max_traces:
            return None
        return self.evict_oldest()

    def evict_oldest(self) -> Optional[TraceBuffer]:
        """Unregister and return the oldest trace if there are more than ``max_traces``."""
        traces = self._traces
        with self._lock:
            if len(traces) <= self.max_traces:
                return None
            oldest = next(iter(traces))
            traces.pop(oldest, None)  # it may have finished meanwhile; closing it is harmless
            return oldest

    def discard(self, trace: TraceBuffer) -> None:
        self._traces.pop(trace, None)  # atomic

    def __len__(self) -> int:
        return len(self._traces)

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()
        for trace in self._traces:
            trace._forget_after_fork()
        self._traces.clear()
        self.lone._forget_after_fork()
        self.lone = TraceBuffer(0, self)


_REGISTRIES: weakref.WeakSet[OpenTraces] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for registry in list(_REGISTRIES):
        registry._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
