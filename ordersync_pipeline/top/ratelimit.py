"""A call budget shared by every process that uses one app key: a token bucket plus bans.

``RateBudget.acquire(key)`` blocks until a token is free; ``ban(key, seconds)`` (after a code-7
answer) makes every process using that key wait. Keys are the app key, and ``method_key(app_key,
method)`` for a per-API-method bucket (only limited when configured; a method key without a
configured rate only honours bans).

One algorithm (``take``), two stores:

- ``RedisRateBudget``: the bucket lives in a Redis hash, updated by one Lua script (atomic, and timed
  by the Redis server's clock so hosts with skewed clocks still agree). Used when
  ``ORDERSYNC_REDIS_URL`` is set.
- ``LocalRateBudget``: the bucket lives in a SQLite file under ``ORDERSYNC_HOME``; ``BEGIN IMMEDIATE``
  serialises the read-modify-write across the processes of one machine.

The Lua script is a line-by-line port of ``take``; a test runs both over the same sequence.
"""

from __future__ import annotations

import abc
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["RateBudget", "BucketState", "BucketSpec", "Limits", "take", "method_key",
           "RedisRateBudget", "LocalRateBudget", "make_rate_budget"]

Sleep = Callable[[float], None]


@runtime_checkable
class RateBudget(Protocol):
    def acquire(self, key: str, tokens: int = 1) -> float:
        """Block until ``tokens`` are taken from ``key``'s bucket; return the seconds waited."""

    def ban(self, key: str, seconds: float) -> None:
        """No process may take from ``key`` for ``seconds`` (an existing longer ban is kept)."""

    def ban_remaining(self, key: str) -> float:
        """Seconds left on ``key``'s ban (0.0 when not banned)."""


def method_key(app_key: str, method: str) -> str:
    """The bucket key for one API method of one app."""
    return f"{app_key}|{method}"


@dataclass(frozen=True)
class BucketSpec:
    rate_per_s: float | None     # None: unlimited (bans only)
    capacity: float


@dataclass(frozen=True)
class BucketState:
    tokens: float
    updated: float
    banned_until: float


@dataclass(frozen=True)
class Limits:
    """Rates per minute: ``per_minute`` for app keys, ``per_method`` for method keys."""

    per_minute: int
    burst: int | None = None
    per_method: Mapping[str, int] = field(default_factory=dict)

    def spec_for(self, key: str) -> BucketSpec:
        if "|" in key:
            rate = self.per_method.get(key.split("|", 1)[1])
            if rate is None:
                return BucketSpec(rate_per_s=None, capacity=1.0)
            return _window_safe(rate, _default_burst(rate))
        burst = self.burst if self.burst is not None else _default_burst(self.per_minute)
        return _window_safe(self.per_minute, burst)


def _window_safe(per_minute: int, burst: int) -> BucketSpec:
    """A bucket that never lets more than ``per_minute`` calls into any 60-second window.

    The platform counts calls over a sliding minute; a bucket refilling at the full rate on top of a
    full burst would allow ``burst + per_minute`` in one window and earn a code-7 ban. Refilling at
    ``(per_minute - burst) / 60`` keeps burst plus refill within the quota.
    """
    burst = max(1, min(burst, per_minute))
    refill = max(per_minute - burst, 1) / 60.0
    return BucketSpec(rate_per_s=refill, capacity=float(burst))


def _default_burst(per_minute: int) -> int:
    # About one second's worth: bursts big enough to overlap a few calls, small enough that a
    # per-second platform limit is not tripped at start-up.
    return max(1, math.ceil(per_minute / 60))


def take(state: BucketState | None, *, now: float, spec: BucketSpec,
         tokens: int) -> tuple[BucketState, float]:
    """Try to take ``tokens``: ``(new_state, 0.0)`` on success, else ``(new_state, seconds_to_wait)``."""
    if state is None:
        state = BucketState(tokens=spec.capacity, updated=now, banned_until=0.0)
    if now < state.banned_until:
        return state, state.banned_until - now
    if spec.rate_per_s is None:
        return state, 0.0
    level = min(spec.capacity, state.tokens + max(0.0, now - state.updated) * spec.rate_per_s)
    # The tolerance absorbs float rounding: after sleeping exactly the computed wait, the level can
    # come out a hair under ``tokens`` and ask for a sub-nanosecond sleep forever.
    if level >= tokens - 1e-9:
        return BucketState(max(0.0, level - tokens), now, state.banned_until), 0.0
    return BucketState(level, now, state.banned_until), (tokens - level) / spec.rate_per_s


def _check_tokens(spec: BucketSpec, tokens: int) -> None:
    if tokens < 1 or (spec.rate_per_s is not None and tokens > spec.capacity):
        raise ValueError(f"tokens must be between 1 and the bucket capacity {spec.capacity:g}")


class _BlockingBudget(abc.ABC):
    """The shared acquire loop; subclasses provide the atomic ``_take``/``ban``/``ban_remaining``."""

    def __init__(self, limits: Limits, sleep: Sleep) -> None:
        self.limits = limits
        self._sleep = sleep

    @abc.abstractmethod
    def _take(self, key: str, spec: BucketSpec, tokens: int) -> float:
        """Atomically try the bucket: 0.0 when taken, else the seconds to wait before retrying."""

    def acquire(self, key: str, tokens: int = 1) -> float:
        """Block until ``tokens`` are taken from ``key``'s bucket; return the seconds waited."""
        spec = self.limits.spec_for(key)
        _check_tokens(spec, tokens)
        waited = 0.0
        while True:
            wait = self._take(key, spec, tokens)
            if wait <= 0:
                return waited
            # Re-check after sleeping: another process may have taken the token or extended a ban.
            self._sleep(wait)
            waited += wait


# KEYS[1]: bucket hash. ARGV: rate_per_s (-1 = unlimited), capacity, tokens, op, ban_seconds, now.
# ``now`` is empty in production (Redis server time); tests pass it to compare with ``take``.
_LUA = """
local now
if ARGV[6] ~= nil and ARGV[6] ~= '' then now = tonumber(ARGV[6]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) + tonumber(t[2]) / 1000000 end
local rate = tonumber(ARGV[1]); local cap = tonumber(ARGV[2]); local n = tonumber(ARGV[3])
local op = ARGV[4]
local h = redis.call('HMGET', KEYS[1], 'tokens', 'updated', 'banned_until')
local tokens = tonumber(h[1]) or cap
local updated = tonumber(h[2]) or now
local banned = tonumber(h[3]) or 0
local wait = 0
if op == 'peek' then return tostring(math.max(0, banned - now)) end
if op == 'ban' then
  banned = math.max(banned, now + tonumber(ARGV[5]))
elseif now < banned then
  return tostring(banned - now)
elseif rate >= 0 then
  local level = math.min(cap, tokens + math.max(0, now - updated) * rate)
  if level >= n - 1e-9 then tokens = math.max(0, level - n) else tokens = level; wait = (n - level) / rate end
  updated = now
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(updated),
           'banned_until', tostring(banned))
redis.call('PEXPIRE', KEYS[1], math.ceil((math.max(0, banned - now) + 3600) * 1000))
return tostring(wait)
"""


class RedisRateBudget(_BlockingBudget):
    """Token buckets in Redis (``<prefix><key>`` hashes), shared by every host using the server."""

    def __init__(self, client: Any, limits: Limits, *, prefix: str = "ordersync:rate:",
                 sleep: Sleep = time.sleep) -> None:
        super().__init__(limits, sleep)
        self._redis = client
        self._prefix = prefix
        self._script = client.register_script(_LUA)

    def _run(self, key: str, spec: BucketSpec, tokens: int, op: str, ban_s: float = 0.0,
             now: float | None = None) -> float:
        rate = -1.0 if spec.rate_per_s is None else spec.rate_per_s
        args = [repr(rate), repr(spec.capacity), str(tokens), op, repr(ban_s),
                "" if now is None else repr(now)]
        return float(self._script(keys=[self._prefix + key], args=args))

    def _take(self, key: str, spec: BucketSpec, tokens: int) -> float:
        return self._run(key, spec, tokens, "take")

    def take_at(self, key: str, *, now: float, tokens: int = 1) -> float:
        """One non-blocking take at an explicit time (tests compare this with ``take``)."""
        return self._run(key, self.limits.spec_for(key), tokens, "take", now=now)

    def ban(self, key: str, seconds: float) -> None:
        """No process may take from ``key`` for ``seconds`` (an existing longer ban is kept)."""
        self._run(key, self.limits.spec_for(key), 1, "ban", ban_s=max(0.0, seconds))

    def ban_remaining(self, key: str) -> float:
        """Seconds left on ``key``'s ban (0.0 when not banned)."""
        return self._run(key, self.limits.spec_for(key), 1, "peek")

    def __repr__(self) -> str:
        return f"RedisRateBudget(prefix={self._prefix!r}, per_minute={self.limits.per_minute})"


class LocalRateBudget(_BlockingBudget):
    """Token buckets in one SQLite file, shared by the processes of one machine."""

    def __init__(self, path: str | os.PathLike[str], limits: Limits, *, sleep: Sleep = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(limits, sleep)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        with self._lock:
            self._connection()

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork: reopen in a child process.
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # Every API call commits here twice. With WAL, NORMAL commits without waiting for the disk:
            # under a load's write traffic a fsync per commit cost the fetch threads ~3 ms a call. A
            # power loss can roll back the last few takes (a bucket a little fuller than it should be,
            # which the platform's own limit answers with a ban that is recorded again); never corrupt.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS rate_buckets (key TEXT PRIMARY KEY, "
                         "tokens REAL NOT NULL, updated REAL NOT NULL, banned_until REAL NOT NULL)")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _update(self, key: str, change: Callable[[BucketState | None, float],
                                                  tuple[BucketState | None, float]]) -> float:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT tokens, updated, banned_until FROM rate_buckets WHERE key = ?",
                                   (key,)).fetchone()
                state = BucketState(*row) if row else None
                new, result = change(state, self._clock())
                if new is not None and new != state:
                    conn.execute("INSERT OR REPLACE INTO rate_buckets VALUES (?, ?, ?, ?)",
                                 (key, new.tokens, new.updated, new.banned_until))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result

    def _take(self, key: str, spec: BucketSpec, tokens: int) -> float:
        return self._update(key, lambda state, now: take(state, now=now, spec=spec, tokens=tokens))

    def ban(self, key: str, seconds: float) -> None:
        """No process may take from ``key`` for ``seconds`` (an existing longer ban is kept)."""
        spec = self.limits.spec_for(key)

        def change(state: BucketState | None, now: float) -> tuple[BucketState | None, float]:
            base = state or BucketState(spec.capacity, now, 0.0)
            until = max(base.banned_until, now + max(0.0, seconds))
            return BucketState(base.tokens, base.updated, until), 0.0

        self._update(key, change)

    def ban_remaining(self, key: str) -> float:
        """Seconds left on ``key``'s ban (0.0 when not banned). A plain read: it changes nothing, so it
        takes no write lock (WAL readers see the last committed state without waiting for writers)."""
        with self._lock:
            row = self._connection().execute(
                "SELECT banned_until FROM rate_buckets WHERE key = ?", (key,)).fetchone()
            return max(0.0, row[0] - self._clock()) if row else 0.0

    def __repr__(self) -> str:
        return f"LocalRateBudget(path={str(self.path)!r}, per_minute={self.limits.per_minute})"


def make_rate_budget(*, redis_url: str | None, home: str | os.PathLike[str], per_minute: int,
                     burst: int | None = None, per_method: Mapping[str, int] | None = None,
                     sleep: Sleep = time.sleep) -> RateBudget:
    """Redis when ``redis_url`` is given (shared across hosts), else a SQLite file under ``home``."""
    if per_minute < 1:
        raise ValueError("per_minute must be >= 1")
    limits = Limits(per_minute=per_minute, burst=burst, per_method=dict(per_method or {}))
    if redis_url:
        import redis  # imported here so the local budget works without a Redis client configured

        return RedisRateBudget(redis.Redis.from_url(redis_url), limits, sleep=sleep)
    return LocalRateBudget(Path(home) / "ratelimit.sqlite3", limits, sleep=sleep)
