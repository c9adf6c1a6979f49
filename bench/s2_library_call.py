"""Scenario 2: one call through an instrumented library function — redis GET against the local
server, sqlite3 execute — never instrumented, instrumented and enabled, then disabled again.

Each child measures the three states in that order in one process (an instrumentation cannot be
taken back to "never"), so "disabled ÷ never" and "added by enabled" are paired within a round.
Cost per call is the process's CPU (export included), not Redis's.
"""

from __future__ import annotations

import importlib
import os
import socket
import sqlite3
from typing import Any, Callable, Optional

from bench import tracers
from bench.child import QUICK, Unavailable, cpu_per_call
from bench.runner import Context, Results, Row, Target

TITLE = "2. a call through an instrumented library (per call)"
CASES = ["redis GET", "sqlite3 execute"]
LIBRARY = {"redis GET": "redis", "sqlite3 execute": "sqlite3"}
REDIS_PORT = int(os.environ.get("BENCH_REDIS_PORT", "6379"))

ROWS = [
    row
    for case in CASES
    for row in (
        Row(case, "never", f"{case}: never instrumented, CPU", "µs"),
        Row(case, "enabled", f"{case}: instrumented + enabled, CPU", "µs"),
        Row(case, "disabled", f"{case}: instrumented, then disabled, CPU", "µs"),
        Row(case, "added", f"{case}: added by enabled (enabled − never)", "µs", "ddtrace"),
        Row(case, "disabled_ratio", f"{case}: disabled ÷ never", "×", None),
    )
]


# --- instrumenting, per contender: each returns the function that turns it off again ---------

def instrument_ddagent(library: str, t: tracers.Tracing) -> Callable[[], None]:
    try:
        import ddagent
        from ddagent import probes

        ddagent.patch(**{library: True})
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        raise Unavailable(f"ddagent cannot patch {library} yet ({e})") from e
    return lambda: probes.disable(library)


def instrument_ddtrace(library: str, t: tracers.Tracing) -> Callable[[], None]:
    import ddtrace

    ddtrace.patch(**{library: True})
    return importlib.import_module(f"ddtrace.contrib.internal.{library}.patch").unpatch


def instrument_otel(library: str, t: tracers.Tracing) -> Callable[[], None]:
    if library == "redis":
        from opentelemetry.instrumentation.redis import RedisInstrumentor as Instrumentor
    else:
        from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor as Instrumentor
    instrumentor = Instrumentor()
    instrumentor.instrument(tracer_provider=t.tracer)
    return instrumentor.uninstrument


INSTRUMENT = {"ddagent": instrument_ddagent, "ddtrace": instrument_ddtrace,
              "otel": instrument_otel}


# --- the calls, identical for everyone; clients are made after each state change -------------

def redis_calls() -> Callable[[int], None]:
    import redis

    client: Any = redis.Redis(host="127.0.0.1", port=REDIS_PORT, socket_connect_timeout=2)
    client.set("bench:key", "value")

    def calls(n: int) -> None:
        for _ in range(n):
            client.get("bench:key")

    return calls


def sqlite3_calls() -> Callable[[int], None]:
    cursor = sqlite3.connect(":memory:").cursor()

    def calls(n: int) -> None:
        for _ in range(n):
            cursor.execute("SELECT 1")

    return calls


CALLS = {"redis": redis_calls, "sqlite3": sqlite3_calls}
SECONDS = 0.3 if QUICK else 2.0  # CPU time measured per state


def cpu_per_call_in_state(library: str, t: tracers.Tracing) -> float:
    calls = CALLS[library]()
    calls(50)  # warm-up: connection, first spans
    t.flush()
    return cpu_per_call(calls, SECONDS, t.flush)


def redis_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=1).close()
        return True
    except OSError:
        return False


def child(contender: str) -> dict:
    t = tracers.start(contender)
    out: dict = {}
    for case in CASES:
        library = LIBRARY[case]
        if library == "redis" and not redis_reachable():
            out[case] = {"na": f"no Redis on 127.0.0.1:{REDIS_PORT}"}
            continue
        never = cpu_per_call_in_state(library, t)
        if contender == "baseline":
            out[case] = {"never": never}
            continue
        try:
            disable = INSTRUMENT[contender](library, t)
        except Unavailable as e:
            out[case] = {"na": str(e)}
            continue
        enabled = cpu_per_call_in_state(library, t)
        disable()
        disabled = cpu_per_call_in_state(library, t)
        out[case] = {"never": never, "enabled": enabled, "disabled": disabled,
                     "added": enabled - never, "disabled_ratio": disabled / never}
    return out


def measure(ctx: Context, contender: str) -> dict:
    return ctx.run_child(__name__.rsplit(".", 1)[-1], contender)


def _disabled(case: str) -> Callable[[Results], Optional[float]]:
    return lambda r: r.median(case, "ddagent", "disabled_ratio")


def _added(case: str) -> Callable[[Results], Optional[float]]:
    def value(r: Results) -> Optional[float]:
        ours, theirs = r.median(case, "ddagent", "added"), r.median(case, "ddtrace", "added")
        return ours / theirs if ours is not None and theirs else None

    return value


TARGETS = [
    target
    for case in CASES
    for target in (
        Target(f"2. {case}: disabled ÷ never instrumented", 1.02, _disabled(case)),
        Target(f"2. {case}: added cost ÷ ddtrace's added cost", 0.2, _added(case)),
    )
]
