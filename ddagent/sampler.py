"""Sampling: which traces the Datadog backend keeps.

A decision is made once per trace, on its local root, and recorded as a sampling priority
(``_sampling_priority_v1`` on the chunk root): 2/-1 for a user rule (:class:`RateSampler`,
``DD_TRACE_SAMPLE_RATE``), 1/0 for the agent's rates (:class:`PrioritySampler`, the default).
Rejected traces are still sent with their priority so that the agent's statistics stay complete;
the agent drops them after counting.

Every sampler hashes the low 64 bits of the trace id with Knuth's multiplicative factor, exactly
as the Datadog agent does, so a trace is kept or dropped consistently everywhere.
"""

from __future__ import annotations

import math
from typing import Optional

from ddagent._logging import get_logger
from ddagent.ids import LOW_64
from ddagent.span import Span

log = get_logger("ddagent.sampler")

KNUTH_FACTOR = 1111111111111111111

USER_REJECT = -1
AUTO_REJECT = 0
AUTO_KEEP = 1
USER_KEEP = 2

# _dd.p.dm values: who decided.
MECHANISM_DEFAULT = "-0"
MECHANISM_AGENT_RATE = "-1"
MECHANISM_RULE = "-3"

DEFAULT_RATE_KEY = "service:,env:"
_KEEP_BY_DEFAULT = (AUTO_KEEP, MECHANISM_DEFAULT)


def keeps(trace_id: int, rate: float) -> bool:
    """The agent-compatible decision for ``trace_id`` at ``rate``."""
    return ((trace_id & LOW_64) * KNUTH_FACTOR) & LOW_64 <= int(rate * LOW_64)


class RateSampler:
    """Keeps ``sample_rate`` of the traces (a user rule: priority 2 or -1).

    The rate is clamped to [0, 1], so 0 keeps nothing. A NaN or non-numeric rate logs a warning
    and keeps everything.
    """

    def __init__(self, sample_rate: float = 1.0) -> None:
        self.sample_rate = sample_rate

    @property
    def sample_rate(self) -> float:
        return self._rate

    @sample_rate.setter
    def sample_rate(self, rate: float) -> None:
        try:
            rate = float(rate)
            if math.isnan(rate):
                raise ValueError(rate)
        except (TypeError, ValueError):
            log.warning("ddagent: invalid sample rate %r: expected a number in [0, 1]; using 1.0",
                        rate)
            rate = 1.0
        self._rate = min(1.0, max(0.0, rate))

    def sample(self, span: Span) -> None:
        keep = keeps(span.trace_id, self._rate)
        span.set_sampling_decision(USER_KEEP if keep else USER_REJECT, MECHANISM_RULE)
        span.metrics["_dd.rule_psr"] = self._rate
        span.metrics["_sample_rate"] = self._rate  # the seed's name for the same number


class AllSampler(RateSampler):
    """Keeps every trace (the seed's default, as a user rule)."""

    def __init__(self) -> None:
        super().__init__(1.0)


class PrioritySampler:
    """Samples with the rates the agent answers (``rate_by_service``): priority 1 or 0.

    Before the agent has answered, every trace is kept. The rate for a root is looked up as
    ``service:<service>,env:<env>``, then under the default key ``service:,env:``.
    """

    def __init__(self, env: Optional[str] = None) -> None:
        self.env = env or ""
        self._rates: dict[str, float] = {}
        # service -> (rate, keep threshold) or None for "keep by default": the rate lookup of
        # decide() done once per service rather than per trace. Swapped with the rates.
        self._by_service: dict[Optional[str], Optional[tuple[float, int]]] = {}

    def update_rates(self, rate_by_service: dict[str, float]) -> None:
        """Install the agent's latest answer (called from the writer's thread)."""
        # Reference swaps; a reader sees the old or the new rates, and at worst one decision
        # uses a rate cached from the previous answer.
        self._rates = dict(rate_by_service)
        self._by_service = {}

    @property
    def rates(self) -> dict[str, float]:
        return dict(self._rates)

    def sample(self, span: Span) -> None:
        span.set_sampling_decision(*self.decide(span))

    def decide(self, root: Span) -> tuple[int, str]:
        """The priority and mechanism for the trace of local root ``root`` (which records the
        rate used). The tracer calls this directly for the default sampler, without the
        round trip through the span."""
        by_service = self._by_service
        try:
            rate = by_service[root.service]
        except KeyError:
            rate = self._rate_for(by_service, root.service)
        if rate is None:
            return _KEEP_BY_DEFAULT
        root.metrics["_dd.agent_psr"] = rate[0]
        threshold = rate[1]
        # keeps(), with no hash at the agent's default rate of 1.
        if threshold >= LOW_64 or ((root.trace_id & LOW_64) * KNUTH_FACTOR) & LOW_64 <= threshold:
            return AUTO_KEEP, MECHANISM_AGENT_RATE
        return AUTO_REJECT, MECHANISM_AGENT_RATE

    def _rate_for(self, by_service: dict[Optional[str], Optional[tuple[float, int]]],
                  service: Optional[str]) -> Optional[tuple[float, int]]:
        """The agent's rate for ``service`` (``service:<service>,env:<env>``, else the default
        key ``service:,env:``), remembered in ``by_service``; None when there is none."""
        rates = self._rates
        rate = rates.get(f"service:{service or ''},env:{self.env}")
        if rate is None:
            rate = rates.get(DEFAULT_RATE_KEY)
        found = None if rate is None else (rate, int(rate * LOW_64))
        if len(by_service) < 1000:  # services are few; a flood of names is not cached
            by_service[service] = found
        return found
