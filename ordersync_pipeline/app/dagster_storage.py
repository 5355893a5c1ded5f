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
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._serdes import ConfigurableClassData
from sqlalchemy.pool import StaticPool

__all__ = ["PooledSqliteEventLogStorage", "RUN_SHARDS_KEPT"]

# Run shards kept open: a run writes its own shard; a few cover the runs of one tick and the webserver.
RUN_SHARDS_KEPT = 4


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
        super().__init__(base_dir, inst_data)

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
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def dispose(self) -> None:
        super().dispose()
        with self._engines_lock:
            engines, self._engines = list(self._engines.values()), OrderedDict()
        for engine in engines:
            engine.dispose()
