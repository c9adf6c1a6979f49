"""Scenario 3: a Flask request — the in-process test client (CPU per request), and gunicorn with
one worker under ``wrk`` (requests/s, p50/p99 latency; wrk, gunicorn and the agent share the
machine's cores, as they would in production with a local agent).

Requests/s swings between runs on a noisy machine; the gunicorn worker's own CPU per request
(every thread of it, so the exporter counts) is much steadier and explains a throughput ratio,
and the test agent's CPU during the run shows what the agent takes from the shared cores.

Under gunicorn each contender instruments the app through its documented launcher alone:
``python -m ddagent``, ``ddtrace-run`` and ``opentelemetry-instrument`` (with
``opentelemetry-distro``, which is what configures its SDK and exporter).
"""

from __future__ import annotations

import os
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
from bench.runner import Context, Results, Row, Target, child_pids, cmdline, proc_stat
from tests.testagent import free_port

TITLE = "3. a Flask request"
WRK = "gunicorn -w 1 + wrk"
# The worker's and the agent's CPU are cases of their own so that either can be n/a (with its
# reason) while the wrk figures stand.
WORKER, AGENT = "gunicorn worker", "test agent"
CASES = ["test client", WRK, WORKER, AGENT]
ROWS = [
    Row("test client", "cpu_us", "test client: CPU per request", "µs"),
    Row(WRK, "rps", "gunicorn -w 1 + wrk: throughput", "req/s"),
    Row(WRK, "p50_ms", "gunicorn -w 1 + wrk: p50 latency", "ms"),
    Row(WRK, "p99_ms", "gunicorn -w 1 + wrk: p99 latency", "ms"),
    Row(WORKER, "cpu_us", "gunicorn -w 1 + wrk: worker CPU per request", "µs"),
    Row(AGENT, "cpu_pct", "gunicorn -w 1 + wrk: agent CPU during the run", "% of a core",
        ratio_to=None),  # ~0 without a tracer: a ratio to it would mean nothing
]
# How long each contender's exporter may hold finished spans: the Datadog writers send once a
# second, OpenTelemetry's batch processor every 5 s (or at 512 spans). The worker's CPU window
# opens and closes that long after the traffic, so the warm-up's export falls before it and the
# run's last export inside it.
EXPORT_WAIT_S = {"baseline": 0.0, "ddagent": 1.2, "ddtrace": 1.2, "otel": 5.2}
CLK_TCK = os.sysconf("SC_CLK_TCK")

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
    """``{case: figures}``: wrk's figures, the worker's CPU, the agent's; or ``{"na": why}``."""
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
            if not wait_serving(url, server):
                log.seek(0)
                last = (log.read().decode(errors="replace").strip().splitlines() or ["?"])[-1]
                return {"na": f"gunicorn did not serve: {last[:160]}"}
            for _ in range(100):  # warm-up: imports, first spans, the writer's thread
                urllib.request.urlopen(url).read()
            worker, why_not = worker_pid(server.pid)
            agent = ctx.agent_pid
            time.sleep(EXPORT_WAIT_S[contender])
            worker_before, agent_before = _cpu(worker), _cpu(agent)
            duration = "2s" if ctx.quick else "5s"
            started = time.monotonic()
            out = subprocess.run(
                ["wrk", "-t1", "-c10", f"-d{duration}", "--latency", url],
                capture_output=True, text=True, check=True,
            ).stdout
            wall = time.monotonic() - started
            agent_after = _cpu(agent)
            time.sleep(EXPORT_WAIT_S[contender])
            worker_after = _cpu(worker)
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    figures = _parse_wrk(out)
    requests = figures.pop("requests")
    if worker is None:
        worker_case = {"na": why_not}
    elif not requests:
        worker_case = {"na": "wrk completed no request"}
    elif worker_before is None or worker_after is None or worker_before[0] != worker_after[0]:
        worker_case = {"na": "the gunicorn worker was replaced during the run"}
    else:
        worker_case = {"cpu_us": (worker_after[1] - worker_before[1]) / CLK_TCK / requests * 1e6}
    if agent_before is None or agent_after is None:
        agent_case = {"na": "test agent exited during the run"}
    else:
        agent_case = {"cpu_pct": (agent_after[1] - agent_before[1]) / CLK_TCK / wall * 100}
    return {WRK: figures, WORKER: worker_case, AGENT: agent_case}


def worker_pid(master: int) -> tuple[Optional[int], str]:
    """The one worker of the gunicorn master ``master``, or None and why.

    ``master`` is the process the launcher started: ``python -m ddagent`` runs gunicorn in its
    own process and ``ddtrace-run`` / ``opentelemetry-instrument`` exec it, so it is the master
    itself (checked with ``ps`` for each launcher) — unless a launcher starts spawning instead.
    """
    argv = cmdline(master)
    if not any("gunicorn" in arg for arg in argv):
        return None, f"the launched process is not gunicorn: {' '.join(argv)[:100] or 'gone'}"
    # A worker is forked, so it carries the master's command line (or a gunicorn proctitle).
    workers = [pid for pid in child_pids(master)
               if any("gunicorn" in arg for arg in cmdline(pid))]
    if len(workers) != 1:
        return None, f"{len(workers)} gunicorn workers under the master, expected 1"
    return workers[0], ""


def _cpu(pid: Optional[int]) -> Optional[tuple[str, int]]:
    """(start time, utime + stime in clock ticks) of ``pid``: the start time tells a pid reused
    by another process apart. None if there is no such process."""
    if pid is None:
        return None
    try:
        fields = proc_stat(pid)
    except OSError:
        return None
    return fields[21], int(fields[13]) + int(fields[14])


def wait_serving(url: str, server: subprocess.Popen, timeout: float = 30,
                 slowness: float = 1) -> bool:
    """True once ``url`` answers, False if ``server`` exits or ``timeout`` seconds pass first.
    ``slowness`` stretches the per-try waits (valgrind runs a server ~50 times slower)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=2 * slowness).read()
            return True
        except OSError:
            time.sleep(0.1 * slowness)
    return False


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _parse_wrk(out: str) -> dict:
    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * _UNIT_MS[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    # The count wrk completed, not rps × duration: wrk's duration is not the window's.
    requests = int(re.search(r"^\s*(\d+) requests in ", out, re.M).group(1))
    return {"rps": rps, "p50_ms": latency("50"), "p99_ms": latency("99"), "requests": requests}


def measure(ctx: Context, contender: str) -> dict:
    in_process = ctx.run_child(
        __name__.rsplit(".", 1)[-1], contender,
        launcher=launcher(ctx, contender) if contender == "ddagent" else None,
    )
    served = gunicorn(ctx, contender)
    if "na" in served:
        served = {case: served for case in (WRK, WORKER, AGENT)}
    return {"test client": in_process.get("test client", in_process), **served}


def _rps_ratio(r: Results) -> Optional[float]:
    ours, base = (r.median(WRK, who, "rps") for who in ("ddagent", "baseline"))
    return ours / base if ours is not None and base else None


TARGETS: list[Target] = [
    Target("3. gunicorn requests/s ÷ untraced", 0.85, _rps_ratio, at_least=True),
]
