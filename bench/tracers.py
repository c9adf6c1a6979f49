"""Each contender's tracer, started the way its documentation says, side by side.

Every tracer exports to the live local test agent the runner started (its URL comes in the
environment: ``DD_TRACE_AGENT_URL`` for the Datadog tracers, ``BENCH_OTLP_URL`` for OpenTelemetry),
so encoding and sending are part of what is measured. The scenarios only use the small interface
below, so each contender does exactly the same work.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, ContextManager

from bench.child import Unavailable

CONTENDERS = ("baseline", "ddagent", "ddtrace", "otel")
LABELS = {
    "baseline": "no tracer",
    "ddagent": "ddagent",
    "ddtrace": "ddtrace",
    "otel": "OpenTelemetry",
}


class Tracing:
    """What a scenario may do with a tracer: open a span, tag it, flush everything to the agent."""

    def __init__(
        self,
        span: Callable[[str], ContextManager[Any]],
        tag: Callable[[Any, str, str], None],
        flush: Callable[[], None],
        tracer: Any = None,
    ) -> None:
        self.span = span  # span(name) -> context manager whose value is the (child) span
        self.tag = tag  # tag(span, key, value)
        self.flush = flush  # returns once everything finished so far was sent
        self.tracer = tracer  # the native tracer or provider, for integrations that want it


def start(contender: str) -> Tracing:
    """Start ``contender``'s tracer in this process (raises Unavailable if it cannot yet)."""
    return _STARTERS[contender]()


def _baseline() -> Tracing:
    # The same calls, doing nothing: what the loop itself costs.
    return Tracing(span=lambda name: contextlib.nullcontext(), tag=_no_tag, flush=_no_flush)


def _ddagent() -> Tracing:
    try:
        from ddagent.tracer import tracer
    except ImportError as e:
        raise Unavailable(f"ddagent tracer not importable yet ({e})") from e
    return Tracing(
        span=tracer.trace, tag=lambda span, k, v: span.set_tag(k, v),
        flush=lambda: tracer.flush(30.0), tracer=tracer,
    )


def _ddtrace() -> Tracing:
    from ddtrace.trace import tracer

    return Tracing(
        span=tracer.trace, tag=lambda span, k, v: span.set_tag(k, v), flush=tracer.flush,
        tracer=tracer,
    )


def _otel() -> Tracing:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    endpoint = os.environ["BENCH_OTLP_URL"] + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)  # the instrumentors use the global provider
    tracer = provider.get_tracer("bench")
    return Tracing(
        span=tracer.start_as_current_span,
        tag=lambda span, k, v: span.set_attribute(k, v),
        flush=provider.force_flush,
        tracer=provider,
    )


def _no_tag(span: Any, key: str, value: str) -> None:
    pass


def _no_flush() -> None:
    pass


_STARTERS: dict[str, Callable[[], Tracing]] = {
    "baseline": _baseline,
    "ddagent": _ddagent,
    "ddtrace": _ddtrace,
    "otel": _otel,
}
