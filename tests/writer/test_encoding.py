from __future__ import annotations

import msgpack
import pytest

from ddagent.writer.encoding import (
    EncodingError,
    array_header,
    encode_trace,
    join_traces,
    repair_trace,
)
from ddagent.writer.transport import parse_rate_by_service
from tests.writer.helpers import FakeSpan, make_trace


def test_span_fields_have_the_agents_wire_types():
    root, child = make_trace(2, span_type="web", meta={"k": "v"}, metrics={"m": 3.5})
    root.trace_id = (0x6B0BDAAA << 96) | 0xFFFF_0000_0000_0001  # 128-bit id

    decoded = msgpack.unpackb(encode_trace([root, child]))

    assert [s["name"] for s in decoded] == ["root", "child1"]
    wire_root, wire_child = decoded
    assert wire_root["trace_id"] == 0xFFFF_0000_0000_0001  # low 64 bits only
    assert wire_root["parent_id"] == 0
    assert wire_child["parent_id"] == root.span_id
    assert wire_root["type"] == "web" and wire_child["type"] == ""
    assert wire_root["meta"] == {"k": "v"}
    assert wire_root["metrics"] == {"m": 3.5}
    assert (wire_root["start"], wire_root["duration"], wire_root["error"]) == (
        root.start_ns, root.duration_ns, 0)


def test_repair_converts_what_the_agent_would_refuse():
    (span,) = make_trace(1, metrics={"m": 3, "b": True})
    span.error = True

    (wire,) = msgpack.unpackb(repair_trace(encode_trace([span])))

    assert wire["metrics"] == {"m": 3.0, "b": 1.0}
    assert all(isinstance(v, float) for v in wire["metrics"].values())
    assert wire["error"] == 1 and type(wire["error"]) is int


def test_repair_keeps_a_good_trace_as_it_is():
    trace = make_trace(3, meta={"k": "v"}, metrics={"m": 1.5})
    assert msgpack.unpackb(repair_trace(encode_trace(trace))) == msgpack.unpackb(
        encode_trace(trace))


def test_repair_refuses_what_is_not_a_trace():
    with pytest.raises(EncodingError):
        repair_trace(b"\xc1")
    with pytest.raises(EncodingError):
        repair_trace(msgpack.packb([{"name": "no ids"}]))


def test_none_service_and_resource_go_out_as_strings():
    (span,) = make_trace(1, service=None)
    span.resource = None
    (wire,) = msgpack.unpackb(encode_trace([span]))
    assert wire["service"] == "" and wire["resource"] == ""


@pytest.mark.parametrize(
    "attr, value",
    [
        ("meta", {"port": 8080}),
        ("meta", {1: "x"}),
        ("meta", None),
        ("metrics", {"m": "1"}),
        ("metrics", {"m": 10**400}),
        ("name", None),
        ("span_id", 0),
        ("span_id", 1 << 64),
        ("parent_id", -1),
        ("start_ns", 1.5),
        ("duration_ns", "1"),
        ("error", None),
        ("service", 3),
    ],
)
def test_bad_attribute_types_raise_encoding_error(attr, value):
    # Either at once (msgpack cannot pack the value) or when the writer repairs the trace the
    # agent refused.
    (span,) = make_trace(1)
    setattr(span, attr, value)
    with pytest.raises(EncodingError):
        repair_trace(encode_trace([span]))


def test_a_span_missing_an_attribute_is_not_an_encoding_error_but_still_an_exception():
    # The writer catches every exception around encoding; this documents that it must.
    with pytest.raises(AttributeError):
        encode_trace([object()])


@pytest.mark.parametrize("length", [0, 1, 15, 16, 65535, 65536])
def test_array_header_matches_msgpack(length):
    header = array_header(length)
    assert msgpack.packb([None] * length)[: len(header)] == header


def test_joined_traces_equal_encoding_the_whole_payload_at_once():
    traces = [make_trace(n) for n in (1, 2, 3)] * 6  # 18 traces: past the fixarray size
    body = join_traces([encode_trace(t) for t in traces])
    assert msgpack.unpackb(body) == [msgpack.unpackb(encode_trace(t)) for t in traces]


def test_duck_typed_span_with_extra_attributes_is_fine():
    span = FakeSpan(1, 2, None)
    span.unrelated = object()
    assert msgpack.unpackb(encode_trace([span]))[0]["span_id"] == 2


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"rate_by_service": {"service:web,env:prod": 0.5, "service:,env:": 1}}',
         {"service:web,env:prod": 0.5, "service:,env:": 1.0}),
        (b"OK", None),
        (b"\xff\xfe", None),
        (b"[1, 2]", None),
        (b"{}", None),
        (b'{"rate_by_service": [0.5]}', None),
        (b'{"rate_by_service": {"service:,env:": "1"}}', None),
        (b'{"rate_by_service": {"service:,env:": 2.0}}', None),
    ],
)
def test_parse_rate_by_service(body, expected):
    assert parse_rate_by_service(body) == expected
