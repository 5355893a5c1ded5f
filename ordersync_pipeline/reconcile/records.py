"""Rows of ``reconciliation_daily`` and ``breaker_state``: written and read here, nowhere else.

Both tables hold one small row per key, rewritten as the state changes (delete + insert in one
transaction: portable across the three backends, and the rows are tiny).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from ordersync_pipeline.timeutil import require_aware
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import (
    BREAKER_STATES,
    RECONCILIATION_STATUSES,
    breaker_state,
    reconciliation_daily,
)

__all__ = ["DayResult", "BreakerRecord", "save_day", "save_days", "read_days", "passed_days", "save_breaker",
           "read_breakers", "open_breaker_shops"]


@dataclass(frozen=True)
class DayResult:
    """One stream's reconciliation of one shop's Asia/Shanghai day (a ``reconciliation_daily`` row)."""

    shop_id: str
    stream: str
    day: date
    platform_count: int
    warehouse_count: int
    missing_count: int
    stale_count: int
    extra_count: int
    refetched_count: int
    pending_count: int
    status: str                       # ok | repaired | gap
    checked_at: datetime
    run_id: str | None = None

    def __post_init__(self) -> None:
        if self.status not in RECONCILIATION_STATUSES:
            raise ValueError(f"status must be one of {RECONCILIATION_STATUSES}, got {self.status!r}")
        require_aware(self.checked_at, "checked_at")

    @property
    def gap(self) -> bool:
        return self.status == "gap"


@dataclass(frozen=True)
class BreakerRecord:
    """The breaker of one shop's API (a ``breaker_state`` row)."""

    shop_id: str
    api: str
    state: str                        # closed | open
    failure_rate: float
    calls: int
    errors: int
    opened_at: datetime | None
    closed_at: datetime | None
    next_probe_at: datetime | None
    last_full_pull_at: datetime | None
    calls_after_id: int
    updated_at: datetime
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.state not in BREAKER_STATES:
            raise ValueError(f"state must be one of {BREAKER_STATES}, got {self.state!r}")

    @property
    def is_open(self) -> bool:
        return self.state == "open"


def save_day(warehouse: Warehouse, result: DayResult) -> None:
    """Record (or replace) the reconciliation of ``result``'s shop, stream and day."""
    save_days(warehouse, [result])


def save_days(warehouse: Warehouse, results: Sequence[DayResult]) -> None:
    """``save_day`` for each of ``results``, in one transaction (a shop-day's streams are saved together)."""
    latest = list({(r.shop_id, r.stream, r.day): r for r in results}.values())  # the last of a key wins
    if not latest:
        return
    keys = [(reconciliation_daily.c.shop_id == result.shop_id) & (reconciliation_daily.c.stream == result.stream)
            & (reconciliation_daily.c.day == result.day) for result in latest]
    # One delete and one insert for all of them: a reconciliation saves every shop-day this way, and
    # each statement is a round trip.
    with warehouse.engine.begin() as conn:
        conn.execute(reconciliation_daily.delete().where(sa.or_(*keys)))
        conn.execute(reconciliation_daily.insert(), [asdict(result) for result in latest])


def read_days(warehouse: Warehouse, *, shop_ids: Sequence[str] | None = None, days: Iterable[date] | None = None,
              run_ids: Sequence[str] | None = None) -> list[DayResult]:
    """Stored reconciliations (of these shops, days or runs), ordered by day, shop and stream."""
    query = sa.select(reconciliation_daily)
    if shop_ids is not None:
        query = query.where(reconciliation_daily.c.shop_id.in_(list(shop_ids)))
    if days is not None:
        query = query.where(reconciliation_daily.c.day.in_(list(days)))
    if run_ids is not None:
        query = query.where(reconciliation_daily.c.run_id.in_(list(run_ids)))
    query = query.order_by(reconciliation_daily.c.day, reconciliation_daily.c.shop_id,
                           reconciliation_daily.c.stream)
    with warehouse.engine.connect() as conn:
        return [DayResult(**row) for row in conn.execute(query).mappings()]


def passed_days(warehouse: Warehouse, *, stream: str, since: date) -> set[tuple[str, date]]:
    """(shop, day) pairs of ``stream`` from ``since`` on whose last reconciliation left no gap."""
    query = sa.select(reconciliation_daily.c.shop_id, reconciliation_daily.c.day).where(
        reconciliation_daily.c.stream == stream, reconciliation_daily.c.day >= since,
        reconciliation_daily.c.status != "gap")
    with warehouse.engine.connect() as conn:
        return {(str(shop), day) for shop, day in conn.execute(query)}


def save_breaker(warehouse: Warehouse, record: BreakerRecord) -> None:
    key = (breaker_state.c.shop_id == record.shop_id) & (breaker_state.c.api == record.api)
    with warehouse.engine.begin() as conn:
        conn.execute(breaker_state.delete().where(key))
        conn.execute(breaker_state.insert().values(**asdict(record)))


def read_breakers(warehouse: Warehouse) -> dict[tuple[str, str], BreakerRecord]:
    """Every breaker, by (shop_id, api)."""
    names = [f.name for f in fields(BreakerRecord)]
    with warehouse.engine.connect() as conn:
        rows: list[dict[str, Any]] = [dict(row) for row in conn.execute(sa.select(breaker_state)).mappings()]
    return {(row["shop_id"], row["api"]): BreakerRecord(**{n: row[n] for n in names}) for row in rows}


def open_breaker_shops(warehouse: Warehouse) -> set[str]:
    """Shops with at least one open breaker: the incremental schedule and the gap sensor skip them."""
    query = sa.select(breaker_state.c.shop_id).where(breaker_state.c.state == "open").distinct()
    with warehouse.engine.connect() as conn:
        return {str(shop) for (shop,) in conn.execute(query)}
