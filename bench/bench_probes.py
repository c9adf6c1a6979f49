"""Cost of one call through a function probed by code rewriting, against the never-probed one.

    python bench/bench_probes.py [--rounds 21] [--calls 200000]

(any supported interpreter with ddagent importable, e.g. ``.venv/bin/python`` or
``.venv-3.13.0/bin/python``). Stdlib and ddagent only.

Three variants of ``def target(x): return x``, each compiled separately so each has its own code
object (per-code-object state such as specialization or ``sys.monitoring`` events must not leak
from one variant to another):

  (a) never probed
  (b) probed with no-op enter/exit probes (the args tuple is built and both probes are called)
  (c) probed, then restored: its original code object is back

Rounds alternate the variants (a b c a b c ...) so drift hits all of them alike. Each round times
``--calls`` calls per variant (loop overhead included, the same for all). The table shows the
median and minimum ns per call, each variant's median ratio to (a) in the same round, and the spread
(min-max) of those ratios. (c) should read 1.00 within noise; on 3.13 it may read a little
higher, because assigning ``__code__`` at all stops CPython from specializing calls to that
function object (see shared/notes/bytecode-probes.md, section 2).
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from itertools import repeat

from ddagent.hooks.rewrite import instrument, restore

TARGET_SOURCE = "def target(x):\n    return x\n"


def fresh_target(label: str):
    """A new function with a code object of its own (distinct filename)."""
    namespace: dict = {}
    exec(compile(TARGET_SOURCE, f"<bench-{label}>", "exec"), namespace)
    return namespace["target"]


def on_enter(args):
    return None


def on_exit(token, value, exc):
    return None


def per_call_ns(func, calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in repeat(None, calls):
        func(1)
    return (time.perf_counter_ns() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=200_000)
    options = parser.parse_args()

    plain = fresh_target("plain")
    probed = fresh_target("probed")
    instrument(probed, on_enter, on_exit)
    restored = fresh_target("restored")
    instrument(restored, on_enter, on_exit)
    restore(restored)
    variants = {"(a) never probed": plain, "(b) probed, no-op": probed, "(c) restored": restored}

    for func in variants.values():  # warm up: specialization, caches
        per_call_ns(func, options.calls // 10)
    timings: dict[str, list[float]] = {name: [] for name in variants}
    gc.disable()  # a collection landing in one variant's window would skew it alone
    try:
        for _ in range(options.rounds):
            for name, func in variants.items():
                timings[name].append(per_call_ns(func, options.calls))
    finally:
        gc.enable()

    baseline = timings["(a) never probed"]
    print(f"{platform.python_implementation()} {platform.python_version()}, "
          f"{options.rounds} rounds x {options.calls} calls, alternating a b c")
    print(f"{'variant':<20} {'median ns':>9} {'min ns':>7} {'ratio':>6}  ratio spread (min-max)")
    for name, samples in timings.items():
        ratios = [t / b for t, b in zip(samples, baseline)]
        print(
            f"{name:<20} {statistics.median(samples):>9.1f} {min(samples):>7.1f} "
            f"{statistics.median(ratios):>6.2f}  "
            f"{min(ratios):.2f}-{max(ratios):.2f}"
        )


if __name__ == "__main__":
    main()
