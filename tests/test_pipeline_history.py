"""The historical load as Dagster runs it: a backfill over every day of every shop is one run (the
single-run backfill policy), wired through the definitions' own environment-configured resources,
and it loads exactly the trades taobao.trades.sold.get has for those created days."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from pipeline_support import (
    ANCHOR,
    HISTORY_DAYS,
    defs,
    history_keys,
    in_windows,
    query,
    truth_rows,
    warehouse_rows,
    write_sim_config,
)

from ordersync_pipeline.simulator import SimulatorSettings, start_simulator

SHOPS = ["shop-1", "shop-2"]


def test_backfill_of_all_days_and_shops_is_one_run_loading_sold_get_ground_truth(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    days = history_keys()
    assert len(days) == HISTORY_DAYS
    with start_simulator(SimulatorSettings(seed=9, shops=2, orders_per_day=200, history_days=3,
                                           clock="stepped")) as sim:
        config = write_sim_config(sim, tmp_path / "ordersync.yaml")
        # The definitions' resources read where things are from the environment, as under `dagster dev`.
        monkeypatch.setenv("ORDERSYNC_CONFIG", str(config))
        monkeypatch.setenv("ORDERSYNC_WAREHOUSE_URL", pg_url)
        monkeypatch.setenv("ORDERSYNC_HOME", str(tmp_path))
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("shops", SHOPS)
            tags = {
                ASSET_PARTITION_RANGE_START_TAG: str(dg.MultiPartitionKey({"shop": SHOPS[0], "time": days[0]})),
                ASSET_PARTITION_RANGE_END_TAG: str(dg.MultiPartitionKey({"shop": SHOPS[-1], "time": days[-1]})),
            }
            result = defs.resolve_job_def("historical_load_job").execute_in_process(
                instance=instance, tags=tags)
            assert result.success
            runs = instance.get_runs()
            assert [r.run_id for r in runs] == [result.run_id]
            assert runs[0].job_name == "historical_load_job"
            mats = result.asset_materializations_for_node("historical_trades")
            assert sorted(str(m.partition) for m in mats) == sorted(
                str(dg.MultiPartitionKey({"shop": s, "time": d})) for s in SHOPS for d in days)

        created = [(ANCHOR - timedelta(days=HISTORY_DAYS), ANCHOR)]
        for shop in SHOPS:
            truth = truth_rows(in_windows(sim.world.trades(shop), created, field="created"))
            assert len(truth) > 200
            assert warehouse_rows(pg_url, shop) == truth
    calls = query(pg_url, "SELECT DISTINCT method, run_id FROM api_calls")
    assert calls == [("taobao.trades.sold.get", result.run_id)]
    windows = query(pg_url, "SELECT shop_id, partition_key FROM sync_windows WHERE stream = 'historical' "
                    "ORDER BY shop_id, partition_key")
    assert windows == [(s, d) for s in SHOPS for d in days]
