"""The writer when the agent is down, failing, stalling or flooded, across fork and at exit.

Deadlines here are generous upper bounds ("returns within 5 s"), never speed measurements.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time

from tests.counters import StatsDelta
from tests.testagent import PYTHON, free_port, python_env
from tests.writer.helpers import make_trace, wait_until


def nothing_listening() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_agent_not_running(make_writer):
    stats = StatsDelta()
    writer = make_writer(nothing_listening(), flush_interval=0.05)
    started = time.monotonic()
    for _ in range(200):
        writer.write(make_trace(2))
    assert time.monotonic() - started < 5  # writes never wait for the network

    started = time.monotonic()
    writer.stop(timeout=2)
    assert time.monotonic() - started < 5

    assert stats["spans.sent"] == 0
    assert wait_until(lambda: sum(stats.dropped().values()) == 400)
    assert stats["spans.dropped.agent_unreachable"] > 0
    assert stats["payloads.errors"] >= 1


def test_an_unreachable_agent_is_reported_once_not_per_flush(make_writer, caplog):
    writer = make_writer(nothing_listening())
    with caplog.at_level(logging.WARNING, logger="ddagent.writer"):
        for _ in range(3):
            writer.write(make_trace(1))
            assert writer.flush(timeout=5) is False
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1


def test_500_is_retried_then_dropped(make_writer, local_agent):
    stats = StatsDelta()
    agent = local_agent(statuses=(500,))
    writer = make_writer(agent.url)
    writer.write(make_trace(3))
    assert writer.flush(timeout=10) is False
    assert len(agent.requests) == 3
    assert stats["spans.dropped.agent_error"] == 3 and stats["payloads.errors"] == 1


def test_a_transient_503_is_retried_until_accepted(make_writer, local_agent):
    stats = StatsDelta()
    agent = local_agent(statuses=(503, 200))
    writer = make_writer(agent.url)
    writer.write(make_trace(2))
    assert writer.flush(timeout=10)
    assert len(agent.requests) == 2 and stats["spans.sent"] == 2 and stats.dropped() == {}


def test_400_is_never_retried(make_writer, local_agent):
    stats = StatsDelta()
    agent = local_agent(statuses=(400,))
    writer = make_writer(agent.url)
    writer.write(make_trace(1))
    assert writer.flush(timeout=10) is False
    assert len(agent.requests) == 1 and stats["spans.dropped.agent_error"] == 1


def test_404_downgrades_to_v03_for_good(make_writer, local_agent):
    agent = local_agent(statuses=(404,))
    writer = make_writer(agent.url)
    writer.write(make_trace(1))
    assert writer.flush(timeout=10)
    writer.write(make_trace(1))
    assert writer.flush(timeout=10)
    assert agent.paths() == ["/v0.4/traces", "/v0.3/traces", "/v0.3/traces"]
    assert agent.requests[1][2] == agent.requests[0][2]  # the same payload, resent once


def test_a_stalling_agent_times_out_without_blocking_writes(make_writer, local_agent):
    stats = StatsDelta()
    agent = local_agent(stall=30)
    writer = make_writer(agent.url, timeout=0.3, flush_interval=0.05)
    writer.write(make_trace(1))
    while not agent.requests:  # the worker is now stuck waiting for the agent's answer
        time.sleep(0.01)

    started = time.monotonic()
    for _ in range(100):
        writer.write(make_trace(1))
    assert time.monotonic() - started < 5

    started = time.monotonic()
    assert writer.flush(timeout=2) is False
    writer.stop(timeout=2)
    assert time.monotonic() - started < 10
    assert stats["spans.sent"] == 0
    assert wait_until(lambda: sum(stats.dropped().values()) == 101)


def test_a_flood_with_the_agent_down_stays_bounded(make_writer):
    stats = StatsDelta()
    limit = 64 * 1024
    writer = make_writer(nothing_listening(), max_buffer_bytes=limit, max_buffer_traces=500,
                         flush_interval=0.01)
    written = 0
    for _ in range(20_000):
        trace = make_trace(2, meta={"pad": "x" * 50})
        writer.write(trace)
        written += len(trace)
        assert writer.buffered_bytes <= limit and writer.buffered_traces <= 500
    writer.stop(timeout=2)

    assert stats["spans.dropped.buffer_full"] > 0
    assert wait_until(lambda: stats["spans.sent"] + sum(stats.dropped().values()) == written)


def test_writes_from_many_threads_are_all_accounted_for(test_agent, make_writer):
    stats = StatsDelta()
    writer = make_writer(test_agent.url, flush_interval=0.05)

    def work() -> None:
        for _ in range(100):
            writer.write(make_trace(2))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.flush(timeout=10)
    assert len(test_agent.wait_for_traces(800)) == 800
    assert stats["spans.sent"] == 1600 and stats.dropped() == {}


def test_fork_child_sends_its_own_traces_and_not_the_parents(test_agent, make_writer):
    writer = make_writer(test_agent.url, flush_interval=3600)
    for _ in range(3):
        writer.write(make_trace(2, service="parent"))
    assert writer.buffered_traces == 3

    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            stats = StatsDelta()
            fresh = writer.buffered_traces == 0
            writer.write(make_trace(1, service="child"))
            sent = writer.flush(timeout=10)
            ok = fresh and sent and stats["spans.sent"] == 1
            code = 0 if ok and stats["spans.dropped.fork"] == 6 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    assert writer.buffered_traces == 3  # the parent kept its data
    assert writer.flush(timeout=10)
    traces = test_agent.wait_for_traces(4)
    services = sorted(t[0]["service"] for t in traces)
    assert services == ["child", "parent", "parent", "parent"]
    spans = [s["span_id"] for t in traces for s in t]
    assert len(spans) == len(set(spans)) == 7


def test_two_writers_do_not_interfere(make_writer, local_agent):
    first, second = local_agent(), local_agent(statuses=(500,))
    good, bad = make_writer(first.url), make_writer(second.url)
    good.write(make_trace(1))
    bad.write(make_trace(1))
    assert bad.flush(timeout=10) is False
    assert good.flush(timeout=10) is True
    assert len(first.requests) == 1 and len(second.requests) == 3


EXIT_SCRIPT = """
import atexit, sys
from ddagent.writer import AgentWriter
from tests.writer.helpers import make_trace

writer = AgentWriter(sys.argv[1], flush_interval=3600)
atexit.register(writer.stop, 3.0)  # what the Tracer does
for _ in range(5):
    writer.write(make_trace(2))
"""


def run_exit_script(agent_url: str, env: dict) -> float:
    started = time.monotonic()
    subprocess.run([PYTHON, "-c", EXIT_SCRIPT, agent_url], env=env, check=True, timeout=60)
    return time.monotonic() - started


def exit_script_env(test_agent, writer_path: str) -> dict:
    """The child's environment: the writer's Python twin switched on as in this process."""
    if writer_path == "python":
        return python_env(test_agent, DD_TRACE_NATIVE_ENCODER="false")
    return python_env(test_agent)


def test_exit_flushes_unsent_traces(test_agent, writer_path):
    run_exit_script(test_agent.url, exit_script_env(test_agent, writer_path))
    assert len(test_agent.wait_for_traces(5)) == 5
    test_agent.assert_no_check_failures()


def test_exit_is_not_delayed_by_an_agent_that_is_down(test_agent, local_agent, writer_path):
    stalled = local_agent(stall=60)
    for url in (nothing_listening(), stalled.url):
        # The stop deadline is 3 s; interpreter start-up is the rest of the generous bound.
        assert run_exit_script(url, exit_script_env(test_agent, writer_path)) < 30
