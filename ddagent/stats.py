"""Process-wide counters: what the tracer created, sent and dropped, and why.

Every part of ddagent (tracer, writer, probes) counts into the one ``STATS`` object so that
``tracer.stats()`` and the doctor command can show a single picture. Names are dotted strings;
drops use ``dropped.<reason>`` (``spans.dropped.buffer_full``, ``spans.dropped.agent_error``, ...).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict


class Stats:
    """Thread-safe named counters.

    ``incr`` takes a lock: exact counts matter more here than the ~100 ns it costs, because the
    reliability suite checks ``created == sent + dropped`` to the span. Hot paths should count in
    batches (per trace rather than per span) where they can.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[str, int] = defaultdict(int)

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter, sorted by name."""
        with self._lock:
            return dict(sorted(self._counts.items()))

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def _after_fork_in_child(self) -> None:
        # The parent may have held the lock while forking; the child gets a fresh one.
        self._lock = threading.Lock()


STATS = Stats()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=STATS._after_fork_in_child)
