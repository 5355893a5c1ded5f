"""``Warehouse``: the one object the sync code and the Dagster resources talk to.

It owns the engine and picks the upsert strategy for the backend; the SQL lives in upsert.py and
ledger.py. Every write method is one transaction: a batch lands whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from ordersync_pipeline.timeutil import require_aware
from ordersync_pipeline.warehouse import ledger, migrator
from ordersync_pipeline.warehouse.connect import create_warehouse_engine
from ordersync_pipeline.warehouse.ledger import CallStats, CompletedWindow
from ordersync_pipeline.warehouse.privacy import scrub_detail
from ordersync_pipeline.warehouse.tables import MONOTONIC_TABLES, metadata, trade_details, trade_orders, trades
from ordersync_pipeline.warehouse.upsert import UpsertResult, newest_per_key, prepare_rows, strategy_for

# Bound on how many keys go into one IN (...) list (SQLite's variable limit is 32766).
_IN_CHUNK = 5000


class Warehouse:
    """A warehouse database: ``postgresql://``, ``mysql://``/``mariadb://`` or ``sqlite:///path``."""

    def __init__(self, url: str | URL, *, store_receiver_pii: bool = False) -> None:
        """``store_receiver_pii`` keeps receiver name/phone/address in cached fullinfo details; off by
        default because the warehouse is read by many people and the fields are personal data."""
        self.engine: sa.Engine = create_warehouse_engine(url)
        self.store_receiver_pii = store_receiver_pii
        self._strategy = strategy_for(self.engine.dialect.name)

    def __repr__(self) -> str:
        return f"Warehouse({self.engine.url.render_as_string(hide_password=True)!r})"

    @property
    def dialect_name(self) -> str:
        """``postgresql``, ``mysql`` (also for MariaDB) or ``sqlite``."""
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Bring the schema to the newest revision (safe to call from several processes at once)."""
        migrator.upgrade_to_head(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- monotonic upserts -------------------------------------------------------------------

    def upsert_trades(self, rows: Sequence[Mapping[str, Any]]) -> UpsertResult:
        """Insert or update trades by ``tid``; a row never replaces a stored one with newer ``modified``."""
        return self._upsert("trades", rows)

    def upsert_trade_orders(self, rows: Sequence[Mapping[str, Any]]) -> UpsertResult:
        """Insert or update order lines by ``oid``, guarded by the parent trade's ``modified``."""
        return self._upsert("trade_orders", rows)

    def upsert_trade_details(self, rows: Sequence[Mapping[str, Any]]) -> UpsertResult:
        """Cache fullinfo trades by ``tid``, guarded by ``modified``. ``detail`` may be JSON text or a
        dict; receiver personal fields are removed from it before it is stored unless the warehouse
        was opened with ``store_receiver_pii=True``."""
        if self.store_receiver_pii:
            return self._upsert("trade_details", rows)
        scrubbed = [{**row, "detail": scrub_detail(row["detail"])} if row.get("detail") is not None else row
                    for row in rows]
        return self._upsert("trade_details", scrubbed)

    def upsert_trades_with_orders(
        self, trades_rows: Sequence[Mapping[str, Any]], order_rows: Sequence[Mapping[str, Any]]
    ) -> tuple[UpsertResult, UpsertResult]:
        """Both upserts in one transaction: a trade and its lines land together (and commit once)."""
        trades_result, orders_result = self._upsert_many([("trades", trades_rows), ("trade_orders", order_rows)])
        return trades_result, orders_result

    def _upsert(self, table_name: str, rows: Sequence[Mapping[str, Any]]) -> UpsertResult:
        return self._upsert_many([(table_name, rows)])[0]

    def _upsert_many(self, loads: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> list[UpsertResult]:
        # Prepare (and validate) everything before opening the transaction: a bad row fails the
        # whole call without touching the database.
        prepared = []
        for table_name, rows in loads:
            table = metadata.tables[table_name]
            key = MONOTONIC_TABLES[table_name]
            prepared.append((table, key, newest_per_key(prepare_rows(table, key, rows), key), len(rows)))
        if any(unique for _, _, unique, _ in prepared):
            with self.engine.begin() as conn:
                for table, key, unique, _ in prepared:
                    if unique:
                        self._strategy.upsert(conn, table, key, unique)
        return [UpsertResult(table=t.name, sent=sent, unique=len(u)) for t, _, u, sent in prepared]

    # -- ledger, quarantine, windows ---------------------------------------------------------

    def record_calls(self, records: Iterable[Any], run_id: str | None = None) -> int:
        """Append API calls (CallRecord objects or dicts) to ``api_calls``; returns how many."""
        with self.engine.begin() as conn:
            return ledger.insert_calls(conn, records, run_id)

    def add_quarantine(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append rejected records (``payload`` as raw JSON text, bytes or a JSON-able object)."""
        with self.engine.begin() as conn:
            return ledger.insert_quarantine(conn, rows)

    def mark_window_complete(self, *, shop_id: str, stream: str, window_start: datetime,
                             window_end: datetime, partition_key: str | None, pages: int, trades: int,
                             run_id: str | None) -> None:
        """Record that every page of this window has landed. Call only after the rows committed."""
        with self.engine.begin() as conn:
            ledger.record_window(conn, shop_id=shop_id, stream=stream, window_start=window_start,
                                 window_end=window_end, partition_key=partition_key, pages=pages,
                                 trades=trades, run_id=run_id)

    def completed_windows(self, shop_id: str, stream: str) -> list[CompletedWindow]:
        """Completed windows of one shop and stream, ordered by start."""
        with self.engine.connect() as conn:
            return ledger.read_windows(conn, shop_id, stream)

    def call_stats(self, since: datetime, shop_id: str | None = None) -> CallStats:
        """Calls and failed calls since ``since`` (all shops when ``shop_id`` is None)."""
        with self.engine.connect() as conn:
            return ledger.read_call_stats(conn, since, shop_id)

    def failure_rate(self, since: datetime, shop_id: str | None = None) -> float:
        """Share of calls since ``since`` that failed; 0.0 when there were none."""
        return self.call_stats(since, shop_id).failure_rate

    # -- reads --------------------------------------------------------------------------------

    def trade_count(self, shop_id: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(trades)
        if shop_id is not None:
            query = query.where(trades.c.shop_id == shop_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def order_count(self, shop_id: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(trade_orders)
        if shop_id is not None:
            query = query.where(trade_orders.c.shop_id == shop_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def quarantine_count(self, since: datetime | None = None) -> int:
        """Quarantined records (since ``since`` when given)."""
        table = metadata.tables["quarantine"]
        query = sa.select(sa.func.count()).select_from(table)
        if since is not None:
            query = query.where(table.c.quarantined_at >= require_aware(since, "since"))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def get_trade(self, tid: int) -> dict[str, Any] | None:
        """The stored trade row, or None when the tid is unknown."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(trades).where(trades.c.tid == tid)).mappings().first()
        return dict(row) if row is not None else None

    def orders_for(self, tid: int) -> list[dict[str, Any]]:
        """The trade's order lines, ordered by oid."""
        query = sa.select(trade_orders).where(trade_orders.c.tid == tid).order_by(trade_orders.c.oid)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def cached_detail_modified(self, tids: Iterable[int]) -> dict[int, datetime]:
        """``modified`` of the cached fullinfo detail per tid; tids without a cached detail are absent."""
        wanted = list(dict.fromkeys(tids))
        found: dict[int, datetime] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                query = sa.select(trade_details.c.tid, trade_details.c.modified).where(
                    trade_details.c.tid.in_(chunk)
                )
                found.update({int(tid): modified for tid, modified in conn.execute(query)})
        return found

    def trades_modified_since(self, shop_id: str, since: datetime) -> int:
        """How many of the shop's trades changed at or after ``since`` (a cheap freshness probe)."""
        require_aware(since, "since")
        query = sa.select(sa.func.count()).select_from(trades).where(
            trades.c.shop_id == shop_id, trades.c.modified >= since
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
