"""Tracer: starts spans, keeps track of the active one, and hands finished traces to the writer.

The path of a span: ``trace()``/``start_span()`` creates it in its trace's buffer
(ddagent/context.py); ``Span.finish`` comes back to ``_on_span_finish``, which restores the
previously active span and, once the buffer yields a chunk, hands it to ``_send_chunk``, which
decides sampling, adds the chunk-level tags and calls ``writer.write(chunk)``. Nothing here raises
into the application: internal errors are counted (``tracer.errors``) and logged rate-limited.

``trace()`` and ``_on_span_finish`` run for every span: they are :class:`PythonTracerCore`'s, and
the native span core has their twin in C (see that class).
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import threading
import time
import urllib.parse
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union, overload

from ddagent import config as config_module
from ddagent._logging import ERROR, RateLimitedLog, get_logger
from ddagent.context import ACTIVE_SPAN, Context, OpenTraces, TraceBuffer
from ddagent.sampler import AUTO_KEEP, MECHANISM_DEFAULT, PrioritySampler, RateSampler
from ddagent.span import Span, native_twin
from ddagent.stats import STATS

log = get_logger("ddagent.tracer")

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FLUSH_TIMEOUT = 3.0  # seconds to send what is buffered at exit (DD_TRACE_SHUTDOWN_TIMEOUT)

def _new_runtime_id() -> str:
    """A random (version 4) UUID as 32 hex digits; the ``uuid`` module would add ~2.7 ms of
    start-up (-X importtime)."""
    bits = int.from_bytes(os.urandom(16), "big")
    bits = (bits & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    return f"{bits:032x}"


_runtime_id = _new_runtime_id()
_FINISHED_ONE_SPAN = STATS.tally("spans.finished")  # single-span chunks, the usual case
_ADOPT_LOCK = threading.Lock()

# The chunk root's tags, by the trace id's high half (_dd.p.tid; the creation second, so one
# entry serves a second of traces), and its metrics by sampling priority: one dict update each
# instead of formatting and storing them one by one per trace. Metrics are floats, their wire
# type. A forked child clears both: it has its own runtime id and pid.
_ROOT_META: dict[int, dict[str, str]] = {}
_ROOT_METRICS: dict[int, dict[str, float]] = {}


def _root_meta(high: int) -> dict[str, str]:
    meta = {"language": "python", "runtime-id": _runtime_id}
    if high:
        meta["_dd.p.tid"] = f"{high:016x}"
    if len(_ROOT_META) >= 16:  # old seconds are not coming back
        _ROOT_META.clear()
    _ROOT_META[high] = meta
    return meta


def _root_metrics(priority: int) -> dict[str, float]:
    metrics = {"process_id": float(os.getpid()), "_sampling_priority_v1": float(priority)}
    if len(_ROOT_METRICS) < 16:  # the four priorities, and whatever an upstream sent
        _ROOT_METRICS[priority] = metrics
    return metrics


def _new_process_identity() -> None:
    global _runtime_id
    _runtime_id = _new_runtime_id()
    _ROOT_META.clear()
    _ROOT_METRICS.clear()


class PythonTracerCore:
    """The two calls every span makes into its tracer: ``trace()`` and ``_on_span_finish``.

    ``ddagent/_span.c``'s ``TracerCore`` is its native twin, used with the native span core: it
    runs the usual case of both (a span started without ``child_of``; a finished span whose
    trace needs only the default sampler and the chunk tags) and hands every other call to the
    methods here, or to :meth:`Tracer._new_span` and :meth:`Tracer._send_chunk`, so this class
    says what the tracer does. The fields both read on every span are slots (members in C).
    """

    __slots__ = (
        "config", "enabled", "_open_traces", "sampler", "agent_sampler", "_writer", "_span_tags",
        "debug_logging", "chunk_observers", "_shut_down",
    )
    config: config_module.Config
    enabled: bool
    _open_traces: OpenTraces
    sampler: Any
    agent_sampler: PrioritySampler
    _writer: Any
    _span_tags: tuple[tuple[str, str], ...]
    debug_logging: bool
    chunk_observers: list[Callable[[list[Span]], None]]
    _shut_down: bool

    if TYPE_CHECKING:  # Tracer's, called from here
        def _new_span(self, name: str, parent: Union[Span, Context], service: Optional[str],
                      resource: Optional[str], span_type: Optional[str]) -> Span: ...

        def _send_chunk(self, chunk: list[Span], root: Optional[Span],
                        trace: Optional[TraceBuffer]) -> None: ...

        def _internal_error(self, doing: str, error: Optional[BaseException] = None) -> None: ...

    def trace(
        self,
        name: str,
        service: Optional[str] = None,
        resource: Optional[str] = None,
        span_type: Optional[str] = None,
        child_of: Union[Span, Context, None] = None,
    ) -> Span:
        """Start a span, child of ``child_of`` or else of the active span, and make it active.

        Use it as a context manager, or call ``finish()``.
        """
        active = ACTIVE_SPAN.get()
        parent = active if child_of is None else child_of
        if parent is None:  # a new trace, here rather than in _new_span: one call less per trace
            span = Span(self, name, service or self.config.service, resource, span_type)
            span._trace = self._open_traces.lone
        else:
            span = self._new_span(name, parent, service, resource, span_type)
        span._prev_active = active
        ACTIVE_SPAN.set(span)
        return span

    def _on_span_finish(self, span: Span) -> None:
        try:
            if ACTIVE_SPAN.get() is span:
                previous = span._prev_active
                while previous is not None and previous._finished:
                    previous = previous._prev_active
                ACTIVE_SPAN.set(previous)
            trace = span._trace
            if trace is None:  # built by hand and given this tracer: nothing to send
                return
            if trace is self._open_traces.lone:  # a root alone in its trace: no buffer, no lock
                self._send_chunk([span], span, None)
                return
            root = trace.root  # span_finished forgets it when the trace completes
            chunk = trace.span_finished(span)
            if chunk:
                self._send_chunk(chunk, root, trace)
        except Exception:
            self._internal_error("finishing a span")


if TYPE_CHECKING:  # type checkers see the Python core, which the native one mirrors
    TracerCore = PythonTracerCore
else:
    TracerCore = native_twin(
        "TracerCore", "use_tracer_twin", PythonTracerCore, Span, ACTIVE_SPAN, _ROOT_META,
        _ROOT_METRICS, _FINISHED_ONE_SPAN) or PythonTracerCore


class Tracer(TracerCore):
    """Creates spans and sends the finished traces to a Datadog agent through ``writer``."""

    DEFAULT_HOSTNAME = "localhost"
    DEFAULT_PORT = 8126

    def __init__(
        self,
        config: Optional[config_module.Config] = None,
        max_open_traces: int = 10_000,
    ) -> None:
        self.config = config if config is not None else config_module.Config.from_env()
        self.enabled = self.config.enabled
        self.debug_logging = self.config.debug
        if self.config.debug:
            _enable_debug_logging()
        self.agent_url = self.config.agent_url
        # The agent's rates reach this sampler even while a user sampler is installed.
        self.agent_sampler = PrioritySampler(self.config.env)
        self.sampler: Any = (
            self.agent_sampler if self.config.sample_rate is None
            else RateSampler(self.config.sample_rate)
        )
        self._open_traces = OpenTraces(max_open_traces, self.config.partial_flush_min_spans)
        self._writer: Any = None
        self._own_writer = False  # whether _writer is the AgentWriter this tracer built
        self._writer_lock = threading.Lock()
        self._shut_down = False
        self._log = RateLimitedLog(log)
        self._span_tags = self._global_tags()
        # Called with every chunk before the writer gets it; they must not raise.
        self.chunk_observers: list[Callable[[list[Span]], None]] = []
        _LIVE_TRACERS.add(self)

    # -- the writer, built on first use so that importing ddagent starts no thread ------------

    @property
    def writer(self) -> Any:
        writer = self._writer
        if writer is None:
            with self._writer_lock:
                if self._writer is None:
                    from ddagent.writer.agent import AgentWriter

                    self._writer = AgentWriter(
                        self.agent_url,
                        timeout=self.config.agent_timeout,
                        flush_interval=self.config.writer_interval,
                        on_rate_by_service=self.agent_sampler.update_rates,
                    )
                    self._own_writer = True
                writer = self._writer
        return writer

    @writer.setter
    def writer(self, writer: Any) -> None:
        self._writer = writer
        self._own_writer = False

    # -- configuration -------------------------------------------------------------------

    def configure(
        self,
        enabled: Optional[bool] = None,
        hostname: Optional[str] = None,
        port: Union[int, str, None] = None,
        sampler: Any = None,
        writer: Any = None,
    ) -> None:
        """Change what is given; everything else stays as it is."""
        if enabled is not None:
            self.enabled = enabled
        if sampler is not None:
            self.sampler = sampler
        if hostname is not None or port is not None:
            self._set_agent_address(hostname, port)
        if writer is not None:
            self.writer = writer

    def _set_agent_address(self, hostname: Optional[str], port: Union[int, str, None]) -> None:
        current = urllib.parse.urlsplit(self.agent_url)
        if current.scheme in ("http", "https"):
            old_host, old_port = current.hostname, current.port
        else:
            old_host, old_port = self.DEFAULT_HOSTNAME, self.DEFAULT_PORT
        if port is not None:
            try:
                port = int(port)
                if not 0 < port < 65536:
                    raise ValueError(port)
            except (TypeError, ValueError):
                log.warning("ddagent: ignoring configure(port=%r): expected a port number "
                            "between 1 and 65535", port)
                port = None
        self.agent_url = config_module.http_url(
            hostname or old_host or self.DEFAULT_HOSTNAME, port or old_port or self.DEFAULT_PORT)
        if self._own_writer:
            # The next write builds a writer for the new address; the old one sends what it
            # holds in the background, so the caller never waits on the network.
            old, self._writer, self._own_writer = self._writer, None, False
            threading.Thread(target=old.stop, args=(EXIT_FLUSH_TIMEOUT,), daemon=True,
                             name="ddagent-writer-retire").start()

    def set_service_info(self, service: str, app: str, app_type: str) -> None:
        """Accepted for the seed's API; Datadog no longer uses app metadata."""
        log.debug("ddagent: ignoring service info %s (app=%s, app_type=%s)", service, app,
                  app_type)

    def _global_tags(self) -> tuple[tuple[str, str], ...]:
        tags = dict(self.config.tags)
        if self.config.env:
            tags["env"] = self.config.env
        return tuple(tags.items())

    # -- creating spans ------------------------------------------------------------------

    def start_span(
        self,
        name: str,
        child_of: Union[Span, Context, None] = None,
        service: Optional[str] = None,
        resource: Optional[str] = None,
        span_type: Optional[str] = None,
        activate: bool = False,
    ) -> Span:
        """Start a span under ``child_of`` (a new trace if None); active only if ``activate``."""
        if child_of is None:
            span = Span(self, name, service or self.config.service, resource, span_type)
            span._trace = self._open_traces.lone
        else:
            span = self._new_span(name, child_of, service, resource, span_type)
        if activate:
            span._prev_active = ACTIVE_SPAN.get()
            ACTIVE_SPAN.set(span)
        return span

    def _new_span(
        self,
        name: str,
        parent: Union[Span, Context],
        service: Optional[str],
        resource: Optional[str],
        span_type: Optional[str],
    ) -> Span:
        """A span under a local or remote parent, counted open in the trace's buffer."""
        if type(parent) is Span or isinstance(parent, Span):
            trace = parent._trace
            if trace is None:  # a span built by hand, outside any tracer
                trace = TraceBuffer(parent.trace_id, self._open_traces)
            elif trace.closed_reason is not None:  # evicted, or inherited across fork()
                trace = TraceBuffer.continuing(trace, self._open_traces)
            elif parent.tracer is not None and trace is parent.tracer._open_traces.lone:
                trace = parent.tracer._trace_of(parent)
            span = Span(self, name, service or parent.service, resource, span_type,
                        parent.trace_id, None, parent.span_id)
            span._parent = parent
        else:
            trace = TraceBuffer.continuing(parent, self._open_traces)
            span = Span(self, name, service or self.config.service, resource, span_type,
                        parent.trace_id, None, parent.span_id)
        span._trace = trace
        trace.span_started(span)
        return span

    def _trace_of(self, span: Span) -> TraceBuffer:
        """``span``'s trace buffer; a root alone in its trace gets one now (see
        ``OpenTraces.lone``)."""
        trace = span._trace
        if trace is self._open_traces.lone:
            with _ADOPT_LOCK:  # two threads adopting the same root must share one buffer
                trace = span._trace
                if trace is self._open_traces.lone:
                    trace = span._trace = TraceBuffer.adopting(span, self._open_traces)
        return trace  # type: ignore[return-value]

    def current_span(self) -> Optional[Span]:
        """The active span of this thread or asyncio task."""
        return ACTIVE_SPAN.get()

    def current_root_span(self) -> Optional[Span]:
        """The local root of the active span's trace."""
        span = ACTIVE_SPAN.get()
        if span is None or span._trace is None or span._trace.root is None:
            return span  # built by hand, or a root alone in its trace
        return span._trace.root

    def clear_current_span(self) -> None:
        ACTIVE_SPAN.set(None)

    # -- finishing spans and writing traces ------------------------------------------------

    def _send_chunk(self, chunk: list[Span], root: Optional[Span],
                    trace: Optional[TraceBuffer]) -> None:
        """Sample, tag and write a chunk of finished spans.

        ``trace`` is None for a root alone in its trace (``root``, the chunk's only span), sent
        without a buffer; otherwise ``root`` is the trace's local root, read before the
        completed buffer let go of it.
        """
        if len(chunk) == 1:
            _FINISHED_ONE_SPAN()
        else:
            STATS.incr("spans.finished", len(chunk))
        if not self.enabled or self._shut_down:
            STATS.incr("spans.dropped.disabled" if not self.enabled
                       else "spans.dropped.shutdown", len(chunk))
            return
        first = chunk[0]
        meta = first.meta
        if trace is None and root is not None and self.sampler is self.agent_sampler:
            # The trace state a buffer would hold: the priority and _dd.p.dm (set_decision).
            priority, mechanism = self.agent_sampler.decide(root)
            if priority > 0:
                meta["_dd.p.dm"] = mechanism
        else:
            if trace is None:  # a user's sampler records its decision on the trace's state
                trace = self._trace_of(first)
            if trace.priority is None:
                if root is not None and self.sampler is self.agent_sampler:
                    trace.set_decision(*self.agent_sampler.decide(root))
                else:
                    self._decide_sampling(trace, root)
            priority = trace.priority
            if trace.tags:
                meta.update(trace.tags)
            if trace.origin:
                meta["_dd.origin"] = trace.origin
        root_meta = _ROOT_META.get(first.trace_id >> 64)
        if root_meta is None:
            root_meta = _root_meta(first.trace_id >> 64)
        meta.update(root_meta)
        first.metrics.update(_ROOT_METRICS.get(priority) or _root_metrics(priority))
        self._tag_spans(chunk)
        if self.debug_logging:
            log.debug("ddagent: writing %d spans (enabled:%s)\n%s", len(chunk), self.enabled,
                      "\n\n".join(span.pprint() for span in chunk))
        for observe in self.chunk_observers:  # usually none; ddagent/summary.py adds one
            observe(chunk)
        writer = self._writer
        if writer is None:  # built on the first trace
            writer = self.writer
        writer.write(chunk)

    def _decide_sampling(self, trace: TraceBuffer, root: Optional[Span] = None) -> None:
        """Decide the trace's priority once, on its local root (an upstream decision stands).

        ``root`` defaults to the trace's; the finishing path passes the one it read before the
        completed buffer let go of it."""
        if trace.priority is not None:
            return
        if root is None:
            root = trace.root
        if root is not None:
            try:
                self.sampler.sample(root)
            except Exception:
                self._internal_error("sampling")
        if trace.priority is None:  # a sampler written for the seed may decide nothing
            trace.set_decision(AUTO_KEEP, MECHANISM_DEFAULT)

    def _tag_spans(self, chunk: list[Span]) -> None:
        """Per-span tags: ``_dd.top_level``, the global tags, ``version``."""
        span_tags = self._span_tags
        service, version = self.config.service, self.config.version
        for span in chunk:
            parent = span._parent
            if parent is None or parent.service != span.service:
                span.metrics["_dd.top_level"] = 1.0
            if span_tags or version:  # usually neither: the loop then costs only the above
                span_meta = span.meta
                for key, value in span_tags:
                    if key not in span_meta:
                        span_meta[key] = value
                if version and span.service == service and "version" not in span_meta:
                    span_meta["version"] = version

    def _internal_error(self, doing: str, error: Optional[BaseException] = None) -> None:
        """Count and log (rate-limited) the exception being handled, or ``error``."""
        STATS.incr("tracer.errors")
        self._log.log(ERROR, doing, "ddagent: internal error while %s", doing,
                      exc_info=error if error is not None else True)

    # -- flushing ----------------------------------------------------------------------

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Send what the writer holds now; True if everything was sent within ``timeout``."""
        if self._writer is None:
            return True
        try:
            return bool(self._writer.flush(timeout))
        except Exception:
            self._internal_error("flushing")
            return False

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Send what is buffered (within ``timeout``) and stop; later traces are dropped."""
        self._shut_down = True
        writer = self._writer
        if writer is not None:
            try:
                writer.stop(timeout)
            except Exception:
                self._internal_error("shutting down")

    def stats(self) -> dict[str, int]:
        """ddagent's counters: spans created, finished, sent, dropped by reason, errors."""
        return STATS.snapshot()

    # -- the decorator -------------------------------------------------------------------

    @overload
    def wrap(self, name: F) -> F: ...

    @overload
    def wrap(
        self,
        name: Optional[str] = None,
        service: Optional[str] = None,
        resource: Optional[str] = None,
        span_type: Optional[str] = None,
    ) -> Callable[[F], F]: ...

    def wrap(self, name=None, service=None, resource=None, span_type=None):  # type: ignore[no-untyped-def]
        """Trace every call of the decorated function (``@tracer.wrap`` or ``@tracer.wrap(...)``).

        The span is named ``module.function`` unless ``name`` is given. For generators, async
        generators and coroutines it covers the whole iteration or await.
        """
        if callable(name):
            return self.wrap()(name)

        def decorator(func: F) -> F:
            import inspect  # here: ~5 ms of start-up otherwise (-X importtime)

            span_name = name or f"{func.__module__}.{func.__name__}"
            start = functools.partial(self.trace, span_name, service, resource, span_type)
            if inspect.isasyncgenfunction(func):
                wrapper = _traced_async_generator(self, func, span_name, service, resource,
                                                  span_type)
            elif inspect.isgeneratorfunction(func):
                wrapper = _traced_generator(self, func, span_name, service, resource, span_type)
            elif inspect.iscoroutinefunction(func):
                async def wrapper(*args: Any, **kwargs: Any) -> Any:
                    with start():
                        return await func(*args, **kwargs)
            else:
                def wrapper(*args: Any, **kwargs: Any) -> Any:
                    with start():
                        return func(*args, **kwargs)
            return functools.wraps(func)(wrapper)  # type: ignore[return-value]

        return decorator


class _Suspendable:
    """A span that is active only while its generator runs, not while the consumer does."""

    __slots__ = ("span", "_outer")

    def __init__(self, tracer: Tracer, name: str, service: Optional[str],
                 resource: Optional[str], span_type: Optional[str]) -> None:
        self._outer = ACTIVE_SPAN.get()
        self.span = tracer.start_span(name, self._outer, service, resource, span_type)

    def resume(self) -> None:
        self._outer = ACTIVE_SPAN.get()
        ACTIVE_SPAN.set(self.span)

    def suspend(self) -> None:
        ACTIVE_SPAN.set(self._outer)

    def end(self, error: Optional[BaseException]) -> None:
        self.suspend()
        if error is not None and not isinstance(error, GeneratorExit):
            self.span.set_exc_info(type(error), error, error.__traceback__)
        self.span.finish()


def _traced_generator(tracer: Tracer, func: Callable[..., Any],
                      *span_args: Any) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        traced = _Suspendable(tracer, *span_args)
        error: Optional[BaseException] = None
        try:
            traced.resume()
            gen = func(*args, **kwargs)
            sent: Any = None
            thrown: Optional[BaseException] = None
            while True:
                try:
                    item = gen.send(sent) if thrown is None else gen.throw(thrown)
                except StopIteration as stop:
                    return stop.value
                traced.suspend()
                sent = thrown = None
                try:
                    sent = yield item
                except GeneratorExit:
                    traced.resume()
                    gen.close()
                    raise
                except BaseException as e:  # thrown in by the consumer: pass it on
                    thrown = e
                traced.resume()
        except BaseException as e:
            error = e
            raise
        finally:
            traced.end(error)

    return wrapper


def _traced_async_generator(tracer: Tracer, func: Callable[..., Any],
                            *span_args: Any) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        traced = _Suspendable(tracer, *span_args)
        error: Optional[BaseException] = None
        try:
            traced.resume()
            agen = func(*args, **kwargs)
            sent: Any = None
            thrown: Optional[BaseException] = None
            while True:
                try:
                    if thrown is None:
                        item = await agen.asend(sent)
                    else:
                        item = await agen.athrow(thrown)
                except StopAsyncIteration:
                    return
                traced.suspend()
                sent = thrown = None
                try:
                    sent = yield item
                except GeneratorExit:
                    traced.resume()
                    await agen.aclose()
                    raise
                except BaseException as e:
                    thrown = e
                traced.resume()
        except BaseException as e:
            error = e
            raise
        finally:
            traced.end(error)

    return wrapper


def _enable_debug_logging() -> None:
    import logging

    logger = logging.getLogger("ddagent")
    logger.setLevel(logging.DEBUG)
    if not logger.handlers and not logging.getLogger().handlers:
        logger.addHandler(logging.StreamHandler())


_LIVE_TRACERS: weakref.WeakSet[Tracer] = weakref.WeakSet()


def _shutdown_at_exit() -> None:
    tracers = list(_LIVE_TRACERS)
    timeout = max((getattr(t.config, "shutdown_timeout", EXIT_FLUSH_TIMEOUT) for t in tracers),
                  default=EXIT_FLUSH_TIMEOUT)
    deadline = time.monotonic() + timeout
    for t in tracers:
        t.shutdown(max(0.0, deadline - time.monotonic()))


def _flush_when_multiprocessing_child_exits() -> None:
    # A multiprocessing child ends with os._exit(), which skips atexit, but it runs its
    # multiprocessing finalizers. It clears them after the fork, so register through an
    # after-forker, which multiprocessing runs once it has cleared them.
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.register_after_fork(_shutdown_at_exit, lambda shutdown: mp_util.Finalize(
            None, shutdown, exitpriority=100))


atexit.register(_shutdown_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_process_identity)
    os.register_at_fork(after_in_child=_flush_when_multiprocessing_child_exits)

tracer = Tracer()
