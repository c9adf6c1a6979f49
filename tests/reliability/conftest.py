"""Fixtures of the reliability suite, and its soak mode.

``pytest tests/reliability --soak-minutes 10`` (or ``DDAGENT_SOAK_MINUTES=10``) repeats the fault
script of test_faults.py for that long instead of once; the other tests are unchanged.
"""

from __future__ import annotations

import os

import pytest

from tests.reliability.faultproxy import FaultProxy


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-minutes", type=float, default=float(os.environ.get("DDAGENT_SOAK_MINUTES", 0)),
        help="run the reliability fault script repeatedly for this many minutes (soak mode)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    minutes = config.getoption("--soak-minutes")
    if minutes:  # the soak outlasts the default per-test timeout
        for item in items:
            item.add_marker(pytest.mark.timeout(minutes * 60 + 300))


@pytest.fixture
def soak_minutes(request: pytest.FixtureRequest) -> float:
    return request.config.getoption("--soak-minutes")


@pytest.fixture
def fault_proxy(test_agent):
    """A FaultProxy in front of this test's agent session (healthy until told otherwise)."""
    proxy = FaultProxy(test_agent.port)
    yield proxy
    proxy.close()


def rss_kib() -> int:
    """This process's resident memory now, in KiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
