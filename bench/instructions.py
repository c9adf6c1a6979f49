"""Instructions per operation under callgrind: the noise-free second opinion on scenarios 1-3.

    python3 bench/instructions.py [--case span|trace100|redis|gunicorn ...] [--contender NAME ...]

CPU time on a shared 2-core machine moves by tens of percent between runs; the number of
instructions a program executes does not. Each case runs twice under ``valgrind
--tool=callgrind``, with a short and a long series of operations: (instructions of the long run
- those of the short one) / (the extra operations) is the cost of one operation, with start-up,
imports and warm-up cancelled out. Every thread of the measured process counts, so export to
the live test agent is included, as in ``run.py``. Instructions are not time (a cache miss costs
more than an add), but two figures for the same interpreter compare honestly.

Every contender's exporter is told to send only when its buffer fills or at the end
(``LONG_EXPORT_INTERVAL``): under valgrind a program runs ~50 times slower, so a send every
second would land on a few dozen operations instead of the thousands it serves at full speed,
and its fixed cost would be counted many times over.

Cases:

- ``span``: scenario 1's "1 span + 2 tags", per span; ``trace100``: its "trace of 100", per span.
- ``redis``: scenario 2's redis GET, instrumented and enabled (none for the baseline), per call:
  what each tracer adds to the client's instructions (the server's are not counted).
- ``gunicorn``: scenario 3's Flask app under gunicorn (one worker, each contender's launcher),
  sequential requests; the worker's instructions per request. ``no tracer ÷ contender`` is the
  throughput ratio a CPU-bound worker would reach.

Needs valgrind (``apt-get install -y valgrind``); like ``run.py`` it runs inside ``.venv-bench``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import live_context, run_in_bench_venv  # noqa: E402

if TYPE_CHECKING:
    from bench.runner import Context

CASES = ("span", "trace100", "redis", "gunicorn")
CONTENDERS = ("baseline", "ddagent", "ddtrace", "otel")
# (short, long) series: spans for the span cases, requests for gunicorn.
SERIES = {"span": (2_000, 4_000), "trace100": (2_000, 4_000), "redis": (500, 1_500),
          "gunicorn": (100, 300)}
SPANS_PER_TRACE = {"span": 1, "trace100": 100}
WARM_UP_REQUESTS = 50

LONG_EXPORT_INTERVAL = {"DD_TRACE_WRITER_INTERVAL_SECONDS": "3600",  # ddagent and ddtrace
                        "OTEL_BSP_SCHEDULE_DELAY": "3600000"}  # milliseconds

# The child of the span cases: scenario 1's traces, flushed, then an exit without the
# tracers' exit-time work (as bench/child.py does).
SPAN_CHILD = """
import os, sys
from bench import tracers
from bench.s1_manual_spans import many_traces
contender, spans, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = tracers.start(contender)
many_traces(t, spans, max(1, 200 // spans))
many_traces(t, spans, total // spans)
t.flush()
os._exit(0)
"""


# The child of the redis case: scenario 2's GET against the local server, instrumented as
# scenario 2 does it (nothing for the baseline), then flushed.
REDIS_CHILD = """
import os, sys
from bench import tracers
from bench.s2_library_call import INSTRUMENT, REDIS_PORT
contender, total = sys.argv[1], int(sys.argv[2])
t = tracers.start(contender)
import redis  # imported first, as in scenario 2 (ddtrace's import hook trips on it otherwise)
if contender in INSTRUMENT:
    INSTRUMENT[contender]("redis", t)
client = redis.Redis(port=REDIS_PORT)
client.set("bench:key", "value")
for _ in range(200 + total):
    client.get("bench:key")
t.flush()
os._exit(0)
"""


def callgrind(argv: list[str], out_dir: str) -> list[str]:
    """``argv`` under callgrind, children (fork and exec) included: one output file per process
    in ``out_dir``, named ``cg.<pid>``."""
    return ["valgrind", "--tool=callgrind", "--trace-children=yes",
            f"--callgrind-out-file={out_dir}/cg.%p", *argv]


def instructions(path: Path) -> int:
    """The total instruction count callgrind recorded in ``path``."""
    match = re.search(r"^(?:summary|totals): (\d+)", path.read_text(), re.M)
    if match is None:
        raise RuntimeError(f"no instruction total in {path}")
    return int(match.group(1))


def child_run(ctx: Context, contender: str, case: str, total: int) -> int:
    """Instructions of the child program of ``case`` (``SPAN_CHILD`` or ``REDIS_CHILD``) doing
    ``total`` operations."""
    with tempfile.TemporaryDirectory() as out:
        if case == "redis":
            argv = [ctx.python, "-c", REDIS_CHILD, contender, str(total)]
        else:
            argv = [ctx.python, "-c", SPAN_CHILD, contender, str(SPANS_PER_TRACE[case]),
                    str(total)]
        subprocess.run(callgrind(argv, out), env=ctx.env(contender, **LONG_EXPORT_INTERVAL),
                       check=True, capture_output=True)
        # The launched interpreter is the first process; a tracer's own helpers come later.
        first = min(Path(out).glob("cg.*"), key=lambda p: int(p.suffix[1:]))
        return instructions(first)


def gunicorn_run(ctx: Context, contender: str, requests: int) -> int:
    from bench import s3_flask
    from bench.runner import cmdline
    from tests.testagent import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    argv = s3_flask.launcher(ctx, contender) + [
        "-m", "gunicorn", "-w", "1", "--timeout", "900", "-b", f"127.0.0.1:{port}",
        "--chdir", str(Path(s3_flask.__file__).parent), "flask_app:app",
    ]
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryFile() as log:
        env = ctx.env(contender, **LONG_EXPORT_INTERVAL)
        server = subprocess.Popen(callgrind(argv, out), env=env, stdout=log, stderr=log)
        try:
            if not s3_flask.wait_serving(url, server, timeout=600, slowness=15):
                log.seek(0)
                raise RuntimeError(f"gunicorn did not serve: {log.read()[-500:]!r}")
            worker, why_not = s3_flask.worker_pid(server.pid)
            if worker is None:
                raise RuntimeError(why_not)
            for _ in range(WARM_UP_REQUESTS + requests):
                urllib.request.urlopen(url).read()
        finally:
            server.terminate()
            server.wait(300)
        files = {int(p.suffix[1:]): p for p in Path(out).glob("cg.*")}
        if worker not in files:
            raise RuntimeError(f"no callgrind output for the worker {worker} "
                               f"({' '.join(cmdline(worker))[:80]})")
        return instructions(files[worker])


def per_op(ctx: Context, case: str, contender: str) -> float:
    short, long = SERIES[case]
    if case == "gunicorn":
        counts = [gunicorn_run(ctx, contender, n) for n in (short, long)]
    else:
        counts = [child_run(ctx, contender, case, n) for n in (short, long)]
    return (counts[1] - counts[0]) / (long - short)


def print_table(results: dict[str, dict[str, Optional[float]]], contenders: list[str]) -> None:
    labels = {"baseline": "no tracer", "ddagent": "ddagent", "ddtrace": "ddtrace",
              "otel": "OpenTelemetry"}
    titles = {"span": "1 span + 2 tags, per span", "trace100": "trace of 100, per span",
              "redis": "redis GET, per call", "gunicorn": "gunicorn request, worker"}
    print(f"\n{'instructions per operation (k)':34}" +
          "".join(f"| {labels[c]:>14} " for c in contenders))
    for case, row in results.items():
        cells = "".join("| " + (f"{row[c] / 1000:>14,.1f} " if row.get(c) is not None
                                else f"{'n/a':>14} ") for c in contenders)
        print(f"{titles[case]:34}{cells}")
    print()
    for case, row in results.items():
        ours = row.get("ddagent")
        if ours is None:
            continue
        base = row.get("baseline")
        if case == "gunicorn":
            if base:
                print(f"{titles[case]}: no tracer ÷ ddagent = {base / ours:.3f} "
                      "(the throughput ratio of a CPU-bound worker)")
            continue
        if case == "redis":
            theirs = row.get("ddtrace")
            if base and theirs and theirs > base:  # scenario 2's target: the added costs
                print(f"{titles[case]}: added by ddagent ÷ added by ddtrace = "
                      f"{(ours - base) / (theirs - base):.3f}")
            continue
        for other in ("ddtrace", "otel"):
            theirs = row.get(other)
            if theirs:  # the ratio run.py's targets take, the bench's loop included
                print(f"{titles[case]}: ddagent ÷ {labels[other]} = {ours / theirs:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=CASES, help="default: all")
    parser.add_argument("--contender", action="append", choices=CONTENDERS, help="default: all")
    args = parser.parse_args()
    run_in_bench_venv()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install -y valgrind")
    contenders = args.contender or list(CONTENDERS)
    results: dict[str, dict[str, Optional[float]]] = {}
    with live_context(quick=False, rounds=1) as ctx:
        for case in args.case or CASES:
            results[case] = {}
            for contender in contenders:
                print(f"  {case}: {contender} ...", file=sys.stderr, flush=True)
                try:
                    results[case][contender] = per_op(ctx, case, contender)
                except (RuntimeError, subprocess.CalledProcessError) as exc:
                    print(f"  {case}: {contender} failed: {exc}", file=sys.stderr)
                    results[case][contender] = None
    print_table(results, contenders)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts in both runs
    main()
