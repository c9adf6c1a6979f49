"""Distributed tracing headers: Datadog (``x-datadog-*``) and W3C (``traceparent``/``tracestate``).

``inject`` writes both styles; ``extract`` reads Datadog first, then W3C (Datadog's default
order) and returns a :class:`~ddagent.context.Context` to pass as ``child_of``. Malformed
headers are ignored, never raised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Optional, Union

from ddagent._logging import get_logger
from ddagent.context import Context
from ddagent.ids import LOW_64
from ddagent.span import Span

log = get_logger("ddagent.propagation")

HTTP_HEADER_TRACE_ID = "x-datadog-trace-id"
HTTP_HEADER_PARENT_ID = "x-datadog-parent-id"
HTTP_HEADER_SAMPLING_PRIORITY = "x-datadog-sampling-priority"
HTTP_HEADER_ORIGIN = "x-datadog-origin"
HTTP_HEADER_TAGS = "x-datadog-tags"
HTTP_HEADER_TRACEPARENT = "traceparent"
HTTP_HEADER_TRACESTATE = "tracestate"

TAGS_MAX_LENGTH = 512  # as DD_TRACE_X_DATADOG_TAGS_MAX_LENGTH
_TRACESTATE_MAX_MEMBERS = 32

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_DECIMAL = re.compile(r"^[0-9]{1,20}$")
_PRIORITY = re.compile(r"^-?[0-9]{1,3}$")
_TRACESTATE_UNSAFE = re.compile(r"[,;\x00-\x1f\x7f]")


class HTTPPropagator:
    """Reads and writes the trace context in HTTP headers."""

    @staticmethod
    def inject(context: Union[Context, Span], headers: MutableMapping[str, str]) -> None:
        """Write ``context`` (a Context or a span: its trace continues downstream) into headers."""
        try:
            ctx = context.context if isinstance(context, Span) else context
            _inject_datadog(ctx, headers)
            _inject_w3c(ctx, headers)
        except Exception:
            log.debug("ddagent: cannot inject trace headers", exc_info=True)

    @staticmethod
    def extract(headers: Mapping[str, str]) -> Optional[Context]:
        """The trace context found in ``headers`` (any key case), or None."""
        try:
            normalized = {str(k).lower(): v for k, v in headers.items()}
            datadog = _extract_datadog(normalized)
            w3c = _extract_w3c(normalized)
        except Exception:
            log.debug("ddagent: cannot extract trace headers", exc_info=True)
            return None
        if datadog is None:
            return w3c
        if w3c is not None and w3c.trace_id & LOW_64 == datadog.trace_id & LOW_64:
            datadog.tracestate = w3c.tracestate  # keep other vendors' state flowing
        return datadog


# -- Datadog ------------------------------------------------------------------------------


def _inject_datadog(ctx: Context, headers: MutableMapping[str, str]) -> None:
    headers[HTTP_HEADER_TRACE_ID] = str(ctx.trace_id & LOW_64)
    if ctx.span_id:
        headers[HTTP_HEADER_PARENT_ID] = str(ctx.span_id)
    if ctx.sampling_priority is not None:
        headers[HTTP_HEADER_SAMPLING_PRIORITY] = str(ctx.sampling_priority)
    if ctx.origin:
        headers[HTTP_HEADER_ORIGIN] = ctx.origin
    tags = dict(ctx.tags)
    high = ctx.trace_id >> 64
    if high:
        tags["_dd.p.tid"] = f"{high:016x}"
    encoded = ",".join(f"{k}={v}" for k, v in tags.items())
    if encoded and len(encoded) <= TAGS_MAX_LENGTH:
        headers[HTTP_HEADER_TAGS] = encoded


def _extract_datadog(headers: Mapping[str, str]) -> Optional[Context]:
    trace_id = _decimal_id(headers.get(HTTP_HEADER_TRACE_ID))
    if not trace_id:
        return None
    ctx = Context(trace_id, _decimal_id(headers.get(HTTP_HEADER_PARENT_ID)) or None)
    priority = headers.get(HTTP_HEADER_SAMPLING_PRIORITY, "").strip()
    if _PRIORITY.match(priority):
        ctx.sampling_priority = int(priority)
    ctx.origin = headers.get(HTTP_HEADER_ORIGIN) or None
    tags = _parse_datadog_tags(headers.get(HTTP_HEADER_TAGS, ""))
    tid = tags.pop("_dd.p.tid", None)
    if tid is not None and _HEX16.match(tid):
        ctx.trace_id |= int(tid, 16) << 64
    ctx.tags = tags
    return ctx


def _decimal_id(text: Optional[str]) -> int:
    if not text or not _DECIMAL.match(text.strip()):
        return 0
    value = int(text)
    return value if value <= LOW_64 else 0


def _parse_datadog_tags(text: str) -> dict[str, str]:
    if not text or len(text) > TAGS_MAX_LENGTH:
        return {}
    tags = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not value:
            return {}  # malformed: ignore the whole header, as Datadog's tracers do
        if key.startswith("_dd.p."):
            tags[key] = value
    return tags


# -- W3C trace context ----------------------------------------------------------------------


def _inject_w3c(ctx: Context, headers: MutableMapping[str, str]) -> None:
    if not ctx.span_id:
        return
    sampled = "01" if (ctx.sampling_priority or 0) > 0 else "00"
    headers[HTTP_HEADER_TRACEPARENT] = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{sampled}"
    dd = [f"p:{ctx.span_id:016x}"]
    if ctx.sampling_priority is not None:
        dd.insert(0, f"s:{ctx.sampling_priority}")
    if ctx.origin:
        dd.append("o:" + _tracestate_value(ctx.origin))
    for key, value in ctx.tags.items():
        dd.append(f"t.{key[len('_dd.p.'):]}:{_tracestate_value(value)}")
    members = ["dd=" + ";".join(dd)]
    if ctx.tracestate:
        members.extend(m for m in ctx.tracestate.split(",") if m.strip())
    headers[HTTP_HEADER_TRACESTATE] = ",".join(members[:_TRACESTATE_MAX_MEMBERS])


def _tracestate_value(value: str) -> str:
    # A tracestate value may not contain ',' or ';'; Datadog writes '=' as '~'.
    return _TRACESTATE_UNSAFE.sub("_", value.replace("=", "~"))


def _extract_w3c(headers: Mapping[str, str]) -> Optional[Context]:
    match = _TRACEPARENT.match(headers.get(HTTP_HEADER_TRACEPARENT, "").strip())
    if match is None:
        return None
    version, trace_hex, span_hex, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    sampled = int(flags, 16) & 1
    ctx = Context(trace_id, span_id, 1 if sampled else 0)
    others = []
    for member in headers.get(HTTP_HEADER_TRACESTATE, "").split(","):
        member = member.strip()
        if member.startswith("dd="):
            _apply_dd_tracestate(ctx, member[3:], sampled)
        elif member:
            others.append(member)
    ctx.tracestate = ",".join(others) or None
    return ctx


def _apply_dd_tracestate(ctx: Context, value: str, sampled: int) -> None:
    for field in value.split(";"):
        key, sep, val = field.partition(":")
        if not sep:
            continue
        if key == "s" and _PRIORITY.match(val):
            priority = int(val)
            # A priority that contradicts the sampled flag is stale: the flag wins.
            if (priority > 0) == bool(sampled):
                ctx.sampling_priority = priority
        elif key == "o" and val:
            ctx.origin = val.replace("~", "=")
        elif key.startswith("t.") and key != "t.tid" and len(key) > 2 and val:
            ctx.tags["_dd.p." + key[2:]] = val.replace("~", "=")
