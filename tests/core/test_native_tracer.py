"""The native tracer and trace buffer cores (TracerCore, TraceBufferCore in ddagent/_span.c)
against their Python twins (PythonTracerCore, PythonTraceBufferCore): the same traces and counts
through every path of trace(), _on_span_finish, span_started and span_finished, and errors
counted rather than raised."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ddagent.context import PythonTraceBufferCore, TraceBuffer
from ddagent.sampler import keeps
from ddagent.span import PythonSpanCore, SpanCore
from ddagent.stats import STATS
from ddagent.tracer import PythonTracerCore, Tracer
from tests.core.conftest import make_tracer

REPO = Path(__file__).resolve().parents[2]
NATIVE = SpanCore is not PythonSpanCore


def run_scenarios(native: bool) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DD_TRACE_NATIVE_SPAN"}
    if not native:
        env["DD_TRACE_NATIVE_SPAN"] = "false"
    done = subprocess.run([sys.executable, "-m", "tests.core.tracer_core_scenarios"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr.strip().splitlines()[-1]


@pytest.mark.skipif(not NATIVE, reason="the native span core is switched off or not built")
def test_the_native_core_sends_what_its_python_twin_sends() -> None:
    native, native_core = run_scenarios(native=True)
    python, python_core = run_scenarios(native=False)
    assert (native_core, python_core) == ("TracerCore", "PythonTracerCore")
    for native_line, python_line in zip(native.splitlines(), python.splitlines()):
        assert native_line == python_line
    assert len(native.splitlines()) == len(python.splitlines()) > 10


def test_the_tracer_and_buffer_cores_follow_the_span_core() -> None:
    assert (Tracer.__mro__[1] is PythonTracerCore) == (not NATIVE)
    assert (TraceBuffer.__mro__[1] is PythonTraceBufferCore) == (not NATIVE)


def test_trace_is_described_as_its_twin() -> None:
    def described(method: object) -> list[tuple[str, object]]:
        return [(p.name, p.default) for p in inspect.signature(method).parameters.values()]

    assert described(Tracer.trace) == described(PythonTracerCore.trace)
    assert "active span" in (Tracer.trace.__doc__ or "")


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_agent_rates_decide_as_the_agent_does(rate: float) -> None:
    tracer = make_tracer()
    tracer.agent_sampler.update_rates({"service:test-svc,env:": rate})
    for _ in range(300):
        tracer.trace("sampled").finish()
    for (span,) in tracer.writer.chunks:
        kept = keeps(span.trace_id, rate)
        assert span.metrics["_sampling_priority_v1"] == (1.0 if kept else 0.0)
        assert span.metrics["_dd.agent_psr"] == rate
        assert span.meta.get("_dd.p.dm") == ("-1" if kept else None)


class FailingWriter:
    def write(self, spans: list) -> None:
        raise RuntimeError("writer broke")


def test_an_error_while_sending_is_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    tracer = make_tracer()
    tracer.writer = FailingWriter()
    before = STATS.get("tracer.errors")
    with tracer.trace("root"):
        with tracer.trace("child"):
            pass
    tracer.trace("lone").finish()
    assert STATS.get("tracer.errors") == before + 2
    assert tracer.current_span() is None
    assert "writer broke" in caplog.text


def test_a_tracer_subclass_that_skips_init_gets_the_twins_error() -> None:
    class Bare(Tracer):
        def __init__(self) -> None:
            pass

    with pytest.raises(AttributeError):
        Bare().trace("x")
