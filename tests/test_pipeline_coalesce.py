"""Coalesced catch-up windows through the real Dagster path against a frozen (stepped) simulator world:
fetching a run's contiguous increment partitions as one API window leaves the warehouse, sync_windows and
every partition's materialization and check exactly as fetching each alone does, with far fewer calls; the
lake rebuild of a coalesced partition makes no call; a partition whose load fails mid-run loses nothing
(the others complete, it is retried alone)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from pipeline_support import (
    ANCHOR,
    check_evaluations,
    fetch_window,
    increment_keys,
    partition_metadata,
    query,
    run,
    serial_loads,
    sim_settings,
    snapshot,
)

import ordersync_pipeline.sync.runner as runner_module
from ordersync_pipeline.settings import Settings
from ordersync_pipeline.sync.lake import PartitionCorrupt
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.runner import PartitionTask, coalesce
from ordersync_pipeline.sync.streams import stream
from ordersync_pipeline.sync.windows import Window
from ordersync_pipeline.warehouse import Warehouse

SHOPS = ["shop-1", "shop-2"]
KEYS = increment_keys(ANCHOR + timedelta(hours=18), 12)   # a 3-hour catch-up of 15-minute partitions
WINDOWS_SQL = ("SELECT shop_id, stream, kind, partition_key, window_start, window_end FROM sync_windows "
               "ORDER BY shop_id, partition_key")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=33, shops=2, orders_per_day=600, history_days=3,
                                           clock="stepped")) as s:
        yield s


def _settings(sim: Simulator, home: Path, *, coalesce_minutes: int) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    settings = serial_loads(sim_settings(sim, home, f"sqlite:///{home / 'warehouse.db'}"))
    config = settings.config.model_copy(deep=True)
    config.sync.coalesce_minutes = coalesce_minutes
    return dataclasses.replace(settings, config=config)


def _calls(settings: Settings) -> int:
    return int(query(settings.warehouse_url, "SELECT COUNT(*) FROM api_calls")[0][0])


def _materialized(result: dg.ExecuteInProcessResult) -> dict[str, list[str]]:
    return {asset: sorted(partition_metadata(result, asset)) for asset in ("raw_trade_pages", "trades", "trade_orders")}


def test_coalesced_fetching_equals_separate_fetching(sim: Simulator, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERSYNC_HOME", str(tmp_path))
    apart = _settings(sim, tmp_path / "apart", coalesce_minutes=0)
    together = _settings(sim, tmp_path / "together", coalesce_minutes=24 * 60)
    one_by_one = run(apart, "increment", shops=SHOPS, time_keys=KEYS)
    coalesced = run(together, "increment", shops=SHOPS, time_keys=KEYS)
    assert one_by_one.success and coalesced.success

    assert snapshot(together.warehouse_url) == snapshot(apart.warehouse_url)
    assert len(snapshot(together.warehouse_url)["trades"]) > 50
    windows = query(together.warehouse_url, WINDOWS_SQL)
    assert windows == query(apart.warehouse_url, WINDOWS_SQL)
    assert [(w[0], w[3]) for w in windows] == [(shop, key) for shop in SHOPS for key in KEYS]
    warehouse = Warehouse(together.warehouse_url)
    for shop in SHOPS:  # each partition's own window, as if fetched alone
        recorded = warehouse.completed_windows(shop, "trades", "increment")
        assert [(w.window_start, w.window_end) for w in recorded] == [fetch_window(key) for key in KEYS]
    warehouse.dispose()
    assert _materialized(coalesced) == _materialized(one_by_one)
    for asset in ("trades", "trade_orders"):
        assert check_evaluations(coalesced, asset) == check_evaluations(one_by_one, asset)
        rows = {k: m["rows_upserted"] for k, m in partition_metadata(coalesced, asset).items()}
        assert rows == {k: m["rows_upserted"] for k, m in partition_metadata(one_by_one, asset).items()}

    separate_calls, coalesced_calls = _calls(apart), _calls(together)
    assert separate_calls >= len(SHOPS) * len(KEYS)
    assert coalesced_calls * 2 < separate_calls, (coalesced_calls, separate_calls)
    pages = partition_metadata(coalesced, "raw_trade_pages")
    assert sum(m["api_calls"] for m in pages.values()) == coalesced_calls
    assert {m["fetched_with_partitions"] for m in pages.values()} == {len(KEYS)}

    # Rebuilding a coalesced partition reads its own records from the shared pages: no call.
    before = snapshot(together.warehouse_url)
    engine = sa.create_engine(together.warehouse_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM trade_orders"))
        conn.execute(sa.text("DELETE FROM trades"))
    engine.dispose()
    rebuilt = run(together, "increment", shops=SHOPS, time_keys=KEYS, from_lake=True)
    assert rebuilt.success and _calls(together) == coalesced_calls
    assert snapshot(together.warehouse_url) == before
    assert all(m["from_lake"] for m in partition_metadata(rebuilt, "raw_trade_pages").values())


def test_a_partition_failing_mid_run_loses_nothing(sim: Simulator, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERSYNC_HOME", str(tmp_path))
    reference = _settings(sim, tmp_path / "reference", coalesce_minutes=0)
    assert run(reference, "increment", shops=SHOPS[:1], time_keys=KEYS).success
    settings = _settings(sim, tmp_path / "failing", coalesce_minutes=24 * 60)
    broken = KEYS[5]
    real_load = runner_module.load_partition

    def load(**kwargs: Any) -> Any:
        if kwargs["partition_key"] == broken:
            raise PartitionCorrupt("stored page does not parse")  # not transient: fails at once
        return real_load(**kwargs)

    monkeypatch.setattr(runner_module, "load_partition", load)
    failed = run(settings, "increment", shops=SHOPS[:1], time_keys=KEYS, raise_on_error=False)
    assert not failed.success
    done = sorted(partition_metadata(failed, "trades"))
    assert done == [f"shop-1|{key}" for key in KEYS if key != broken]  # the others complete
    recorded = [row[3] for row in query(settings.warehouse_url, WINDOWS_SQL)]
    assert recorded == [key for key in KEYS if key != broken]       # the failed one is not marked

    monkeypatch.setattr(runner_module, "load_partition", real_load)
    calls = _calls(settings)
    retried = run(settings, "increment", shops=SHOPS[:1], time_keys=[broken], from_lake=True)
    assert retried.success and _calls(settings) == calls            # its pages were kept: no call
    assert snapshot(settings.warehouse_url) == snapshot(reference.warehouse_url)
    assert query(settings.warehouse_url, WINDOWS_SQL) == query(reference.warehouse_url, WINDOWS_SQL)


def _task(shop: str, key: str) -> PartitionTask:
    part = fetch_window(key)
    return PartitionTask(stream=stream("trades"), kind="increment", shop_id=shop, partition_key=key,
                         window=Window(*part))


def test_coalesce_groups_contiguous_windows_of_one_shop_up_to_the_span() -> None:
    day = increment_keys(ANCHOR, 100)  # more than a day of 15-minute partitions
    tasks = [_task("a", k) for k in day[:3]] + [_task("b", k) for k in day[:2]] + [_task("a", day[5])]
    groups = coalesce(tasks, timedelta(days=1))
    assert [[(t.shop_id, t.partition_key) for t in g] for g in groups] == [
        [("a", day[0]), ("a", day[1]), ("a", day[2])], [("b", day[0]), ("b", day[1])], [("a", day[5])]]
    assert all(len(g) == 1 for g in coalesce(tasks, timedelta(0)))
    long = coalesce([_task("a", k) for k in day], timedelta(days=1))
    assert [len(g) for g in long] == [95, 5]  # 95 partitions + the 5-minute overlap fill one day
    for group in long:
        assert group[-1].window.end - group[0].window.start <= timedelta(days=1)
