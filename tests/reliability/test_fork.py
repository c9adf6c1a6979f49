"""Forked workers: every worker's traces arrive, nothing is sent twice, no worker hangs at exit.

Two pre-fork shapes: gunicorn with ``--preload`` and 4 workers under ``python -m ddagent`` (the
master traced something before forking), and a ``multiprocessing`` pool with the fork start
method whose tasks run under a span the parent had open when it forked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.testagent import free_port, python_env

WSGI_APP = textwrap.dedent('''
    import os
    import time

    from ddagent import tracer

    # Finished in the master before it forks: must reach the agent exactly once.
    with tracer.trace("app.preload", service="fork-app"):
        pass


    def app(environ, start_response):
        with tracer.trace("app.request", service="fork-app", resource=environ["PATH_INFO"]):
            with tracer.trace("app.work"):
                time.sleep(0.05)  # keeps every worker busy under concurrent requests
            body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
''')


def spans_by_name(test_agent) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for trace in test_agent.traces():
        for span in trace:
            found.setdefault(span["name"], []).append(span)
    return found


def requests_per_pid(test_agent, name: str) -> Counter[str]:
    """How many ``name`` spans each process sent.

    The pid is on the first span of each chunk; the agent merges chunks by trace id, so a span
    without it takes the first one of its trace (the trace is one chunk then).
    """
    per_pid: Counter[str] = Counter()
    for trace in test_agent.traces():
        pids = [s["metrics"]["process_id"] for s in trace if "process_id" in s["metrics"]]
        for span in trace:
            if span["name"] == name:
                per_pid[str(int(span["metrics"].get("process_id", pids[0])))] += 1
    return per_pid


def assert_no_duplicates(test_agent) -> None:
    ids = Counter(span["span_id"] for trace in test_agent.traces() for span in trace)
    assert not [span_id for span_id, n in ids.items() if n > 1]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


@pytest.mark.skipif(sys.platform == "win32", reason="pre-fork servers are POSIX")
def test_gunicorn_preload_workers(test_agent, tmp_path):
    pytest.importorskip("gunicorn")
    (tmp_path / "fork_app.py").write_text(WSGI_APP)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        master = subprocess.Popen(
            [sys.executable, "-m", "ddagent", "-m", "gunicorn", "--preload", "--workers", "4",
             "--graceful-timeout", "20", "--bind", f"127.0.0.1:{port}", "--chdir",
             str(tmp_path), "fork_app:app"],
            env=python_env(test_agent), stdout=log, stderr=subprocess.STDOUT)
        try:
            pids = Counter([wait_until_serving(url, master, log_path)])
            with ThreadPoolExecutor(8) as pool:
                pids.update(pool.map(lambda i: get(f"{url}/r{i}"), range(80)))
        finally:
            master.send_signal(signal.SIGTERM)
            started = time.monotonic()
            master.wait(timeout=60)
            exit_seconds = time.monotonic() - started
    log_text = log_path.read_text()
    print(f"\ngunicorn: requests per worker pid {dict(pids)}; master and workers exited in "
          f"{exit_seconds:.1f}s", file=sys.stderr)
    assert master.returncode == 0, log_text
    assert exit_seconds < 20, "a worker hung at exit"
    assert len(pids) >= 2, f"the requests did not spread over the workers: {pids}"

    # Workers flush at exit, so everything is there once the master is gone (allow for the
    # agent's ingestion).
    expected = sum(pids.values())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        spans = spans_by_name(test_agent)
        if len(spans.get("app.request", [])) >= expected:
            break
        time.sleep(0.1)
    per_pid = requests_per_pid(test_agent, "app.request")
    assert per_pid == pids, log_text
    assert len(spans["app.work"]) == expected
    assert len(spans["app.preload"]) == 1
    assert_no_duplicates(test_agent)
    test_agent.assert_no_check_failures()


def wait_until_serving(url: str, proc: subprocess.Popen, log_path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited: {log_path.read_text()}")
        try:
            return get(url + "/ready")
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"gunicorn did not start: {log_path.read_text()}")


POOL_SCRIPT = textwrap.dedent('''
    import multiprocessing
    import os
    import time

    from ddagent import tracer


    def task(i):
        with tracer.trace("pool.task", resource=str(i)):
            time.sleep(0.01)
        return os.getpid()


    if __name__ == "__main__":
        with tracer.trace("pool.job"):  # open while the workers fork
            pool = multiprocessing.get_context("fork").Pool(4)
            pids = pool.map(task, range(200), chunksize=5)
            pool.close()
            pool.join()
        print(" ".join(str(pid) for pid in pids))
''')


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_multiprocessing_fork_pool(test_agent, tmp_path):
    script = tmp_path / "pool_app.py"
    script.write_text(POOL_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], env=python_env(test_agent),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    pids = Counter(result.stdout.split())
    spans = spans_by_name(test_agent)
    tasks = spans.get("pool.task", [])
    per_pid = requests_per_pid(test_agent, "pool.task")
    print(f"\nmultiprocessing pool: tasks per worker pid {dict(pids)}, at the agent "
          f"{len(tasks)} task spans", file=sys.stderr)
    assert len(tasks) == 200, result.stderr
    assert len(spans["pool.job"]) == 1
    job = spans["pool.job"][0]
    assert {t["trace_id"] for t in tasks} == {job["trace_id"]}
    assert {t["parent_id"] for t in tasks} == {job["span_id"]}
    assert set(per_pid) == set(pids)
    assert_no_duplicates(test_agent)
    test_agent.assert_no_check_failures()
