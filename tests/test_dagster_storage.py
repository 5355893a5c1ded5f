"""The embedded instance's event log (app/dagster_storage.py): the dagster.yaml ordersync writes names the
pooled SQLite event log, runs and their per-partition materializations are stored and read back through
it, and Dagster's own SqliteEventLogStorage reads the same files (nothing is locked in)."""


from pathlib import Path

import dagster as dg
from dagster import AssetExecutionContext
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from ordersync_pipeline.app.dagster_storage import RUN_SHARDS_KEPT, PooledSqliteEventLogStorage
from ordersync_pipeline.app.instance import ensure_dagster_home

PARTS = dg.StaticPartitionsDefinition([f"p{i}" for i in range(6)])



@dg.asset(partitions_def=PARTS)
def one(context: AssetExecutionContext) -> None:
    context.log_event(dg.AssetMaterialization("per_partition", partition=context.partition_key,
                                              metadata={"rows": 3}))


def test_runs_store_and_read_back_through_the_pooled_event_log(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = ensure_dagster_home(tmp_path)
    assert "PooledSqliteEventLogStorage" in (home / "dagster.yaml").read_text()
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        run_ids = []
        for key in PARTS.get_partition_keys():  # more runs than shards kept open
            result = dg.materialize([one], instance=instance, partition_key=key)
            assert result.success
            run_ids.append(result.run_id)
        assert len(run_ids) > RUN_SHARDS_KEPT
        records = instance.fetch_materializations(dg.AssetKey("per_partition"), limit=100).records
        assert sorted(r.partition_key for r in records) == PARTS.get_partition_keys()
        assert len(instance.all_logs(run_ids[0])) > 5
    plain = SqliteEventLogStorage(str(home / "history" / "runs"))
    assert {r.partition_key for r in plain.fetch_materializations(dg.AssetKey("per_partition"), limit=100).records} \
        == set(PARTS.get_partition_keys())
    assert len(plain.get_logs_for_run(run_ids[-1])) > 5
    plain.dispose()


def test_event_commits_append_to_the_wal_without_an_fsync_each(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """synchronous=NORMAL on a WAL database: a commit per event no longer waits for the disk (the last
    events may be lost on power loss, never corrupted; the warehouse's sync_windows is the record)."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    ensure_dagster_home(tmp_path)
    with dg.DagsterInstance.get() as instance:
        assert dg.materialize([one], instance=instance, partition_key="p0").success
        storage = instance.event_log_storage
        assert isinstance(storage, PooledSqliteEventLogStorage)
        for shard in ("index", *(k for k in storage._engines if k != "index")):
            with storage._connect(shard) as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # NORMAL (FULL is 2)


def test_table_existence_is_asked_of_the_database_once_not_per_event(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Dagster's SQLite storage checked for asset_check_executions / asset_event_tags with a new engine
    and connection, and inspected asset_keys' columns, per stored asset event; once present, remembered."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    ensure_dagster_home(tmp_path)
    asked: list[str] = []
    original = SqliteEventLogStorage.has_table
    original_column = SqliteEventLogStorage._has_asset_key_col_on_connection

    def counting(self: SqliteEventLogStorage, table_name: str) -> bool:
        asked.append(table_name)
        return original(self, table_name)

    def counting_column(self: SqliteEventLogStorage, conn: object, column_name: str) -> bool:
        asked.append(f"asset_keys.{column_name}")
        return original_column(self, conn, column_name)  # type: ignore[arg-type]

    monkeypatch.setattr(SqliteEventLogStorage, "has_table", counting)
    monkeypatch.setattr(SqliteEventLogStorage, "_has_asset_key_col_on_connection", counting_column)
    with dg.DagsterInstance.get() as instance:
        for key in PARTS.get_partition_keys():
            assert dg.materialize([one], instance=instance, partition_key=key).success
        events = sum(len(instance.all_logs(r.run_id)) for r in instance.get_runs())
        assert events > 30
        assert asked, "the storage never asked: the test no longer exercises has_table"
        assert any(name.startswith("asset_keys.") for name in asked), asked
        assert len(asked) == len(set(asked)), f"asked again for tables already found: {asked}"
