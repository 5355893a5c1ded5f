"""The Dagster definitions as data: jobs, assets, policies, the increment schedule and the shop sensor."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from pipeline_support import ANCHOR, A, defs, key_window

from ordersync_pipeline.defs.automation import incremental_sync_schedule, shop_partitions_sensor
from ordersync_pipeline.defs.resources import TopApiResource

ALL_ASSETS = ["historical_trade_pages", "historical_trades", "raw_trade_pages", "trade_details",
              "trade_orders", "trades"]


def test_definitions_load_and_name_jobs_schedule_sensor_and_assets() -> None:
    dg.Definitions.validate_loadable(defs)
    assert {j.name for j in defs.jobs} == {"incremental_sync_job", "historical_load_job"}  # type: ignore[union-attr]
    schedule = defs.resolve_schedule_def("incremental_sync_schedule")
    # Each quarter hour plus the 3-minute safety lag, in China time.
    assert schedule.cron_schedule == "3,18,33,48 * * * *"
    assert schedule.execution_timezone == "Asia/Shanghai"
    assert schedule.job_name == "incremental_sync_job"
    assert defs.resolve_sensor_def("shop_partitions_sensor").name == "shop_partitions_sensor"
    keys = sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys())
    assert keys == ALL_ASSETS


def test_jobs_select_their_path_and_every_asset_backfills_in_one_run() -> None:
    increment = defs.resolve_job_def("incremental_sync_job")
    historical = defs.resolve_job_def("historical_load_job")
    assert sorted(k.to_user_string() for k in increment.asset_layer.executable_asset_keys) == [
        "raw_trade_pages", "trade_details", "trade_orders", "trades"]
    assert sorted(k.to_user_string() for k in historical.asset_layer.executable_asset_keys) == [
        "historical_trade_pages", "historical_trades"]
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).backfill_policy == dg.BackfillPolicy.single_run(), key
    checks = sorted((c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys)
    assert checks == [("historical_trades", "no_quarantined_records"), ("trades", "no_quarantined_records")]


def test_partitions_are_shops_by_quarter_hours_from_the_anchor_and_history_days_before_it() -> None:
    inc = A.INCREMENT_PARTITIONS
    assert [d.name for d in inc.partitions_defs] == ["shop", "time"]
    assert inc.partitions_defs[0].partitions_def.name == "shops"  # type: ignore[attr-defined]
    first = A.INCREMENT_TIME.get_first_partition_key()
    assert key_window(first) == (ANCHOR, ANCHOR + timedelta(minutes=15))
    days = A.HISTORY_DAYS.get_partition_keys()
    assert days == [(ANCHOR - timedelta(days=2)).strftime("%Y-%m-%d"),
                    (ANCHOR - timedelta(days=1)).strftime("%Y-%m-%d")]


@pytest.mark.parametrize(("minutes_past", "expected_start"), [
    (2, -30),   # 10:02: the 09:45-10:00 window is not 3 minutes old yet, so 09:30 is the newest
    (3, -15),   # 10:03: 09:45-10:00 has just closed
    (17, -15),
    (18, 0),
])
def test_schedule_requests_only_the_newest_closed_partition_per_registered_shop(
        minutes_past: int, expected_start: int) -> None:
    ten = ANCHOR + timedelta(hours=10)
    now = ten + timedelta(minutes=minutes_past)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shops", ["shop-1", "shop-2"])
        requests = incremental_sync_schedule(
            dg.build_schedule_context(instance=instance, scheduled_execution_time=now))
    assert isinstance(requests, list)
    want_time = (ten + timedelta(minutes=expected_start)).strftime("%Y-%m-%d-%H:%M")
    assert sorted(r.partition_key for r in requests) == [  # type: ignore[type-var]
        dg.MultiPartitionKey({"shop": s, "time": want_time}) for s in ("shop-1", "shop-2")]
    for request in requests:
        _, end = key_window(request.partition_key.keys_by_dimension["time"])  # type: ignore[union-attr]
        assert end <= now - timedelta(minutes=3)
        assert request.run_key == f"{request.partition_key.keys_by_dimension['shop']}|{want_time}"  # type: ignore[union-attr]


def test_schedule_skips_without_registered_shops_or_before_the_first_window_closes() -> None:
    later = ANCHOR + timedelta(hours=5)
    with dg.instance_for_test() as empty:
        assert isinstance(incremental_sync_schedule(dg.build_schedule_context(
            instance=empty, scheduled_execution_time=later)), dg.SkipReason)
    too_early = ANCHOR + timedelta(minutes=17)  # the first window ends at +15, closed only at +18
    with dg.instance_for_test() as with_shop:
        with_shop.add_dynamic_partitions("shops", ["shop-1"])
        assert isinstance(incremental_sync_schedule(dg.build_schedule_context(
            instance=with_shop, scheduled_execution_time=too_early)), dg.SkipReason)


def test_sensor_registers_configured_shops_once(tmp_path: Path) -> None:
    config = tmp_path / "ordersync.yaml"
    config.write_text("gateway: http://127.0.0.1:9/router/rest\napp_key: k\napp_secret: s\nshops:\n"
                      "  - {shop_id: north, seller_nick: n, session: x}\n"
                      "  - {shop_id: south, seller_nick: s, session: y}\n", encoding="utf-8")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shops", ["north"])
    resources = {"top": TopApiResource(config_path=str(config))}
    result = shop_partitions_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(result, dg.SensorResult)
    [request] = result.dynamic_partitions_requests  # type: ignore[misc]
    assert isinstance(request, dg.AddDynamicPartitionsRequest)
    assert (request.partitions_def_name, list(request.partition_keys)) == ("shops", ["south"])

    instance.add_dynamic_partitions("shops", ["south"])
    again = shop_partitions_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(again, dg.SkipReason)


def test_sensor_skips_with_the_reason_when_there_is_no_configuration(tmp_path: Path) -> None:
    resources = {"top": TopApiResource(config_path=str(tmp_path / "missing.yaml"))}
    result = shop_partitions_sensor(dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources=resources))
    assert isinstance(result, dg.SkipReason)
    assert "no ordersync configuration" in (result.skip_message or "")
