"""The failure-rate breaker (熔断降级): when the platform fails a shop's increment API, stop leaning on it.

Per shop and guarded API (each stream's increment list API), from the call ledger (``api_calls``):

```
 closed --(failure share > failure_rate over window, with >= min_calls attempts)--> open
   ^                                                                                |
   +---- probe succeeds (probe_calls attempts, no retry, all answered) <--- cooldown-+
                                              probe fails: wait another cooldown
```

While a shop has an open breaker the incremental schedule and the gap sensor skip it, and every
``full_pull_every`` a degraded full pull (the stream's historical list API, ``taobao.trades.sold.get``
over the last ``full_pull_range`` of created time) keeps the warehouse fresh for the orders that
matter most. Nothing is recorded in ``sync_windows`` meanwhile, so once the breaker closes the gap
sensor launches every increment window skipped while it was open: the switch loses nothing.

A *failure* is an attempt the platform failed to serve (``FAILURE_KINDS``: transport errors and
timeouts, 5xx, malformed or cut-off bodies, isp.* errors). Our own quota (code 7), a shop's expired
session or a bad argument are not the platform failing, and are left to their own alerts.

Two clocks, on purpose: the sliding window is taken over ``api_calls.called_at``, which the client
stamps with the host's clock, so it is measured against the host's clock; cool-downs and the full-pull
cadence follow the pipeline's clock (``Settings.clock``), the clock that decides which windows have
closed. They are the same clock in production; tests step the second one. Calls made before the last
change of state (``calls_after_id``) never count again, so the failures that opened a breaker cannot
reopen it the moment it closes.

The state machine is pure (``evaluate``, ``after_probe``, ``full_pull_due``); ``Breakers`` applies it to
the warehouse, the probe and the alerts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

from ordersync_pipeline.config import BreakerSettings
from ordersync_pipeline.reconcile.records import BreakerRecord, read_breakers, save_breaker
from ordersync_pipeline.sync.stream import Stream
from ordersync_pipeline.sync.streams import STREAMS
from ordersync_pipeline.timeutil import now as host_now
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.errors import TopError
from ordersync_pipeline.top.paging import ALL_TRADE_TYPES
from ordersync_pipeline.warehouse import Warehouse

__all__ = ["BreakerPolicy", "Stats", "Transition", "evaluate", "after_probe", "full_pull_due", "guarded_apis",
           "FAILURE_KINDS", "Breakers", "TickReport", "probe_api", "ALERT_KIND"]

log = logging.getLogger("ordersync.breaker")

FAILURE_KINDS = ("TransportError", "MalformedResponseError", "ServerError")
ALERT_KIND: Final = "failure_rate"


@dataclass(frozen=True)
class BreakerPolicy:
    failure_rate: float = 0.05
    window: timedelta = timedelta(minutes=15)
    min_calls: int = 20
    cooldown: timedelta = timedelta(minutes=30)
    probe_calls: int = 5
    full_pull_range: timedelta = timedelta(hours=24)
    full_pull_every: timedelta = timedelta(minutes=60)

    @classmethod
    def from_settings(cls, settings: BreakerSettings) -> BreakerPolicy:
        return cls(failure_rate=settings.failure_rate, window=timedelta(minutes=settings.window_minutes),
                   min_calls=settings.min_calls, cooldown=timedelta(minutes=settings.cooldown_minutes),
                   probe_calls=settings.probe_calls, full_pull_range=timedelta(hours=settings.full_pull_hours),
                   full_pull_every=timedelta(minutes=settings.full_pull_every_minutes))


@dataclass(frozen=True)
class Stats:
    calls: int
    errors: int

    @property
    def rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class Transition:
    record: BreakerRecord
    opened: bool = False
    closed: bool = False


def _closed(shop_id: str, api: str, now: datetime, last_call_id: int) -> BreakerRecord:
    return BreakerRecord(shop_id=shop_id, api=api, state="closed", failure_rate=0.0, calls=0, errors=0,
                         opened_at=None, closed_at=None, next_probe_at=None, last_full_pull_at=None,
                         calls_after_id=last_call_id, updated_at=now)


def evaluate(record: BreakerRecord, stats: Stats, *, now: datetime, policy: BreakerPolicy,
             last_call_id: int) -> Transition:
    """A closed breaker opens when the window's failure share exceeds the policy (with enough
    attempts to judge); an open one only records what it saw (probes close it)."""
    seen = replace(record, failure_rate=stats.rate, calls=stats.calls, errors=stats.errors, updated_at=now)
    if record.is_open or stats.calls < policy.min_calls or stats.rate <= policy.failure_rate:
        return Transition(seen)
    reason = (f"{stats.errors} of {stats.calls} calls to {record.api} failed ({stats.rate:.1%} > "
              f"{policy.failure_rate:.0%})")
    return Transition(replace(seen, state="open", opened_at=now, next_probe_at=now + policy.cooldown,
                              last_full_pull_at=None, calls_after_id=last_call_id, reason=reason),
                      opened=True)


def after_probe(record: BreakerRecord, ok: bool, *, now: datetime, policy: BreakerPolicy,
                last_call_id: int, detail: str) -> Transition:
    """Close on a successful probe; otherwise wait another cool-down."""
    if ok:
        return Transition(replace(record, state="closed", closed_at=now, next_probe_at=None,
                                  calls_after_id=last_call_id, updated_at=now,
                                  reason=f"probe succeeded: {detail}"), closed=True)
    return Transition(replace(record, next_probe_at=now + policy.cooldown, updated_at=now,
                              reason=f"probe failed: {detail}"))


def probe_due(record: BreakerRecord, now: datetime) -> bool:
    return record.is_open and record.next_probe_at is not None and now >= record.next_probe_at


def full_pull_due(record: BreakerRecord, now: datetime, policy: BreakerPolicy) -> bool:
    return record.is_open and (record.last_full_pull_at is None
                               or now - record.last_full_pull_at >= policy.full_pull_every)


def guarded_apis(streams: Sequence[Stream] = STREAMS) -> dict[str, Stream]:
    """The increment list API of each stream, and its stream."""
    return {stream.lists["increment"].method: stream for stream in streams}


def probe_api(client: TopClient, stream: Stream, *, shop_id: str, session: str, now: datetime,
              calls: int) -> tuple[bool, str]:
    """``calls`` single-page requests to the stream's increment API over a closed minute, without
    retries (the client given must not retry). True when every one was answered."""
    method = stream.lists["increment"].method
    end = now - timedelta(minutes=10)
    for attempt in range(1, calls + 1):
        try:
            client.call(method, {"fields": f"{stream.record_key},modified", "start_modified": end - timedelta(minutes=1),
                                 "end_modified": end, "type": list(ALL_TRADE_TYPES), "page_no": 1,
                                 "page_size": 1, "use_has_next": True}, session=session, shop_id=shop_id)
        except TopError as exc:
            return False, f"attempt {attempt} of {calls} failed: {exc}"
    return True, f"{calls} of {calls} calls answered"


@dataclass
class TickReport:
    """What one breaker tick saw and did."""

    records: dict[tuple[str, str], BreakerRecord] = field(default_factory=dict)
    opened: list[tuple[str, str]] = field(default_factory=list)
    closed: list[tuple[str, str]] = field(default_factory=list)
    probes: list[tuple[str, str, bool]] = field(default_factory=list)
    full_pulls: list[str] = field(default_factory=list)     # shops due for a full pull

    @property
    def open_shops(self) -> set[str]:
        return {shop for (shop, _), record in self.records.items() if record.is_open}


ProbeFn = Callable[[str, Stream], tuple[bool, str]]  # (shop_id, stream) -> (ok, detail)


class Breakers:
    """Applies the state machine for every shop and guarded API, one tick at a time."""

    def __init__(self, warehouse: Warehouse, *, policy: BreakerPolicy, alerts: Any, probe: ProbeFn,
                 clock: Callable[[], datetime], streams: Sequence[Stream] = STREAMS) -> None:
        self.warehouse, self.policy, self.alerts, self._probe = warehouse, policy, alerts, probe
        self._clock = clock
        self._guarded = guarded_apis(streams)

    def tick(self, shop_ids: Sequence[str]) -> TickReport:
        now = self._clock()
        report = TickReport()
        stored = read_breakers(self.warehouse)
        last_id = self.warehouse.last_call_id()
        stats = self._stats(stored, shop_ids)
        for shop in sorted(shop_ids):
            for api, stream in self._guarded.items():
                record = stored.get((shop, api)) or _closed(shop, api, now, 0)
                step = evaluate(record, stats.get((shop, api), Stats(0, 0)), now=now, policy=self.policy,
                                last_call_id=last_id)
                if step.opened:
                    report.opened.append((shop, api))
                    self._alert_open(step.record)
                record = step.record
                if probe_due(record, now):
                    ok, detail = self._probe(shop, stream)
                    report.probes.append((shop, api, ok))
                    step = after_probe(record, ok, now=now, policy=self.policy,
                                       last_call_id=self.warehouse.last_call_id(), detail=detail)
                    record = step.record
                    if step.closed:
                        report.closed.append((shop, api))
                        self.alerts.resolve(ALERT_KIND, shop_id=shop, key=api)
                        log.info("breaker closed for shop %s %s: %s", shop, api, detail)
                if full_pull_due(record, now, self.policy):
                    if shop not in report.full_pulls:
                        report.full_pulls.append(shop)
                    record = replace(record, last_full_pull_at=now)
                if record != stored.get((shop, api)):
                    save_breaker(self.warehouse, record)
                report.records[(shop, api)] = record
        return report

    def _stats(self, stored: Mapping[tuple[str, str], BreakerRecord],
               shop_ids: Sequence[str]) -> dict[tuple[str, str], Stats]:
        """Failure counts per (shop, api) over the window, each after its breaker's last change."""
        since = host_now() - self.policy.window
        methods = list(self._guarded)
        floor = min((r.calls_after_id for r in stored.values()), default=0)
        counts = self.warehouse.call_counts(since=since, after_id=floor, methods=methods,
                                            failure_kinds=FAILURE_KINDS)
        out = {key: Stats(*value) for key, value in counts.items()}
        # A breaker that changed state more recently than the floor counts only its own later calls.
        for (shop, api), record in stored.items():
            if record.calls_after_id > floor and shop in shop_ids:
                own = self.warehouse.call_counts(since=since, after_id=record.calls_after_id, methods=[api],
                                                 failure_kinds=FAILURE_KINDS, shop_id=shop)
                out[(shop, api)] = Stats(*own.get((shop, api), (0, 0)))
        return out

    def _alert_open(self, record: BreakerRecord) -> None:
        log.warning("breaker opened for shop %s %s: %s", record.shop_id, record.api, record.reason)
        self.alerts.open(ALERT_KIND, shop_id=record.shop_id, key=record.api, message=(
            f"shop {record.shop_id}: {record.reason} in the last {self.policy.window}. Incremental runs for "
            f"the shop are paused and a full pull (trades created in the last {self.policy.full_pull_range}) "
            f"runs every {self.policy.full_pull_every} until a probe after {self.policy.cooldown} succeeds; "
            "the skipped windows are then repaired. Check the platform's status if it lasts."))
