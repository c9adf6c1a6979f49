"""The child side of a measurement: ``python -m bench.child <scenario> <contender>``.

Tracers cannot share a process, so the runner starts one fresh interpreter per contender and
round. The child runs the scenario's ``child(contender)`` for every case, prints one line
``BENCH-RESULT {json}`` and exits at once (``os._exit``): the tracers' exit-time flushes belong to
no measurement, and an agent-down child would otherwise wait out its exporter's retries.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Callable

RESULT_PREFIX = "BENCH-RESULT "
QUICK = os.environ.get("BENCH_QUICK") == "1"


class Unavailable(Exception):
    """This contender cannot run this case (yet); the message says why and ends up in the table."""


def sized(quick: int, full: int) -> int:
    """An iteration count: small for ``--quick``, larger for a real run."""
    return quick if QUICK else full


def cpu_per_op(work: Callable[[], None], ops: int, flush: Callable[[], None]) -> float:
    """Process CPU µs per op for ``work()`` (which does ``ops`` ops) plus the flush that follows.

    Process CPU counts every thread (so a background exporter's encoding and sending is charged)
    and not the agent's or Redis's CPU, which live in other processes.
    """
    start = time.process_time()
    work()
    flush()
    return (time.process_time() - start) * 1e6 / ops


def cpu_per_call(calls: Callable[[int], None], seconds: float, flush: Callable[[], None]) -> float:
    """Like :func:`cpu_per_op`, calling ``calls(1000)`` until ``seconds`` of process CPU have
    passed: one window length fits a 1 µs call and a 100 µs one alike."""
    start, done = time.process_time(), 0
    while time.process_time() - start < seconds:
        calls(1000)
        done += 1000
    flush()
    return (time.process_time() - start) * 1e6 / done


def rss_kib(field: str = "VmRSS") -> int:
    """This process's resident set (``VmRSS``) or its peak so far (``VmHWM``), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def main() -> None:
    scenario, contender = sys.argv[1], sys.argv[2]
    try:
        module = importlib.import_module(f"bench.{scenario}")
        results = module.child(contender)
    except Unavailable as e:
        results = {"na": str(e)}
    except Exception as e:  # reported as n/a with its reason; the traceback goes to stderr
        traceback.print_exc()
        results = {"na": f"crashed: {type(e).__name__}: {e}"[:200]}
    sys.stdout.write(RESULT_PREFIX + json.dumps(results) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    # Run main() from the importable module, so that the Unavailable it catches is the one the
    # scenarios raise (``__main__.Unavailable`` would be a different class).
    import bench.child

    bench.child.main()
