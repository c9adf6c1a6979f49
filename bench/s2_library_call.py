"""Scenario 2: one call through an instrumented library function — redis GET against the local
server, sqlite3 execute — never instrumented, instrumented and enabled, then disabled again.

Each child measures the three states in that order in one process (an instrumentation cannot be
taken back to "never"), so "disabled ÷ never" and "added by enabled" are paired within a round.
Cost per call is the process's CPU (export included), not Redis's.

"Never" and "disabled" are seconds apart on a shared, noisy machine, so each is measured in
short windows alternating with a *reference* call that no contender instruments (redis: the same
GET written to the server's socket by hand; sqlite3: ``execute`` on a cursor of a connection
opened before instrumenting). "Disabled ÷ never" is the ratio of the medians over windows of
(state ÷ reference), which cancels the machine's drift between the two states. "Enabled" is one
window with the export flushed at its end ("added" = enabled − never): a reference window
would be charged with the background export of the spans before it.
"""

from __future__ import annotations

import importlib
import os
import socket
import sqlite3
import statistics
import time
from typing import Any, Callable, NamedTuple, Optional

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


def redis_reference() -> Callable[[int], None]:
    """The same GET through a raw socket: the server's round trip, no redis-py, no tracer."""
    sock = socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=2)
    request = b"*2\r\n$3\r\nGET\r\n$9\r\nbench:key\r\n"
    reply = b"$5\r\nvalue\r\n"

    def calls(n: int) -> None:
        for _ in range(n):
            sock.sendall(request)
            received = b""
            while len(received) < len(reply):
                received += sock.recv(64)

    return calls


def sqlite3_calls() -> Callable[[int], None]:
    cursor = sqlite3.connect(":memory:").cursor()

    def calls(n: int) -> None:
        for _ in range(n):
            cursor.execute("SELECT 1")

    return calls


CALLS = {"redis": redis_calls, "sqlite3": sqlite3_calls}
# Made before instrumenting: a plain sqlite3 connection stays plain in every state.
REFERENCE = {"redis": redis_reference, "sqlite3": sqlite3_calls}
SECONDS = 0.3 if QUICK else 2.0  # CPU time measured while enabled
WINDOWS = 6 if QUICK else 20  # alternating windows per untraced state
WINDOW_SECONDS = 0.05 if QUICK else 0.1  # CPU time of each window, state and reference alike


def cpu_in_window(calls: Callable[[int], None], seconds: float,
                  flush: Optional[Callable[[], None]] = None) -> float:
    """Process CPU µs per call over ``seconds`` of CPU plus ``flush()`` (the export of the
    window's spans), in chunks of 20 calls (a window fits a redis GET and a 1 µs call alike)."""
    start, done = time.process_time(), 0
    while time.process_time() - start < seconds:
        calls(20)
        done += 20
    if flush is not None:
        flush()
    return (time.process_time() - start) * 1e6 / done


class State(NamedTuple):
    per_call: float  # CPU µs per call, median over windows
    relative: float  # median over windows of (per call ÷ the reference's per call)


def measure_state(library: str, reference: Callable[[int], None], t: tracers.Tracing) -> State:
    calls = CALLS[library]()
    calls(50)  # warm-up: connection, first spans
    reference(50)
    t.flush()
    costs, references = [], []
    for _ in range(WINDOWS):
        costs.append(cpu_in_window(calls, WINDOW_SECONDS, t.flush))
        references.append(cpu_in_window(reference, WINDOW_SECONDS))
    ratios = [c / r for c, r in zip(costs, references)]
    return State(statistics.median(costs), statistics.median(ratios))


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
        reference = REFERENCE[library]()
        never = measure_state(library, reference, t)
        if contender == "baseline":
            out[case] = {"never": never.per_call}
            continue
        try:
            disable = INSTRUMENT[contender](library, t)
        except Unavailable as e:
            out[case] = {"na": str(e)}
            continue
        calls = CALLS[library]()
        calls(50)  # warm-up: connection, first spans
        t.flush()
        enabled = cpu_per_call(calls, SECONDS, t.flush)
        disable()
        disabled = measure_state(library, reference, t)
        out[case] = {"never": never.per_call, "enabled": enabled,
                     "disabled": disabled.per_call, "added": enabled - never.per_call,
                     "disabled_ratio": disabled.relative / never.relative}
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
