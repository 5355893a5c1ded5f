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


# -- events written in groups ---------------------------------------------------------------------------

SHOPS = dg.StaticPartitionsDefinition([f"shop-{i}" for i in range(5)])
_CHECK = "nothing_quarantined"


def _check(asset: str) -> dg.AssetCheckSpec:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(_CHECK, asset=asset, partitions_def=SHOPS)


@dg.multi_asset(specs=[dg.AssetSpec("pages", skippable=True), dg.AssetSpec("rows", skippable=True, deps=["pages"])],
                check_specs=[_check("rows")], partitions_def=SHOPS, can_subset=True,
                backfill_policy=dg.BackfillPolicy.single_run())
def shop_sync(context: AssetExecutionContext):  # type: ignore[no-untyped-def]
    """Shaped like ordersync's sync step: one ranged run, per partition two materialisations and a check,
    a partition that fails reported as the step's failure at the end."""
    for key in context.partition_keys:
        if key == "shop-3":
            continue
        context.log.info(f"loaded {key}")
        yield dg.AssetMaterialization("pages", partition=key, metadata={"pages": 1})
        yield dg.AssetMaterialization("rows", partition=key, metadata={"rows": 2, "dagster/row_count": 7},
                                      tags={"dagster/data_version": f"v-{key}"})
        yield dg.AssetCheckEvaluation(asset_key=dg.AssetKey("rows"), check_name=_CHECK, passed=key != "shop-1",
                                      severity=dg.AssetCheckSeverity.WARN, partition=key)
    raise dg.Failure("shop-3 failed", allow_retries=False)


def _run_shop_sync(instance: dg.DagsterInstance) -> str:
    job = dg.define_asset_job("shop_sync_job", selection=[shop_sync]).resolve(
        asset_graph=dg.Definitions(assets=[shop_sync]).resolve_asset_graph())
    result = job.execute_in_process(instance=instance, raise_on_error=False, tags={
        "dagster/asset_partition_range_start": "shop-0", "dagster/asset_partition_range_end": "shop-4"})
    assert not result.success
    return result.run_id


def _tables(base_dir: Path, run_id: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the run's shard and of the index shard, but the columns filled with the wall clock
    when a row or a schema migration is made."""
    import sqlite3

    out: dict[str, list[tuple[object, ...]]] = {}
    for shard in (run_id, "index"):
        db = sqlite3.connect(base_dir / f"{shard}.db")
        names = [r[0] for r in db.execute("select name from sqlite_master where type='table' "
                                          "and name not like 'alembic%' order by name")]
        for name in names:
            cols = ", ".join('"' + r[1] + '"' for r in db.execute(f"pragma table_info({name})")
                             if r[1] not in ("create_timestamp", "migration_completed"))
            out[f"{shard == 'index' and 'index' or 'run'}.{name}"] = db.execute(
                f"select {cols} from {name} order by 1").fetchall()
        db.close()
    return out


@pytest.mark.parametrize("group_events", [500, 3])
def test_grouped_writes_leave_the_same_rows_as_dagsters_own_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   group_events: int) -> None:
    """The events of a real ranged run (planned, materialised, checks planned and evaluated, a failure, the
    run's status), stored one by one by Dagster's SqliteEventLogStorage and through the grouped writes
    (whole groups, and groups of 3 cut anywhere), leave identical rows in every table of both shards."""
    import ordersync_pipeline.app.dagster_storage as storage_module

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(storage_module, "GROUP_EVENTS", group_events)
    ensure_dagster_home(tmp_path / "source")
    with dg.DagsterInstance.get() as instance:
        run_id = _run_shop_sync(instance)
        events = instance.all_logs(run_id)
        kinds = {e.dagster_event_type for e in events if e.is_dagster_event}
    assert {dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, dg.DagsterEventType.ASSET_MATERIALIZATION,
            dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED, dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE} <= kinds
    assert any(not e.is_dagster_event for e in events)  # a plain log line too

    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    plain = SqliteEventLogStorage(str(theirs))
    grouped = PooledSqliteEventLogStorage(str(ours))
    for event in events:
        plain.store_event(event)
        grouped.store_event(event)
    plain.dispose()
    grouped.dispose()
    expected, got = _tables(theirs, run_id), _tables(ours, run_id)
    assert len(expected["run.event_logs"]) == len(events)
    assert len(expected["index.asset_check_executions"]) == 5
    assert expected["index.asset_event_tags"] and expected["index.asset_keys"]
    assert got == expected


def test_this_process_reads_its_own_events_at_once_and_others_within_the_group_delay(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from ordersync_pipeline.app.dagster_storage import GROUP_SECONDS

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    ensure_dagster_home(tmp_path / "source")
    with dg.DagsterInstance.get() as instance:
        run_id = _run_shop_sync(instance)
        materialized = [e for e in instance.all_logs(run_id)
                        if e.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]
    ours = PooledSqliteEventLogStorage(str(tmp_path / "ours"))
    other = SqliteEventLogStorage(str(tmp_path / "ours"))   # another process's view of the same files
    ours.store_event(materialized[0])
    assert [r.partition_key for r in ours.fetch_materializations(dg.AssetKey("pages"), limit=10).records] \
        == ["shop-0"]                                        # read back at once by the process that wrote it
    ours.store_event(materialized[1])
    assert len(other.get_logs_for_run(run_id)) == 1      # the second is queued: not yet in the file
    deadline = time.monotonic() + 10 * GROUP_SECONDS
    while len(other.get_logs_for_run(run_id)) < 2 and time.monotonic() < deadline:
        time.sleep(GROUP_SECONDS / 4)
    assert len(other.get_logs_for_run(run_id)) == 2, "queued events were not written within the group delay"
    ours.dispose()
    other.dispose()


def test_a_group_that_fails_to_write_is_kept_and_written_once_later(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller that triggered the write sees the error; nothing is lost or written twice: what had not
    committed (here the run shard's rows, after the index shard's committed) is written by the next try."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    ensure_dagster_home(tmp_path / "source")
    with dg.DagsterInstance.get() as instance:
        run_id = _run_shop_sync(instance)
        events = [e for e in instance.all_logs(run_id)
                  if e.dagster_event_type in (dg.DagsterEventType.ASSET_MATERIALIZATION,
                                              dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
                                              dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
    ours = PooledSqliteEventLogStorage(str(tmp_path / "ours"))
    for event in events:
        ours.store_event(event)
    original = PooledSqliteEventLogStorage.run_connection

    def refused(self: PooledSqliteEventLogStorage, run_id: str | None = None) -> object:
        raise OSError("disk full")

    monkeypatch.setattr(PooledSqliteEventLogStorage, "run_connection", refused)
    with pytest.raises(OSError, match="disk full"):
        ours._write_queue()
    assert len(ours._queue) == len(events)
    monkeypatch.setattr(PooledSqliteEventLogStorage, "run_connection", original)
    ours.dispose()
    plain = SqliteEventLogStorage(str(tmp_path / "theirs"))
    for event in events:
        plain.store_event(event)
    plain.dispose()
    assert _tables(tmp_path / "ours", run_id) == _tables(tmp_path / "theirs", run_id)


def test_queued_events_are_written_when_the_process_exits(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, dagster as dg\n"
        "from dagster._core.events.log import EventLogEntry\n"
        "from ordersync_pipeline.app.dagster_storage import PooledSqliteEventLogStorage\n"
        "s = PooledSqliteEventLogStorage(sys.argv[1])\n"
        "for i in range(3):\n"
        "    s.store_event(EventLogEntry(error_info=None, level=20, user_message=f'line {i}', run_id='r1',\n"
        "                                timestamp=1.0 + i, step_key=None, job_name='j', dagster_event=None))\n"
        "assert len(s._queue) == 3\n"
        "sys.exit(0)  # no dispose\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)
    plain = SqliteEventLogStorage(str(tmp_path))
    assert [e.user_message for e in plain.get_logs_for_run("r1")] == ["line 0", "line 1", "line 2"]
    plain.dispose()


def test_a_forked_child_leaves_its_parents_queue_to_the_parent(tmp_path: Path) -> None:
    """Otherwise the child would write the parent's queued events again when it exits."""
    import os

    from dagster._core.events.log import EventLogEntry

    storage = PooledSqliteEventLogStorage(str(tmp_path))
    storage.store_event(EventLogEntry(error_info=None, level=20, user_message="from the parent", run_id="r1",
                                      timestamp=1.0, step_key=None, job_name="j", dagster_event=None))
    assert len(storage._queue) == 1
    pid = os.fork()
    if pid == 0:  # the child: what its exit hook would do, then out without running pytest's teardown
        try:
            storage._write_queue()
            os._exit(0)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    storage.dispose()
    plain = SqliteEventLogStorage(str(tmp_path))
    assert [e.user_message for e in plain.get_logs_for_run("r1")] == ["from the parent"]
    plain.dispose()
