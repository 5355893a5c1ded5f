"""Reconciliation, gap repair and the breaker through the real Dagster definitions: the asset and its checks per
shop-day (repaired, a gap that fails the check and alerts, resolved), the morning schedule, the gap sensor
(exact runs, no relaunch of what is queued or running, paused shops left alone), and the failure-rate
sensor launching the degraded full pull while the incremental schedule skips the shop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._core.test_utils import create_run_for_test
from monitoring_support import execute, schedule_tick, sensor_tick
from pipeline_support import ANCHOR, check_evaluations, increment_keys, partition_metadata, run, sim_settings

from ordersync_pipeline.alerts import Alerts
from ordersync_pipeline.defs import build_definitions
from ordersync_pipeline.defs.reconcile import GAP_CHECK, RECONCILE_ASSET, RECONCILE_JOB
from ordersync_pipeline.reconcile import quality
from ordersync_pipeline.reconcile.records import BreakerRecord, read_days, save_breaker
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.streams import STREAMS, stream_names
from ordersync_pipeline.timeutil import now as host_now
from ordersync_pipeline.top.recorder import CallRecord
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import trade_orders, trades

SHOPS = ["shop-1", "shop-2"]
DAY = (ANCHOR - timedelta(days=1)).strftime("%Y-%m-%d")   # the last historical day
INCREMENT = "taobao.trades.sold.increment.get"


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ORDERSYNC_HOME", str(tmp_path))
    return tmp_path


def test_the_monitoring_definitions_as_data(tmp_path: Path) -> None:
    with start_simulator(SimulatorSettings(seed=1, shops=2, orders_per_day=10, history_days=1)) as sim:
        defs = build_definitions(sim_settings(sim, tmp_path, f"sqlite:///{tmp_path / 'w.db'}"))
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    checks = {c.name for c in graph.asset_check_keys if c.asset_key == dg.AssetKey(RECONCILE_ASSET)}
    assert checks == {GAP_CHECK, *quality.check_names()}
    reconcile = defs.resolve_assets_def(RECONCILE_ASSET)
    assert reconcile.backfill_policy == dg.BackfillPolicy.single_run()
    days = reconcile.partitions_def
    assert isinstance(days, dg.MultiPartitionsDefinition)
    assert days.get_partitions_def_for_dimension("time").get_partition_keys()[0] == (
        ANCHOR - timedelta(days=2)).strftime("%Y-%m-%d")
    schedule = defs.resolve_schedule_def("daily_reconciliation_schedule")
    assert schedule.cron_schedule == "0 1 * * *" and schedule.execution_timezone == "Asia/Shanghai"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    for name in ("gap_repair_sensor", "failure_rate_sensor"):
        sensor = defs.resolve_sensor_def(name)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.description
    assert defs.resolve_sensor_def("gap_repair_sensor").job_name == "incremental_sync_job"
    assert defs.resolve_sensor_def("failure_rate_sensor").job_name == "degraded_full_pull_job"


def test_the_morning_schedule_reconciles_the_previous_day_of_every_shop(tmp_path: Path,
                                                                        instance: dg.DagsterInstance) -> None:
    with start_simulator(SimulatorSettings(seed=1, shops=2, orders_per_day=10, history_days=1)) as sim:
        defs = build_definitions(sim_settings(sim, tmp_path, f"sqlite:///{tmp_path / 'w.db'}"))
    tick = schedule_tick(defs, "daily_reconciliation_schedule", instance, ANCHOR + timedelta(hours=1))
    [request] = tick.requests
    assert request.tags[ASSET_PARTITION_RANGE_START_TAG] == f"shop-1|{DAY}"
    assert request.tags[ASSET_PARTITION_RANGE_END_TAG] == f"shop-2|{DAY}"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    # The world stands an hour after the anchor: the last historical day has ended.
    with start_simulator(SimulatorSettings(seed=29, shops=2, orders_per_day=200, history_days=3, clock="stepped",
                                           start_at=ANCHOR + timedelta(hours=1))) as s:
        yield s


def _reconcile(settings: Settings, defs: dg.Definitions, instance: dg.DagsterInstance,
               shop: str) -> dg.ExecuteInProcessResult:
    tags = {ASSET_PARTITION_RANGE_START_TAG: f"{shop}|{DAY}", ASSET_PARTITION_RANGE_END_TAG: f"{shop}|{DAY}"}
    return execute(defs, instance, RECONCILE_JOB, dg.RunRequest(tags=tags))


def test_a_shop_day_is_reconciled_repaired_and_a_surviving_gap_fails_its_check_and_alerts(
        sim: Simulator, home: Path, pg_url: str, instance: dg.DagsterInstance) -> None:
    settings = sim_settings(sim, home, pg_url, world_clock=True)
    defs = build_definitions(settings)
    # Every stream of the registry is synced and reconciled (trades and refunds).
    assert run(settings, "historical", shops=["shop-1"], time_keys=[DAY], instance=instance, defs=defs,
               streams=stream_names()).success
    warehouse = Warehouse(pg_url)
    key = f"shop-1|{DAY}"

    first = _reconcile(settings, defs, instance, "shop-1")
    assert first.success
    meta = partition_metadata(first, RECONCILE_ASSET)[key]
    assert meta["trades_status"] == "ok" and meta["trades_platform_count"] == meta["trades_warehouse_count"] > 100
    assert meta["refunds_status"] == "ok" and meta["refunds_platform_count"] == meta["refunds_warehouse_count"] > 0
    assert meta["api_calls"] == len(stream_names())  # one listing of the day per stream
    assert check_evaluations(first, RECONCILE_ASSET, GAP_CHECK) == {key: True}
    for name in quality.check_names():
        assert check_evaluations(first, RECONCILE_ASSET, name) == {key: True}, name

    with warehouse.engine.begin() as conn:
        gone = [tid for (tid,) in conn.execute(sa.select(trades.c.tid).order_by(trades.c.tid).limit(3))]
        conn.execute(trade_orders.delete().where(trade_orders.c.tid.in_(gone)))
        conn.execute(trades.delete().where(trades.c.tid.in_(gone)))
    repaired = _reconcile(settings, defs, instance, "shop-1")
    meta = partition_metadata(repaired, RECONCILE_ASSET)[key]
    assert (meta["trades_status"], meta["trades_missing_count"], meta["trades_refetched_count"]) == ("repaired", 3, 3)
    assert check_evaluations(repaired, RECONCILE_ASSET, GAP_CHECK) == {key: True}
    assert all(warehouse.get_trade(tid) is not None for tid in gone)

    # A trade the platform never had: the re-fetch cannot remove it, so the gap survives.
    ghost = {**warehouse.get_trade(gone[0]), "tid": 3_000_000_000_000_000_001}  # type: ignore[dict-item]
    warehouse.upsert_trades([ghost])
    gap = _reconcile(settings, defs, instance, "shop-1")
    assert gap.success  # a gap is a failed check, not a failed run
    assert check_evaluations(gap, RECONCILE_ASSET, GAP_CHECK) == {key: False}
    alerts = Alerts.from_settings(settings, warehouse)
    [alert] = alerts.open_alerts("reconciliation_gap")
    assert (alert.shop_id, alert.key) == ("shop-1", f"trades:{DAY}")
    assert [(d.status, d.extra_count) for d in read_days(warehouse, shop_ids=["shop-1"])
            if d.stream == "trades"] == [("gap", 1)]

    with warehouse.engine.begin() as conn:
        conn.execute(trades.delete().where(trades.c.tid == ghost["tid"]))
    fixed = _reconcile(settings, defs, instance, "shop-1")
    assert check_evaluations(fixed, RECONCILE_ASSET, GAP_CHECK) == {key: True}
    assert alerts.open_alerts("reconciliation_gap") == []
    warehouse.dispose()


def _record_failures(warehouse: Warehouse, shop: str, ok: int, failed: int) -> None:
    now = host_now()
    warehouse.record_calls([CallRecord(started_at=now, method=INCREMENT, shop_id=shop, outcome="error" if i < failed
                                       else "ok", code=15 if i < failed else None, sub_code=None, latency_s=0.01,
                                       request_id=None, attempt=1, error_kind="ServerError" if i < failed else None)
                            for i in range(ok + failed)], run_id="r")


def test_an_open_breaker_pauses_the_shops_increments_and_launches_its_degraded_full_pull(
        sim: Simulator, home: Path, sqlite_url: str, instance: dg.DagsterInstance) -> None:
    settings = sim_settings(sim, home, sqlite_url, world_clock=True)
    defs = build_definitions(settings)
    warehouse = Warehouse(sqlite_url)
    warehouse.migrate()
    _record_failures(warehouse, "shop-2", ok=30, failed=10)
    tick = sensor_tick(defs, "failure_rate_sensor", instance, None)
    [request] = tick.requests
    assert request.partition_key == "shop-2"
    state = json.loads(tick.cursor or "{}")
    assert state[f"shop-2|{INCREMENT}"]["state"] == "open" and state[f"shop-1|{INCREMENT}"]["state"] == "closed"
    assert [a.shop_id for a in Alerts.from_settings(settings, warehouse).open_alerts("failure_rate")] == ["shop-2"]

    pulled = execute(defs, instance, "degraded_full_pull_job", request)
    meta = partition_metadata(pulled, "degraded_full_pull")["shop-2"]
    assert meta["trades_records"] > 50 and meta["trades_upserted"] == meta["trades_records"]
    assert warehouse.trade_count("shop-2") == meta["trades_records"] and warehouse.trade_count("shop-1") == 0

    # The incremental schedule now syncs shop-1 only; with both open it syncs nobody.
    now = sim.clock.now()
    [only] = schedule_tick(defs, "incremental_sync_schedule", instance, now).requests
    assert only.tags[ASSET_PARTITION_RANGE_START_TAG].startswith("shop-1|")
    assert only.tags[ASSET_PARTITION_RANGE_END_TAG].startswith("shop-1|")
    # Ticks within the hour launch no second full pull.
    assert sensor_tick(defs, "failure_rate_sensor", instance, tick.cursor).requests == []
    save_breaker(warehouse, BreakerRecord(shop_id="shop-1", api=INCREMENT, state="open", failure_rate=0.5,
                                          calls=10, errors=5, opened_at=now, closed_at=None, next_probe_at=None,
                                          last_full_pull_at=now, calls_after_id=0, updated_at=now))
    skipped = schedule_tick(defs, "incremental_sync_schedule", instance, now)
    assert skipped.requests == [] and "breaker is open" in (skipped.skip or "")


def test_the_gap_sensor_launches_exactly_the_missing_windows_once(
        home: Path, sqlite_url: str, instance: dg.DagsterInstance) -> None:
    with start_simulator(SimulatorSettings(seed=31, shops=3, orders_per_day=100, history_days=1, clock="stepped",
                                           start_at=ANCHOR + timedelta(hours=2, minutes=3))) as sim:
        settings = sim_settings(sim, home, sqlite_url, world_clock=True)
        defs = build_definitions(settings)
        keys = increment_keys(ANCHOR, 8)                       # 00:00 .. 01:45, all closed by 02:03
        shops = ["shop-1", "shop-2", "shop-3"]
        # shop-1 and shop-3 synced 00:00-00:30, shop-2 nothing yet.
        assert run(settings, "increment", shops=["shop-1"], time_keys=keys[:2], instance=instance,
                   defs=defs, streams=stream_names()).success
        assert run(settings, "increment", shops=["shop-3"], time_keys=keys[:2], instance=instance,
                   defs=defs, streams=stream_names()).success
        # A run already fetching shop-3 00:30-01:00 (a backfill someone launched, say).
        create_run_for_test(instance, job_name="incremental_sync_job", status=dg.DagsterRunStatus.STARTED,
                            tags={ASSET_PARTITION_RANGE_START_TAG: f"shop-3|{keys[2]}",
                                  ASSET_PARTITION_RANGE_END_TAG: f"shop-3|{keys[3]}"})

        tick = sensor_tick(defs, "gap_repair_sensor", instance, None)
        # The newest closed window (01:45) is the schedule's; everything else missing goes, once.
        wanted = {("shop-1", k) for k in keys[2:7]} | {("shop-2", k) for k in keys[:7]} | {
            ("shop-3", k) for k in keys[4:7]}
        cells = set()
        partitions_def = defs.resolve_assets_def("trades").partitions_def
        assert isinstance(partitions_def, dg.MultiPartitionsDefinition)
        for request in tick.requests:
            assert request.tags["ordersync/started_by"] == "gap_repair"
            # One request repairs every stream's missing windows together.
            assert {k.to_user_string() for k in request.asset_selection or []} == {
                name for entry in STREAMS for name in entry.assets.all_names("increment")}
            for key in partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(
                    request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG])):
                shop, time_key = str(key).split("|")
                assert (shop, time_key) not in cells
                cells.add((shop, time_key))
        assert cells == wanted
        assert len(tick.requests) <= 3

        # The next tick, before the daemon has even created those runs: nothing is launched twice.
        again = sensor_tick(defs, "gap_repair_sensor", instance, tick.cursor)
        assert again.requests == [] and again.skip

        for request in tick.requests:
            assert execute(defs, instance, "incremental_sync_job", request).success
        done = sensor_tick(defs, "gap_repair_sensor", instance, again.cursor)
        assert done.requests == [] and json.loads(done.cursor or "{}")["pending"] == {}
        warehouse = Warehouse(sqlite_url)
        for shop in shops:
            recorded = {w.partition_key for w in warehouse.completed_windows(shop, "trades", "increment")}
            assert recorded >= set(keys[:7]) - ({keys[2], keys[3]} if shop == "shop-3" else set()), shop

        # A shop whose breaker is open is left to be repaired once it closes.
        sim.clock.advance(3600)
        now = sim.clock.now()
        save_breaker(warehouse, BreakerRecord(shop_id="shop-2", api=INCREMENT, state="open", failure_rate=0.5,
                                              calls=10, errors=5, opened_at=now, closed_at=None, next_probe_at=None,
                                              last_full_pull_at=now, calls_after_id=0, updated_at=now))
        later = sensor_tick(defs, "gap_repair_sensor", instance, done.cursor)
        launched = {str(k).split("|")[0] for r in later.requests for k in partitions_def.get_partition_keys_in_range(
            dg.PartitionKeyRange(r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG]))}
        assert launched == {"shop-1", "shop-3"}
        assert json.loads(later.cursor or "{}")["last"]["paused_shops"] == ["shop-2"]
        warehouse.dispose()
