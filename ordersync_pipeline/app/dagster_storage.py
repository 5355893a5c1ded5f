"""Dagster's SQLite event log, without an engine and a connection per event.

The embedded default instance (``ORDERSYNC_HOME/dagster``) stores every event through
``SqliteEventLogStorage._connect``, which creates a SQLAlchemy engine, opens a connection, commits and
disposes of it all again for each event, in the run's shard and again in the index shard: about 9 events
per partition of a sync run, 1,800 for a tick of 200 shops. ``PooledSqliteEventLogStorage`` is the same
storage (same files, schema and WAL journal; Dagster's own class reads them) keeping one engine and
connection per shard: the index shard and the few newest run shards. The embedded ``dagster.yaml`` names
it (app/instance.py); PostgreSQL storage is the production choice beyond that.

Its connections use ``PRAGMA synchronous=NORMAL`` instead of SQLite's FULL: in WAL mode a commit then
appends to the log without an fsync (the log is synced at checkpoints). Each event is its own commit, so
FULL cost an fsync per event (~1.5 ms here, 6.6 s of a 200k-trade sync). The database cannot be
corrupted either way; what NORMAL gives up is the last events before a power loss or OS crash (not a
process crash). Nothing is planned from them: what is synced is recorded in the warehouse's
``sync_windows``, so such a loss only shows a partition as unmaterialised in the UI until its next run.

Events are also written in groups. A 200-shop tick stores ~3,000 events (per shop: 6 materialisations,
6 "planned" events, 3 check evaluations), each with a commit in its run shard and one or two in the
index shard, an asset_keys upsert and the event serialised two or three times: ~6 of the tick's ~16
CPU-seconds. ``store_event`` now queues an event; the queue is written in one transaction per shard
(the run shard's rows in one ``executemany``; each asset's asset_keys row updated once, from its last
event of each kind) when it holds ``GROUP_EVENTS`` events, ``GROUP_SECONDS`` after its first event, before
this storage reads or writes anything else (so this process always reads its own events), before a run
status event (written at once, as before) and when the storage is disposed of or the process exits.
Other processes (the webserver, the daemon) see an event at most ``GROUP_SECONDS`` later; a process that
dies loses at most that much of its queue, which is the same kind of loss as above.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, EVENT_TYPE_TO_PIPELINE_RUN_STATUS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import AssetKeyTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._serdes import ConfigurableClassData
from sqlalchemy.pool import StaticPool

__all__ = ["PooledSqliteEventLogStorage", "RUN_SHARDS_KEPT", "GROUP_EVENTS", "GROUP_SECONDS"]

# Run shards kept open: a run writes its own shard; a few cover the runs of one tick and the webserver.
RUN_SHARDS_KEPT = 4
# A group of queued events is written when it is this large or this old (see the module docstring).
GROUP_EVENTS = 500
GROUP_SECONDS = 0.2
# Events Dagster's SQLite storage also writes to the index shard (run status events aside).
_MIRRORED = ASSET_EVENTS | ASSET_CHECK_EVENTS


def _no_fsync_per_commit(dbapi_connection: Any, _record: Any) -> None:
    """WAL commits without an fsync each (see the module docstring); a per-connection setting."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` reusing one connection per shard (see the module docstring)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, sa.Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        self._present: set[str] = set()   # tables, data migrations and columns known to exist
        self._queue: list[_Queued] = []                # events stored but not yet written
        self._threads = threading.local()              # .open: this thread's open transaction per shard
        self._timer: threading.Timer | None = None
        self._lock = threading.RLock()
        super().__init__(base_dir, inst_data)
        atexit.register(_write_queue_at_exit, weakref.ref(self))
        os.register_at_fork(after_in_child=functools.partial(_forget_in_child, weakref.ref(self)))

    # Dagster's __init__ sets _db_lock to a Lock; ours must be reentrant: writing a group holds it
    # while Dagster's own helpers open the shard again.
    @property
    def _db_lock(self) -> Any:
        return self._lock

    @_db_lock.setter
    def _db_lock(self, _ignored: object) -> None:
        pass

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,
                          config_value: Mapping[str, Any]) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> sa.Engine:
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            # One connection shared by this process's threads; _db_lock serialises its use.
            engine = sa.create_engine(self.conn_string_for_shard(shard), poolclass=StaticPool,
                                   connect_args={"timeout": 30.0, "check_same_thread": False})
            sa.event.listen(engine, "connect", _no_fsync_per_commit)
            self._engines[shard] = engine
            runs = [key for key in self._engines if key != "index"]
            while len(runs) > RUN_SHARDS_KEPT:
                self._engines.pop(runs.pop(0)).dispose()
            return engine

    # Dagster asks whether a table exists (e.g. asset_check_executions, asset_event_tags) and whether
    # asset_keys has its index columns while storing every asset event; SqliteEventLogStorage answers by
    # creating an engine and connecting to the index shard, or by inspecting the table, each time: 2 of
    # every 3 ms an event took in a 200-shop tick. A table, a column or a completed data migration, once
    # there, stays: positive answers are remembered, negative ones asked again.

    def has_table(self, table_name: str) -> bool:
        return self._remembered(table_name, lambda: super(PooledSqliteEventLogStorage, self).has_table(table_name))

    def has_secondary_index(self, name: str) -> bool:
        return self._remembered(f"secondary index {name}",
                                lambda: super(PooledSqliteEventLogStorage, self).has_secondary_index(name))

    def _has_asset_key_col_on_connection(self, conn: sa.Connection, column_name: str) -> bool:
        return self._remembered(f"asset_keys.{column_name}", lambda: bool(
            super(PooledSqliteEventLogStorage, self)._has_asset_key_col_on_connection(conn, column_name)))

    def _remembered(self, what: str, ask: Callable[[], bool]) -> bool:
        """True once ``what`` has been found present; until then ``ask`` the database each time."""
        if what in self._present:
            return True
        found = ask()
        if found:
            self._present.add(what)
        return found

    @contextmanager
    def _connect(self, shard: str) -> Iterator[sa.Connection]:
        with self._db_lock:
            open_here = self._open_here()
            if shard in open_here:  # inside a transaction this thread holds on the shard: join it
                yield open_here[shard]
                return
            if not open_here:  # anything else this storage does sees every event stored before it
                self._write_queue()
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    open_here[shard] = conn
                    try:
                        yield conn
                    finally:
                        del open_here[shard]

    def _open_here(self) -> dict[str, sa.Connection]:
        """The shards this thread holds a transaction on, by name (joined by a nested ``_connect``)."""
        opened: dict[str, sa.Connection] | None = getattr(self._threads, "open", None)
        if opened is None:
            opened = self._threads.open = {}
        return opened

    # -- events written in groups (see the module docstring) ---------------------------------------

    def store_event(self, event: EventLogEntry) -> None:
        if not event.run_id or (event.is_dagster_event
                                and event.dagster_event_type in EVENT_TYPE_TO_PIPELINE_RUN_STATUS):
            with self._db_lock:
                self._write_queue()
                super().store_event(event)
            return
        queued = _Queued(event, self._event_to_row(event))  # a bad event fails its caller, as before
        with self._db_lock:
            self._queue.append(queued)
            if len(self._queue) >= GROUP_EVENTS:
                self._write_queue()
            elif self._timer is None:
                self._timer = threading.Timer(GROUP_SECONDS, self._write_queue_quietly)
                self._timer.daemon = True
                self._timer.start()

    def _write_queue(self) -> None:
        """Write every queued event (a no-op inside a transaction this thread holds: it comes after)."""
        with self._db_lock:
            if not self._queue or self._open_here():
                return
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            group, self._queue = self._queue, []
            try:
                self._write_group(group)
            except BaseException:
                # What did not commit is queued again, first, and the caller sees the error (as it
                # did when each event was written at once); the next store or read tries again.
                self._queue[:0] = [q for q in group if q.run_row or q.index_row]
                raise

    def _write_queue_quietly(self) -> None:
        try:
            self._write_queue()
        except Exception as exc:  # a timer thread has no caller: the next store or read tries again
            sys.stderr.write(f"ordersync: writing queued Dagster events failed, will retry: {exc}\n")

    def _write_group(self, group: Sequence[_Queued]) -> None:
        """What ``SqliteEventLogStorage.store_event`` does for each event, in one transaction per shard:
        the index shard first, then each run's shard; each ``_Queued`` forgets a row once it commits."""
        mirrored = [q for q in group if q.index_row]
        if mirrored:
            with self.index_connection() as conn:
                self._write_index(conn, mirrored)
            for q in mirrored:
                q.index_row = None
        by_run: dict[str, list[_Queued]] = {}
        for q in group:
            if q.run_row is not None:
                by_run.setdefault(q.event.run_id, []).append(q)
        for run_id, queued in by_run.items():
            with self.run_connection(run_id) as conn:
                conn.execute(SqlEventLogStorageTable.insert(), [q.run_row for q in queued])
            for q in queued:
                q.run_row = None

    def _write_index(self, conn: sa.Connection, mirrored: Sequence[_Queued]) -> None:
        asset_events: list[EventLogEntry] = []
        asset_ids: list[int] = []
        last_of_kind: dict[tuple[str, Any], tuple[int, EventLogEntry, int]] = {}
        for position, q in enumerate(mirrored):
            event = q.event
            inserted = conn.execute(SqlEventLogStorageTable.insert(), q.index_row).inserted_primary_key
            event_id = inserted[0] if inserted else None
            if event_id is None:
                raise RuntimeError("Cannot store asset event tags for null event id.")
            if event.dagster_event_type in ASSET_EVENTS:
                asset_events.append(event)
                asset_ids.append(event_id)
                key = event.get_dagster_event().asset_key
                if key is not None:
                    last_of_kind[(key.to_string(), event.dagster_event_type)] = (position, event, event_id)
            else:  # a check event: its planned rows, or its evaluation, in asset_check_executions
                self.store_asset_check_event(event, event_id)
        if asset_events:
            self._store_asset_event_tags(conn, asset_events, asset_ids)
        # An asset_keys row holds the asset's latest event of each kind, so only the last of each kind
        # is applied, in the order they came: the row ends as it would after every event one by one.
        has_index_cols = self._has_asset_key_index_cols_on_connection(conn)
        latest: dict[str, dict[str, Any]] = {}
        for (asset_key, _kind), (_pos, event, event_id) in sorted(last_of_kind.items(), key=lambda kv: kv[1][0]):
            latest.setdefault(asset_key, {}).update(self._get_asset_entry_values(event, event_id, has_index_cols))
        for asset_key, values in latest.items():
            if values:
                self._upsert_asset_key(conn, asset_key, values)

    def _store_asset_event(self, conn: sa.Connection, event: EventLogEntry, event_id: int) -> None:
        """Dagster's, updating first: its insert-first fails with an IntegrityError for every event of
        an asset already known (~0.2 ms each to raise and catch)."""
        dagster_event = event.dagster_event
        if not (dagster_event and dagster_event.asset_key):
            return
        values = self._get_asset_entry_values(event, event_id, self._has_asset_key_index_cols_on_connection(conn))
        if values:
            self._upsert_asset_key(conn, dagster_event.asset_key.to_string(), values)

    @staticmethod
    def _upsert_asset_key(conn: sa.Connection, asset_key: str, values: Mapping[str, Any]) -> None:
        updated = conn.execute(AssetKeyTable.update().values(**values)
                               .where(AssetKeyTable.c.asset_key == asset_key)).rowcount
        if updated == 0:
            try:  # SQLite undoes just the failed statement, so the transaction goes on
                conn.execute(AssetKeyTable.insert().values(asset_key=asset_key, **values))
            except sa.exc.IntegrityError:  # inserted meanwhile by a writer holding no open transaction
                conn.execute(AssetKeyTable.update().values(**values).where(AssetKeyTable.c.asset_key == asset_key))

    def dispose(self) -> None:
        self._write_queue()
        super().dispose()
        with self._engines_lock:
            engines, self._engines = list(self._engines.values()), OrderedDict()
        for engine in engines:
            engine.dispose()


class _Queued:
    """A queued event and the rows still to write for it (its run shard's; the index shard's if it is
    mirrored there, as asset and check events are), serialised once for both."""

    __slots__ = ("event", "run_row", "index_row")

    def __init__(self, event: EventLogEntry, row: dict[str, Any]) -> None:
        self.event = event
        self.run_row: dict[str, Any] | None = row
        self.index_row = self.run_row if (event.is_dagster_event and event.dagster_event_type
                                          in _MIRRORED) else None


def _write_queue_at_exit(ref: weakref.ReferenceType[PooledSqliteEventLogStorage]) -> None:
    storage = ref()
    if storage is not None:
        storage._write_queue_quietly()


def _forget_in_child(ref: weakref.ReferenceType[PooledSqliteEventLogStorage]) -> None:
    """A forked child does not write its parent's queue (the parent does) nor use its connections."""
    storage = ref()
    if storage is not None:
        storage._queue = []
        storage._timer = None
        storage._lock = threading.RLock()
        storage._engines_lock = threading.Lock()
        engines, storage._engines = list(storage._engines.values()), OrderedDict()
        for engine in engines:
            engine.dispose(close=False)  # the parent's connections stay open for the parent
