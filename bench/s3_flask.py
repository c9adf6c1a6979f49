"""Scenario 3: a Flask request — the in-process test client (CPU per request), and gunicorn with
one worker under ``wrk`` (requests/s, p50/p99 latency; wrk, gunicorn and the agent share the
machine's cores, as they would in production with a local agent).

Under gunicorn each contender instruments the app through its documented launcher alone:
``python -m ddagent``, ``ddtrace-run`` and ``opentelemetry-instrument`` (with
``opentelemetry-distro``, which is what configures its SDK and exporter).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

from bench import tracers
from bench.child import cpu_per_op, sized
from bench.runner import Context, Results, Row, Target
from tests.testagent import free_port

TITLE = "3. a Flask request"
CASES = ["test client", "gunicorn -w 1 + wrk"]
ROWS = [
    Row("test client", "cpu_us", "test client: CPU per request", "µs"),
    Row("gunicorn -w 1 + wrk", "rps", "gunicorn -w 1 + wrk: throughput", "req/s"),
    Row("gunicorn -w 1 + wrk", "p50_ms", "gunicorn -w 1 + wrk: p50 latency", "ms"),
    Row("gunicorn -w 1 + wrk", "p99_ms", "gunicorn -w 1 + wrk: p99 latency", "ms"),
]
# --- in-process test client: each contender instruments Flask its own documented way ---------

def child(contender: str) -> dict:
    t = tracers.start(contender)
    result: dict = {}
    if contender == "ddtrace":
        import ddtrace

        ddtrace.patch(flask=True)
    from bench.flask_app import app

    if contender == "otel":
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument_app(app, tracer_provider=t.tracer)
    client = app.test_client()
    requests = sized(500, 5_000)

    def get(n: int) -> None:
        # buffered: read and close each body, as a server does. A body left unread and
        # unclosed ends the request span only when the response is dropped, or never.
        for _ in range(n):
            client.get("/", buffered=True)

    cpu_per_op(lambda: get(50), 50, t.flush)  # warm-up
    result["cpu_us"] = cpu_per_op(lambda: get(requests), requests, t.flush)
    return {"test client": result}


# --- gunicorn under wrk: each contender's documented launcher ---------------------------------

def launcher(ctx: Context, contender: str) -> list[str]:
    """How each contender starts a Python program with tracing installed."""
    return {
        "baseline": [ctx.python],
        "ddagent": [ctx.python, "-m", "ddagent"],
        "ddtrace": [str(ctx.bin_dir / "ddtrace-run"), ctx.python],
        "otel": [str(ctx.bin_dir / "opentelemetry-instrument"), ctx.python],
    }[contender]


def gunicorn(ctx: Context, contender: str) -> dict:
    if shutil.which("wrk") is None:
        return {"na": "wrk not installed (apt-get install -y wrk)"}
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    argv = launcher(ctx, contender) + [
        "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}",
        "--chdir", str(Path(__file__).parent), "flask_app:app",
    ]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(argv, env=ctx.env(contender), stdout=log, stderr=log)
        try:
            if not _wait_serving(url, server):
                log.seek(0)
                last = (log.read().decode(errors="replace").strip().splitlines() or ["?"])[-1]
                return {"na": f"gunicorn did not serve: {last[:160]}"}
            for _ in range(100):  # warm-up: imports, first spans, the writer's thread
                urllib.request.urlopen(url).read()
            duration = "2s" if ctx.quick else "5s"
            out = subprocess.run(
                ["wrk", "-t1", "-c10", f"-d{duration}", "--latency", url],
                capture_output=True, text=True, check=True,
            ).stdout
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return _parse_wrk(out)


def _wait_serving(url: str, server: subprocess.Popen, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return True
        except OSError:
            time.sleep(0.1)
    return False


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _parse_wrk(out: str) -> dict:
    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * _UNIT_MS[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"rps": rps, "p50_ms": latency("50"), "p99_ms": latency("99")}


def measure(ctx: Context, contender: str) -> dict:
    in_process = ctx.run_child(
        __name__.rsplit(".", 1)[-1], contender,
        launcher=launcher(ctx, contender) if contender == "ddagent" else None,
    )
    served = gunicorn(ctx, contender)
    return {"test client": in_process.get("test client", in_process),
            "gunicorn -w 1 + wrk": served}


def _rps_ratio(r: Results) -> Optional[float]:
    ours, base = (r.median("gunicorn -w 1 + wrk", who, "rps") for who in ("ddagent", "baseline"))
    return ours / base if ours is not None and base else None


TARGETS: list[Target] = [
    Target("3. gunicorn requests/s ÷ untraced", 0.85, _rps_ratio, at_least=True),
]
