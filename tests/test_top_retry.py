"""Retry policy as a table: every error class, attempt limits, bans, backoff caps and jitter."""

from __future__ import annotations

import random

import pytest

from ordersync_pipeline.top.errors import (
    BusinessError,
    GatewayURLError,
    InvalidArgumentsError,
    InvalidSessionError,
    InvalidSignatureError,
    MalformedResponseError,
    MissingSessionError,
    PlatformError,
    RateLimitedError,
    ServerError,
    TopError,
    TransportError,
)
from ordersync_pipeline.top.retry import RetryDecision, RetryPolicy, apply_jitter, backoff_delay, decide

M = "taobao.trades.sold.increment.get"
POLICY = RetryPolicy(max_attempts=5, base_delay_s=0.5, max_delay_s=4.0, ban_ceiling_s=60.0)


def _ban(seconds: int | None, sub_code: str = "accesscontrol.limited-by-api-access-count") -> RateLimitedError:
    sub_msg = None if seconds is None else f"This ban will last for {seconds} more seconds"
    return RateLimitedError("App Call Limited", method=M, code=7, sub_code=sub_code, sub_msg=sub_msg)


TABLE: list[tuple[str, TopError, int, RetryDecision]] = [
    ("timeout retried with backoff", TransportError("ReadTimeout", method=M), 1, RetryDecision(True, 0.5)),
    ("5xx backoff doubles", TransportError("HTTP 502", method=M, status=502), 3, RetryDecision(True, 2.0)),
    ("backoff is capped", TransportError("x", method=M), 4, RetryDecision(True, 4.0)),
    ("4xx not retried", TransportError("HTTP 404", method=M, status=404), 1, RetryDecision(False)),
    ("malformed body retried", MalformedResponseError("truncated", method=M), 2, RetryDecision(True, 1.0)),
    ("isp fault retried", ServerError("e", method=M, code=15, sub_code="isp.unknown-error"), 1,
     RetryDecision(True, 0.5)),
    ("deterministic isp not retried",
     ServerError("e", method=M, code=15, sub_code="isp.null-pointer-exception"), 1, RetryDecision(False)),
    ("isv not retried", BusinessError("e", method=M, code=15, sub_code="isv.trade-not-exist"), 1,
     RetryDecision(False)),
    ("bad args not retried", InvalidArgumentsError("Invalid arguments:tid", method=M, code=41), 1,
     RetryDecision(False)),
    ("invalid session never retried", InvalidSessionError("Invalid session", method=M, code=27), 1,
     RetryDecision(False)),
    ("missing session never retried", MissingSessionError("m", method=M, code=26), 1, RetryDecision(False)),
    ("bad signature never retried", InvalidSignatureError("s", method=M, code=25), 1, RetryDecision(False)),
    ("other platform codes not retried", PlatformError("t", method=M, code=31), 1, RetryDecision(False)),
    ("a gateway URL the HTTP library refuses is never retried", GatewayURLError("no scheme", method=M), 1,
     RetryDecision(False)),
    ("per-api ban: ban seconds + 1", _ban(1), 1, RetryDecision(True, 2.0)),
    ("ban honoured even beyond the backoff cap", _ban(9), 1, RetryDecision(True, 10.0)),
    ("unlaunched-app ban", _ban(2, "accesscontrol.limited-by-app-api-access-count"), 1,
     RetryDecision(True, 3.0)),
    ("daily quota ban above the ceiling: give up", _ban(31062, "accesscontrol.limited-by-app-access-count"),
     1, RetryDecision(False)),
    ("daily quota ban below the ceiling: wait it out",
     _ban(30, "accesscontrol.limited-by-app-access-count"), 1, RetryDecision(True, 31.0)),
    ("daily quota without a length: give up", _ban(None, "accesscontrol.limited-by-app-access-count"), 1,
     RetryDecision(False)),
    ("isp.call-limited without length: at least a second",
     RateLimitedError("e", method=M, code=15, sub_code="isp.call-limited"), 1, RetryDecision(True, 1.0)),
    ("last attempt: give up even if retryable", TransportError("x", method=M), 5, RetryDecision(False)),
    ("last attempt: give up on a ban too", _ban(1), 5, RetryDecision(False)),
]


@pytest.mark.parametrize(("error", "attempt", "expected"), [row[1:] for row in TABLE],
                         ids=[row[0] for row in TABLE])
def test_decide_table(error: TopError, attempt: int, expected: RetryDecision) -> None:
    assert decide(error, attempt, POLICY) == expected


def test_table_covers_every_error_class() -> None:
    covered = {type(row[1]) for row in TABLE}
    assert covered == {TransportError, MalformedResponseError, ServerError, BusinessError,
                       InvalidArgumentsError, InvalidSessionError, MissingSessionError,
                       InvalidSignatureError, PlatformError, RateLimitedError, GatewayURLError}


def test_backoff_sequence() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=10.0)
    assert [backoff_delay(a, policy) for a in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_single_attempt_policy_never_retries() -> None:
    assert decide(TransportError("x", method=M), 1, RetryPolicy(max_attempts=1)) == RetryDecision(False)


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay_s=-1)


def test_jitter_only_adds_and_is_bounded_and_seeded() -> None:
    rng = random.Random(42)
    values = [apply_jitter(2.0, rng, fraction=0.25) for _ in range(500)]
    assert all(2.0 <= v <= 2.5 for v in values)
    assert len(set(values)) > 400  # actually random
    again = random.Random(42)
    assert values[:5] == [apply_jitter(2.0, again, fraction=0.25) for _ in range(5)]  # reproducible
    assert apply_jitter(0.0, rng) == 0.0 and apply_jitter(3.0, rng, fraction=0.0) == 3.0
