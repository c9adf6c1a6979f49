"""Switching an integration off and on while threads keep calling the library."""

from __future__ import annotations

import threading
from typing import Callable, Optional

from ddagent import probes


def toggle_while_threads_call(name: str, call_once: Callable[[int], None],
                              span_count: Callable[[], int], threads: int = 4,
                              check_disabled: Optional[Callable[[], None]] = None) -> None:
    """Threads keep calling through ``probes.disable(name)`` and ``enable(name)``.

    ``call_once(i)`` makes one call on thread ``i`` (with whatever client or connection that
    thread uses); ``span_count()`` counts the spans written so far; ``check_disabled()`` runs
    right after the disable (e.g. the original code objects are back). Spans stop while the
    integration is off and come back when it is on; no thread sees an error.
    """
    probes.enable(name)
    errors: list[BaseException] = []
    stop = threading.Event()
    calls = [0] * threads

    def worker(i: int) -> None:
        try:
            while not stop.is_set():
                call_once(i)
                calls[i] += 1
        except BaseException as exc:
            errors.append(exc)

    def each_thread_completes_calls(n: int = 3) -> None:
        # A call entered before a switch has returned once every thread made n more calls.
        start = list(calls)
        while any(calls[i] < start[i] + n for i in range(threads)) and not errors:
            stop.wait(0.01)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    try:
        each_thread_completes_calls()
        assert span_count() > 0
        probes.disable(name)
        if check_disabled is not None:
            check_disabled()
        each_thread_completes_calls()
        while_disabled = span_count()
        each_thread_completes_calls()
        assert span_count() == while_disabled
        probes.enable(name)
        each_thread_completes_calls()
        assert span_count() > while_disabled
    finally:
        stop.set()
        for t in workers:
            t.join()
        probes.disable(name)
    assert errors == []
