from __future__ import annotations

import logging
import math
import sys

import pytest

from ddagent import Span
from ddagent.ext import errors


def test_seed_constructor_defaults() -> None:
    span = Span(None, "op")
    assert span.name == span.resource == "op"
    assert span.service is None and span.span_type is None and span.parent_id is None
    assert span.trace_id > 0 and 0 < span.span_id < 2**64
    assert span.error == 0 and span.meta == {} and span.metrics == {}
    assert span.duration is None and span.duration_ns is None


def test_start_and_duration_are_float_seconds_over_ns() -> None:
    span = Span(None, "op", start=1000.5)
    assert span.start_ns == 1_000_500_000_000
    assert span.start == 1000.5
    span.finish(finish_time=1002.0)
    assert span.duration_ns == 1_500_000_000 and span.duration == 1.5


def test_duration_is_monotonic_and_never_negative() -> None:
    span = Span(None, "op")
    span.finish()
    assert span.duration_ns >= 0
    late = Span(None, "op", start=2000.0)
    late.finish(finish_time=1999.0)
    assert late.duration_ns == 0


def test_finish_is_idempotent_and_keeps_a_duration_set_by_hand() -> None:
    span = Span(None, "op")
    span.duration = 3.0
    span.finish()
    span.finish()
    assert span.duration == 3.0 and span.finished


def test_tags_are_strings() -> None:
    span = Span(None, "op")
    span.set_tag("a", 5)
    span.set_meta("b", None)
    span.set_tags({"c": 1.5})
    span.set_metas({"d": "x"})
    span.set_tags(None)
    assert span.meta == {"a": "5", "b": "None", "c": "1.5", "d": "x"}
    assert span.get_tag("a") == "5" and span.get_tag("zz") is None


def test_unprintable_tag_is_ignored() -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no")

    span = Span(None, "op")
    span.set_tag("k", Bad())
    assert "k" not in span.meta


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -math.inf, "abc", None, object()])
def test_metrics_reject_non_finite_and_non_numbers(value, caplog) -> None:
    span = Span(None, "op")
    with caplog.at_level(logging.DEBUG, logger="ddagent.span"):
        span.set_metric("m", value)
    assert "m" not in span.metrics
    assert any("dropping metric" in r.message for r in caplog.records)


def test_metrics_convert_numbers() -> None:
    span = Span(None, "op")
    span.set_metrics({"a": 1, "b": 2.5, "c": "12.5", "d": True, "e": 2**70})
    assert span.metrics == {"a": 1, "b": 2.5, "c": 12.5, "d": 1.0, "e": float(2**70)}
    assert span.get_metric("c") == 12.5


def test_error_tags() -> None:
    span = Span(None, "op")
    try:
        raise ValueError("boom")
    except ValueError:
        span.set_traceback()
    assert span.error == 1
    assert span.meta[errors.ERROR_MSG] == "boom"
    assert span.meta["error.message"] == "boom"
    assert span.meta["error.type"] == "builtins.ValueError"
    assert "Traceback" in span.meta["error.stack"] and "boom" in span.meta["error.stack"]


def test_error_type_is_qualified() -> None:
    class Outer:
        class Inner(Exception):
            pass

    span = Span(None, "op")
    span.set_exc_info(Outer.Inner, Outer.Inner("x"), None)
    assert span.meta["error.type"] == f"{__name__}.{Outer.Inner.__qualname__}"


def test_error_stack_is_bounded() -> None:
    def recurse(n: int) -> None:
        if n == 0:
            raise RuntimeError("deep")
        recurse(n - 1)

    span = Span(None, "op")
    try:
        recurse(200)
    except RuntimeError:
        span.set_exc_info(*sys.exc_info())
    assert span.meta["error.stack"].count("in recurse") <= 30


def test_set_traceback_without_exception_does_nothing() -> None:
    span = Span(None, "op")
    span.set_traceback()
    assert span.error == 0 and span.meta == {}


def test_context_manager_records_and_propagates_the_error() -> None:
    with pytest.raises(KeyError):
        with Span(None, "op") as span:
            raise KeyError("k")
    assert span.error == 1 and span.finished and span.meta["error.type"] == "builtins.KeyError"


def test_no_len_so_a_span_is_always_truthy() -> None:
    span = Span(None, "op")
    assert not hasattr(span, "__len__")
    assert span
    with pytest.raises(TypeError):
        len(span)  # type: ignore[arg-type]


def test_slots_only() -> None:
    with pytest.raises(AttributeError):
        Span(None, "op").whatever = 1  # type: ignore[attr-defined]


def test_to_dict_is_the_wire_form() -> None:
    span = Span(None, "op", service="s", resource="r", span_type="web",
                trace_id=(5 << 64) | 7, span_id=3, parent_id=None, start=1.0)
    span.set_tag("k", "v")
    span.set_metric("m", 2)
    span.finish(finish_time=1.0)
    assert span.to_dict() == {
        "trace_id": 7, "span_id": 3, "parent_id": 0, "name": "op", "service": "s",
        "resource": "r", "type": "web", "start": 1_000_000_000, "duration": 0, "error": 0,
        "meta": {"k": "v"}, "metrics": {"m": 2},
    }


def test_pprint_and_repr() -> None:
    span = Span(None, "op", service="svc", span_id=12, trace_id=34)
    span.set_tag("b", "2")
    span.set_tag("a", "1")
    text = span.pprint()
    assert "      name op" in text and "   service svc" in text
    assert text.index("a:1") < text.index("b:2")
    assert repr(span) == "<Span(id=12,trace_id=34,parent_id=None,name=op)>"


def test_sampled_compatibility_attribute_without_tracer() -> None:
    span = Span(None, "op")
    assert span.sampled is True
    span.sampled = False  # no trace to decide for: harmless


def test_debug_logs_never_format_a_users_value(caplog):
    """With debug logging on, a value whose __str__/__repr__ raises is still just dropped."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("unprintable")

        __repr__ = __str__

    caplog.set_level(logging.DEBUG, logger="ddagent")
    span = Span(None, "debug.logs")
    span.set_metric("metric", Unprintable())
    span.set_tag("tag", Unprintable())
    assert "metric" not in span.metrics and "tag" not in span.meta
