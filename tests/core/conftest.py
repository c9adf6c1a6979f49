from __future__ import annotations

import threading

import pytest

from ddagent.config import Config
from ddagent.context import ACTIVE_SPAN
from ddagent.tracer import Tracer


class ListWriter:
    """Collects the chunks the tracer hands over, in order (the writer contract, no network)."""

    def __init__(self) -> None:
        self.chunks: list[list] = []
        self._lock = threading.Lock()

    def write(self, spans: list) -> None:
        with self._lock:
            self.chunks.append(list(spans))

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def stop(self, timeout: float | None = None) -> None:
        pass

    @property
    def spans(self) -> list:
        return [s for chunk in self.chunks for s in chunk]


def make_tracer(env: dict[str, str] | None = None, **kwargs) -> Tracer:
    t = Tracer(Config.from_env(env or {"DD_SERVICE": "test-svc"}), **kwargs)
    t.writer = ListWriter()
    return t


@pytest.fixture
def tracer() -> Tracer:
    token = ACTIVE_SPAN.set(None)
    yield make_tracer()
    ACTIVE_SPAN.reset(token)
