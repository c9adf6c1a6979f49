from __future__ import annotations

import pytest

from ddagent.config import Config
from ddagent.context import ACTIVE_SPAN
from ddagent.tracer import Tracer
from tests.listwriter import ListWriter


def make_tracer(env: dict[str, str] | None = None, **kwargs) -> Tracer:
    t = Tracer(Config.from_env(env or {"DD_SERVICE": "test-svc"}), **kwargs)
    t.writer = ListWriter()
    return t


@pytest.fixture
def tracer() -> Tracer:
    token = ACTIVE_SPAN.set(None)
    yield make_tracer()
    ACTIVE_SPAN.reset(token)
