"""One scheduled tick for many shops, as the daemon runs it: the schedule's single run request covers every
shop's newest closed window and its run materialises each shop's partition; a shop whose session the
platform refuses fails alone (the others are materialised and recorded complete, it is not), and the next
plan asks for exactly that shop's window again."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from pydantic import SecretStr
from pipeline_support import ANCHOR, partition_metadata, query, sim_settings

from ordersync_pipeline.app.sync import plan_runs
from ordersync_pipeline.defs import build_definitions, timeline_for
from ordersync_pipeline.simulator import SimulatorSettings, start_simulator
from ordersync_pipeline.warehouse.connect import open_warehouse

SHOPS = ["shop-1", "shop-2", "shop-3"]


def test_one_tick_one_run_every_shop_and_a_failing_shop_fails_alone(tmp_path: Path, sqlite_url: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERSYNC_HOME", str(tmp_path))
    tick = ANCHOR + timedelta(hours=10, minutes=3)              # 3 minutes after the 09:45 window closed
    with start_simulator(SimulatorSettings(seed=12, shops=3, orders_per_day=400, history_days=2,
                                           clock="stepped", start_at=tick)) as sim:
        settings = sim_settings(sim, tmp_path, sqlite_url, world_clock=True)
        config = settings.config.model_copy(deep=True)
        config.shops[1].session = SecretStr("6102" + "0badc0de" * 8)   # expired: code 27
        settings = dataclasses.replace(settings, config=config)
        defs = build_definitions(settings)
        schedule = defs.resolve_schedule_def("incremental_sync_schedule")
        with dg.instance_for_test() as instance:
            requests = schedule.evaluate_tick(
                dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)).run_requests or []
            assert len(requests) == 1                            # one run for every shop
            result = defs.resolve_job_def("incremental_sync_job").execute_in_process(
                instance=instance, tags=requests[0].tags, raise_on_error=False)
    key = (ANCHOR + timedelta(hours=9, minutes=45)).strftime("%Y-%m-%d-%H:%M")
    assert not result.success                                    # the run names its failed partition ...
    assert sorted(partition_metadata(result, "trades")) == [f"shop-1|{key}", f"shop-3|{key}"]
    recorded = query(sqlite_url, "SELECT stream, shop_id, partition_key FROM sync_windows ORDER BY stream, shop_id")
    assert recorded == [(stream, shop, key) for stream in ("refunds", "trades") for shop in ("shop-1", "shop-3")]
    warehouse = open_warehouse(sqlite_url)
    rects = plan_runs(settings, timeline_for(settings), warehouse, start=ANCHOR + timedelta(hours=9, minutes=45),
                      end=ANCHOR + timedelta(hours=10), now=tick)
    warehouse.dispose()
    assert [(r.kind, r.shops, r.time_keys) for r in rects] == [("increment", ("shop-2",), (key,))]
