"""Reading ddagent's process-wide counters from a test."""

from __future__ import annotations

from ddagent.stats import STATS


class StatsDelta:
    """STATS counters relative to when this object was made (STATS is process-wide)."""

    def __init__(self) -> None:
        self.before = STATS.snapshot()

    def __getitem__(self, name: str) -> int:
        return STATS.get(name) - self.before.get(name, 0)

    def dropped(self) -> dict[str, int]:
        now = STATS.snapshot()
        return {
            name: now[name] - self.before.get(name, 0)
            for name in now
            if name.startswith("spans.dropped.") and now[name] != self.before.get(name, 0)
        }
