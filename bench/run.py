"""Benchmark ddagent side by side with ddtrace, OpenTelemetry and no tracer; print one table.

    python bench/run.py [--quick] [--scenario N ...] [--rounds R]

Run it from any Python 3.9+: it creates ``.venv-bench`` (Python 3.11) with ddagent and the
contenders, makes sure ``.venv-testagent`` holds ``ddapm-test-agent`` (it cannot share a venv with
the OpenTelemetry exporter: they pin different ``opentelemetry-proto``), starts its own test agent
on free ports (APM and OTLP HTTP), re-runs itself inside ``.venv-bench`` and prints the table.
Scenario 3 needs ``wrk`` (``apt-get install -y wrk``) and Redis on 127.0.0.1:6379
(``BENCH_REDIS_PORT`` to change the port). See bench/README.md for what each scenario measures.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.runner import Context  # imported at run time once REPO is on sys.path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-bench"
AGENT_VENV = REPO / ".venv-testagent"
VENV_PYTHON = "/root/.pyenv/versions/3.11.7/bin/python"

# What .venv-bench needs. Until pyproject.toml has this as its `bench` extra, it is installed
# from here; then this list becomes `-e .[bench]`.
# Import names that prove the venv is complete (cheap: find_spec imports nothing).
PROBE_MODULES = [
    "ddagent", "ddtrace", "opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.distro",
    "opentelemetry.instrumentation.redis", "opentelemetry.instrumentation.sqlite3",
    "opentelemetry.instrumentation.flask", "flask", "gunicorn", "redis",
]

SCENARIOS = {
    1: "s1_manual_spans",
    2: "s2_library_call",
    3: "s3_flask",
    4: "s4_startup",
    5: "s5_writer",
}


def _venv_complete(python: Path) -> bool:
    check = ("import importlib.util, sys; "
             f"sys.exit(any(importlib.util.find_spec(m) is None for m in {PROBE_MODULES!r}))")
    return python.exists() and subprocess.run([str(python), "-c", check]).returncode == 0


def ensure_venvs() -> None:
    python = VENV / "bin" / "python"
    if not _venv_complete(python):
        print("setting up .venv-bench ...", file=sys.stderr, flush=True)
        base = VENV_PYTHON if os.path.exists(VENV_PYTHON) else sys.executable
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-e", f"{REPO}[bench]"], check=True)
    if not (AGENT_VENV / "bin" / "ddapm-test-agent").exists():
        print("setting up .venv-testagent ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(AGENT_VENV)], check=True)
        subprocess.run([str(AGENT_VENV / "bin" / "pip"), "install", "-q", "ddapm-test-agent"],
                       check=True)


def run_in_bench_venv() -> None:
    """Re-run this program inside ``.venv-bench`` (set up first if needed); return once there."""
    if Path(sys.prefix).resolve() != VENV.resolve():
        ensure_venvs()
        python = str(VENV / "bin" / "python")
        os.execv(python, [python, str(Path(sys.argv[0]).resolve()), *sys.argv[1:]])
    sys.path.insert(0, str(REPO))


@contextlib.contextmanager
def live_context(quick: bool, rounds: int) -> Iterator[Context]:
    """A :class:`~bench.runner.Context` with a test agent of its own, stopped on leaving."""
    from bench.runner import Context
    from tests.testagent import TestAgentProcess, free_port

    otlp_port = free_port()
    # At its default INFO level the test agent prints every trace it receives: on a 2-core
    # machine that CPU is taken from the contender (gunicorn in scenario 3), and a real agent
    # does no such thing.
    agent = TestAgentProcess(extra_env={"OTLP_HTTP_PORT": str(otlp_port), "LOG_LEVEL": "WARNING"})
    try:
        yield Context(
            python=sys.executable,
            bin_dir=Path(sys.executable).parent,
            agent_url=agent.url,
            agent_pid=agent.proc.pid,
            otlp_url=f"http://127.0.0.1:{otlp_port}",
            quick=quick,
            rounds=rounds,
        )
    finally:
        agent.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, 3 rounds")
    parser.add_argument("--scenario", type=int, action="append", choices=sorted(SCENARIOS),
                        help="run only this scenario (repeatable); default: all")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3 quick, 7 full)")
    args = parser.parse_args()

    run_in_bench_venv()
    os.environ["BENCH_QUICK"] = "1" if args.quick else "0"  # sizes the scenarios (bench.child)
    from bench.runner import print_table, run_scenario

    with live_context(args.quick, args.rounds or (3 if args.quick else 7)) as ctx:
        done = []
        for number in args.scenario or sorted(SCENARIOS):
            module = importlib.import_module(f"bench.{SCENARIOS[number]}")
            done.append((module, run_scenario(ctx, module)))
        print_table(ctx, done)


if __name__ == "__main__":
    main()
