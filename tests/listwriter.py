"""A writer that keeps what the tracer hands over in memory (the writer contract, no network)."""

from __future__ import annotations

import threading


class ListWriter:
    """Each chunk in ``chunks``, and every span in order in ``spans`` (both live lists)."""

    def __init__(self) -> None:
        self.chunks: list[list] = []
        self.spans: list = []
        self._lock = threading.Lock()

    def write(self, spans: list) -> None:
        with self._lock:
            self.chunks.append(list(spans))
            self.spans.extend(spans)

    def count(self) -> int:
        with self._lock:
            return len(self.spans)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def stop(self, timeout: float | None = None) -> None:
        pass
