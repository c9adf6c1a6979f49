"""The native encoder (ddagent/writer/_encoder.c) against the Python one: the same bytes, or the
same exception, for every span; anything it does not pack itself goes to the Python one."""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddagent.tracer import Tracer
from ddagent.writer.encoding import encode_trace_python
from tests.writer.helpers import FakeSpan, make_trace

try:
    from ddagent.writer import _encoder
except ImportError:  # pragma: no cover - an install without a C compiler
    if os.environ.get("CI"):
        raise  # CI must build and test it
    pytest.skip("the native encoder is not built", allow_module_level=True)


def outcome(encode, spans):
    """What ``encode(spans)`` gives: ("bytes", b"...") or ("raises", exception type)."""
    try:
        return "bytes", encode(spans)
    except Exception as e:
        return "raises", type(e)


class Recorder:
    """The Python encoder as the native one's fallback, counting the calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, spans):
        self.calls += 1
        return encode_trace_python(spans)


def native(spans, fallback=encode_trace_python):
    return _encoder.encode_trace(fallback, spans)


def assert_same(spans):
    assert outcome(native, spans) == outcome(encode_trace_python, spans)


def assert_handed_to_python(spans):
    """The Python encoder's outcome, which the native one called once to get it."""
    recorder = Recorder()
    assert outcome(functools.partial(native, fallback=recorder), spans) == outcome(
        encode_trace_python, spans)
    assert recorder.calls == 1


class Text(str):
    pass


class Number(int):
    pass


INT_EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63,
             2**64 - 1, 2**64, -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1,
             -2**63, -2**63 - 1]

scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(INT_EDGES), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(), st.binary(),
    st.sampled_from([Text("sub"), Number(3), (1, 2), object(), "\ud800", 1.5j]),
)
values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                     st.dictionaries(st.one_of(st.text(), scalars), inner,
                                                     max_size=5)),
    max_leaves=20,
)
fields = {
    "trace_id": st.one_of(st.integers(min_value=-2**130, max_value=2**130),
                          st.sampled_from(INT_EDGES), values),
    "span_id": st.one_of(st.sampled_from(INT_EDGES), values),
    "parent_id": st.one_of(st.none(), st.sampled_from(INT_EDGES), values),
    "name": st.one_of(st.text(), values),
    "service": st.one_of(st.none(), st.text(), values),
    "resource": st.one_of(st.none(), st.text(), values),
    "span_type": st.one_of(st.none(), st.text(), values),
    "start_ns": st.one_of(st.sampled_from(INT_EDGES), values),
    "duration_ns": st.one_of(st.sampled_from(INT_EDGES), values),
    "error": st.one_of(st.sampled_from([0, 1, True]), values),
    "meta": st.one_of(st.dictionaries(st.text(), st.text(), max_size=8), values),
    "metrics": st.one_of(st.dictionaries(st.text(), st.floats(), max_size=8), values),
}


SPAN_FIELDS = ("trace_id", "span_id", "parent_id", "name", "service", "resource", "span_type",
               "start_ns", "duration_ns", "error", "meta", "metrics")


def slots_span_class():
    """A __slots__ class like ddagent's Span, whose fields the native encoder reads directly."""

    class SlotsSpan:
        __slots__ = SPAN_FIELDS

        def __init__(self, fields):
            for name, value in fields.items():
                setattr(self, name, value)

    return SlotsSpan


SLOTS_SPAN = slots_span_class()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.fixed_dictionaries(fields)), max_size=4))
def test_same_outcome_as_the_python_encoder_for_any_field_values(spans):
    # Spans read by attribute (a dataclass) and straight from their slots, mixed.
    assert_same([SLOTS_SPAN(f) if slots else FakeSpan(**f) for slots, f in spans])


@pytest.mark.parametrize("length", [0, 31, 32, 255, 256, 65535, 65536])
def test_strings_bytes_lists_and_maps_of_every_header_size(length):
    (span,) = make_trace(1)
    span.name = "n" * length
    span.meta = {"k": "é" * length, "b": b"x" * length}
    span.metrics = {f"m{i}": float(i) for i in range(min(length, 70000))}
    span.meta["list"] = list(range(length))
    assert_same([span])


def test_a_trace_larger_than_the_stack_buffer():
    trace = make_trace(100, meta={"k": "v" * 100})
    assert len(native(trace)) > 2048
    assert_same(trace)


def test_spans_of_the_tracer_encode_the_same():
    tracer = Tracer()
    tracer.enabled = False  # nothing is sent; the spans are still complete
    with tracer.trace("root", service="svc", resource="GET /", span_type="web") as root:
        root.set_tag("http.method", "GET")
        root.set_metric("rows", 3)
        with tracer.trace("child") as child:
            child.set_tag("component", "test")
    assert_same([root, child])
    decoded = msgpack.unpackb(native([root, child]))
    assert decoded[0]["meta"]["http.method"] == "GET" and decoded[1]["parent_id"] == root.span_id


@pytest.mark.parametrize("attr, value", [
    ("trace_id", 2.0), ("span_id", 0), ("span_id", Number(5)), ("parent_id", "1"),
    ("service", Text("svc")), ("service", 0), ("meta", {"k": Text("v")}), ("meta", {"k": (1,)}),
    ("metrics", {"m": 10**30}), ("name", "\udcff"),
])
def test_what_it_does_not_pack_goes_to_the_python_encoder(attr, value):
    (span,) = make_trace(1)
    setattr(span, attr, value)
    assert_handed_to_python([span])


def test_usual_spans_never_reach_the_python_encoder():
    recorder = Recorder()
    trace = make_trace(3, meta={"k": "v"}, metrics={"m": 1.5, "nan": math.nan})
    trace[0].error = 1
    native(trace, recorder)
    native(tuple(trace), recorder)  # not a list: the Python encoder's
    assert recorder.calls == 1


def test_deep_nesting_goes_to_the_python_encoder():
    (span,) = make_trace(1)
    deep: dict = {}
    span.meta = {"deep": deep}
    for _ in range(100):
        deep["d"] = deep = {}
    assert_handed_to_python([span])


def test_slots_spans_read_directly_encode_the_same():
    SlotsSpan = slots_span_class()
    trace = [SlotsSpan(vars(span)) for span in make_trace(3, meta={"k": "v"})]
    assert_same(trace)
    del trace[1].meta  # an unset slot: the Python encoder's AttributeError
    assert_same(trace)


def test_a_slots_class_changed_after_use_is_read_anew():
    SlotsSpan = slots_span_class()
    span = SlotsSpan(vars(make_trace(1)[0]))
    native([span])  # the class's layout is learnt
    SlotsSpan.name = property(lambda self: "renamed")  # no longer the slot
    assert msgpack.unpackb(native([span]))[0]["name"] == "renamed"
    assert_same([span])


def test_spans_of_several_classes_one_after_another():
    # The remembered layout is one class's: others are read by attribute (on 3.12+ the lookup
    # walks past the static builtin types of the MRO, which have no tp_dict).
    SlotsSpan, OtherSlotsSpan = slots_span_class(), slots_span_class()
    fake = make_trace(1)[0]
    mixed = [SlotsSpan(vars(fake)), fake, OtherSlotsSpan(vars(fake)), fake, SlotsSpan(vars(fake))]
    for _ in range(3):
        assert_same(mixed)


def test_a_property_that_changes_the_trace_while_it_is_read():
    trace = make_trace(3)

    class Shrinking(FakeSpan):
        @property
        def meta(self):
            trace.clear()  # the chunk list itself, while the encoder walks it
            return {}

        @meta.setter
        def meta(self, value):
            pass

    trace[1] = Shrinking(**{**vars(trace[1]), "meta": {}})
    recorder = Recorder()
    encoded = native(trace, recorder)
    assert recorder.calls == 1 and msgpack.unpackb(encoded) == []


def test_a_missing_attribute_raises_as_in_python():
    with pytest.raises(AttributeError):
        native([object()])


def test_wrong_arguments_are_a_type_error():
    with pytest.raises(TypeError):
        _encoder.encode_trace([])


@pytest.mark.parametrize("setting, native_expected", [("", True), ("false", False)])
def test_the_switch_selects_the_encoder(setting, native_expected):
    code = ("from ddagent.writer.encoding import encode_trace, encode_trace_python; "
            "print(encode_trace is not encode_trace_python)")
    env = {**os.environ, "DD_TRACE_NATIVE_ENCODER": setting}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == str(native_expected)
