"""Hostility on request: transient isp errors, slow replies, timeouts, broken bodies, rate limits.

Faults are drawn from one seeded generator so a run with the same settings and request sequence
fails the same way. Sleeps are bounded by the settings: a "timeout" outlasts a sensible client
timeout but never hangs a test run.

``FaultInjector`` spreads faults over every call at ``fault_rate``; ``ApiFailures`` makes one API
fail for a while (``settings.ApiFailure``: method, share, world-time window, optionally one shop),
the shape of a platform's bad hour that the failure-rate breaker exists for.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass

from ordersync_pipeline.simulator.settings import ApiFailure

ISP_FAULTS = (
    ("isp.top-remote-connection-timeout", "连接超时"),
    ("isp.remote-service-error", "连接远程服务错误"),
    ("isp.top-remote-service-unavailable", "远程服务不可用"),
    ("isp.unknown-error", "未知错误"),
)
FAULT_KINDS = ("isp", "isp", "isp", "slow", "timeout", "truncated", "malformed", "http502")


@dataclass(frozen=True)
class Fault:
    kind: str          # one of FAULT_KINDS
    sub_code: str = ""
    sub_msg: str = ""


class FaultInjector:
    def __init__(self, rate: float, seed: int) -> None:
        self.rate = rate
        self._rng = random.Random(seed ^ 0xFA017)
        self._lock = threading.Lock()
        self.injected: dict[str, int] = {}

    def draw(self) -> Fault | None:
        if self.rate <= 0:
            return None
        with self._lock:
            if self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(FAULT_KINDS)
            sub_code, sub_msg = self._rng.choice(ISP_FAULTS) if kind == "isp" else ("", "")
            self.injected[kind] = self.injected.get(kind, 0) + 1
        return Fault(kind, sub_code, sub_msg)


class ApiFailures:
    """Failure windows of single APIs, drawn from their own seeded generator (so adding one does not
    change which calls ``FaultInjector`` fails)."""

    def __init__(self, failures: tuple[ApiFailure, ...], seed: int) -> None:
        self._failures = list(failures)
        self._rng = random.Random(seed ^ 0xBADA91)
        self._lock = threading.Lock()
        self.injected: dict[str, int] = {}     # method -> failures injected

    def add(self, failure: ApiFailure) -> None:
        with self._lock:
            self._failures.append(failure)

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()

    def active(self) -> list[ApiFailure]:
        with self._lock:
            return list(self._failures)

    def draw(self, method: str, shop_id: str | None, now_ts: int) -> Fault | None:
        """The fault for a call to ``method`` by ``shop_id`` at world time ``now_ts``, or None."""
        with self._lock:
            if not self._failures:
                return None
            for failure in self._failures:
                if failure.method != method or (failure.shop_id is not None and failure.shop_id != shop_id):
                    continue
                if failure.start is not None and now_ts < failure.start.timestamp():
                    continue
                if failure.end is not None and now_ts >= failure.end.timestamp():
                    continue
                if self._rng.random() >= failure.rate:
                    return None  # the first matching window decides, so overlapping ones never compound
                self.injected[method] = self.injected.get(method, 0) + 1
                sub_code, sub_msg = self._rng.choice(ISP_FAULTS) if failure.kind == "isp" else ("", "")
                return Fault(failure.kind, sub_code, sub_msg)
        return None


def truncate(body: bytes) -> bytes:
    """A body cut off mid-way, as a dropped connection behind a proxy would leave it."""
    return body[: max(1, len(body) // 2)]


def malform(body: bytes) -> bytes:
    """Syntactically broken JSON that still looks like a TOP reply at a glance."""
    return body[: max(1, len(body) // 3)] + b'",,}\x00{"'


class RateLimiter:
    """Per-app-key sliding one-minute window on host (monotonic) time; rejected calls don't count."""

    WINDOW = 60.0

    def __init__(self, per_minute: int | None) -> None:
        self.per_minute = per_minute
        self._calls: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, app_key: str) -> int:
        """0 if the call may proceed (and is counted), else the ban's remaining whole seconds."""
        if not self.per_minute:
            return 0
        now = time.monotonic()
        with self._lock:
            calls = self._calls.setdefault(app_key, deque())
            while calls and calls[0] <= now - self.WINDOW:
                calls.popleft()
            if len(calls) >= self.per_minute:
                return max(1, math.ceil(calls[0] + self.WINDOW - now))
            calls.append(now)
            return 0
