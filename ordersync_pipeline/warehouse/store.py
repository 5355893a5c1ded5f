"""``Warehouse``: the one object the sync code and the Dagster resources talk to.

It owns the engine and picks the upsert strategy for the backend; the SQL lives in upsert.py and
ledger.py. Every write method is one transaction: a batch lands whole or not at all, with one
exception for the monotonic upserts: when the database refuses a batch's data (a value it cannot
store, a constraint), the batch is split in halves, by parent key so a trade and its lines stay
together, and each half is retried in its own transaction, down to single trades; those the database
still refuses go to ``quarantine`` with its message as the reason, and everything else lands.
Committing halves separately is safe because the upsert is monotonic: a load interrupted midway is
simply re-run (its window is recorded complete only afterwards).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from ordersync_pipeline.timeutil import require_aware
from ordersync_pipeline.warehouse import ledger, migrator
from ordersync_pipeline.warehouse.connect import create_warehouse_engine
from ordersync_pipeline.warehouse.days import Span, day_number, runs
from ordersync_pipeline.warehouse.ledger import CallStats, CompletedWindow
from ordersync_pipeline.warehouse.privacy import scrub_detail
from ordersync_pipeline.warehouse.refund_status import apply_refunds, lock_refund_state
from ordersync_pipeline.warehouse.tables import (
    MONOTONIC_TABLES,
    Monotonic,
    api_calls,
    metadata,
    sync_windows,
    trade_details,
    trade_orders,
    trades,
)
from ordersync_pipeline.warehouse.types import escape_unstorable
from ordersync_pipeline.warehouse.upsert import (
    Row,
    UpsertResult,
    delete_superseded_children,
    newest_per_key,
    prepare_rows,
    strategy_for,
)

# Bound on how many keys go into one IN (...) list (SQLite's variable limit is 32766).
_IN_CHUNK = 5000
# Tables whose rows (by ``oid``) bring trade_orders.refund_status up to date after they are written.
_REFUND_STATE_TABLES = ("trade_orders", "refunds")


@dataclass(frozen=True)
class _Load:
    """One table's share of a monotonic upsert: prepared, de-duplicated rows in key order."""

    table: sa.Table
    spec: Monotonic
    rows: list[Row]

    def only(self, groups: set[Any]) -> _Load:
        return replace(self, rows=[row for row in self.rows if row[self.spec.group] in groups])


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
    # Rows are dicts keyed by column name; each needs its key and ``modified``. ``fetched_at`` (when
    # the platform returned this version) is stamped with the load time when left out, and
    # ``synced_at`` too. A row never replaces a stored one with a newer (modified, fetched_at).

    def upsert(self, table: str, rows: Sequence[Mapping[str, Any]], *,
               run_id: str | None = None) -> UpsertResult:
        """Insert or update rows of any table in ``tables.MONOTONIC_TABLES`` by its key."""
        return self._upsert_many([(table, rows)], run_id=run_id)[0]

    def upsert_many(self, loads: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], *,
                    run_id: str | None = None,
                    complete_window: Mapping[str, Any] | None = None) -> list[UpsertResult]:
        """Several monotonic tables in one transaction (a parent and its children land together);
        rows the database refuses are split out to quarantine as described above.

        ``complete_window``: ``mark_window_complete``'s arguments, for a window these are the last rows
        of. It is recorded in the rows' own transaction (one commit instead of two), or, when some rows
        were split out, in one transaction with their quarantine rows after every half committed:
        either way never before the rows are in."""
        return self._upsert_many(loads, run_id=run_id, complete_window=complete_window)

    def upsert_trades(self, rows: Sequence[Mapping[str, Any]]) -> UpsertResult:
        """Insert or update trades by ``tid``."""
        return self.upsert("trades", rows)

    def upsert_trade_orders(self, rows: Sequence[Mapping[str, Any]]) -> UpsertResult:
        """Insert or update order lines by ``oid``, versioned like their trade (they carry its
        ``modified`` and ``fetched_at``)."""
        return self.upsert("trade_orders", rows)

    def upsert_trade_details(self, rows: Sequence[Mapping[str, Any]]) -> UpsertResult:
        """Cache fullinfo trades by ``tid``. ``detail`` may be JSON text or a dict; receiver personal
        fields are removed from it before it is stored unless the warehouse was opened with
        ``store_receiver_pii=True``."""
        if self.store_receiver_pii:
            return self.upsert("trade_details", rows)
        scrubbed = [{**row, "detail": scrub_detail(row["detail"])} if row.get("detail") is not None else row
                    for row in rows]
        return self.upsert("trade_details", scrubbed)

    def upsert_trades_with_orders(
        self, trades_rows: Sequence[Mapping[str, Any]], order_rows: Sequence[Mapping[str, Any]], *,
        run_id: str | None = None,
    ) -> tuple[UpsertResult, UpsertResult]:
        """Both upserts in one transaction: a trade and its lines land together (and commit once).

        When a version of a trade that brought order lines is stored, the trade's lines are exactly
        that version's: lines of older versions are deleted. ``run_id`` (None outside a run) marks
        quarantine rows written for trades the database refused (see the module docstring).
        """
        trades_result, orders_result = self._upsert_many(
            [("trades", trades_rows), ("trade_orders", order_rows)], run_id=run_id)
        return trades_result, orders_result

    def _upsert_many(self, loads: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], *,
                     run_id: str | None, complete_window: Mapping[str, Any] | None = None) -> list[UpsertResult]:
        # Prepare (and validate) everything before opening the transaction: a malformed row is a
        # programming error and fails the whole call without touching the database.
        prepared = []
        for table_name, rows in loads:
            table = metadata.tables[table_name]
            spec = MONOTONIC_TABLES[table_name]
            unique = newest_per_key(prepare_rows(table, spec.key, rows), spec.key)
            prepared.append(_Load(table, spec, unique))
        refused_rows, recorded = (self._write_or_split(prepared, complete_window)
                                  if any(load.rows for load in prepared) else ([], False))
        refused = dict(refused_rows)
        pending_window = complete_window if not recorded else None
        if refused or pending_window is not None:
            with self.engine.begin() as conn:
                if refused:
                    ledger.insert_quarantine(conn, [{**row, "run_id": run_id} for row in refused.values()])
                if pending_window is not None:
                    ledger.record_window(conn, **pending_window)
        if not refused:
            return [UpsertResult(table=load.table.name, sent=len(rows), unique=len(load.rows))
                    for load, (_, rows) in zip(prepared, loads, strict=True)]
        return [
            UpsertResult(table=load.table.name, sent=len(rows), unique=len(load.rows),
                         quarantined=sum(row[load.spec.group] in refused for row in load.rows))
            for load, (_, rows) in zip(prepared, loads, strict=True)
        ]

    def _write(self, loads: Sequence[_Load], complete_window: Mapping[str, Any] | None = None) -> None:
        """One transaction: every load's upsert, then the lines superseded by the stored versions
        (then ``complete_window`` recorded, when given)."""
        with self.engine.connect() as conn:
            self._strategy.prepare(conn, [load.table for load in loads if load.rows])
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    lock_refund_state(conn, {load.table.name for load in loads if load.rows})
                self._write_in(conn, loads)
                if complete_window is not None:
                    ledger.record_window(conn, **complete_window)

    def _write_in(self, conn: sa.Connection, loads: Sequence[_Load]) -> None:
        for load in loads:
            if load.rows:
                self._strategy.upsert(conn, load.table, load.spec.key, load.rows)
        for load in loads:
            if load.rows and load.spec.parent is not None:
                parent_name, column = load.spec.parent
                delete_superseded_children(conn, load.table, load.spec.key, metadata.tables[parent_name],
                                           column, sorted({row[column] for row in load.rows}))
        # Order lines and refunds both carry a line's refund state: the newer one wins, in this same
        # transaction, whichever arrived last (refund_status.py).
        lines = {row["oid"] for load in loads if load.table.name in _REFUND_STATE_TABLES for row in load.rows}
        if lines:
            apply_refunds(conn, lines)

    def _write_or_split(self, loads: Sequence[_Load], complete_window: Mapping[str, Any] | None = None,
                        ) -> tuple[list[tuple[Any, dict[str, Any]]], bool]:
        """Write ``loads``; if the database refuses their data, bisect by group and retry the halves.
        Returns (group, quarantine row) for each single group it still refused, and whether
        ``complete_window`` was recorded: only ever with the whole of ``loads``, never with a half."""
        try:
            self._write(loads, complete_window)
            return [], complete_window is not None
        except Exception as exc:
            if not self._refuses_data(exc):
                raise
            refusal = exc
        groups = sorted({row[load.spec.group] for load in loads for row in load.rows})
        if len(groups) == 1:
            return [(groups[0], self._refused_row(loads, groups[0], refusal))], False
        halves = [set(groups[: len(groups) // 2]), set(groups[len(groups) // 2 :])]
        return [refused for half in halves
                for refused in self._write_or_split([load.only(half) for load in loads])[0]], False

    def _refuses_data(self, exc: BaseException) -> bool:
        """True when the database (or its driver) refused the values, not when it could not be
        reached: encoding errors, DataError (bad value, NUL, overflow) and IntegrityError."""
        cause: BaseException | None = exc
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            return False
        if isinstance(exc, sa.exc.StatementError):  # SQLAlchemy's wrapper: judge the driver's error
            cause = exc.orig
        dbapi = self.engine.dialect.loaded_dbapi
        return isinstance(cause, (UnicodeError, dbapi.DataError, dbapi.IntegrityError))

    def _refused_row(self, loads: Sequence[_Load], group: Any, exc: BaseException) -> dict[str, Any]:
        rows = {load.table.name: [row for row in load.rows if row[load.spec.group] == group]
                for load in loads}
        first = next(row for table_rows in rows.values() for row in table_rows)
        cause = exc.orig if isinstance(exc, sa.exc.StatementError) and exc.orig is not None else exc
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        # psycopg names the column COPY failed on in the diagnostics, not in the message.
        context = getattr(getattr(cause, "diag", None), "context", None)
        if context:
            message += f" ({context.strip().splitlines()[0]})"
        group_name = loads[0].spec.group
        tables = ", ".join(name for name, table_rows in rows.items() if table_rows)
        return {
            "source": first.get("source") or loads[0].table.name, "shop_id": first.get("shop_id"),
            "record_key": str(group),
            "reason": (f"{group_name}={group}: the {self.dialect_name} warehouse refused its rows "
                       f"({tables}): {type(cause).__name__}: {message}"),
            "payload": escape_unstorable(json.dumps({name: table_rows for name, table_rows in rows.items()
                                                     if table_rows}, ensure_ascii=False, default=str)),
        }

    # -- ledger, quarantine, windows ---------------------------------------------------------

    def record_calls(self, records: Iterable[Any], run_id: str | None = None) -> int:
        """Append API calls (CallRecord objects or dicts) to ``api_calls``; returns how many."""
        with self.engine.begin() as conn:
            return ledger.insert_calls(conn, records, run_id)

    def add_quarantine(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append rejected records (``payload`` as raw JSON text, bytes or a JSON-able object)."""
        with self.engine.begin() as conn:
            return ledger.insert_quarantine(conn, rows)

    def mark_window_complete(self, *, shop_id: str, stream: str, kind: str, window_start: datetime,
                             window_end: datetime, partition_key: str | None, pages: int, records: int,
                             run_id: str | None) -> None:
        """Record that every page of this window has landed. Call only after the rows committed."""
        with self.engine.begin() as conn:
            ledger.record_window(conn, shop_id=shop_id, stream=stream, kind=kind, window_start=window_start,
                                 window_end=window_end, partition_key=partition_key, pages=pages,
                                 records=records, run_id=run_id)

    def completed_windows(self, shop_id: str, stream: str, kind: str) -> list[CompletedWindow]:
        """Completed windows of one shop, stream and path, ordered by start."""
        with self.engine.connect() as conn:
            return ledger.read_windows(conn, shop_id, stream, kind)

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

    # -- reads for reconciliation, gap repair and the breaker -----------------------------------

    def versions_between(self, table: str, *, shop_id: str, column: str, start: datetime,
                         end: datetime) -> dict[int, datetime]:
        """``{key: modified}`` of the shop's rows of a monotonic ``table`` whose ``column`` (a time
        column: ``created``, ``modified``) lies in ``[start, end)``."""
        t = metadata.tables[table]
        key = t.c[MONOTONIC_TABLES[table].key]
        query = sa.select(key, t.c.modified).where(_between(t, shop_id=shop_id, column=column, start=start, end=end))
        with self.engine.connect() as conn:
            return {int(k): modified for k, modified in conn.execute(query)}

    def analyze(self, tables: Sequence[str]) -> None:
        """Refresh the query planner's statistics of ``tables`` (after a bulk load)."""
        names = [metadata.tables[name].name for name in tables]  # known tables only: no SQL from input
        with self.engine.begin() as conn:
            if self.dialect_name == "postgresql":
                conn.exec_driver_sql(f"ANALYZE {', '.join(names)}")
            elif self.dialect_name in ("mysql", "mariadb"):
                conn.exec_driver_sql(f"ANALYZE TABLE {', '.join(names)}").fetchall()
            else:
                for name in names:
                    conn.exec_driver_sql(f"ANALYZE {name}")

    def count_between(self, table: str, *, shop_id: str, column: str, start: datetime, end: datetime) -> int:
        """How many rows ``versions_between`` would return, counted in the database."""
        t = metadata.tables[table]
        query = sa.select(sa.func.count()).select_from(t).where(
            _between(t, shop_id=shop_id, column=column, start=start, end=end))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def counts_between(self, table: str, *, shop_id: str, column: str, spans: Sequence[Span]) -> list[int]:
        """``count_between`` of each of ``spans`` (in their order), one query per run of adjacent spans: a
        reconciliation's days are counted together instead of one round trip each."""
        t = metadata.tables[table]
        counts = [0] * len(spans)
        with self.engine.connect() as conn:
            for run in runs(spans):
                start, end = spans[run[0]][0], spans[run[-1]][1]
                numbered = (sa.select(day_number(t.c[column], [spans[i][0] for i in run]).label("day_no"))
                            .where(_between(t, shop_id=shop_id, column=column, start=start, end=end))
                            .subquery("numbered"))
                query = sa.select(numbered.c.day_no, sa.func.count()).group_by(numbered.c.day_no)
                for day_no, count in conn.execute(query):
                    counts[run[int(day_no)]] = int(count)
        return counts

    def versions_of(self, table: str, keys: Iterable[int]) -> dict[int, datetime]:
        """``{key: modified}`` of the stored rows among ``keys`` (absent keys are left out)."""
        t = metadata.tables[table]
        key = t.c[MONOTONIC_TABLES[table].key]
        wanted = list(dict.fromkeys(keys))
        found: dict[int, datetime] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), _IN_CHUNK):
                query = sa.select(key, t.c.modified).where(key.in_(wanted[start : start + _IN_CHUNK]))
                found.update({int(k): modified for k, modified in conn.execute(query)})
        return found

    def windows_ending_since(self, stream: str, kind: str, since: datetime,
                             shop_ids: Sequence[str]) -> list[CompletedWindow]:
        """Completed windows of ``stream`` on ``kind`` ending at or after ``since``, for these shops."""
        query = (sa.select(sync_windows)
                 .where(sync_windows.c.stream == stream, sync_windows.c.kind == kind,
                        sync_windows.c.window_end >= require_aware(since, "since"),
                        sync_windows.c.shop_id.in_(list(shop_ids)))
                 .order_by(sync_windows.c.shop_id, sync_windows.c.window_start))
        with self.engine.connect() as conn:
            return [CompletedWindow(**row) for row in conn.execute(query).mappings()]

    def call_counts(self, *, since: datetime, after_id: int, methods: Sequence[str],
                    failure_kinds: Sequence[str],
                    shop_id: str | None = None) -> dict[tuple[str, str], tuple[int, int]]:
        """``{(shop_id, method): (attempts, failures)}`` of ``api_calls`` with ``called_at >= since`` and
        ``id > after_id`` (of one shop, or every shop when None), where a failure is an error whose
        ``error_kind`` is one of ``failure_kinds``."""
        failed = sa.func.sum(sa.case((sa.and_(api_calls.c.outcome == "error",
                                              api_calls.c.error_kind.in_(list(failure_kinds))), 1), else_=0))
        query = (sa.select(api_calls.c.shop_id, api_calls.c.method, sa.func.count(), failed)
                 .where(api_calls.c.called_at >= require_aware(since, "since"), api_calls.c.id > after_id,
                        api_calls.c.method.in_(list(methods)), api_calls.c.shop_id.is_not(None))
                 .group_by(api_calls.c.shop_id, api_calls.c.method))
        if shop_id is not None:
            query = query.where(api_calls.c.shop_id == shop_id)
        with self.engine.connect() as conn:
            return {(str(shop), str(method)): (int(calls), int(errors or 0))
                    for shop, method, calls, errors in conn.execute(query)}

    def last_call_id(self) -> int:
        """The newest ``api_calls.id`` (0 when the ledger is empty)."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(api_calls.c.id))).scalar_one() or 0)


def _between(t: sa.Table, *, shop_id: str, column: str, start: datetime, end: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(t.c.shop_id == shop_id, t.c[column] >= require_aware(start, "start"),
                   t.c[column] < require_aware(end, "end"))
