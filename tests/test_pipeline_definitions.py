"""The Dagster definitions as data, built from one Settings object: assets from the stream registry,
jobs, the schedule (one run per tick for every shop), shop partitions that ignore configuration order."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from pipeline_support import ANCHOR

from ordersync_pipeline.config import OrdersyncConfig
from ordersync_pipeline.defs import build_definitions
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.sync.streams import STREAMS


def _settings(tmp_path: Path, shops: list[str], **sync: object) -> Settings:
    config = OrdersyncConfig.model_validate({
        "gateway": "http://127.0.0.1:9/router/rest", "app_key": "k", "app_secret": "s",
        "shops": [{"shop_id": s, "seller_nick": s, "session": "x"} for s in shops],
        "sync": {"start": ANCHOR.isoformat(), "history_days": 2, **sync}})
    return Settings.for_config(config, home=tmp_path)


def test_assets_jobs_and_schedule_come_from_the_registry(tmp_path: Path) -> None:
    defs = build_definitions(_settings(tmp_path, ["shop-1", "shop-2"]))
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for stream in STREAMS:
        for kind in ("increment", "historical"):
            assert set(stream.assets.all_names(kind)) <= keys  # type: ignore[arg-type]
    assert {j.name for j in defs.jobs} == {"incremental_sync_job", "historical_load_job",  # type: ignore[union-attr]
                                           "daily_reconciliation_job", "degraded_full_pull_job",
                                           "inventory_job", "daily_forecast_job"}
    schedule = defs.resolve_schedule_def("incremental_sync_schedule")
    assert schedule.cron_schedule == "3,18,33,48 * * * *"  # each quarter hour plus the 3-minute lag
    assert schedule.execution_timezone == "Asia/Shanghai"
    assert schedule.description
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).backfill_policy == dg.BackfillPolicy.single_run(), key
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    for stream in STREAMS:
        for kind in ("increment", "historical"):
            for table in stream.assets.tables[kind]:  # type: ignore[index]
                assert (table, "no_quarantined_records") in checks


def test_shop_partitions_are_sorted_whatever_the_configuration_order(tmp_path: Path) -> None:
    # Reordering (or prepending a shop to) `shops:` must not change what a shop range covers.
    one = build_definitions(_settings(tmp_path, ["zeta", "alpha", "mid"]))
    two = build_definitions(_settings(tmp_path, ["mid", "zeta", "alpha"]))
    for defs in (one, two):
        partitions = defs.resolve_assets_def("trades").partitions_def
        assert isinstance(partitions, dg.MultiPartitionsDefinition)
        shops = partitions.get_partitions_def_for_dimension("shop")
        assert shops.get_partition_keys() == ["alpha", "mid", "zeta"]


def test_the_increment_partitions_start_at_the_anchor_and_history_ends_there(tmp_path: Path) -> None:
    settings = _settings(tmp_path, ["s"])
    defs = build_definitions(settings)
    inc = defs.resolve_assets_def("trades").partitions_def
    hist = defs.resolve_assets_def("historical_trades").partitions_def
    assert isinstance(inc, dg.MultiPartitionsDefinition) and isinstance(hist, dg.MultiPartitionsDefinition)
    first = inc.get_partitions_def_for_dimension("time").get_first_partition_key()
    assert first == ANCHOR.strftime("%Y-%m-%d-%H:%M")
    days = hist.get_partitions_def_for_dimension("time").get_partition_keys()
    assert days == [(ANCHOR - timedelta(days=2)).strftime("%Y-%m-%d"),
                    (ANCHOR - timedelta(days=1)).strftime("%Y-%m-%d")]


@pytest.mark.parametrize(("minutes_past", "expected_start"), [
    (2, -30),   # 10:02: the 09:45-10:00 window is not 3 minutes old yet, so 09:30 is the newest
    (3, -15),   # 10:03: 09:45-10:00 has just closed
    (17, -15),
    (18, 0),
])
def test_one_run_per_tick_covers_every_shop_for_the_newest_closed_window(
        tmp_path: Path, minutes_past: int, expected_start: int) -> None:
    shops = ["c-shop", "a-shop", "b-shop"]
    defs = build_definitions(_settings(tmp_path, shops))
    ten = ANCHOR + timedelta(hours=10)
    now = ten + timedelta(minutes=minutes_past)
    schedule = defs.resolve_schedule_def("incremental_sync_schedule")
    with dg.instance_for_test() as instance:
        result = schedule.evaluate_tick(dg.build_schedule_context(instance=instance,
                                                                   scheduled_execution_time=now))
    requests = result.run_requests or []
    assert len(requests) == 1
    want_time = (ten + timedelta(minutes=expected_start)).strftime("%Y-%m-%d-%H:%M")
    tags = requests[0].tags
    assert tags[ASSET_PARTITION_RANGE_START_TAG] == f"a-shop|{want_time}"
    assert tags[ASSET_PARTITION_RANGE_END_TAG] == f"c-shop|{want_time}"
    assert requests[0].run_key == f"{want_time}|a-shop..c-shop"
    # The request names no asset subset: the run materialises the whole job, every stream of the
    # registry (trades and refunds together), not one run per stream.
    assert requests[0].asset_selection is None
    job = defs.resolve_job_def(requests[0].job_name or "incremental_sync_job")
    selected = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    for stream in STREAMS:
        assert set(stream.assets.all_names("increment")) <= selected, stream.name


def test_many_shops_are_sharded_into_runs_of_at_most_the_configured_size(tmp_path: Path) -> None:
    from ordersync_pipeline.defs.automation import shop_ranges

    shops = [f"s{i:03d}" for i in range(250)]
    ranges = shop_ranges(shops, 100)
    assert ranges == [("s000", "s099"), ("s100", "s199"), ("s200", "s249")]


def test_importing_the_definitions_module_reads_and_writes_nothing(tmp_path: Path) -> None:
    # The module is lazy: Dagster builds the definitions when it loads the code location.
    env = {**os.environ, "ORDERSYNC_HOME": str(tmp_path / "home"), "ORDERSYNC_CONFIG": str(tmp_path / "none.yaml")}
    code = textwrap.dedent("""
        import ordersync_pipeline.definitions as d
        print(type(d.defs).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip()
    assert not (tmp_path / "home").exists()
