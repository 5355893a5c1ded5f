"""The reconciliation asset over several days of a shop in one run, whose per-day questions are asked once for
all the days: a day repaired by a re-fetch late in the run is checked as repaired (its counts and quality
checks asked again after the re-fetch), and every day reports what it reports when reconciled alone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from monitoring_support import execute
from pipeline_support import ANCHOR, partition_metadata, run, sim_settings

from ordersync_pipeline.defs import build_definitions
from ordersync_pipeline.defs.reconcile import GAP_CHECK, RECONCILE_ASSET, RECONCILE_JOB
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.streams import stream_names
from ordersync_pipeline.sync.windows import day_window
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import trade_orders, trades

DAYS = [(ANCHOR - timedelta(days=n)).strftime("%Y-%m-%d") for n in (2, 1)]   # the historical days


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=31, shops=1, orders_per_day=120, history_days=3, clock="stepped",
                                           start_at=ANCHOR + timedelta(hours=1))) as s:
        yield s


def _reconcile(defs: dg.Definitions, instance: dg.DagsterInstance, first: str, last: str) -> dg.ExecuteInProcessResult:
    tags = {ASSET_PARTITION_RANGE_START_TAG: f"shop-1|{first}", ASSET_PARTITION_RANGE_END_TAG: f"shop-1|{last}"}
    return execute(defs, instance, RECONCILE_JOB, dg.RunRequest(tags=tags))


def _checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            out[(str(evaluation.partition), evaluation.check_name)] = {  # type: ignore[union-attr]
                "passed": evaluation.passed,  # type: ignore[union-attr]
                **{k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}}  # type: ignore[union-attr]
    return out


def test_a_day_repaired_late_in_a_run_is_checked_as_repaired_and_each_day_as_alone(
        sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_url: str) -> None:
    monkeypatch.setenv("ORDERSYNC_HOME", str(tmp_path))
    settings = sim_settings(sim, tmp_path, pg_url, world_clock=True)
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        assert run(settings, "historical", shops=["shop-1"], time_keys=DAYS, instance=instance, defs=defs,
                   streams=stream_names()).success
        warehouse = Warehouse(pg_url)
        last = day_window(date.fromisoformat(DAYS[-1]))
        with warehouse.engine.begin() as conn:   # three trades of the last day lost
            gone = [tid for (tid,) in conn.execute(sa.select(trades.c.tid).where(
                trades.c.created >= last.start, trades.c.created < last.end).order_by(trades.c.tid).limit(3))]
            conn.execute(trade_orders.delete().where(trade_orders.c.tid.in_(gone)))
            conn.execute(trades.delete().where(trades.c.tid.in_(gone)))

        together = _reconcile(defs, instance, DAYS[0], DAYS[-1])
        meta = partition_metadata(together, RECONCILE_ASSET)
        repaired = meta[f"shop-1|{DAYS[-1]}"]
        assert (repaired["trades_status"], repaired["trades_refetched_count"]) == ("repaired", 3)
        checks = _checks(together)
        # The repaired day's checks looked at it after the re-fetch: every trade of the day, lines and all.
        lines = checks[(f"shop-1|{DAYS[-1]}", "order_lines_add_up")]
        assert lines["passed"] and lines["checked"] == repaired["trades_platform_count"]

        # Each day alone (nothing left to repair now) reports the same quality checks and counts.
        for day in DAYS:
            alone = _reconcile(defs, instance, day, day)
            key = f"shop-1|{day}"
            quality_checks = {k: v for k, v in _checks(alone).items() if k[1] != GAP_CHECK}
            assert quality_checks == {k: v for k, v in checks.items() if k[0] == key and k[1] != GAP_CHECK}
            mine = partition_metadata(alone, RECONCILE_ASSET)[key]
            counts = [f for f in mine if f.endswith(("platform_count", "warehouse_count"))]
            assert {f: mine[f] for f in counts} == {f: meta[key][f] for f in counts}
        warehouse.dispose()
