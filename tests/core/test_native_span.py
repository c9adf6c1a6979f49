"""The native span core (ddagent/_span.c) against PythonSpanCore, its Python twin: for any sequence
of calls, the same results, exceptions, fields and tracer callbacks. The usual calls stay in C;
each unusual one is handed to the twin once."""

from __future__ import annotations

import copy
import gc
import inspect
import json
import math
import os
import pickle
import subprocess
import sys
import weakref
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddagent.ids import LOW_64
from ddagent.span import PythonSpanCore, Span
from ddagent.writer.encoding import encode_trace, encode_trace_python

try:
    from ddagent import _span
except ImportError:  # pragma: no cover - an install without a C compiler
    if os.environ.get("CI"):
        raise  # CI must build and test it
    pytest.skip("the native span core is not built", allow_module_level=True)

# span.py registers the twin only when it picks the native core; this suite tests the native core
# even in a run with DD_TRACE_NATIVE_SPAN=false.
_span.use_python_twin(PythonSpanCore)

REPO = Path(__file__).resolve().parents[2]
FIELDS: tuple[str, ...] = PythonSpanCore.__slots__
TWIN_METHODS = ("__init__", "set_tag", "set_metric", "finish", "__exit__")
CLOCK_FIELDS = ("start_ns", "_start_monotonic_ns", "duration_ns")
ARG_NAMES = ("tracer", "name", "service", "resource", "span_type", "trace_id", "span_id",
             "parent_id", "start")


class NativeSpan(_span.SpanCore):
    __slots__ = ()
    set_exc_info = Span.set_exc_info  # the twin's __exit__ calls it


class PySpan(PythonSpanCore):
    __slots__ = ()
    set_exc_info = Span.set_exc_info


CORES = (NativeSpan, PySpan)


def test_the_native_core_has_the_python_cores_fields() -> None:
    member = type(PythonSpanCore.trace_id)  # what __slots__ makes, and PyMemberDef too
    assert {name for name, value in vars(_span.SpanCore).items() if type(value) is member} == set(
        FIELDS)


# -- outcomes and odd values -------------------------------------------------------------------


class Unset:
    def __repr__(self) -> str:
        return "<unset>"


MISSING = Unset()


def read(span: Any, field: str) -> Any:
    return getattr(span, field, MISSING)


def outcome(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """("returns", value) or ("raises", exception type)."""
    try:
        return "returns", call(*args, **kwargs)
    except Exception as e:
        return "raises", type(e)


class Recorder:
    """A tracer that keeps the spans handed to it."""

    def __init__(self) -> None:
        self.finished: list[Any] = []

    def _on_span_finish(self, span: Any) -> None:
        self.finished.append(span)


class TracerError(Exception):
    pass


class RaisingTracer:
    def _on_span_finish(self, span: Any) -> None:
        raise TracerError


class Boom(Exception):
    pass


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


def with_block(span: Any, error: Optional[type[BaseException]] = None) -> bool:
    """Runs ``with span`` (raising ``error`` inside if given); whether ``as`` gave the span."""
    with span as entered:
        if error is not None:
            raise error("boom")
    return entered is span


class Named:
    """Odd values with a stable repr, so that hypothesis' reports read well."""

    def __repr__(self) -> str:
        return type(self).__name__


class Unprintable(Named):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class Falsy(Named):
    def __bool__(self) -> bool:
        return False


class Truthy(Named):
    def __bool__(self) -> bool:
        return True


class BoolRaises(Named):
    def __bool__(self) -> bool:
        raise ValueError("no truth")


class FloatRaises(Named):
    def __init__(self, error: type[Exception]) -> None:
        self.error = error

    def __float__(self) -> float:
        raise self.error("no float")

    def __repr__(self) -> str:
        return f"FloatRaises({self.error.__name__})"


class Text(str):
    pass


class Number(int):
    pass


class Real(float):
    pass


class ReadOnlyDict(dict):
    def __setitem__(self, key: Any, value: Any) -> None:
        raise TypeError("read-only")


# -- the differential test: generated programs run on both cores --------------------------------


class Ref:
    """In a generated program: an object each run has its own of (a tracer, a span)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Ref({self.name!r})"


class Fresh:
    """In a generated program: a mutable value each run builds anew (runs must not share it)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory

    def __repr__(self) -> str:
        return f"Fresh({self.factory.__name__})"


def generated_trace_id(value: Any, start_ns: int) -> bool:
    """As ids.py lays it out: the start second on top, 32 zero bits, 64 random non-zero bits."""
    return (type(value) is int and value & LOW_64 != 0 and (value >> 64) & 0xFFFFFFFF == 0
            and value >> 96 == start_ns // 1_000_000_000)


def generated_span_id(value: Any) -> bool:
    return type(value) is int and 0 < value <= LOW_64


def bound(args: tuple, kwargs: dict, name: str) -> Any:
    """The value the constructor's parameter ``name`` gets from this call."""
    position = ARG_NAMES.index(name)
    return kwargs.get(name, args[position] if position < len(args) else None)


class Run:
    """One core running a program: its spans, tracers, and what each step gave."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.recorder = Recorder()
        self.objects: dict[str, Any] = {
            "recorder": self.recorder, "raising": RaisingTracer(), "no_method": object()}
        self.spans: list[Any] = []
        self.labels: dict[int, str] = {}  # a generated id -> where it was drawn
        self.steps: list[tuple[Any, ...]] = []

    def named(self) -> dict[str, Any]:
        return {**self.objects, **{f"span{i}": span for i, span in enumerate(self.spans)}}

    def resolve(self, value: Any) -> Any:
        if isinstance(value, Ref):
            return self.named().get(value.name)
        if isinstance(value, Fresh):
            return value.factory()
        return value

    def token(self, value: Any, names: dict[int, str]) -> Any:
        """``value`` as comparable across runs: own objects by name (``names``: by id()), ids
        drawn by where."""
        if id(value) in names:
            return names[id(value)]
        if type(value) is int:
            return self.labels.get(value, value)
        if isinstance(value, dict):
            return type(value).__name__, dict(value)  # a copy: later steps may change it
        return value

    def label_ids(self, step: int, span: Any, before: dict[str, Any], args: tuple,
                  kwargs: dict) -> None:
        """Checks the ids that __init__ drew (it may have failed after drawing the trace id),
        and names them for comparison."""
        for field, generated in (("trace_id", lambda v: generated_trace_id(v, span.start_ns)),
                                 ("span_id", generated_span_id)):
            value = read(span, field)
            if value is not before.get(field, MISSING) and value is not bound(args, kwargs, field):
                assert generated(value), (self.cls, field, value)
                self.labels[value] = f"{field} drawn at step {step}"

    def initialise(self, step: int, span: Any, args: tuple, kwargs: dict) -> None:
        before = {field: read(span, field) for field in ("trace_id", "span_id")}
        try:
            span.__init__(*[self.resolve(arg) for arg in args], **kwargs)
        finally:
            self.label_ids(step, span, before, args, kwargs)

    def construct(self, step: int, args: tuple, kwargs: dict) -> Any:
        span = self.cls(*[self.resolve(arg) for arg in args], **kwargs)
        self.spans.append(span)
        self.label_ids(step, span, {}, args, kwargs)
        return span

    def apply(self, step: int, op: tuple) -> tuple[str, Any]:
        kind, *params = op
        if kind == "new":
            return outcome(self.construct, step, *params[0])
        if kind == "bare":
            span = self.cls.__new__(self.cls)
            self.spans.append(span)
            return "returns", span
        if not self.spans:
            return "skipped", None
        span = self.spans[params[0] % len(self.spans)]
        if kind == "init":
            return outcome(self.initialise, step, span, *params[1])
        if kind in ("set_tag", "set_metric", "finish"):
            args, kwargs = params[1]
            return outcome(getattr(span, kind), *args, **kwargs)
        if kind == "with":
            return outcome(with_block, span, params[1])
        if kind == "exit":
            return outcome(span.__exit__, *params[1])
        if kind == "set":
            return outcome(setattr, span, params[1], self.resolve(params[2]))
        assert kind == "del"
        return outcome(delattr, span, params[1])

    def run(self, program: list[tuple]) -> Run:
        for step, op in enumerate(program):
            kind, result = self.apply(step, op)
            names = {id(obj): f"<{name}>" for name, obj in self.named().items()}
            self.steps.append((
                (kind, self.token(result, names)),
                [[self.token(read(span, field), names) for field in FIELDS]
                 for span in self.spans],
                [self.token(span, names) for span in self.recorder.finished],
            ))
        return self


def same_field(field: str, native: Any, python: Any) -> bool:
    if field in CLOCK_FIELDS and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in (native, python)):
        # Each core read the clock itself: the same kind of reading, not the same nanosecond.
        return type(native) is type(python) and (native < 0) == (python < 0)
    return native is python or native == python


def assert_same_runs(program: list[tuple], native: Run, python: Run) -> None:
    for step, (op, n, p) in enumerate(zip(program, native.steps, python.steps)):
        where = f"step {step}: {op!r}"
        (n_result, n_spans, n_finished), (p_result, p_spans, p_finished) = n, p
        assert n_result == p_result, where
        assert n_finished == p_finished, where
        assert len(n_spans) == len(p_spans), where
        for index, (n_fields, p_fields) in enumerate(zip(n_spans, p_spans)):
            for field, n_value, p_value in zip(FIELDS, n_fields, p_fields):
                assert same_field(field, n_value, p_value), (
                    f"{where}: span{index}.{field}: native {n_value!r}, python {p_value!r}")


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4))
odd_values = st.sampled_from([Unprintable(), Text("sub"), Number(0), Number(7), b"bytes", (1, 2),
                              Falsy(), Truthy(), BoolRaises()])
values = st.one_of(scalars, odd_values)
tracers = st.sampled_from([Ref("recorder"), None, Ref("raising"), Ref("no_method")])
span_refs = st.sampled_from([None, Ref("span0"), Ref("span1"), Ref("span2")])
usual_ids = st.one_of(st.none(), st.just(0), st.integers(min_value=-2**70, max_value=2**130))
ids = st.one_of(usual_ids, st.booleans(), st.sampled_from(
    [0.0, 2.5, "", "7", [], [1], Number(0), Number(7), Falsy(), Truthy(), BoolRaises()]))
starts = st.one_of(st.none(), st.floats(), st.integers(-10**12, 10**12),
                   st.sampled_from([True, "1", Number(3), Decimal("1.5")]))
names = st.one_of(st.text(max_size=4), values)
constructor_values = {
    "tracer": tracers, "name": names, "service": names, "resource": names, "span_type": names,
    "trace_id": ids, "span_id": ids, "parent_id": ids, "start": starts,
}


@st.composite
def constructor_calls(draw: Any, usual: bool = False) -> tuple[tuple, dict]:
    """(args, kwargs) for the constructor: positional only (the native fast path when no start
    or odd id is given), or with keywords, or malformed."""
    if usual:
        chosen = {"tracer": draw(tracers), "name": draw(st.text(max_size=4)),
                  "trace_id": draw(usual_ids), "span_id": draw(usual_ids)}
        return tuple(chosen.get(name) for name in ARG_NAMES[:draw(st.integers(2, 8))]), {}
    chosen = {name: draw(strategy) for name, strategy in constructor_values.items()}
    positional = draw(st.integers(0, 9))
    args = tuple(chosen[name] for name in ARG_NAMES[:positional])
    if draw(st.booleans()):
        return args, {}
    kwargs = {name: chosen[name] for name in ARG_NAMES[positional:] if draw(st.booleans())}
    mistake = draw(st.sampled_from([None, None, None, "extra", "unknown", "twice"]))
    if mistake == "extra":
        args += (None,) * (10 - len(args))
    elif mistake == "unknown":
        kwargs["colour"] = "red"
    elif mistake == "twice" and args:
        kwargs[ARG_NAMES[0]] = args[0]
    return args, kwargs


@st.composite
def key_value_calls(draw: Any, keys: Any, values: Any) -> tuple[tuple, dict]:
    """(args, kwargs) for set_tag/set_metric: mostly (key, value), else by keyword or malformed."""
    key, value = draw(keys), draw(values)
    shape = draw(st.sampled_from(["positional"] * 5 + ["keywords", "value by keyword", "one",
                                                       "three"]))
    return {
        "positional": ((key, value), {}),
        "keywords": ((), {"key": key, "value": value}),
        "value by keyword": ((key,), {"value": value}),
        "one": ((key,), {}),
        "three": ((key, value, value), {}),
    }[shape]


keys = st.one_of(st.text(max_size=3), st.integers(-3, 3), st.none(),
                 st.sampled_from([(1, 2), Text("k"), []]))
tag_values = st.one_of(st.text(max_size=4), values)
metric_values = st.one_of(st.floats(), st.integers(), st.sampled_from([
    2**1024, -(2**1024), 2**63, True, False, "1.5", "x", "nan", None, Number(3), Real(2.5),
    Decimal("2"), Decimal("nan"), 1j, FloatRaises(ValueError), FloatRaises(RuntimeError),
    FloatRaises(OverflowError),
]))
finish_calls = st.one_of(
    st.sampled_from([((), {}), ((None,), {}), ((), {"finish_time": None}), ((1.0, 2.0), {}),
                     ((), {"when": 1.0}), (("soon",), {})]),
    st.floats().map(lambda time: ((time,), {})),
    st.floats().map(lambda time: ((), {"finish_time": time})),
)
exit_args = st.sampled_from([
    (None, None, None), (), (None,), (None, None, None, None), (Boom, None, None),
    (Boom, Boom("direct"), None), (None, Boom("no type"), None),
])
set_values = {
    "duration_ns": st.one_of(st.none(), st.integers(), st.floats(), st.just("5")),
    "_finished": st.sampled_from([True, False, 0, 1, None, "", "yes", BoolRaises()]),
    # Around the int64 limits too, where C's subtraction would overflow and Python's does not.
    "_start_monotonic_ns": st.one_of(st.none(), st.integers(min_value=-2**70, max_value=2**70),
                                     st.sampled_from([-2**63, -2**63 + 1, 2**63 - 1, 2**63]),
                                     st.floats(), st.just("0")),
    "tracer": tracers,
    "meta": st.sampled_from([Fresh(dict), Fresh(ReadOnlyDict), None, "meta"]),
    "metrics": st.sampled_from([Fresh(dict), Fresh(ReadOnlyDict), None, "metrics"]),
    "_trace": span_refs, "_parent": span_refs, "_prev_active": span_refs,
    "trace_id": ids, "span_id": ids, "start_ns": st.one_of(st.integers(), st.floats(), st.none()),
}
span_indexes = st.integers(0, 2)


def hot_method_ops() -> list[Any]:
    """Ops calling the hot methods, which have the most cases (a new list each call: one_of
    collapses a strategy given twice, so weighting them takes distinct ones)."""
    return [st.tuples(st.just("set_tag"), span_indexes, key_value_calls(keys, tag_values)),
            st.tuples(st.just("set_metric"), span_indexes, key_value_calls(keys, metric_values)),
            st.tuples(st.just("finish"), span_indexes, finish_calls)]


ops = st.one_of(
    *hot_method_ops(), *hot_method_ops(), *hot_method_ops(),
    st.tuples(st.just("new"), constructor_calls()),
    st.tuples(st.just("new"), constructor_calls(usual=True)),
    st.tuples(st.just("bare")),
    st.tuples(st.just("init"), span_indexes, constructor_calls()),
    st.tuples(st.just("with"), span_indexes, st.sampled_from([None, Boom, UnprintableError])),
    st.tuples(st.just("exit"), span_indexes, exit_args),
    st.sampled_from(FIELDS).flatmap(lambda field: st.tuples(
        st.just("set"), span_indexes, st.just(field), set_values.get(field, values))),
    st.tuples(st.just("del"), span_indexes, st.sampled_from(FIELDS)),
)
programs = st.tuples(st.tuples(st.just("new"), constructor_calls(usual=True)),
                     st.lists(ops, max_size=20)).map(lambda p: [p[0], *p[1]])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def test_both_cores_give_the_same_results_fields_and_callbacks(program: list[tuple]) -> None:
    assert_same_runs(program, Run(NativeSpan).run(program), Run(PySpan).run(program))


# -- the twin: called for the unusual cases only -----------------------------------------------


def counting_twin(calls: Counter) -> type:
    """A PythonSpanCore whose twin methods count their calls in ``calls``, then run."""

    def counting(name: str) -> Callable[..., Any]:
        method = getattr(PythonSpanCore, name)

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return method(self, *args, **kwargs)

        return counted

    namespace = {name: counting(name) for name in TWIN_METHODS}
    return type("CountingTwin", (PythonSpanCore,), {"__slots__": (), **namespace})


@pytest.fixture
def twin_calls() -> Any:
    calls: Counter = Counter()
    _span.use_python_twin(counting_twin(calls))
    try:
        yield calls
    finally:
        _span.use_python_twin(PythonSpanCore)


def test_the_usual_calls_stay_native(twin_calls: Counter) -> None:
    tracer = Recorder()
    root = NativeSpan(tracer, "root")
    child = NativeSpan(tracer, "child", "svc", "res", "web", root.trace_id, None, root.span_id)
    drawn = NativeSpan(None, "op", None, None, None, 0, 0, None, None)
    root.set_tag("k", "v")
    for value in (1.5, 3, -(2**62), 2**64):
        root.set_metric("m", value)
    child.duration_ns = 5  # by hand: kept
    child.finish()
    child.finish(None)
    assert with_block(root)
    drawn.finish()
    assert twin_calls == Counter()
    assert tracer.finished == [child, root] and child.duration_ns == 5
    assert root.meta == {"k": "v"} and root.metrics == {"m": float(2**64)}


def unset(field: str) -> Callable[[Any], None]:
    return lambda span: delattr(span, field)


def assign(field: str, value: Any) -> Callable[[Any], None]:
    return lambda span: setattr(span, field, value)


UNUSUAL_CALLS = {
    "keyword arguments": ("__init__", None, lambda s: NativeSpan(None, name="op")),
    "an explicit start": ("__init__", None, lambda s: NativeSpan(None, "op", *[None] * 6, 1.0)),
    "an int subclass id": ("__init__", None, lambda s: NativeSpan(None, "op", None, None, None,
                                                                  Number(5))),
    "a bool id": ("__init__", None, lambda s: NativeSpan(None, "op", None, None, None, None, True)),
    "too few arguments": ("__init__", None, lambda s: NativeSpan(None)),
    "too many arguments": ("__init__", None, lambda s: NativeSpan(None, "op", *[None] * 8)),
    "__init__ again, by keyword": ("__init__", None, lambda s: s.__init__(None, "op", service="x")),
    "a tag that is not a str": ("set_tag", None, lambda s: s.set_tag("k", 5)),
    "a str subclass tag": ("set_tag", None, lambda s: s.set_tag("k", Text("v"))),
    "a tag by keyword": ("set_tag", None, lambda s: s.set_tag("k", value="v")),
    "an unhashable tag key": ("set_tag", None, lambda s: s.set_tag([], "v")),
    "meta replaced by hand": ("set_tag", assign("meta", ReadOnlyDict()),
                              lambda s: s.set_tag("k", "v")),
    "meta unset": ("set_tag", unset("meta"), lambda s: s.set_tag("k", "v")),
    "a NaN metric": ("set_metric", None, lambda s: s.set_metric("m", math.nan)),
    "an infinite metric": ("set_metric", None, lambda s: s.set_metric("m", -math.inf)),
    "an int too large for a float": ("set_metric", None, lambda s: s.set_metric("m", 2**1024)),
    "a bool metric": ("set_metric", None, lambda s: s.set_metric("m", True)),
    "a str metric": ("set_metric", None, lambda s: s.set_metric("m", "1.5")),
    "an int subclass metric": ("set_metric", None, lambda s: s.set_metric("m", Number(3))),
    "a metric whose __float__ raises": ("set_metric", None,
                                        lambda s: s.set_metric("m", FloatRaises(RuntimeError))),
    "a metric by keyword": ("set_metric", None, lambda s: s.set_metric(key="m", value=1.0)),
    "metrics unset": ("set_metric", unset("metrics"), lambda s: s.set_metric("m", 1.0)),
    "a finish time": ("finish", None, lambda s: s.finish(2.0)),
    "finish_time by keyword": ("finish", None, lambda s: s.finish(finish_time=None)),
    "finish with the flag unset": ("finish", unset("_finished"), lambda s: s.finish()),
    "finish with a flag of 0": ("finish", assign("_finished", 0), lambda s: s.finish()),
    "finish with the tracer unset": ("finish", unset("tracer"), lambda s: s.finish()),
    "finish with a float monotonic start": ("finish", assign("_start_monotonic_ns", 1.5),
                                            lambda s: s.finish()),
    "finish with a huge monotonic start": ("finish", assign("_start_monotonic_ns", 2**64),
                                           lambda s: s.finish()),
    "a duration beyond int64": ("finish", assign("_start_monotonic_ns", -(2**63)),
                                lambda s: s.finish()),
    "an exception leaving a with block": ("__exit__", None, lambda s: with_block(s, Boom)),
    "__exit__ with one argument": ("__exit__", None, lambda s: s.__exit__(None)),
}


@pytest.mark.parametrize("case", UNUSUAL_CALLS)
def test_each_unusual_call_goes_to_the_twin_once(case: str, twin_calls: Counter) -> None:
    method, prepare, call = UNUSUAL_CALLS[case]
    span = NativeSpan(Recorder(), "op")
    if prepare is not None:
        prepare(span)
    outcome(call, span)
    assert twin_calls == Counter({method: 1})


# -- subclasses, re-initialisation, spans without fields ----------------------------------------


@pytest.mark.parametrize("error", [None, Boom])
@pytest.mark.parametrize("core", CORES)
def test_with_calls_the_finish_of_a_subclass(core: type, error: Optional[type]) -> None:
    calls = []

    class Overriding(core):  # type: ignore[valid-type,misc]
        __slots__ = ()

        def finish(self, finish_time: Optional[float] = None) -> None:
            calls.append(finish_time)
            super().finish(finish_time)

    span = Overriding(None, "op")
    outcome(with_block, span, error)
    assert calls == [None] and span._finished and span.error == (error is not None)


@pytest.mark.parametrize("core", CORES)
def test_with_calls_a_finish_set_on_the_instance(core: type) -> None:
    loose = type("Loose", (core,), {})  # no __slots__: instances have a __dict__
    span = loose(None, "op")
    calls = []
    span.finish = lambda: calls.append("instance")
    with_block(span)
    assert calls == ["instance"] and not span._finished


@pytest.mark.parametrize("core", CORES)
def test_a_monotonic_start_near_the_int64_limit_gives_a_python_duration(core: type) -> None:
    # monotonic - (-2**63) does not fit in C's int64: the duration is Python's big int.
    span = core(None, "op")
    span._start_monotonic_ns = -(2**63)
    span.finish()
    assert span.duration_ns > 2**63


@pytest.mark.parametrize("core", CORES)
def test_a_tracer_may_drop_its_span_reference_in_the_callback(core: type) -> None:
    freed = []

    class Leaving:
        def _on_span_finish(self, span: Any) -> None:
            span.tracer = None  # the span held the only reference to this tracer
            span.set_tag("seen", "yes")

    tracer = Leaving()
    weakref.finalize(tracer, freed.append, "tracer")
    span = core(tracer, "op")
    del tracer
    span.finish()
    assert (span.tracer, span.meta, span._finished, freed) == (None, {"seen": "yes"}, True,
                                                               ["tracer"])


def test_both_cores_have_the_same_signature() -> None:
    def parameters(cls: type) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]

    assert parameters(NativeSpan) == parameters(PySpan) == parameters(Span)
    assert [name for name, _, _ in parameters(PySpan)] == list(ARG_NAMES)


@pytest.mark.parametrize("core", CORES)
def test_init_again_starts_the_span_anew(core: type) -> None:
    tracer = Recorder()
    span = core(tracer, "first", "svc", "res", "web", 7, 8, 9)
    meta = span.meta
    span.set_tag("k", "v")
    span.set_metric("m", 1.0)
    span.error = 1
    span._parent = span._prev_active = span._trace = span
    span.finish()
    span.__init__(None, "second")
    assert (span.tracer, span.name, span.resource, span.service, span.parent_id) == (
        None, "second", "second", None, None)
    assert span.meta == span.metrics == {} and span.meta is not meta
    assert span.error == 0 and span.duration_ns is None and not span._finished
    assert span._parent is span._prev_active is span._trace is None
    assert generated_trace_id(span.trace_id, span.start_ns) and generated_span_id(span.span_id)
    span.finish()
    assert tracer.finished == [span]  # the first life's callback only


BARE_CALLS: dict[str, Callable[[Any], Any]] = {
    "set_tag": lambda s: s.set_tag("k", "v"),
    "set_tag of an int": lambda s: s.set_tag("k", 1),
    "set_metric": lambda s: s.set_metric("m", 1.0),
    "set_metric of an int": lambda s: s.set_metric("m", 1),
    "set_metric of a str": lambda s: s.set_metric("m", "x"),
    "finish": lambda s: s.finish(),
    "finish at a time": lambda s: s.finish(1.0),
    "with": with_block,
    "with and an exception": lambda s: with_block(s, Boom),
    "__exit__": lambda s: s.__exit__(None, None, None),
}


def test_a_span_from_new_alone_has_no_fields() -> None:
    span = Span.__new__(Span)
    for field in FIELDS:
        with pytest.raises(AttributeError):
            getattr(span, field)


@pytest.mark.parametrize("call", BARE_CALLS)
def test_methods_of_a_span_without_fields_do_as_python(call: str) -> None:
    native, python = (outcome(BARE_CALLS[call], core.__new__(core)) for core in CORES)
    assert native == python


@pytest.mark.parametrize("duplicate", [
    copy.copy, copy.deepcopy, lambda span: pickle.loads(pickle.dumps(span))],
    ids=["copy", "deepcopy", "pickle"])
@pytest.mark.parametrize("bare", [False, True])
def test_copies_and_pickles_hold_the_same_fields(duplicate: Callable[[Any], Any],
                                                  bare: bool) -> None:
    def fields_of_a_copy(core: type) -> list[Any]:
        span = core.__new__(core) if bare else core(None, "op", "svc", None, None, 5, 6, 7, 1.0)
        if not bare:
            span.set_tag("k", "v")
            span.finish(3.0)
        twin = duplicate(span)
        assert type(twin) is core and twin is not span
        fields = [read(twin, field) for field in FIELDS]
        assert fields == [read(span, field) for field in FIELDS]
        return fields

    native, python = (fields_of_a_copy(core) for core in CORES)
    assert all(same_field(*values) for values in zip(FIELDS, native, python))


# -- memory: cycles and deep chains -------------------------------------------------------------


class Marker:
    pass


@pytest.mark.parametrize("cls", [NativeSpan, _span.SpanCore, PySpan])
def test_spans_in_a_reference_cycle_are_collected(cls: type) -> None:
    freed = []
    span, other = cls(None, "a"), cls(None, "b")
    assert gc.is_tracked(span)
    marker = Marker()
    weakref.finalize(marker, freed.append, "marker")
    span.meta["marker"] = marker  # by hand: set_tag would store its str
    span._parent, other._prev_active = other, span
    other.metrics["self"] = other  # and one through a dict
    del span, other, marker
    gc.collect()
    assert freed == ["marker"]


DEEP_CHAINS = """
import gc
from ddagent import _span
from ddagent.span import PythonSpanCore, Span

_span.use_python_twin(PythonSpanCore)

class Sub(_span.SpanCore):
    __slots__ = ()

def chain(cls):
    first = head = cls(None, "op")
    for _ in range(100_000):
        span = cls(None, "op")
        span._parent = head
        head = span
    return first, head

for cls in (_span.SpanCore, Sub, Span):
    first, head = chain(cls)
    del first, head  # reference counting frees each span inside the previous one's dealloc
    first, head = chain(cls)
    first._parent = head
    del first, head
    gc.collect()  # a cycle: the collector's clear starts the same cascade
print("ok")
"""


def test_deep_parent_chains_deallocate_without_overflowing_the_stack() -> None:
    # In a child process: overflowing the C stack would crash the interpreter.
    result = subprocess.run([sys.executable, "-c", DEEP_CHAINS], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


# -- the encoder -------------------------------------------------------------------------------

WIRE_FIELDS = FIELDS[:12]


def python_copy(span: Any) -> PySpan:
    """A PySpan with ``span``'s field values (the same objects)."""
    twin = PySpan.__new__(PySpan)
    for field in FIELDS:
        if hasattr(span, field):
            setattr(twin, field, getattr(span, field))
    return twin


def with_meta(meta: Any) -> NativeSpan:
    span = NativeSpan(None, "op")
    span.meta = meta
    return span


def without_meta() -> NativeSpan:
    span = NativeSpan(None, "op")
    del span.meta
    return span


def finished_span() -> NativeSpan:
    span = NativeSpan(None, "op", "svc", "GET /", "web", None, None, 12)
    span.set_tag("http.method", "GET")
    span.set_metric("rows", 3)
    with pytest.raises(Boom):
        with_block(span, Boom)
    return span


SPANS_TO_ENCODE: dict[str, Callable[[], Any]] = {
    "new": lambda: NativeSpan(None, "op"),
    "finished, with tags and an error": finished_span,
    "given ids": lambda: NativeSpan(None, "op", None, None, None, 2**64 - 1, 2**63, 0),
    "a span id too large for the wire": lambda: NativeSpan(None, "op", None, None, None, 5, 2**64),
    "an int in meta": lambda: with_meta({"k": 1}),
    "meta unset": without_meta,
}


@pytest.mark.parametrize("make", SPANS_TO_ENCODE)
def test_native_and_python_spans_encode_the_same(make: str) -> None:
    native = SPANS_TO_ENCODE[make]()
    python = python_copy(native)
    expected = outcome(encode_trace_python, [native])
    assert outcome(encode_trace_python, [python]) == expected
    assert outcome(encode_trace, [native]) == expected
    assert outcome(encode_trace, [python]) == expected
    # Both classes in one trace, one after the other (the encoder remembers one class's layout).
    assert outcome(encode_trace, [native, python, native]) == outcome(
        encode_trace_python, [native, python, native])


# -- ids ---------------------------------------------------------------------------------------


@pytest.fixture
def reseed() -> Any:
    """Random native ids again after the test (it seeds the generator with a constant)."""
    try:
        yield
    finally:
        _span.seed(os.urandom(8))


def native_ids(count: int) -> list[list[int]]:
    spans = [_span.SpanCore(None, "op") for _ in range(count)]
    return [[span.trace_id & LOW_64, span.span_id] for span in spans]


def test_the_same_seed_gives_the_same_ids(reseed: None) -> None:
    _span.seed(b"abcdefgh")
    first = native_ids(5)
    _span.seed(bytearray(b"abcdefgh"))
    assert native_ids(5) == first
    _span.seed(memoryview(b"hgfedcba"))
    assert native_ids(5) != first


@pytest.mark.parametrize("seed, error", [
    (b"", ValueError), (b"1234567", ValueError), ("12345678", TypeError), (None, TypeError)])
def test_a_seed_needs_eight_bytes(seed: Any, error: type[Exception], reseed: None) -> None:
    with pytest.raises(error):
        _span.seed(seed)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_a_forked_child_draws_other_ids_than_its_parent(reseed: None) -> None:
    _span.seed(b"12345678")  # without the reseed at fork, the child would repeat these ids
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its ids, then leave without running pytest's exit
        status = 1
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(native_ids(3)).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = json.loads(pipe.read())
    _, status = os.waitpid(pid, 0)
    parent = native_ids(3)
    assert status == 0 and len(child) == 3
    assert not {id_ for pair in child for id_ in pair} & {id_ for pair in parent for id_ in pair}


# -- the switch and the tracer on either core ---------------------------------------------------


def run_python(code: str, setting: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DD_TRACE_NATIVE_SPAN": setting}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, check=True, timeout=60)


@pytest.mark.parametrize("setting, expected", [
    ("", "ddagent._span.SpanCore"), ("true", "ddagent._span.SpanCore"),
    ("false", "ddagent.span.PythonSpanCore"), (" Off ", "ddagent.span.PythonSpanCore"),
    ("0", "ddagent.span.PythonSpanCore"),
    ("maybe", "ddagent._span.SpanCore"),  # malformed: a warning, and the default
])
def test_the_switch_selects_the_core(setting: str, expected: str) -> None:
    code = ("import ddagent.span as s; core = s.SpanCore; assert s.Span.__bases__ == (core,); "
            "print(f'{core.__module__}.{core.__qualname__}')")
    result = run_python(code, setting)
    assert result.stdout.strip() == expected
    malformed = setting == "maybe"
    assert ("ignoring DD_TRACE_NATIVE_SPAN='maybe'" in result.stderr) == malformed, result.stderr


WITHOUT_THE_EXTENSION = """
import os, sys
sys.modules["ddagent._span"] = None  # as on an install without a C compiler
import ddagent.ids as ids
import ddagent.span as s
assert s.SpanCore is s.PythonSpanCore and ids._native is None and "random" in sys.modules
span = s.Span(None, "x")
assert span.span_id > 0 and 0 < span.trace_id & ((1 << 64) - 1) and span.trace_id >> 96 > 0
read, write = os.pipe()
if os.fork() == 0:
    os.write(write, str(ids.random_bits()).encode()); os._exit(0)
os.wait()
assert int(os.read(read, 100)) != ids.random_bits()  # the child was reseeded
print("ok")
"""


def test_without_the_extension_spans_and_ids_come_from_python() -> None:
    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    assert run_python(WITHOUT_THE_EXTENSION, "").stdout == "ok\n"


TRACED_PROGRAM = """
import json

import ddagent.span
from ddagent.config import Config
from ddagent.tracer import Tracer
from tests.listwriter import ListWriter

tracer = Tracer(Config.from_env({"DD_SERVICE": "svc"}))
tracer.writer = ListWriter()
with tracer.trace("root", resource="GET /", span_type="web") as root:
    root.set_tag("http.method", "GET")
    root.set_metric("rows", 3)
    with tracer.trace("child") as child:
        child.set_tag("attempt", 2)
        child.set_metric("ratio", 0.5)
        try:
            with tracer.trace("failing", service="db"):
                raise ValueError("boom")
        except ValueError:
            pass
    tracer.start_span("manual", child_of=root).finish()


def shape(span, chunk):
    names = {other.span_id: other.name for other in chunk}
    meta = dict(span.meta)
    if "_dd.p.tid" in meta:
        meta["_dd.p.tid"] = int(meta["_dd.p.tid"], 16) == span.trace_id >> 64
    if "runtime-id" in meta:
        meta["runtime-id"] = "<this process's>"
    metrics = {key: "<this process's>" if key == "process_id" else value
               for key, value in span.metrics.items()}
    return {
        "name": span.name, "service": span.service, "resource": span.resource,
        "type": span.span_type, "error": span.error, "parent": names.get(span.parent_id),
        "trace": span.trace_id == root.trace_id, "span id": 0 < span.span_id < 2**64,
        "duration": span.duration_ns >= 0, "meta": meta, "metrics": metrics,
    }


print(json.dumps({
    "core": ddagent.span.SpanCore.__qualname__,
    "chunks": [[shape(span, chunk) for span in chunk] for chunk in tracer.writer.chunks],
}))
"""


def test_the_tracer_writes_the_same_traces_with_either_core() -> None:
    native, python = (json.loads(run_python(TRACED_PROGRAM, setting).stdout)
                      for setting in ("", "false"))
    assert (native["core"], python["core"]) == ("SpanCore", "PythonSpanCore")
    assert native["chunks"] == python["chunks"]
    (chunk,) = native["chunks"]
    assert [(span["name"], span["parent"]) for span in chunk] == [
        ("failing", "child"), ("child", "root"), ("manual", "root"), ("root", None)]
    assert all(span["trace"] and span["span id"] and span["duration"] for span in chunk)
    failing = chunk[0]
    assert failing["error"] == 1 and failing["meta"]["error.type"] == "builtins.ValueError"
    assert failing["meta"]["_dd.p.tid"] is True
    assert chunk[3]["meta"] == {"http.method": "GET"} and chunk[3]["metrics"]["rows"] == 3.0

