"""The historical load as Dagster runs it: every day of every shop is one run (the single-run backfill
policy), loading exactly the trades taobao.trades.sold.get has for those created days, and recording
each day as the window it really fetched."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
from pipeline_support import (
    ANCHOR,
    HISTORY_DAYS,
    history_keys,
    in_windows,
    partition_metadata,
    query,
    run,
    sim_settings,
    truth_rows,
    warehouse_rows,
)

from ordersync_pipeline.simulator import SimulatorSettings, start_simulator

SHOPS = ["shop-1", "shop-2"]


def test_backfill_of_all_days_and_shops_is_one_run_loading_sold_get_ground_truth(
        tmp_path: Path, pg_url: str) -> None:
    days = history_keys()
    assert len(days) == HISTORY_DAYS
    with start_simulator(SimulatorSettings(seed=9, shops=2, orders_per_day=200, history_days=3,
                                           clock="stepped")) as sim:
        settings = sim_settings(sim, tmp_path, pg_url)
        with dg.instance_for_test() as instance:
            result = run(settings, "historical", shops=SHOPS, time_keys=days, instance=instance)
            assert result.success
            runs = instance.get_runs()
            assert [r.run_id for r in runs] == [result.run_id]
            assert runs[0].job_name == "historical_load_job"
            assert sorted(partition_metadata(result, "historical_trades")) == sorted(
                f"{s}|{d}" for s in SHOPS for d in days)

        created = [(ANCHOR - timedelta(days=HISTORY_DAYS), ANCHOR)]
        for shop in SHOPS:
            truth = truth_rows(in_windows(sim.world.trades(shop), created, field="created"))
            assert len(truth) > 200
            assert warehouse_rows(pg_url, shop) == truth
    calls = query(pg_url, "SELECT DISTINCT method, run_id FROM api_calls")
    assert calls == [("taobao.trades.sold.get", result.run_id)]
    windows = query(pg_url, "SELECT shop_id, partition_key FROM sync_windows WHERE stream = 'trades' "
                    "AND kind = 'historical' ORDER BY shop_id, partition_key")
    assert windows == [(s, d) for s in SHOPS for d in days]


def test_a_day_still_in_progress_is_recorded_as_the_window_it_fetched(tmp_path: Path, sqlite_url: str) -> None:
    # The anchor's own day fetched a minute after the anchor: only up to "now minus the safety lag" may
    # be fetched, and that is the window recorded (read from the lake), not the whole day up to the
    # anchor, so the day does not count complete (issue 7: sync_windows holds what was really fetched).
    from ordersync_pipeline.defs import timeline_for
    from ordersync_pipeline.sync.plan import is_complete
    from ordersync_pipeline.sync.windows import Window

    now = ANCHOR + timedelta(days=1, hours=10)
    anchor = now - timedelta(minutes=1)
    with start_simulator(SimulatorSettings(seed=3, shops=1, orders_per_day=200, history_days=2,
                                           clock="stepped", start_at=now)) as sim:
        settings = sim_settings(sim, tmp_path, sqlite_url, world_clock=True, sync={"start": anchor.isoformat()})
        today = now.strftime("%Y-%m-%d")
        assert run(settings, "historical", shops=["shop-1"], time_keys=[today]).success
    from ordersync_pipeline.warehouse import Warehouse

    [window] = Warehouse(sqlite_url).completed_windows("shop-1", "trades", "historical")
    assert window.window_start == ANCHOR + timedelta(days=1)
    assert window.window_end == now - timedelta(minutes=3)
    assert not is_complete(timeline_for(settings), "historical", today,
                           [Window(window.window_start, window.window_end)])
