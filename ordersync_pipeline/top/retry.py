"""Whether and when to retry a failed TOP call: one small pure function, randomness kept apart.

``decide`` sees the error, the attempt number (1 = the call that just failed) and the policy, and
returns a ``RetryDecision``. Jitter is added afterwards with ``apply_jitter(delay, rng)``, so the
decision itself is deterministic and table-testable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ordersync_pipeline.top.errors import RateLimitedError, TopError

__all__ = ["RetryPolicy", "RetryDecision", "decide", "backoff_delay", "apply_jitter"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient errors, and how long a code-7 ban may be waited out.

    ``max_attempts`` counts every HTTP attempt, the first included. ``ban_ceiling_s``: a code-7 ban
    longer than this is not waited out in-process (the daily quota ban can last hours); the error is
    raised instead so the run fails fast and the scheduler tries again later.
    """

    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    ban_ceiling_s: float = 120.0
    jitter_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.ban_ceiling_s < 0:
            raise ValueError("delays must be >= 0")


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay_s: float = 0.0


GIVE_UP = RetryDecision(retry=False)


def backoff_delay(attempt: int, policy: RetryPolicy) -> float:
    """``base * 2**(attempt-1)``, capped at ``max_delay_s``."""
    return float(min(policy.max_delay_s, policy.base_delay_s * (2 ** max(0, attempt - 1))))


def decide(error: TopError, attempt: int, policy: RetryPolicy) -> RetryDecision:
    """Retry ``error`` after ``attempt`` failed attempts? Pure: no clock, no randomness."""
    if not error.retryable or attempt >= policy.max_attempts:
        return GIVE_UP
    if isinstance(error, RateLimitedError):
        return _decide_ban(error, attempt, policy)
    return RetryDecision(retry=True, delay_s=backoff_delay(attempt, policy))


def _decide_ban(error: RateLimitedError, attempt: int, policy: RetryPolicy) -> RetryDecision:
    if error.ban_seconds is None:
        # No ban length given (e.g. isp.call-limited): a daily-quota ban without one is not waited
        # out; others get a second or the backoff, whichever is longer.
        if error.daily_quota:
            return GIVE_UP
        return RetryDecision(retry=True, delay_s=max(1.0, backoff_delay(attempt, policy)))
    # +1: the ban is reported in whole seconds, rounded down.
    delay = float(error.ban_seconds + 1)
    if delay > policy.ban_ceiling_s:
        return GIVE_UP
    return RetryDecision(retry=True, delay_s=delay)


def apply_jitter(delay_s: float, rng: random.Random, *, fraction: float = 0.25) -> float:
    """Add up to ``fraction * delay_s`` of random delay. Only ever adds, so a ban is still honoured."""
    if delay_s <= 0 or fraction <= 0:
        return delay_s
    return delay_s + rng.uniform(0.0, fraction * delay_s)
