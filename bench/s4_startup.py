"""Scenario 4: start-up — wall time of an empty program under each contender's launcher.

Every launcher runs ``-c pass``, as ``python -c pass`` does. ddagent's bytecode is compiled
first, as an installed package's is (pip compiles at install): where PYTHONDONTWRITEBYTECODE is
set, a source checkout would otherwise be measured recompiling every module at each start.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from typing import Optional

from bench.runner import REPO, Context, Results, Row, Target

TITLE = "4. start-up (an empty program)"
CASES = ["empty program"]
ROWS = [Row("empty program", "wall_ms", "wall time to run `pass`", "ms")]


def command(ctx: Context, contender: str) -> list[str]:
    """Each contender's documented way to run a program traced."""
    return {
        "baseline": [ctx.python, "-c", "pass"],
        "ddagent": [ctx.python, "-m", "ddagent", "-c", "pass"],
        "ddtrace": [str(ctx.bin_dir / "ddtrace-run"), ctx.python, "-c", "pass"],
        "otel": [str(ctx.bin_dir / "opentelemetry-instrument"), ctx.python, "-c", "pass"],
    }[contender]


def measure(ctx: Context, contender: str) -> dict:
    argv, env = command(ctx, contender), ctx.env(contender)
    if contender == "ddagent":
        subprocess.run([ctx.python, "-m", "compileall", "-q", str(REPO / "ddagent")], check=True)
    times = []
    for _ in range(5 if ctx.quick else 15):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        times.append((time.perf_counter() - start) * 1e3)
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return {"na": f"exit {proc.returncode}: {last[:160]}"}
    return {"empty program": {"wall_ms": statistics.median(times)}}


def _added(r: Results) -> Optional[float]:
    ours, base = (r.median("empty program", who, "wall_ms") for who in ("ddagent", "baseline"))
    return ours - base if ours is not None and base is not None else None


TARGETS = [Target("4. start-up added over `python -c pass`", 30, _added, unit="ms")]
