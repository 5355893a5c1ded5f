"""Batched, set-based, monotonic upserts: a row with an older ``modified`` never overwrites a newer one.

One strategy per backend, all with the same rule (``incoming.modified >= stored.modified`` wins, so
re-running a load is idempotent and equal versions overwrite):

* PostgreSQL: binary ``COPY`` into a per-connection TEMP staging table (rows deleted at commit), then
  one ``INSERT ... SELECT ... ON CONFLICT (pk) DO UPDATE ... WHERE excluded.modified >= t.modified``.
* MariaDB/MySQL: multi-row ``INSERT ... ON DUPLICATE KEY UPDATE col = IF(new.modified >= modified,
  new.col, col)`` with ``modified`` assigned last, because MySQL applies the assignments left to right
  and every earlier guard must still see the stored ``modified``.
* SQLite: ``INSERT ... ON CONFLICT (pk) DO UPDATE ... WHERE excluded.modified >= t.modified`` via
  executemany.

Duplicates inside a batch are collapsed first (newest ``modified`` per key, the later row on a tie):
PostgreSQL refuses to touch one row twice in a statement, and doing it here keeps one rule for all.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.warehouse.types import Money, UTCDateTime

Row = dict[str, Any]

# Columns stamped with the load time when the caller leaves them out.
_STAMP_COLUMNS = ("synced_at", "fetched_at")
MYSQL_CHUNK = 1000


@dataclass(frozen=True)
class UpsertResult:
    """What a load sent: ``sent`` rows given, ``unique`` keys left after collapsing duplicates.

    How many rows actually changed is not reported: the drivers disagree on what "affected" means
    for an upsert, and an unchanged row (older version) is a success, not a failure.
    """

    table: str
    sent: int
    unique: int


def prepare_rows(table: sa.Table, key: str, rows: Iterable[Mapping[str, Any]]) -> list[Row]:
    """Complete each row to the table's full column set (missing optional keys -> NULL), refusing
    unknown columns, rows without a key or ``modified``, and naive datetimes."""
    columns = [c.name for c in table.columns]
    known = set(columns)
    time_columns = [c.name for c in table.columns if isinstance(c.type, UTCDateTime)]
    stamps = [c for c in _STAMP_COLUMNS if c in known]
    stamp_time = utc_now()
    prepared: list[Row] = []
    for row in rows:
        if not known.issuperset(row):
            raise ValueError(f"{table.name}: unknown column(s) {sorted(row.keys() - known)}")
        if row.get(key) is None or row.get("modified") is None:
            raise ValueError(f"{table.name}: every row needs {key!r} and 'modified', got {dict(row)!r}")
        # fromkeys + update runs in C: this loop is on the hot path of every load.
        full = dict.fromkeys(columns)
        full.update(row)
        for name in stamps:
            if full[name] is None:
                full[name] = stamp_time
        for name in time_columns:
            value = full[name]
            if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
                raise ValueError(f"{table.name}.{name} must be a timezone-aware datetime, got {value!r}")
        prepared.append(full)
    return prepared


def newest_per_key(rows: Sequence[Row], key: str) -> list[Row]:
    """Keep one row per key: the newest ``modified``; on a tie the one that came later.

    Rows come back sorted by key so every writer locks rows in the same order: concurrent loaders
    (overlapping windows hold the same trades) then wait on each other instead of deadlocking.
    """
    newest: dict[Any, Row] = {}
    for row in rows:
        held = newest.get(row[key])
        if held is None or row["modified"] >= held["modified"]:
            newest[row[key]] = row
    return [newest[k] for k in sorted(newest)]


class UpsertStrategy(Protocol):
    def upsert(self, conn: Connection, table: sa.Table, key: str, rows: list[Row]) -> None:
        """Write already prepared, de-duplicated rows inside the caller's transaction."""


def _updatable(table: sa.Table, key: str) -> list[str]:
    return [c.name for c in table.columns if c.name not in (key, "modified")]


class SqliteUpsert:
    def upsert(self, conn: Connection, table: sa.Table, key: str, rows: list[Row]) -> None:
        stmt = sqlite_dialect.insert(table)
        set_ = {name: stmt.excluded[name] for name in _updatable(table, key) + ["modified"]}
        stmt = stmt.on_conflict_do_update(
            index_elements=[key], set_=set_, where=stmt.excluded.modified >= table.c.modified
        )
        conn.execute(stmt, rows)


class MySqlUpsert:
    def upsert(self, conn: Connection, table: sa.Table, key: str, rows: list[Row]) -> None:
        stmt = mysql_dialect.insert(table)
        newer = stmt.inserted.modified >= table.c.modified
        assignments = [
            (name, sa.case((newer, stmt.inserted[name]), else_=table.c[name]))
            for name in _updatable(table, key) + ["modified"]  # modified LAST: see module docstring
        ]
        stmt = stmt.on_duplicate_key_update(assignments)
        # PyMySQL's executemany rewrites this into multi-row INSERTs (up to ~1 MB a statement).
        for start in range(0, len(rows), MYSQL_CHUNK):
            conn.execute(stmt, rows[start : start + MYSQL_CHUNK])


def _pg_copy_type(column: sa.Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return "timestamptz"
    if isinstance(kind, Money):
        return "numeric"
    if isinstance(kind, sa.BigInteger):
        return "int8"
    if isinstance(kind, sa.Integer):
        return "int4"
    if isinstance(kind, (sa.String, sa.Text)):
        return "text"
    raise TypeError(f"no COPY type for {column.table.name}.{column.name} ({kind!r})")


class PostgresCopyUpsert:
    def upsert(self, conn: Connection, table: sa.Table, key: str, rows: list[Row]) -> None:
        columns = [c.name for c in table.columns]
        staging = _pg_staging_table(conn, table)
        raw = conn.connection.driver_connection
        assert raw is not None
        as_tuple = operator.itemgetter(*columns)
        with raw.cursor() as cursor:
            copy_sql = f"COPY {staging} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
            with cursor.copy(copy_sql) as copy:
                # Binary COPY measured ~30 % faster than text here; the types must be named for it.
                copy.set_types([_pg_copy_type(c) for c in table.columns])
                for row in rows:
                    copy.write_row(as_tuple(row))
        conn.execute(_pg_merge_statement(table, key, staging))


def _pg_staging_table(conn: Connection, table: sa.Table) -> str:
    """The connection's staging table for ``table``, created on first use.

    ON COMMIT DELETE ROWS keeps one temp table per pooled connection for every later batch instead
    of creating and dropping catalog entries a thousand rows at a time; the pooled connection's
    ``info`` remembers it so later batches skip the round trip.
    """
    staging = f"_stage_{table.name}"
    created: set[str] = conn.connection.info.setdefault("ordersync_staging", set())
    if staging not in created:
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table.name}) ON COMMIT DELETE ROWS"
        )
        created.add(staging)
    return staging


@functools.cache
def _pg_merge_statement(table: sa.Table, key: str, staging: str) -> sa.Executable:
    source = sa.table(staging, *[sa.column(c.name) for c in table.columns])
    stmt = pg_dialect.insert(table).from_select([c.name for c in table.columns], sa.select(source))
    set_ = {name: stmt.excluded[name] for name in _updatable(table, key) + ["modified"]}
    return stmt.on_conflict_do_update(
        index_elements=[key], set_=set_, where=stmt.excluded.modified >= table.c.modified
    )


def strategy_for(dialect_name: str) -> UpsertStrategy:
    if dialect_name == "postgresql":
        return PostgresCopyUpsert()
    if dialect_name in ("mysql", "mariadb"):
        return MySqlUpsert()
    if dialect_name == "sqlite":
        return SqliteUpsert()
    raise ValueError(f"unsupported warehouse backend {dialect_name!r}")
