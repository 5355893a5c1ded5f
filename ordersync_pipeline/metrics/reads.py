"""The warehouse reads behind the metrics: each one bounded (an index range, a primary-key lookup per shop,
or a small table) so a scrape stays cheap however large the warehouse grows.

Every function takes an open connection and returns plain rows; ``collector.py`` turns them into metric
families.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ordersync_pipeline.sync.stream import Stream
from ordersync_pipeline.warehouse.tables import alerts, api_calls, metadata, quarantine, sync_windows

# Latency buckets for TOP calls, in milliseconds: a loopback simulator answers in ~50 ms, the real
# gateway in 100-500 ms, and the client gives up at timeout_seconds (30 s by default).
LATENCY_BUCKETS_MS = (50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000)
# Shops per statement when reading per-shop figures (one UNION ALL leg each; SQLite allows 500).
_SHOPS_PER_STATEMENT = 100


@dataclass(frozen=True)
class CallGroup:
    """New api_calls rows (id above a watermark) of one method / outcome / code / error kind."""

    method: str
    outcome: str
    code: str
    error_kind: str
    calls: int
    max_id: int
    latency_count: int          # rows with a latency
    latency_sum_ms: float
    latency_le: tuple[int, ...]  # rows at or below each LATENCY_BUCKETS_MS bound


def max_call_id(conn: sa.Connection) -> int:
    """The newest api_calls id (0 when empty): a primary-key lookup."""
    return int(conn.execute(sa.select(sa.func.max(api_calls.c.id))).scalar() or 0)


def calls_after(conn: sa.Connection, last_id: int) -> list[CallGroup]:
    """Calls recorded after ``last_id``, grouped, with latency bucket counts (a primary-key range)."""
    c = api_calls.c
    buckets = [sa.func.sum(sa.case((c.latency_ms <= bound, 1), else_=0)) for bound in LATENCY_BUCKETS_MS]
    query = (sa.select(c.method, c.outcome, c.code, c.error_kind, sa.func.count(), sa.func.max(c.id),
                       sa.func.count(c.latency_ms), sa.func.sum(c.latency_ms), *buckets)
             .where(c.id > last_id).group_by(c.method, c.outcome, c.code, c.error_kind))
    return [CallGroup(method=row[0], outcome=row[1], code=row[2] or "", error_kind=row[3] or "",
                      calls=int(row[4]), max_id=int(row[5]), latency_count=int(row[6]),
                      latency_sum_ms=float(row[7] or 0), latency_le=tuple(int(v or 0) for v in row[8:]))
            for row in conn.execute(query)]


def recent_calls(conn: sa.Connection, since: datetime) -> list[tuple[str, str, str, int]]:
    """(shop_id, method, outcome, calls) since ``since`` (the called_at index)."""
    c = api_calls.c
    query = (sa.select(c.shop_id, c.method, c.outcome, sa.func.count()).where(c.called_at >= since)
             .group_by(c.shop_id, c.method, c.outcome))
    return [(row[0] or "", row[1], row[2], int(row[3])) for row in conn.execute(query)]


def newest_records(conn: sa.Connection, stream: Stream, shops: Sequence[str]) -> dict[str, datetime]:
    """Per shop, the newest ``time_field`` (``modified``) in the stream's main table; shops without
    rows are absent. One max() per shop over the (shop_id, modified) index."""
    table = metadata.tables[stream.tables[0]]
    column = table.c[stream.time_field]
    return _per_shop(conn, shops, lambda shop: sa.select(sa.func.max(column)).where(table.c.shop_id == shop))


def newest_windows(conn: sa.Connection, stream: Stream, shops: Sequence[str]) -> dict[str, datetime]:
    """Per shop, the end of the newest completed increment window of ``stream`` (the primary key's
    prefix (shop_id, stream, kind, window_start), read backwards one row)."""
    w = sync_windows.c
    return _per_shop(conn, shops, lambda shop: (
        sa.select(w.window_end).where(w.shop_id == shop, w.stream == stream.name, w.kind == "increment")
        .order_by(w.window_start.desc()).limit(1)))


def _per_shop(conn: sa.Connection, shops: Sequence[str], one: Any) -> dict[str, datetime]:
    found: dict[str, datetime] = {}
    for chunk in _chunks(list(shops), _SHOPS_PER_STATEMENT):
        legs = [sa.select(sa.literal(shop, sa.String).label("shop"), one(shop).scalar_subquery().label("at"))
                for shop in chunk]
        statement = legs[0] if len(legs) == 1 else sa.union_all(*legs)
        for shop, at in conn.execute(statement):
            if at is not None:
                found[shop] = at
    return found


def table_rows(conn: sa.Connection, table: str) -> int:
    """Exact row count (the caller caches it: on a large table this is the one read that scans)."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(metadata.tables[table])).scalar_one())


def recent_quarantine(conn: sa.Connection, since: datetime) -> list[tuple[str, int]]:
    """(source, records) quarantined since ``since`` (the quarantined_at index)."""
    q = quarantine.c
    query = sa.select(q.source, sa.func.count()).where(q.quarantined_at >= since).group_by(q.source)
    return [(row[0] or "", int(row[1])) for row in conn.execute(query)]


def open_alerts(conn: sa.Connection) -> list[tuple[str, bool, int]]:
    """(kind, delivered, count) of open alerts (few rows: one per open condition)."""
    a = alerts.c
    query = (sa.select(a.kind, a.delivered, sa.func.count()).where(a.open_key.is_not(None))
             .group_by(a.kind, a.delivered))
    return [(row[0], bool(row[1]), int(row[2])) for row in conn.execute(query)]


def breaker_states(conn: sa.Connection, table: sa.Table) -> list[tuple[str, str, str]]:
    """(shop_id, api, state) of every breaker (one row per shop and API)."""
    query = sa.select(table.c.shop_id, table.c.api, table.c.state)
    return [(row[0] or "", row[1] or "", str(row[2] or "").lower()) for row in conn.execute(query)]


@dataclass(frozen=True)
class ReconciliationFigures:
    shop_id: str
    stream: str
    status: str
    days: int
    gap_days: int                # days whose platform and warehouse counts still differ
    last_checked: datetime | None


def reconciliation(conn: sa.Connection, table: sa.Table, since: datetime) -> list[ReconciliationFigures]:
    """Days checked since ``since`` per shop, stream and status (one row per shop, stream and day)."""
    r = table.c
    keys = [r.shop_id, r.stream] if "stream" in r else [r.shop_id]   # no stream column: trades only
    differs = sa.case((r.platform_count != r.warehouse_count, 1), else_=0)
    query = (sa.select(*keys, r.status, sa.func.count(), sa.func.sum(differs), sa.func.max(r.checked_at))
             .where(r.checked_at >= since).group_by(*keys, r.status))
    figures = []
    for row in conn.execute(query):
        shop, stream, rest = (row[0], row[1], row[2:]) if len(keys) == 2 else (row[0], "trades", row[1:])
        figures.append(ReconciliationFigures(shop_id=shop, stream=stream, status=str(rest[0] or ""),
                                             days=int(rest[1]), gap_days=int(rest[2] or 0),
                                             last_checked=rest[3]))
    return figures


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
