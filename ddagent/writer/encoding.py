"""The msgpack ``/v0.4/traces`` payload: an array of traces, each an array of span maps.

Each trace is encoded once, when it is buffered, so the buffer can be bounded in bytes and a flush
only concatenates the pre-encoded traces behind an array header. ``/v0.3/traces`` takes the very
same body, so there is one encoder.

Encoding is optimistic, because it runs for every trace on the application's thread: the Span
API already stores wire types (``set_tag`` makes strings, ``set_metric`` floats), so
:func:`encode_trace` packs the fields as they are. Two kinds of bad values remain, both from code
that writes a span's attributes or dicts by hand:

- values msgpack cannot pack at all (an object, a 128-bit span id): ``encode_trace`` then
  converts each field as :func:`wire_map` says, or raises :class:`EncodingError`;
- values msgpack packs but the agent refuses (an int in ``meta``, a bool ``error``): the agent
  answers 400 for the whole payload, and the writer then calls :func:`repair_trace` on each of its
  traces, which converts what it can and raises EncodingError for the rest, so one bad span
  costs only its own trace.

Checking every field up front cost more than packing (callgrind, a single-span trace: the checks
were 40% of encoding); the repair costs nothing until an agent refuses a payload.

:func:`encode_trace` is the native encoder (``_encoder.c``, built when ddagent is installed with a
C compiler) where it is available, else :func:`encode_trace_python`. Both give the same bytes; the
native one packs the usual spans straight from their attributes and hands anything unusual to the
Python one (callgrind, a usual single-span trace: ~3.4k instructions, ~20k for the Python one).
The writer's buffer encodes with the native one without this function (see
:data:`native_encoder`). ``DD_TRACE_NATIVE_ENCODER=false`` keeps the Python one, and the writer's
Python buffer and write() with it.
"""

from __future__ import annotations

import functools
import struct
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Callable

import msgpack

from ddagent.config import env_bool

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


def wire_map(fields: dict[str, Any]) -> dict[str, Any]:
    """The v0.4 map of one span from its raw field values (keyed by wire name), every field
    checked and converted to its wire type. Raises EncodingError for what cannot be converted."""
    error = fields["error"]
    if isinstance(error, bool):
        error = int(error)
    parent_id = fields["parent_id"]
    return {
        "trace_id": _check_int("trace_id", fields["trace_id"]) & _UINT64_MAX,
        "span_id": _nonzero(_span_id("span_id", fields["span_id"])),
        "parent_id": 0 if parent_id is None else _span_id("parent_id", parent_id),
        "name": _check_str("name", fields["name"]),
        "service": _optional_str("service", fields["service"]),
        "resource": _optional_str("resource", fields["resource"]),
        "type": _optional_str("span_type", fields["type"]),
        "start": _check_int("start_ns", fields["start"]),
        "duration": _check_int("duration_ns", fields["duration"]),
        "error": _check_int("error", error),
        "meta": _meta(fields["meta"]),
        "metrics": _metrics(fields["metrics"]),
    }


def _nonzero(span_id: int) -> int:
    return span_id or _zero_span_id()


def _zero_span_id() -> int:
    raise EncodingError("span_id must be non-zero")


_packers = threading.local()  # a Packer per thread (one is not thread-safe): no set-up per trace


def encode_trace_python(spans: Iterable[Any]) -> bytes:
    """One trace chunk as a msgpack array of span maps, the fields packed as they are (see the
    module's docstring). Raises EncodingError on a value that cannot be converted."""
    maps = [
        {
            # A zero span id is the one bad value checked here: it hangs the test agent, and
            # the `or` costs nothing for the usual non-zero id.
            "trace_id": span.trace_id & _UINT64_MAX, "span_id": span.span_id or _zero_span_id(),
            "parent_id": span.parent_id or 0, "name": span.name,
            "service": span.service or "", "resource": span.resource or "",
            "type": span.span_type or "", "start": span.start_ns,
            "duration": span.duration_ns, "error": span.error, "meta": span.meta,
            "metrics": span.metrics,
        }
        for span in spans
    ]
    try:
        pack = _packers.pack
    except AttributeError:
        # Exact types only: msgpack then skips its subclass checks (callgrind: 16.2k -> 13.4k
        # instructions to pack a usual single-span trace), and a str subclass, say, raises
        # TypeError here and is converted below.
        pack = _packers.pack = msgpack.Packer(use_bin_type=True, strict_types=True).pack
    try:
        return pack(maps)
    except (TypeError, ValueError, OverflowError):
        pass
    # Rare: a value msgpack cannot pack as it is. The raw fields of a span are what the fast
    # path read, except the two it replaced: a None parent id and None type.
    return _pack_checked([wire_map(m) for m in maps])


def _native_encoder() -> Any:
    """The native module (``_encoder.c``), or None where it is not built or switched off."""
    if env_bool("DD_TRACE_NATIVE_ENCODER") is False:
        return None
    try:
        from ddagent.writer import _encoder
    except ImportError:  # installed without a C compiler, or a Python it was not built for
        return None
    return _encoder


native_encoder: Any = _native_encoder()
"""The native module, ``_encoder.c``: its ``encode_trace`` and the writer's ``SendBuffer``
(ddagent/writer/agent.py); None without it."""

encode_trace: Callable[[Iterable[Any]], bytes] = (
    encode_trace_python if native_encoder is None
    else functools.partial(native_encoder.encode_trace, encode_trace_python)
)
"""One trace chunk as msgpack (see the module's docstring): native where it can be."""


def repair_trace(encoded: bytes) -> bytes:
    """``encoded`` (from :func:`encode_trace`) with every field converted to the type the agent
    expects. Raises EncodingError when a field cannot be converted (an int ``meta`` value)."""
    try:
        maps = msgpack.unpackb(encoded, raw=False, strict_map_key=False)
    except Exception as e:
        raise EncodingError(f"not a msgpack trace: {e}") from e
    if not isinstance(maps, list) or not all(isinstance(m, dict) for m in maps):
        raise EncodingError("not an array of span maps")
    try:
        return _pack_checked([wire_map(m) for m in maps])
    except KeyError as e:
        raise EncodingError(f"a span has no {e.args[0]!r}") from e


def _pack_checked(maps: list[dict[str, Any]]) -> bytes:
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
    # One join including the header: `header + b"".join(...)` would briefly hold two copies
    # of a payload of up to max_payload_bytes (4 MiB), which shows in the peak RSS.
    return b"".join([array_header(len(encoded_traces)), *encoded_traces])
