"""``WarehouseCollector``: a prometheus-client collector that reads the warehouse at scrape time.

Each scrape opens one connection, checks the warehouse answers (``ordersync_up``), then reads each
section in turn; a section that fails (a table a newer migration adds, a query the database refuses) is
reported by ``ordersync_scrape_section_ok{section}`` = 0 and logged when its state changes, and the
others are still exported. A warehouse that is down gives ``ordersync_up 0`` and never an exception.

Counters are kept by the collector: the first scrape takes the newest ``api_calls`` id as its baseline,
and each scrape adds the rows above the watermark (a primary-key range), so they count calls since the
exporter started, the way Prometheus counters reset when a process restarts (``rate()`` and
``increase()`` handle it). A transaction that commits its calls after a later one was already scraped
is not counted (a window of milliseconds while a batch of calls is inserted); the ledger table itself
stays exact, and the last-hour gauges are recomputed on every scrape. Row counts of whole tables, the
one read that scans, are cached for ``table_rows_ttl`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ordersync_pipeline.alerts.core import ALERT_KINDS
from ordersync_pipeline.failures import describe
from ordersync_pipeline.metrics import reads
from ordersync_pipeline.sync.stream import Stream
from ordersync_pipeline.sync.streams import STREAMS
from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.warehouse.tables import MONOTONIC_TABLES, metadata

__all__ = ["WarehouseCollector", "SECTIONS"]

log = logging.getLogger("ordersync.metrics")

SECTIONS = ("calls", "recent_calls", "sync_lag", "tables", "quarantine", "alerts", "breaker",
            "reconciliation")
# Reconciliation days looked at: a month and a bit, so a gap from last month's close still shows.
RECONCILIATION_DAYS = 35
Families = list[Metric]


@dataclass
class _CallTotals:
    """Counters accumulated since the baseline, keyed by label values."""

    last_id: int | None = None
    calls: dict[tuple[str, str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    latency_le: dict[str, list[int]] = field(default_factory=dict)
    latency_count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    latency_sum_ms: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, group: reads.CallGroup) -> None:
        self.calls[(group.method, group.outcome, group.code, group.error_kind)] += group.calls
        buckets = self.latency_le.setdefault(group.method, [0] * len(reads.LATENCY_BUCKETS_MS))
        for i, count in enumerate(group.latency_le):
            buckets[i] += count
        self.latency_count[group.method] += group.latency_count
        self.latency_sum_ms[group.method] += group.latency_sum_ms


class WarehouseCollector(Collector):
    """Metrics of one warehouse, for ``shops`` and every registered stream."""

    def __init__(self, engine: sa.Engine, *, shops: Sequence[str], streams: Sequence[Stream] = STREAMS,
                 window: timedelta = timedelta(hours=1), table_rows_ttl: float = 300.0,
                 clock: Callable[[], datetime] = utc_now, webhook_configured: bool = False,
                 breaker_table: sa.Table | None = metadata.tables.get("breaker_state"),
                 reconciliation_table: sa.Table | None = metadata.tables.get("reconciliation_daily")) -> None:
        """``window``: the span of the ``*_recent`` gauges. ``webhook_configured``: alerts are posted to a
        webhook, so undelivered ones are worth a metric (without one, none is ever delivered).
        ``breaker_table`` / ``reconciliation_table``:
        the tables another part of ordersync adds (None while they do not exist: nothing is exported)."""
        self._engine = engine
        self._shops = sorted(shops)
        self._streams = list(streams)
        self._window = window
        self._ttl = table_rows_ttl
        self._clock = clock
        self._webhook_configured = webhook_configured
        self._breaker_table = breaker_table
        self._reconciliation_table = reconciliation_table
        self._lock = threading.Lock()   # the HTTP server scrapes from several threads
        self._totals = _CallTotals()
        self._row_cache: dict[str, tuple[float, int]] = {}
        self._section_errors: dict[str, str] = {}

    def describe(self) -> list[Metric]:
        return []  # families depend on the data; registering must not query the warehouse

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._scrape()

    # -- one scrape ------------------------------------------------------------------------------

    def _scrape(self) -> Families:
        started = time.perf_counter()
        families: Families = []
        up = GaugeMetricFamily("ordersync_up", "1 when the warehouse answered this scrape, else 0")
        ok = GaugeMetricFamily("ordersync_scrape_section_ok", "1 when a section's reads succeeded",
                               labels=["section"])
        try:
            conn = self._engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            self._note("connect", exc)
            up.add_metric([], 0)
            return [up, self._duration(started)]
        with conn:
            try:
                conn.execute(sa.select(1))
            except sa.exc.SQLAlchemyError as exc:
                self._note("connect", exc)
                up.add_metric([], 0)
                return [up, self._duration(started)]
            self._note("connect", None)
            up.add_metric([], 1)
            now = self._clock()
            for section in SECTIONS:
                reader: Callable[[sa.Connection, datetime], Families] = getattr(self, f"_{section}")
                try:
                    families += reader(conn, now)
                    conn.commit()
                    ok.add_metric([section], 1)
                    self._note(section, None)
                except sa.exc.SQLAlchemyError as exc:
                    conn.rollback()  # PostgreSQL refuses every later statement of a failed transaction
                    ok.add_metric([section], 0)
                    self._note(section, exc)
        return [up, ok, *families, self._duration(started)]

    def _duration(self, started: float) -> Metric:
        family = GaugeMetricFamily("ordersync_scrape_duration_seconds", "Time this scrape spent reading")
        family.add_metric([], time.perf_counter() - started)
        return family

    def _note(self, section: str, exc: BaseException | None) -> None:
        """Log a section's failure when it starts or changes, and its recovery, not every scrape."""
        text = None if exc is None else describe(exc)
        previous = self._section_errors.get(section)
        if text == previous:
            return
        what = "the warehouse" if section == "connect" else f"{section} reads"
        if text is None:
            self._section_errors.pop(section, None)
            log.info("metrics: %s work again", what)
        else:
            self._section_errors[section] = text
            log.warning("metrics: %s failed (%s is exported without them): %s", what,
                        "ordersync_up 0" if section == "connect" else "the rest", text)

    # -- sections --------------------------------------------------------------------------------

    def _calls(self, conn: sa.Connection, now: datetime) -> Families:
        totals = self._totals
        newest = reads.max_call_id(conn)
        if totals.last_id is None or newest < totals.last_id:
            # First scrape, or the ledger was emptied / replaced: counting restarts from here.
            self._totals = totals = _CallTotals(last_id=newest)
        for group in reads.calls_after(conn, totals.last_id or 0):
            totals.add(group)
            totals.last_id = max(totals.last_id or 0, group.max_id)
        calls = CounterMetricFamily(
            "ordersync_api_calls", "TOP API calls (HTTP attempts) recorded since the exporter started",
            labels=["method", "outcome", "code", "error_kind"])
        for labels, count in sorted(totals.calls.items()):
            calls.add_metric(list(labels), count)
        latency = HistogramMetricFamily("ordersync_api_call_latency_seconds",
                                        "Latency of TOP API calls since the exporter started",
                                        labels=["method"])
        for method, le in sorted(totals.latency_le.items()):
            buckets = [(_bound(ms), float(n)) for ms, n in zip(reads.LATENCY_BUCKETS_MS, le, strict=True)]
            buckets.append(("+Inf", float(totals.latency_count[method])))
            latency.add_metric([method], buckets, sum_value=totals.latency_sum_ms[method] / 1000)
        return [calls, latency]

    def _recent_calls(self, conn: sa.Connection, now: datetime) -> Families:
        family = GaugeMetricFamily(
            "ordersync_api_calls_recent", f"TOP API calls in the last {_span(self._window)}, by shop",
            labels=["shop_id", "method", "outcome"])
        for shop, method, outcome, count in reads.recent_calls(conn, now - self._window):
            family.add_metric([shop, method, outcome], count)
        return [family]

    def _sync_lag(self, conn: sa.Connection, now: datetime) -> Families:
        lag = GaugeMetricFamily("ordersync_sync_lag_seconds",
                                "Now minus the newest synced modified time of the stream's main table",
                                labels=["shop_id", "stream"])
        window_lag = GaugeMetricFamily("ordersync_sync_window_lag_seconds",
                                       "Now minus the end of the newest completed increment window",
                                       labels=["shop_id", "stream"])
        for stream in self._streams:
            for shop, newest in reads.newest_records(conn, stream, self._shops).items():
                lag.add_metric([shop, stream.name], (now - newest).total_seconds())
            for shop, end in reads.newest_windows(conn, stream, self._shops).items():
                window_lag.add_metric([shop, stream.name], (now - end).total_seconds())
        return [lag, window_lag]

    def _tables(self, conn: sa.Connection, now: datetime) -> Families:
        family = GaugeMetricFamily("ordersync_table_rows",
                                   f"Rows per synced table (counted at most every {self._ttl:g} s)",
                                   labels=["table"])
        for table in sorted(MONOTONIC_TABLES):
            family.add_metric([table], self._cached_rows(conn, table))
        return [family]

    def _quarantine(self, conn: sa.Connection, now: datetime) -> Families:
        total = GaugeMetricFamily("ordersync_quarantine_records",
                                  "Records in quarantine (refused by validation or by the database)")
        total.add_metric([], self._cached_rows(conn, "quarantine"))
        recent = GaugeMetricFamily("ordersync_quarantine_records_recent",
                                   f"Records quarantined in the last {_span(self._window)}",
                                   labels=["source"])
        for source, count in reads.recent_quarantine(conn, now - self._window):
            recent.add_metric([source], count)
        return [total, recent]

    def _alerts(self, conn: sa.Connection, now: datetime) -> Families:
        counts: dict[str, int] = dict.fromkeys(ALERT_KINDS, 0)
        undelivered = 0
        for kind, delivered, count in reads.open_alerts(conn):
            counts[kind] = counts.get(kind, 0) + count
            undelivered += 0 if delivered else count
        family = GaugeMetricFamily("ordersync_alerts_open", "Open alerts by kind", labels=["kind"])
        for kind, count in sorted(counts.items()):
            family.add_metric([kind], count)
        if not self._webhook_configured:
            return [family]
        pending = GaugeMetricFamily("ordersync_alerts_undelivered",
                                    "Open alerts the webhook has not taken yet")
        pending.add_metric([], undelivered)
        return [family, pending]

    def _breaker(self, conn: sa.Connection, now: datetime) -> Families:
        if self._breaker_table is None:
            return []
        state = GaugeMetricFamily("ordersync_breaker_state", "1 for each breaker's current state",
                                  labels=["shop_id", "api", "state"])
        is_open = GaugeMetricFamily("ordersync_breaker_open", "1 while a shop's breaker for an API is open",
                                    labels=["shop_id", "api"])
        for shop, api, current in reads.breaker_states(conn, self._breaker_table):
            state.add_metric([shop, api, current], 1)
            is_open.add_metric([shop, api], 1 if current == "open" else 0)
        return [state, is_open]

    def _reconciliation(self, conn: sa.Connection, now: datetime) -> Families:
        if self._reconciliation_table is None:
            return []
        days = GaugeMetricFamily("ordersync_reconciliation_days",
                                 f"Days reconciled in the last {RECONCILIATION_DAYS} days, by outcome",
                                 labels=["shop_id", "stream", "status"])
        gaps = GaugeMetricFamily("ordersync_reconciliation_gap_days",
                                 "Reconciled days whose platform and warehouse counts still differ",
                                 labels=["shop_id", "stream"])
        checked = GaugeMetricFamily("ordersync_reconciliation_last_check_timestamp_seconds",
                                    "When a shop's stream was last reconciled (Unix time)",
                                    labels=["shop_id", "stream"])
        gap_days: dict[tuple[str, str], int] = defaultdict(int)
        last: dict[tuple[str, str], datetime] = {}
        since = now - timedelta(days=RECONCILIATION_DAYS)
        for row in reads.reconciliation(conn, self._reconciliation_table, since):
            days.add_metric([row.shop_id, row.stream, row.status], row.days)
            gap_days[(row.shop_id, row.stream)] += row.gap_days
            if row.last_checked is not None:
                key = (row.shop_id, row.stream)
                last[key] = max(last.get(key, row.last_checked), row.last_checked)
        for key, count in sorted(gap_days.items()):
            gaps.add_metric(list(key), count)
        for key, at in sorted(last.items()):
            checked.add_metric(list(key), at.timestamp())
        return [days, gaps, checked]

    def _cached_rows(self, conn: sa.Connection, table: str) -> int:
        cached = self._row_cache.get(table)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        count = reads.table_rows(conn, table)
        self._row_cache[table] = (time.monotonic(), count)
        return count


def _bound(ms: int) -> str:
    return repr(ms / 1000)  # "1.0", "0.05": how prometheus-client's own histograms write these bounds


def _span(window: timedelta) -> str:
    minutes = int(window.total_seconds() // 60)
    return f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"
