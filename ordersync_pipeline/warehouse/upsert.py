"""Batched, set-based, monotonic upserts: an older version never overwrites a newer one.

A row's version is ``(modified, fetched_at)``: the platform's last change, then when the platform
returned that version (a deterministic tie-breaker: of two versions with equal ``modified``, the one
fetched later wins). A stored NULL ``fetched_at`` (rows from before revision 0002) loses ties. One
strategy per backend, all with the same rule (the incoming version wins when it is at least the
stored one, so re-loading the same pages is idempotent):

* PostgreSQL: binary ``COPY`` into a per-connection TEMP staging table (rows deleted at commit), then
  one ``INSERT ... SELECT ... ON CONFLICT (pk) DO UPDATE ... WHERE <incoming version >= stored>``
  (see ``PostgresCopyUpsert`` for why the staging table is created outside the batch's transaction).
* MariaDB/MySQL: multi-row ``INSERT ... ON DUPLICATE KEY UPDATE col = IF(<incoming >= stored>,
  new.col, col)`` with ``fetched_at`` then ``modified`` assigned last, because MySQL applies the
  assignments left to right: every earlier guard must still see the stored version, and the guard
  stays true once ``fetched_at`` alone has taken the incoming value.
* SQLite: ``INSERT ... ON CONFLICT (pk) DO UPDATE ... WHERE <incoming >= stored>`` via executemany.

Duplicates inside a batch are collapsed first (newest version per key, the later row on a tie):
PostgreSQL refuses to touch one row twice in a statement, and doing it here keeps one rule for all.

Child tables (order lines, see ``tables.Monotonic``) carry their parent's version; after an upsert,
``delete_superseded_children`` removes lines that a newer stored version of their trade no longer has.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from ordersync_pipeline.timeutil import GMT8
from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.warehouse.types import Money, UTCDateTime

Row = dict[str, Any]

# The version columns every monotonic table has (tables.Monotonic).
VERSION_COLUMNS = ("modified", "fetched_at")

# Fixed-offset zones whose datetimes are aware by construction: TOP's GMT+8 (sync/fields.py) and UTC.
_KNOWN_ZONES = frozenset({timezone.utc, GMT8})

# Columns stamped with the load time when the caller leaves them out.
_STAMP_COLUMNS = ("synced_at", "fetched_at")
MYSQL_CHUNK = 1000


@dataclass(frozen=True)
class UpsertResult:
    """What a load sent: ``sent`` rows given, ``unique`` keys left after collapsing duplicates, and
    how many of those the database refused (they went to ``quarantine``; see store.py).

    How many rows actually changed is not reported: the drivers disagree on what "affected" means
    for an upsert, and an unchanged row (older version) is a success, not a failure.
    """

    table: str
    sent: int
    unique: int
    quarantined: int = 0


def prepare_rows(table: sa.Table, key: str, rows: Iterable[Mapping[str, Any]]) -> list[Row]:
    """Complete each row to the table's full column set (missing optional keys -> NULL), refusing
    unknown columns, rows without a key or ``modified``, and naive datetimes."""
    columns = [c.name for c in table.columns]
    known = set(columns)
    width = len(columns)
    time_columns = [c.name for c in table.columns if isinstance(c.type, UTCDateTime)]
    stamps = [c for c in _STAMP_COLUMNS if c in known]
    stamp_time = utc_now()
    prepared: list[Row] = []
    for row in rows:
        if not known.issuperset(row):
            raise ValueError(f"{table.name}: unknown column(s) {sorted(row.keys() - known)}")
        if row.get(key) is None or row.get("modified") is None:
            raise ValueError(f"{table.name}: every row needs {key!r} and 'modified', got {dict(row)!r}")
        # This loop is on the hot path of every load. A row that already has every column (what the
        # normalisers build) is copied in one C call; others are completed by fromkeys + update.
        if len(row) == width:
            full = dict(row)
        else:
            full = dict.fromkeys(columns)
            full.update(row)
        for name in stamps:
            if full[name] is None:
                full[name] = stamp_time
        for name in time_columns:
            value = full[name]
            # The zones every parsed time carries pass on identity, sparing a utcoffset() call each.
            if value is not None and (type(value) is not datetime or value.tzinfo not in _KNOWN_ZONES) and (
                    not isinstance(value, datetime) or value.utcoffset() is None):
                raise ValueError(f"{table.name}.{name} must be a timezone-aware datetime, got {value!r}")
        prepared.append(full)
    return prepared


def newest_per_key(rows: Sequence[Row], key: str) -> list[Row]:
    """Keep one row per key: the newest ``(modified, fetched_at)``; on a tie the one that came later.

    Rows must come from ``prepare_rows`` (``fetched_at`` stamped). They come back sorted by key so
    every writer locks rows in the same order: concurrent loaders (overlapping windows hold the same
    trades) then wait on each other instead of deadlocking.
    """
    newest: dict[Any, Row] = {}
    for row in rows:
        held = newest.get(row[key])
        if held is None or (row["modified"], row["fetched_at"]) >= (held["modified"], held["fetched_at"]):
            newest[row[key]] = row
    return [newest[k] for k in sorted(newest)]


class UpsertStrategy(Protocol):
    def prepare(self, conn: Connection, tables: Sequence[sa.Table]) -> None:
        """Before a batch's transaction: set up what ``upsert`` needs on this connection (committed)."""

    def upsert(self, conn: Connection, table: sa.Table, key: str, rows: list[Row]) -> None:
        """Write already prepared, de-duplicated rows inside the caller's transaction."""


def _assigned(table: sa.Table, key: str) -> list[str]:
    """Columns an update sets, the version columns last (``fetched_at`` before ``modified``: MySQL)."""
    return [c.name for c in table.columns if c.name != key and c.name not in VERSION_COLUMNS] + [
        "fetched_at", "modified"]


def at_least(modified: sa.ColumnElement[Any], fetched_at: sa.ColumnElement[Any],
             stored: sa.Table) -> sa.ColumnElement[bool]:
    """The version ``(modified, fetched_at)`` is at least ``stored``'s (whose NULL fetched_at loses ties)."""
    return sa.or_(
        modified > stored.c.modified,
        sa.and_(modified == stored.c.modified,
                sa.or_(stored.c.fetched_at.is_(None), fetched_at >= stored.c.fetched_at)),
    )


class SqliteUpsert:
    def __init__(self) -> None:
        # The statement depends only on (table, key): built once, not for every batch (a tick's
        # ~800 small batches spent ~0.1 ms each building it). Statements are immutable, so threads
        # may share them.
        self._statements: dict[tuple[sa.Table, str], sa.Executable] = {}

    def prepare(self, conn: Connection, tables: Sequence[sa.Table]) -> None:
        return None

    def upsert(self, conn: Connection, table: sa.Table, key: str, rows: list[Row]) -> None:
        stmt = self._statements.get((table, key))
        if stmt is None:
            insert = sqlite_dialect.insert(table)
            set_ = {name: insert.excluded[name] for name in _assigned(table, key)}
            stmt = self._statements[(table, key)] = insert.on_conflict_do_update(
                index_elements=[key], set_=set_,
                where=at_least(insert.excluded.modified, insert.excluded.fetched_at, table),
            )
        conn.execute(stmt, rows)


class MySqlUpsert:
    def prepare(self, conn: Connection, tables: Sequence[sa.Table]) -> None:
        return None

    def upsert(self, conn: Connection, table: sa.Table, key: str, rows: list[Row]) -> None:
        stmt = mysql_dialect.insert(table)
        newer = at_least(stmt.inserted.modified, stmt.inserted.fetched_at, table)
        assignments = [
            (name, sa.case((newer, stmt.inserted[name]), else_=table.c[name]))
            for name in _assigned(table, key)  # version columns LAST: see module docstring
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
    if isinstance(kind, sa.Boolean):
        return "bool"
    raise TypeError(f"no COPY type for {column.table.name}.{column.name} ({kind!r})")


@functools.cache
def _cached_numeric_dumper() -> type[Any]:
    """psycopg's binary numeric dumper with its answers kept per ``Decimal`` value, for COPY only.

    psycopg encodes a ``Decimal`` through ``as_tuple()`` at ~0.6 us a value, the dearest column type of
    the COPY (a trade and its lines carry ~16 amounts); amounts repeat (a 200k-trade lake: 99 % of money
    fields repeat a value seen before), so each distinct one is encoded once. Equal Decimals of
    different exponents (1.5, 1.50) share an entry: the staging columns are the tables' NUMERIC(14, 2),
    whose typmod brings every value to 2 places as it is received, so both land as the same number.
    Anything but a ``Decimal`` (an int) goes to psycopg's dumper uncached, which also refuses what it
    refused before (a float). Built on first use: psycopg is imported only where PostgreSQL is used.
    """
    import psycopg

    binary = psycopg.pq.Format.BINARY
    numeric = psycopg.adapters.types["numeric"].oid
    # psycopg's own (its C implementation when installed, as the COPY would have used).
    base = psycopg.adapters.get_dumper_by_oid(numeric, binary)(Decimal)
    cache: dict[Decimal, bytes] = {}
    limit = 65_536  # distinct amounts before the cache is cleared wholesale (~15k in a 200k load)

    class CachedNumericDumper(psycopg.adapt.Dumper):
        format = binary
        oid = numeric

        def dump(self, obj: Any) -> Any:
            if type(obj) is not Decimal:
                return base.dump(obj)
            try:
                return cache[obj]
            except KeyError:
                pass
            except TypeError:  # a signalling NaN cannot be hashed
                return base.dump(obj)
            encoded = base.dump(obj)
            if encoded is None:  # pragma: no cover - psycopg encodes every Decimal
                return None
            if len(cache) >= limit:
                cache.clear()
            dumped = cache[obj] = bytes(encoded)
            return dumped

    return CachedNumericDumper


class PostgresCopyUpsert:
    """COPY into a per-connection TEMP staging table (ON COMMIT DELETE ROWS: one table per pooled
    connection for every later batch, instead of creating and dropping catalog entries a thousand
    rows at a time), then one merge.

    ``prepare`` creates the staging tables in their own committed transaction, before the batch's,
    and only then does the pooled connection's ``info`` remember them. Created inside the batch's
    transaction, a failed batch would roll the CREATE back while the memo still said it exists, and
    every later batch on that connection would fail with 'relation "_stage_trades" does not exist'.
    ``upsert`` still creates a missing one itself (inside the transaction, not remembered), so it is
    correct without ``prepare``; ``prepare`` spares the round trip (~0.4 ms a table) on every batch.
    """

    _MEMO = "ordersync_staging"

    def prepare(self, conn: Connection, tables: Sequence[sa.Table]) -> None:
        created: set[str] = conn.connection.info.setdefault(self._MEMO, set())
        missing = [table for table in tables if _pg_staging_name(table) not in created]
        if not missing:
            return
        for table in missing:
            _pg_create_staging(conn, table)
        conn.commit()
        created.update(_pg_staging_name(table) for table in missing)

    def upsert(self, conn: Connection, table: sa.Table, key: str, rows: list[Row]) -> None:
        columns = [c.name for c in table.columns]
        staging = _pg_staging_name(table)
        if staging not in conn.connection.info.get(self._MEMO, ()):
            _pg_create_staging(conn, table)
        raw = conn.connection.driver_connection
        assert raw is not None
        as_tuple = operator.itemgetter(*columns)
        with raw.cursor() as cursor:
            cursor.adapters.register_dumper(None, _cached_numeric_dumper())  # this cursor's COPY only
            # Quoted: a column may be an SQL keyword (refunds."desc").
            quoted = ", ".join(conn.dialect.identifier_preparer.quote(name) for name in columns)
            copy_sql = f"COPY {staging} ({quoted}) FROM STDIN (FORMAT BINARY)"
            with cursor.copy(copy_sql) as copy:
                # Binary COPY measured ~30 % faster than text here; the types must be named for it.
                copy.set_types([_pg_copy_type(c) for c in table.columns])
                for row in rows:
                    copy.write_row(as_tuple(row))
        conn.execute(_pg_merge_statement(table, key, staging))


def _pg_staging_name(table: sa.Table) -> str:
    return f"_stage_{table.name}"


def _pg_create_staging(conn: Connection, table: sa.Table) -> None:
    conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {_pg_staging_name(table)} "
                         f"(LIKE {table.name}) ON COMMIT DELETE ROWS")


@functools.cache
def _pg_merge_statement(table: sa.Table, key: str, staging: str) -> sa.Executable:
    source = sa.table(staging, *[sa.column(c.name) for c in table.columns])
    stmt = pg_dialect.insert(table).from_select([c.name for c in table.columns], sa.select(source))
    set_ = {name: stmt.excluded[name] for name in _assigned(table, key)}
    return stmt.on_conflict_do_update(
        index_elements=[key], set_=set_,
        where=at_least(stmt.excluded.modified, stmt.excluded.fetched_at, table),
    )


class _IntArrayText(sa.types.TypeDecorator[Sequence[int]]):
    """A list of ints bound as the text of a PostgreSQL array (``{1,2,3}``).

    psycopg dumps a list parameter element by element in Python: ~1.9 us a key, 3.2 ms for the 1,700
    order-line keys of one 1,000-trade batch, where joining their decimal text takes 0.4 ms (measured).
    The text goes out untyped (no cast is rendered), so PostgreSQL types it from ``column = ANY(...)``
    as an array of the column's type and parses it when binding: a custom plan still sees the keys.
    Anything but an int is refused here (``int.__repr__`` raises TypeError).
    """

    impl = sa.types.NullType
    cache_ok = True

    def process_bind_param(self, value: Sequence[int] | None, dialect: sa.Dialect) -> str | None:
        if value is None:
            return None
        return "{" + ",".join(map(int.__repr__, value)) + "}"


def in_keys(dialect_name: str, key_type: sa.types.TypeEngine[Any],
             column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """``column IN (:keys)``. On PostgreSQL ``column = ANY(:keys)``: one array parameter, where
    psycopg spends ~10 ms of Python splitting a query with 2,000 placeholders (measured; the query
    itself runs in ~5 ms); integer keys travel as the array's text (``_IntArrayText``)."""
    if dialect_name == "postgresql":
        if isinstance(key_type, sa.Integer):
            return column == sa.any_(sa.bindparam("keys", type_=_IntArrayText()))
        return column == sa.any_(sa.bindparam("keys", type_=pg_dialect.ARRAY(key_type)))
    return column.in_(sa.bindparam("keys", expanding=True))


# Keys per statement in delete_superseded_children (SQLite allows 32766 variables).
_PARENTS_PER_CHECK = 5000


@functools.lru_cache(maxsize=64)
def _stale_children(dialect_name: str, child: sa.Table, key: str, parent: sa.Table, column: str) -> sa.Select[Any]:
    """The SELECT of ``delete_superseded_children``: it depends on nothing else, so it is built once
    (statements are immutable), not for every batch of a load (~0.1 ms each, ~400 a tick)."""
    stored = parent.alias("p")
    current = child.alias("cur")
    older = sa.or_(
        stored.c.modified > child.c.modified,
        sa.and_(stored.c.modified == child.c.modified, stored.c.fetched_at.is_not(None),
                sa.or_(child.c.fetched_at.is_(None), child.c.fetched_at < stored.c.fetched_at)),
    )
    brought_children = sa.exists().where(
        current.c[column] == stored.c[column], current.c.modified == stored.c.modified,
        sa.or_(current.c.fetched_at == stored.c.fetched_at,
               sa.and_(current.c.fetched_at.is_(None), stored.c.fetched_at.is_(None))),
    )
    key_type = child.c[column].type
    return (sa.select(child.c[key]).join(stored, stored.c[column] == child.c[column])
            .where(in_keys(dialect_name, key_type, child.c[column]),
                   in_keys(dialect_name, key_type, stored.c[column]), older, brought_children))


def delete_superseded_children(conn: Connection, child: sa.Table, key: str, parent: sa.Table, column: str,
                               parent_keys: Sequence[Any]) -> int:
    """Delete the children of ``parent_keys`` whose version is older than their parent's stored one,
    when that stored version brought children (a version without them, e.g. a fields projection
    without ``orders``, says nothing about its lines). Returns how many were deleted.

    Per chunk of keys, a SELECT of the stale children, then a DELETE by key when there are any
    (rare). Portable: a DELETE may not read its own table in a subquery on MySQL. Both sides of the
    join are filtered by the key list, so the database drives it from its indexes. It reads every
    child of the given parents, including those just written: a child written from a version that
    lost to a newer stored one is stale too. Safe against concurrent loaders: the parents' upsert
    locked their rows until commit.
    """
    stale = _stale_children(conn.dialect.name, child, key, parent, column)
    if conn.dialect.name == "postgresql":
        # This is a lookup by key; make sure PostgreSQL plans it as one (measured on
        # bench_warehouse.py batches: 26 ms a batch without these, 2.7 ms with them):
        # - psycopg prepares a statement run 5 times, and PostgreSQL then settles on a generic plan
        #   that cannot see the key array and hash-joins whole tables; a custom plan costs ~0.4 ms;
        # - on tables not analysed yet (a new warehouse before autovacuum's first pass) it guesses a
        #   tenth of the table matches, and scans all of it or starts parallel workers.
        # SET LOCAL ends with the transaction; this cleanup is its last work.
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan; "
                             "SET LOCAL enable_seqscan = off; SET LOCAL max_parallel_workers_per_gather = 0")
    deleted = 0
    for start in range(0, len(parent_keys), _PARENTS_PER_CHECK):
        chunk = list(parent_keys[start : start + _PARENTS_PER_CHECK])
        found = list(conn.execute(stale, {"keys": chunk}).scalars())
        for first in range(0, len(found), _PARENTS_PER_CHECK):
            conn.execute(child.delete().where(child.c[key].in_(found[first : first + _PARENTS_PER_CHECK])))
        deleted += len(found)
    return deleted


def strategy_for(dialect_name: str) -> UpsertStrategy:
    if dialect_name == "postgresql":
        return PostgresCopyUpsert()
    if dialect_name in ("mysql", "mariadb"):
        return MySqlUpsert()
    if dialect_name == "sqlite":
        return SqliteUpsert()
    raise ValueError(f"unsupported warehouse backend {dialect_name!r}")
