"""Exit: what is buffered is sent within DD_TRACE_SHUTDOWN_TIMEOUT, and exit never waits longer.

Each case runs a small traced program in a child process. (SIGTERM to a gunicorn master, whose
workers then flush at exit, is in test_fork.py.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from tests.reliability.faultproxy import Fault
from tests.testagent import python_env

NORMAL_EXIT = textwrap.dedent('''
    from ddagent import tracer

    for i in range(50):
        with tracer.trace("exit.request", resource=str(i)):
            with tracer.trace("exit.work"):
                pass
    print("done", flush=True)
''')

EXIT_FROM_THREAD = textwrap.dedent('''
    import sys
    import threading

    from ddagent import tracer


    def work():
        for i in range(50):
            with tracer.trace("exit.request", resource=str(i)):
                with tracer.trace("exit.work"):
                    pass
        sys.exit(3)  # ends this thread only; the program then ends normally


    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    print("done", flush=True)
''')

EXIT_FROM_MAIN_WITH_OPEN_SPAN = textwrap.dedent('''
    import sys
    import threading

    from ddagent import tracer

    started = threading.Event()


    def busy():
        with tracer.trace("never.finished"):
            started.set()
            threading.Event().wait()


    threading.Thread(target=busy, daemon=True).start()
    started.wait()
    for i in range(50):
        with tracer.trace("exit.request", resource=str(i)):
            with tracer.trace("exit.work"):
                pass
    print("done", flush=True)
    sys.exit(2)
''')


def run_to_exit(script: str, env: dict[str, str], tmp_path) -> tuple[int, float]:
    """Run ``script``; return its exit code and the seconds from its last line to its exit."""
    path = tmp_path / "app.py"
    path.write_text(script)
    proc = subprocess.Popen([sys.executable, str(path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "done", proc.stderr.read()
    printed = time.monotonic()
    proc.wait(timeout=60)
    return proc.returncode, time.monotonic() - printed


@pytest.mark.parametrize("script, code", [
    (NORMAL_EXIT, 0), (EXIT_FROM_THREAD, 0), (EXIT_FROM_MAIN_WITH_OPEN_SPAN, 2),
], ids=["normal", "sys.exit-in-thread", "sys.exit-with-open-span"])
def test_buffered_traces_are_sent_at_exit(script, code, test_agent, tmp_path):
    # A flush interval far longer than the program: only the exit flush can send the traces.
    returncode, _ = run_to_exit(script, python_env(test_agent), tmp_path)
    assert returncode == code
    spans = test_agent.wait_for_spans(100)
    assert len(spans) == 100
    assert {s["name"] for s in spans} == {"exit.request", "exit.work"}
    test_agent.assert_no_check_failures()


@pytest.mark.parametrize("fault", [Fault.STALL, Fault.REFUSE, Fault.RESET])
def test_exit_is_not_delayed_beyond_the_deadline_when_the_agent_is_down(fault, fault_proxy,
                                                                        tmp_path):
    fault_proxy.set_fault(fault)
    env = python_env(fault_proxy, DD_TRACE_SHUTDOWN_TIMEOUT="1.5",
                     DD_TRACE_AGENT_TIMEOUT_SECONDS="5")  # longer than the deadline on purpose
    returncode, exit_seconds = run_to_exit(NORMAL_EXIT, env, tmp_path)
    print(f"\nexit with the agent {fault.name}: {exit_seconds:.2f}s (deadline 1.5s)",
          file=sys.stderr)
    assert returncode == 0
    # The deadline, plus interpreter teardown on a noisy machine.
    assert exit_seconds < 1.5 + 2.0
