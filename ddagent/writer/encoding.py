"""The msgpack ``/v0.4/traces`` payload: an array of traces, each an array of span maps.

Each trace is encoded once, when it is buffered, so the buffer can be bounded in bytes and a flush
only concatenates the pre-encoded traces behind an array header. ``/v0.3/traces`` takes the very
same body, so there is one encoder.

Spans are duck-typed (see docs/architecture.md, "what the writer reads"); a span whose attributes
have the wrong types raises :class:`EncodingError` rather than producing a body the agent rejects
(one bad span would otherwise make the agent answer 400 for the whole payload).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack

_UINT64_MAX = (1 << 64) - 1


class EncodingError(ValueError):
    """A span's attributes cannot be put on the wire as the agent expects."""


def _check_str(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise EncodingError(f"{field} must be a str, got {type(value).__name__}")
    return value


def _optional_str(field: str, value: object) -> str:
    # The agent tolerates nil for service/resource/type, but strings are what it expects.
    return "" if value is None else _check_str(field, value)


def _check_int(field: str, value: object) -> int:
    # bool is an int subclass, but the agent's decoder wants a real integer.
    if not isinstance(value, int) or isinstance(value, bool):
        raise EncodingError(f"{field} must be an int, got {type(value).__name__}")
    return value


def _span_id(field: str, value: object) -> int:
    value = _check_int(field, value)
    if not 0 <= value <= _UINT64_MAX:
        raise EncodingError(f"{field} must fit in 64 bits, got {value}")
    return value


def _meta(meta: object) -> dict[str, str]:
    if not isinstance(meta, dict):
        raise EncodingError(f"meta must be a dict, got {type(meta).__name__}")
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise EncodingError(f"meta[{key!r}] must be str -> str, got {type(value).__name__}")
    return meta


def _metrics(metrics: object) -> dict[str, float]:
    if not isinstance(metrics, dict):
        raise EncodingError(f"metrics must be a dict, got {type(metrics).__name__}")
    encoded = {}
    for key, value in metrics.items():
        # float() also turns bools into numbers and rejects ints too large for float64.
        if not isinstance(key, str) or not isinstance(value, (int, float)):
            raise EncodingError(
                f"metrics[{key!r}] must be str -> number, got {type(value).__name__}"
            )
        try:
            encoded[key] = float(value)
        except OverflowError as e:
            raise EncodingError(f"metrics[{key!r}] does not fit a float64") from e
    return encoded


def span_map(span: Any) -> dict[str, Any]:
    """The v0.4 map of one span, with every field checked and converted to its wire type."""
    error = span.error
    if isinstance(error, bool):
        error = int(error)
    if not span.span_id:
        raise EncodingError("span_id must be non-zero")
    return {
        "trace_id": _check_int("trace_id", span.trace_id) & _UINT64_MAX,
        "span_id": _span_id("span_id", span.span_id),
        "parent_id": 0 if span.parent_id is None else _span_id("parent_id", span.parent_id),
        "name": _check_str("name", span.name),
        "service": _optional_str("service", span.service),
        "resource": _optional_str("resource", span.resource),
        "type": _optional_str("span_type", span.span_type),
        "start": _check_int("start_ns", span.start_ns),
        "duration": _check_int("duration_ns", span.duration_ns),
        "error": _check_int("error", error),
        "meta": _meta(span.meta),
        "metrics": _metrics(span.metrics),
    }


def encode_trace(spans: Iterable[Any]) -> bytes:
    """One trace chunk as a msgpack array of span maps. Raises EncodingError on bad attributes."""
    maps = [span_map(span) for span in spans]
    try:
        return msgpack.packb(maps, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise EncodingError(f"msgpack cannot encode the trace: {e}") from e


def array_header(length: int) -> bytes:
    """The msgpack header of an array of ``length`` items (fixarray, array 16 or array 32)."""
    if length < 16:
        return bytes((0x90 | length,))
    if length <= 0xFFFF:
        return b"\xdc" + struct.pack(">H", length)
    return b"\xdd" + struct.pack(">I", length)


MAX_ARRAY_HEADER_SIZE = 5
"""The largest array header :func:`array_header` produces, for payload size accounting."""


def join_traces(encoded_traces: Sequence[bytes]) -> bytes:
    """The request body: pre-encoded traces behind one array header, without re-encoding."""
    return array_header(len(encoded_traces)) + b"".join(encoded_traces)
