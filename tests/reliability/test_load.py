"""Load: a million spans while the agent is down or stalled, and spans that are never closed.

Memory stays bounded (the writer's buffer has a byte cap, open traces a count cap) and the app's
threads never wait for the network. The figures are printed; the bounds asserted are generous.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import tracemalloc

import pytest

from ddagent.config import Config
from ddagent.tracer import Tracer
from tests.counters import StatsDelta
from tests.reliability.faultproxy import Fault
from tests.testagent import free_port, python_env

MILLION_SPANS = textwrap.dedent('''
    import json
    import sys
    import time

    from ddagent.config import Config
    from ddagent.tracer import Tracer
    from ddagent.writer.agent import AgentWriter

    def rss_kib(field="VmRSS:"):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field))

    tracer = Tracer(Config.from_env({"DD_SERVICE": "load"}))
    tracer.writer = writer = AgentWriter(sys.argv[1], timeout=2.0)
    slowest = 0.0
    created = 0

    def one_trace():
        global created
        with tracer.trace("load.request", resource="GET /load") as root:
            root.set_tag("http.method", "GET")
            for _ in range(9):
                with tracer.trace("load.work") as work:
                    work.set_metric("n", 1.0)
        created += 10

    for _ in range(1000):  # warm up, then measure memory from here
        one_trace()
    baseline_kib = rss_kib()
    started = time.perf_counter()
    for _ in range(99_000):
        before = time.perf_counter()
        one_trace()
        slowest = max(slowest, time.perf_counter() - before)
    elapsed = time.perf_counter() - started
    writer.stop(timeout=1)
    print(json.dumps({
        "created": created, "spans_per_second": 990_000 / elapsed, "slowest_trace": slowest,
        "baseline_kib": baseline_kib,
        # VmHWM, not ru_maxrss: Linux carries the maxrss of the forked copy of the parent
        # (the whole pytest process) across exec, so ru_maxrss says nothing about this script.
        "peak_kib": rss_kib("VmHWM:"),
        "stats": tracer.stats(),
    }))
''')


@pytest.mark.parametrize("agent", ["down", "stalled"])
def test_a_million_spans_with_the_agent_unavailable(agent, fault_proxy, test_agent, tmp_path):
    if agent == "down":
        url = f"http://127.0.0.1:{free_port()}"
    else:
        fault_proxy.stall_seconds = 120
        fault_proxy.set_fault(Fault.STALL)
        url = fault_proxy.url
    script = tmp_path / "load.py"
    script.write_text(MILLION_SPANS)
    result = subprocess.run([sys.executable, str(script), url], env=python_env(test_agent),
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    stats = report["stats"]
    dropped = {k: v for k, v in stats.items() if k.startswith("spans.dropped.")}
    growth_mib = (report["peak_kib"] - report["baseline_kib"]) / 1024
    print(f"\n1M spans, agent {agent}: {report['spans_per_second']:,.0f} spans/s, slowest trace "
          f"{report['slowest_trace'] * 1000:.1f} ms, peak RSS {report['peak_kib'] / 1024:.1f} MiB "
          f"({growth_mib:+.1f} MiB over the warmed-up {report['baseline_kib'] / 1024:.1f} MiB); "
          f"created {report['created']} = sent {stats.get('spans.sent', 0)} + dropped "
          f"{sum(dropped.values())} {dropped}", file=sys.stderr)
    assert report["created"] == 1_000_000
    assert stats.get("spans.sent", 0) + sum(dropped.values()) == report["created"]
    assert stats.get("spans.sent", 0) == 0
    # The buffer is capped at 8 MiB of encoded traces: the process never holds the million
    # (about 600 MiB). It grows 15-25 MiB; the bound leaves room for a loaded machine.
    assert growth_mib < 64
    # No trace waited for the agent (the writer's timeout is 2 s and the stall 120 s).
    assert report["slowest_trace"] < 1.0


def test_never_closed_spans_are_evicted_and_counted():
    tracer = Tracer(Config.from_env({"DD_SERVICE": "leaky"}), max_open_traces=1000)
    tracer.writer = None  # nothing may reach a writer: every trace stays open

    def leak(times: int) -> None:
        # A root opened and never closed, with a child that did finish and now waits in vain.
        for _ in range(times):
            root = tracer.start_span("leak.request")
            tracer.start_span("leak.work", child_of=root).finish()

    stats = StatsDelta()
    tracemalloc.start()
    try:
        leak(10_000)
        gc.collect()
        after_first, _ = tracemalloc.get_traced_memory()
        leak(10_000)
        gc.collect()
        after_second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\n20,000 never-closed traces: {len(tracer._open_traces)} kept open, "
          f"{stats['spans.dropped.open_trace_evicted']} waiting spans dropped; traced memory "
          f"{after_first / 1024:.0f} KiB after 10,000, {after_second / 1024:.0f} KiB after "
          f"20,000", file=sys.stderr)
    assert len(tracer._open_traces) == 1000
    assert stats["spans.dropped.open_trace_evicted"] == 19_000
    assert after_second < after_first * 1.2  # flat: evicted traces are freed
