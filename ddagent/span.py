"""Span: one timed operation, with its tags (``meta``) and numeric ``metrics``.

Creating and finishing spans is the tracer's hot path. :class:`PythonSpanCore` holds a span's
fields (``__slots__``) and the methods every traced operation calls: ``__init__``, ``set_tag``,
``set_metric``, ``finish`` and the ``with`` protocol. ``ddagent/_span.c`` is its native twin,
used when it is built (``DD_TRACE_NATIVE_SPAN=false`` keeps the Python one): it runs the usual
case of each method and hands every other call to the Python method here, so this file says
what a span does. :class:`Span` adds the rest of the API on top of whichever core is in use.

Times are integers: ``start_ns`` is epoch ns, the duration comes from the monotonic clock (never
negative). ``start``/``duration`` remain float-second properties for the seed's API.
"""

from __future__ import annotations

import math
import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Optional

from ddagent._logging import get_logger
from ddagent.config import env_bool
from ddagent.ext import errors
from ddagent.ids import LOW_64, random_bits

if TYPE_CHECKING:
    from ddagent.context import Context, TraceBuffer

log = get_logger("ddagent.span")

TRACEBACK_MAX_FRAMES = 30  # as ddtrace's DD_TRACE_SPAN_TRACEBACK_MAX_SIZE

_time_ns = time.time_ns
_monotonic_ns = time.monotonic_ns


class PythonSpanCore:
    """A span's fields and hot methods (see the module's docstring). The writer reads
    ``trace_id``, ``span_id``, ``parent_id``, ``name``, ``service``, ``resource``,
    ``span_type``, ``start_ns``, ``duration_ns``, ``error``, ``meta`` and ``metrics`` (see
    docs/architecture.md)."""

    __slots__ = (
        "trace_id", "span_id", "parent_id", "name", "service", "resource", "span_type",
        "start_ns", "duration_ns", "error", "meta", "metrics",
        "tracer", "_trace", "_parent", "_prev_active", "_start_monotonic_ns", "_finished",
    )

    def __init__(
        self,
        tracer: Any,
        name: str,
        service: Optional[str] = None,
        resource: Optional[str] = None,
        span_type: Optional[str] = None,
        trace_id: Optional[int] = None,
        span_id: Optional[int] = None,
        parent_id: Optional[int] = None,
        start: Optional[float] = None,
    ) -> None:
        # The seed's signature (tracer first). Tracers create spans through Tracer.start_span.
        # A plain attribute, not a property: integrations read it on every span they start.
        self.tracer: Any = tracer  # the tracer that started this span (None: built by hand)
        self.name = name
        self.service = service
        self.resource = name if resource is None else resource
        self.span_type = span_type
        if start is None:
            start_ns = self.start_ns = _time_ns()
            self._start_monotonic_ns = _monotonic_ns()
        else:
            start_ns = self.start_ns = int(start * 1e9)
            # A start in the future counts as now, so durations stay non-negative.
            self._start_monotonic_ns = _monotonic_ns() - max(0, _time_ns() - start_ns)
        # The ids as ddagent/ids.py lays them out; the trace id's top half is the start second.
        self.trace_id = trace_id or (
            ((start_ns // 1_000_000_000) << 96) | (random_bits() or 1))
        self.span_id = span_id or random_bits() or 1
        self.parent_id = parent_id
        self.error = 0
        self.meta: dict[str, str] = {}
        self.metrics: dict[str, float] = {}
        self.duration_ns: Optional[int] = None
        self._finished = False
        # Set by the tracer: the trace's buffer, or OpenTraces.lone for a root alone in its trace.
        self._trace: Optional[TraceBuffer] = None
        self._parent: Optional[Span] = None  # the local parent span, if any
        self._prev_active: Optional[Span] = None  # the active span when this one was activated

    @property
    def finished(self) -> bool:
        return self._finished

    def finish(self, finish_time: Optional[float] = None) -> None:
        """Close the span (once; later calls do nothing). A duration set by hand is kept."""
        if self._finished:
            return
        self._finished = True
        if self.duration_ns is None:
            if finish_time is None:
                # The monotonic clock never goes back: no clamp needed.
                self.duration_ns = _monotonic_ns() - self._start_monotonic_ns
            else:
                self.duration_ns = max(0, int(finish_time * 1e9) - self.start_ns)
        if self.tracer is not None:
            self.tracer._on_span_finish(self)  # never raises

    def set_tag(self, key: str, value: Any) -> None:
        """Set a string tag (any value is stringified, as the seed did)."""
        try:
            self.meta[key] = value if type(value) is str else str(value)
        except Exception:
            log.debug("ddagent: cannot stringify the value of tag %r", key, exc_info=True)

    def set_metric(self, key: str, value: Any) -> None:
        """Set a numeric metric, stored as a float (the wire type, so the encoder's fast path
        applies). Non-numbers, NaN and infinities are dropped with a debug log."""
        if type(value) is not float:
            try:
                value = float(value)
            except (TypeError, ValueError, OverflowError):
                # The type, not the value: formatting a user's object may raise or be huge.
                log.debug("ddagent: dropping metric %r: a %s is not a number", key,
                          type(value).__name__)
                return
        if not math.isfinite(value):
            log.debug("ddagent: dropping metric %r: %r is not finite", key, value)
            return
        self.metrics[key] = value

    def __enter__(self) -> Span:
        return self  # type: ignore[return-value]  # a core is only ever a Span's

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if exc_type is not None:
            self.set_exc_info(exc_type, exc, tb)  # type: ignore[attr-defined]  # Span's
        self.finish()


def _native_core() -> Optional[type[PythonSpanCore]]:
    """The native twin of :class:`PythonSpanCore`, unless it is not built or switched off."""
    if env_bool("DD_TRACE_NATIVE_SPAN") is False:
        return None
    try:
        from ddagent import _span
    except ImportError:  # installed without a C compiler, or a Python it was not built for
        return None
    _span.use_python_twin(PythonSpanCore)
    return _span.SpanCore  # type: ignore[return-value]  # its twin, field for field


if TYPE_CHECKING:  # type checkers see the Python core, which the native one mirrors
    SpanCore = PythonSpanCore
else:
    SpanCore = _native_core() or PythonSpanCore
    """The span core in use: native where it can be."""


def native_twin(name: str, register: str, *twin: Any) -> Any:
    """The native core ``_span.<name>`` once ``_span.<register>(*twin)`` has given it its Python
    twin, or None where the native span core is not in use: the tracer's and the trace buffer's
    native cores go with it (they create and read native spans)."""
    if SpanCore is PythonSpanCore:
        return None
    from ddagent import _span

    getattr(_span, register)(*twin)
    return getattr(_span, name)


class Span(SpanCore):
    """A timed operation: the core's fields and hot methods, and the rest of the seed's API."""

    __slots__ = ()

    # -- time, in the seed's float seconds ---------------------------------------------------

    @property
    def start(self) -> float:
        return self.start_ns / 1e9

    @start.setter
    def start(self, value: float) -> None:
        self.start_ns = int(value * 1e9)

    @property
    def duration(self) -> Optional[float]:
        return None if self.duration_ns is None else self.duration_ns / 1e9

    @duration.setter
    def duration(self, value: Optional[float]) -> None:
        self.duration_ns = None if value is None else int(value * 1e9)

    # -- tags and metrics ------------------------------------------------------------------

    def set_tags(self, tags: Optional[dict[str, Any]]) -> None:
        if tags:
            for key, value in tags.items():
                self.set_tag(key, value)

    set_meta = SpanCore.set_tag
    set_metas = set_tags

    def get_tag(self, key: str) -> Optional[str]:
        return self.meta.get(key)

    def set_metrics(self, metrics: Optional[dict[str, Any]]) -> None:
        if metrics:
            for key, value in metrics.items():
                self.set_metric(key, value)

    def get_metric(self, key: str) -> Optional[float]:
        return self.metrics.get(key)

    # -- errors --------------------------------------------------------------------------

    def set_traceback(self, limit: int = TRACEBACK_MAX_FRAMES) -> None:
        """Record the exception being handled, if any."""
        exc_type, exc, tb = sys.exc_info()
        if exc_type is not None:
            self.set_exc_info(exc_type, exc, tb, limit)

    def set_exc_info(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
        limit: int = TRACEBACK_MAX_FRAMES,
    ) -> None:
        """Mark the span as an error: ``error.message``, ``error.type`` and a bounded stack."""
        if exc_type is None or exc is None:
            return
        self.error = 1
        try:
            message = str(exc)
        except Exception:
            message = f"<unprintable {exc_type.__name__}>"
        try:
            import traceback  # on the first error: ~1 ms of start-up otherwise

            # The innermost frames are the useful ones, so the limit counts from the bottom.
            stack = "".join(traceback.format_exception(exc_type, exc, tb, limit=-limit))
        except Exception:
            stack = ""
        self.meta[errors.ERROR_MSG] = message
        self.meta[errors.ERROR_TYPE] = f"{exc_type.__module__}.{exc_type.__qualname__}"
        self.meta[errors.ERROR_STACK] = stack

    # -- sampling ------------------------------------------------------------------------

    def _trace_state(self) -> Optional[TraceBuffer]:
        """The buffer holding the trace's state (a root alone in its trace gets one now);
        None for a span built outside any tracer."""
        if self.tracer is None or self._trace is None:
            return self._trace
        trace: TraceBuffer = self.tracer._trace_of(self)
        return trace

    @property
    def sampled(self) -> bool:
        """The seed's flag: whether the trace is kept (forces the sampling decision)."""
        trace = self._trace_state()
        if trace is None:
            return True
        if trace.priority is None:
            self.tracer._decide_sampling(trace)
        return trace.priority is None or trace.priority > 0

    @sampled.setter
    def sampled(self, keep: bool) -> None:
        # A sampler written for the seed sets this on the root: a local user decision.
        self.set_sampling_decision(2 if keep else -1, "-3")

    def set_sampling_decision(self, priority: int, mechanism: str) -> None:
        """Record the trace's sampling priority and the mechanism (``_dd.p.dm``) that chose it."""
        trace = self._trace_state()
        if trace is not None:
            trace.set_decision(priority, mechanism)

    @property
    def context(self) -> Context:
        """What propagation needs to continue this trace elsewhere (decides sampling first)."""
        from ddagent.context import Context

        trace = self._trace_state()
        if trace is None:
            return Context(self.trace_id, self.span_id)
        if trace.priority is None:
            self.tracer._decide_sampling(trace)
        return Context(self.trace_id, self.span_id, trace.priority, trace.origin,
                       dict(trace.tags), trace.tracestate)

    # -- display -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The span as the agent receives it (low 64 bits of the trace id, times in ns)."""
        d: dict[str, Any] = {
            "trace_id": self.trace_id & LOW_64,
            "span_id": self.span_id,
            "parent_id": self.parent_id or 0,
            "name": self.name,
            "service": self.service,
            "resource": self.resource,
            "type": self.span_type or "",
            "start": self.start_ns,
            "error": self.error,
        }
        if self.duration_ns is not None:
            d["duration"] = self.duration_ns
        if self.meta:
            d["meta"] = dict(self.meta)
        if self.metrics:
            d["metrics"] = dict(self.metrics)
        return d

    def pprint(self) -> str:
        """A multi-line description for debug logs."""
        end = None if self.duration_ns is None else (self.start_ns + self.duration_ns) / 1e9
        duration = None if self.duration is None else f"{self.duration:f}s"
        lines = [
            ("name", self.name), ("id", self.span_id), ("trace_id", self.trace_id),
            ("parent_id", self.parent_id), ("service", self.service),
            ("resource", self.resource), ("type", self.span_type), ("start", self.start),
            ("end", end), ("duration", duration), ("error", self.error),
            ("tags", ""),
        ]
        text = [f"{label:>10} {value}" for label, value in lines]
        text.extend(f"    {key}:{value}" for key, value in sorted(self.meta.items()))
        text.extend(f"    {key}:{value}" for key, value in sorted(self.metrics.items()))
        return "\n".join(text)

    def __repr__(self) -> str:
        return (f"<Span(id={self.span_id},trace_id={self.trace_id},"
                f"parent_id={self.parent_id},name={self.name})>")
