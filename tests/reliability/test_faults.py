"""Every span accounted for while the agent link fails in every way a network can.

Threads of an app produce traces without pause while a FaultProxy between the tracer and the test
agent runs a scripted sequence of faults. Afterwards, to the span:
``created = received by the agent + dropped (counted by reason)``, and no span arrives twice.
In soak mode (``--soak-minutes``) the script repeats until the time is up.
"""

from __future__ import annotations

import random
import resource
import sys
import threading
import time
from collections import Counter

from ddagent.config import Config
from ddagent.context import ACTIVE_SPAN
from ddagent.tracer import Tracer
from ddagent.writer.agent import AgentWriter
from tests.counters import StatsDelta
from tests.reliability.conftest import rss_kib
from tests.reliability.faultproxy import Fault

AGENT_TIMEOUT = 0.5  # the writer's timeout; STALL lasts longer than it
PHASE_SECONDS = 1.0
SCRIPT = [
    Fault.FORWARD, Fault.REFUSE, Fault.FORWARD, Fault.RESET, Fault.STALL, Fault.FORWARD,
    Fault.STATUS_500, Fault.STATUS_413, Fault.FORWARD, Fault.STATUS_404, Fault.REFUSE,
    Fault.FORWARD,  # recovered (on /v0.3 since the 404, which the proxy takes like an old agent)
]
THREADS = 4


class App:
    """Threads that each make traces of 1 to 6 spans, counting every span they create."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.created = [0] * THREADS
        self._pause = threading.Event()
        self._paused = [threading.Event() for _ in range(THREADS)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"app-{i}")
                         for i in range(THREADS)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def pause(self) -> None:
        self._pause.set()
        for paused in self._paused:
            paused.wait()

    def resume(self) -> None:
        for paused in self._paused:
            paused.clear()
        self._pause.clear()

    def stop(self) -> None:
        self._stop.set()
        self._pause.clear()
        for thread in self._threads:
            thread.join()

    def _run(self, index: int) -> None:
        ACTIVE_SPAN.set(None)
        rng = random.Random(index)
        while not self._stop.is_set():
            if self._pause.is_set():
                self._paused[index].set()
                while self._pause.is_set() and not self._stop.is_set():
                    time.sleep(0.01)
                continue
            with self.tracer.trace("app.request", resource=f"GET /{index}") as root:
                root.set_tag("thread", index)
                for _ in range(rng.randrange(6)):
                    with self.tracer.trace("app.work") as child:
                        child.set_metric("n", rng.random())
                        self.created[index] += 1
            self.created[index] += 1
            time.sleep(0.004)  # an app does other things too; keeps the test agent's load sane


def received_spans(test_agent) -> Counter[int]:
    """How many times each span id reached the agent in this session."""
    return Counter(span["span_id"] for trace in test_agent.traces() for span in trace)


def test_every_span_is_accounted_for_through_faults(test_agent, fault_proxy, soak_minutes):
    tracer = Tracer(Config.from_env({"DD_SERVICE": "reliability"}))
    writer = AgentWriter(fault_proxy.url, timeout=AGENT_TIMEOUT, flush_interval=0.2,
                         on_rate_by_service=tracer.agent_sampler.update_rates)
    tracer.writer = writer
    app = App(tracer)
    stats = StatsDelta()
    received: Counter[int] = Counter()
    end = time.monotonic() + soak_minutes * 60
    cycles = 0
    rss_after_first_cycle = 0
    app.start()
    try:
        while True:
            for fault in SCRIPT:
                fault_proxy.set_fault(fault)
                time.sleep(PHASE_SECONDS)
            # Between cycles: quiesce, deliver everything, read the session back, start anew
            # (the test agent keeps every request in memory).
            app.pause()
            assert writer.flush(timeout=30), "the recovered agent did not take the last traces"
            received.update(received_spans(test_agent))
            test_agent.assert_no_check_failures()
            test_agent.start_session()
            cycles += 1
            if cycles == 1:
                rss_after_first_cycle = rss_kib()
            if time.monotonic() >= end:
                break
            app.resume()
    finally:
        app.stop()
        fault_proxy.set_fault(Fault.FORWARD)
        writer.stop(timeout=5)

    created = sum(app.created)
    dropped = stats.dropped()
    counted = sum(dropped.values())
    duplicates = {span_id: n for span_id, n in received.items() if n > 1}
    unaccounted = created - len(received) - counted
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nreliability accounting after {cycles} cycle(s) of {len(SCRIPT)} faults "
        f"(proxy saw {dict(fault_proxy.seen)}):\n"
        f"  created {created} = received {len(received)} + dropped(counted) {counted} "
        f"{dropped}; unaccounted {unaccounted}; duplicates {len(duplicates)}\n"
        f"  RSS after cycle 1 {rss_after_first_cycle / 1024:.1f} MiB, now "
        f"{rss_kib() / 1024:.1f} MiB, peak {peak_rss_mib:.1f} MiB",
        file=sys.stderr,
    )
    assert unaccounted == 0
    assert not duplicates
    assert stats["spans.sent"] == len(received)
    # Each kind of fault really happened and cost something.
    # (REFUSE is never seen by the proxy: nothing connects.)
    assert {"RESET", "STALL", "STATUS_500", "STATUS_413", "STATUS_404"} <= set(fault_proxy.seen)
    assert dropped.get("spans.dropped.agent_unreachable", 0) > 0
    assert dropped.get("spans.dropped.agent_error", 0) > 0
    assert dropped.get("spans.dropped.payload_too_large", 0) > 0
    assert len(received) > 0
