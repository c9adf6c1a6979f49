"""The writer's buffer: ``_encoder.SendBuffer`` (ddagent/writer/_encoder.c) against its Python
twin ``agent.PythonSendBuffer``: the same answers to the same calls, and the same encoded
traces handed to the sender."""

from __future__ import annotations

import os
import sys
import threading

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddagent.writer.agent import CLOSED, START, WAKE, PythonSendBuffer
from ddagent.writer.encoding import (
    MAX_ARRAY_HEADER_SIZE,
    EncodingError,
    encode_trace_python,
    join_traces,
)
from tests.writer.helpers import make_trace

try:
    from ddagent.writer import _encoder
except ImportError:  # pragma: no cover - an install without a C compiler
    if os.environ.get("CI"):
        raise  # CI must build and test it
    pytest.skip("the native encoder is not built", allow_module_level=True)


def twins(max_bytes: int = 1 << 20, max_traces: int = 1000, max_payload_bytes: int = 1 << 20,
          encode=encode_trace_python):
    """A native buffer and a Python one with the same bounds (and fallback, for the native)."""
    return (
        _encoder.SendBuffer(encode, max_bytes, max_traces, max_payload_bytes),
        PythonSendBuffer(encode, max_bytes, max_traces, max_payload_bytes, threading.Lock()),
    )


def outcome(call):
    try:
        return "returns", call()
    except Exception as e:
        return "raises", type(e)


def state(buffer) -> tuple[int, int, int]:
    return len(buffer), buffer.bytes, buffer.spans


def contents(taken) -> tuple:
    """Everything the sender can read of taken traces, run as a whole."""
    count = len(taken)
    return (count, taken.spans, taken.traces(0, count), taken.span_counts(0, count),
            taken.span_count(0, count), taken.body(0, count))


def same_put(native, python, spans) -> object:
    answer = outcome(lambda: native.put(spans))
    assert answer == outcome(lambda: python.put(spans))
    assert state(native) == state(python)
    return answer


def test_the_status_bits_are_the_same():
    assert (_encoder.WAKE, _encoder.START, _encoder.CLOSED) == (WAKE, START, CLOSED)


def test_a_trace_is_encoded_as_the_encoder_encodes_it():
    native, python = twins()
    trace = make_trace(3, meta={"k": "v"}, metrics={"m": 1.5})
    assert same_put(native, python, trace) == ("returns", START)
    assert contents(native.take()) == contents(python.take())
    native.put(trace)
    (encoded,) = native.take().traces(0, 1)
    assert encoded == encode_trace_python(trace)


def test_start_until_the_worker_is_started():
    native, python = twins()
    assert same_put(native, python, make_trace(1)) == ("returns", START)
    assert same_put(native, python, make_trace(1)) == ("returns", START)
    native.needs_worker = python.needs_worker = False
    assert same_put(native, python, make_trace(1)) == ("returns", 0)


def test_wake_while_over_half_full_in_traces_or_bytes():
    native, python = twins(max_traces=4)
    native.needs_worker = python.needs_worker = False
    answers = [same_put(native, python, make_trace(1))[1] for _ in range(5)]
    assert answers[:2] == [0, 0] and answers[2:4] == [WAKE, WAKE] and answers[4] < 0

    size = len(encode_trace_python(make_trace(1)))
    native, python = twins(max_bytes=size * 3)
    native.needs_worker = python.needs_worker = False
    answers = [same_put(native, python, make_trace(1))[1] for _ in range(4)]
    assert answers == [0, WAKE, WAKE, -size]


def test_too_large_for_a_payload_or_for_the_buffer_is_minus_its_size():
    trace = make_trace(1, meta={"big": "x" * 500})
    size = len(encode_trace_python(trace))
    native, python = twins(max_payload_bytes=size + MAX_ARRAY_HEADER_SIZE - 1)
    assert same_put(native, python, trace) == ("returns", -size)
    native, python = twins(max_payload_bytes=size + MAX_ARRAY_HEADER_SIZE)
    assert same_put(native, python, trace) == ("returns", START)

    native, python = twins(max_bytes=size * 2 - 1)
    assert same_put(native, python, trace)[1] & START
    assert same_put(native, python, trace) == ("returns", -size)
    assert state(native) == (1, size, 1)


def test_closed_buffers_nothing_and_encodes_nothing():
    native, python = twins()
    native.closed = python.closed = True
    assert same_put(native, python, [object()]) == ("returns", CLOSED)  # not even read
    assert same_put(native, python, []) == ("returns", 0)


def test_closed_while_encoding_buffers_nothing():
    buffers = []

    def closing(spans):
        buffers[0].closed = True
        return encode_trace_python(spans)

    for make in (lambda: _encoder.SendBuffer(closing, 1 << 20, 100, 1 << 20),
                 lambda: PythonSendBuffer(closing, 1 << 20, 100, 1 << 20, threading.Lock())):
        buffers[:] = [make()]
        assert buffers[0].put(tuple(make_trace(1))) == CLOSED  # a tuple: the fallback encodes
        assert state(buffers[0]) == (0, 0, 0)


def test_an_empty_chunk_is_nothing_to_do():
    native, python = twins()
    assert same_put(native, python, []) == ("returns", 0)
    assert same_put(native, python, ()) == ("returns", 0)


def test_what_cannot_be_encoded_raises_what_the_encoder_raises():
    native, python = twins()
    (zero,) = make_trace(1)
    zero.span_id = 0
    assert same_put(native, python, [zero]) == ("raises", EncodingError)
    assert same_put(native, python, [object()]) == ("raises", AttributeError)
    assert same_put(native, python, 3) == ("raises", TypeError)  # not a sequence
    assert state(native) == (0, 0, 0)


def test_a_sequence_that_is_not_a_list_goes_through_the_fallback():
    calls = []

    def fallback(spans):
        calls.append(spans)
        return encode_trace_python(spans)

    native, python = twins(encode=fallback)
    trace = tuple(make_trace(2))
    assert same_put(native, python, trace) == ("returns", START)
    assert len(calls) == 2  # once each
    assert contents(native.take()) == contents(python.take())


def test_a_fallback_that_returns_no_bytes_is_a_type_error():
    buffer = _encoder.SendBuffer(lambda spans: "text", 1 << 20, 100, 1 << 20)
    with pytest.raises(TypeError):
        buffer.put(tuple(make_trace(1)))
    assert state(buffer) == (0, 0, 0)


def test_take_empties_the_buffer_which_goes_on():
    native, python = twins()
    traces = [make_trace(n) for n in (1, 2, 3)]
    for trace in traces:
        same_put(native, python, trace)
    taken = native.take(), python.take()
    assert contents(taken[0]) == contents(taken[1])
    assert (len(taken[0]), taken[0].spans) == (3, 6)
    assert state(native) == state(python) == (0, 0, 0)
    same_put(native, python, traces[0])
    assert contents(native.take()) == contents(python.take())
    assert contents(native.take()) == contents(python.take()) == (0, 0, [], [], 0, b"\x90")


def test_many_traces_grow_the_buffer():
    native, python = twins(max_bytes=1 << 30, max_traces=100_000)
    for i in range(3000):
        same_put(native, python, make_trace(1 + i % 3, meta={"pad": "x" * (i % 700)}))
    assert contents(native.take()) == contents(python.take())


def test_the_bounds_can_change():
    native, python = twins(max_traces=1)
    same_put(native, python, make_trace(1))
    assert same_put(native, python, make_trace(1))[1] < 0
    native.max_traces = python.max_traces = 2
    assert same_put(native, python, make_trace(1))[1] >= 0
    assert (native.max_bytes, native.max_traces, native.max_payload_bytes) == (
        python.max_bytes, python.max_traces, python.max_payload_bytes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(st.tuples(st.integers(1, 4), st.integers(0, 3000)), st.just("take")),
             max_size=30),
    st.integers(0, 20_000), st.integers(0, 12), st.integers(0, 8000),
)
def test_same_answers_to_any_puts_and_takes(steps, max_bytes, max_traces, max_payload_bytes):
    native, python = twins(max_bytes, max_traces, max_payload_bytes)
    for step in steps:
        if step == "take":
            assert contents(native.take()) == contents(python.take())
        else:
            spans, pad = step
            same_put(native, python, make_trace(spans, meta={"pad": "x" * pad}))
    assert contents(native.take()) == contents(python.take())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3000), max_size=40), st.integers(-1, 8000))
def test_payload_runs_and_bodies_are_the_same(pads, room):
    native, python = twins(max_bytes=1 << 30, max_payload_bytes=1 << 30)
    for pad in pads:
        same_put(native, python, make_trace(1, meta={"pad": "x" * pad}))
    taken = native.take(), python.take()
    runs = taken[0].payloads(room)
    assert runs == taken[1].payloads(room)
    for start, end in runs:
        traces = taken[1].traces(start, end)
        assert taken[0].body(start, end) == taken[1].body(start, end) == join_traces(traces)
        assert len(msgpack.unpackb(taken[0].body(start, end))) == end - start
        assert taken[0].span_counts(start, end) == taken[1].span_counts(start, end)
        assert taken[0].span_count(start, end) == taken[1].span_count(start, end)


def test_bodies_of_every_array_header_size():
    native = twins(max_bytes=1 << 30, max_traces=1 << 20)[0]
    for _ in range(70_000):
        native.put(make_trace(1))
    taken = native.take()
    for count in (0, 15, 16, 65535, 65536, 70_000):
        body = taken.body(0, count)
        assert body == join_traces(taken.traces(0, count))
        assert len(msgpack.unpackb(body)) == count


@pytest.mark.parametrize("run", [(-1, 0), (1, 0), (0, 4), (3, 4)])
def test_a_run_outside_the_traces_is_a_value_error(run):
    native = twins()[0]
    for _ in range(3):
        native.put(make_trace(1))
    taken = native.take()
    for method in (taken.body, taken.traces, taken.span_counts, taken.span_count):
        with pytest.raises(ValueError):
            method(*run)


def test_references_are_not_leaked_or_lost():
    class Encoded(bytes):
        freed = 0

        def __del__(self):
            Encoded.freed += 1

    native = _encoder.SendBuffer(lambda spans: Encoded(encode_trace_python(spans)), 1 << 30,
                                  1 << 20, 1 << 30)
    trace = make_trace(2, meta={"k": "v"})
    chunk = tuple(trace)  # the fallback's
    counts = [sys.getrefcount(x) for x in (trace, chunk, *trace, trace[0].meta)]
    for _ in range(1000):
        native.put(trace)
        native.put(chunk)
    assert [sys.getrefcount(x) for x in (trace, chunk, *trace, trace[0].meta)] == counts
    assert Encoded.freed == 1000  # the fallback's bytes, once copied
    taken = native.take()
    assert len(taken) == 2000 and sys.getrefcount(taken) == 2
