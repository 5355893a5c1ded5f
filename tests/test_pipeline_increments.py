"""Increment partitions materialised through Dagster against the simulator over loopback HTTP: rows equal
to ground truth on every backend, metadata, the call ledger, completed windows, idempotent re-runs,
out-of-order pages converging, and rebuilding from the lake without a single API call."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import (
    ANCHOR,
    INCREMENT_ASSETS,
    fetch_window,
    in_windows,
    increment_keys,
    instance_with_shops,
    materialize,
    metadata,
    query,
    resources,
    serial_loads,
    snapshot,
    top_time,
    truth_rows,
    warehouse_rows,
    write_sim_config,
)

from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.top.pages import TRADES
from ordersync_pipeline.warehouse import Warehouse

SHOPS = ["shop-1", "shop-2"]
# Yesterday 19:00-20:00 China time: a busy evening hour, closed long ago in host time.
EVENING = increment_keys(ANCHOR + timedelta(hours=19), 4)
FROM_LAKE = {"ops": {"raw_trade_pages": {"config": {"from_lake": True}}}}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    # A frozen (stepped) world clock: ground truth cannot move between the run and the comparison.
    with start_simulator(SimulatorSettings(seed=21, shops=2, orders_per_day=250, history_days=3,
                                           clock="stepped")) as s:
        yield s


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ORDERSYNC_HOME", str(tmp_path))  # the local rate budget lives here
    return tmp_path


def _truth(sim: Simulator, shop: str, keys: list[str]) -> dict[int, tuple[Any, ...]]:
    return truth_rows(in_windows(sim.world.trades(shop), [fetch_window(k) for k in keys]))


def test_increment_partitions_land_ground_truth_with_metadata_ledger_and_windows(
        sim: Simulator, home: Path, any_warehouse_url: str) -> None:
    config = write_sim_config(sim, home / "ordersync.yaml")
    calls_before = sim.gateway.calls
    # The warehouse is brand new (not migrated): the first materialisation has to cope.
    result = materialize(INCREMENT_ASSETS, shops=SHOPS, time_keys=EVENING,
                         instance=instance_with_shops(SHOPS),
                         resources=resources(config, any_warehouse_url, home / "lake"))
    assert result.success

    per_partition = {(shop, key): _truth(sim, shop, [key]) for shop in SHOPS for key in EVENING}
    for shop in SHOPS:
        want = _truth(sim, shop, EVENING)
        assert len(want) > 20
        assert warehouse_rows(any_warehouse_url, shop) == want
    fetched = sum(len(rows) for rows in per_partition.values())
    lines = sum(len(row[3]) for rows in per_partition.values() for row in rows.values())

    pages = metadata(result, "raw_trade_pages")
    assert pages["partitions"] == len(SHOPS) * len(EVENING)
    assert pages["trades_fetched"] == fetched
    assert pages["api_calls"] == sim.gateway.calls - calls_before >= len(SHOPS) * len(EVENING)
    assert pages["api_errors"] == 0 and pages["seconds"] > 0
    trades_meta, orders_meta = metadata(result, "trades"), metadata(result, "trade_orders")
    assert trades_meta["rows_upserted"] == fetched
    assert orders_meta["rows_upserted"] == lines
    assert trades_meta["quarantined"] == 0
    assert trades_meta["seconds"] >= 0 and "trades_per_second" in trades_meta

    # Every HTTP attempt is in the ledger, attributed to this run and shop.
    ledger = query(any_warehouse_url, "SELECT shop_id, method, outcome, COUNT(*) FROM api_calls "
                   "WHERE run_id = :run GROUP BY shop_id, method, outcome ORDER BY shop_id",
                   run=result.run_id)
    assert [(s, m, o) for s, m, o, _ in ledger] == [
        (shop, "taobao.trades.sold.increment.get", "ok") for shop in SHOPS]
    assert sum(n for *_, n in ledger) == pages["api_calls"]

    # Each partition's fetch window [start - 5 min, end) is recorded complete with its counts.
    warehouse = Warehouse(any_warehouse_url)
    for shop in SHOPS:
        windows = warehouse.completed_windows(shop, "increment")
        assert [w.partition_key for w in windows] == EVENING
        for window, key in zip(windows, EVENING):
            start, end = fetch_window(key)
            assert (window.window_start, window.window_end) == (start, end)
            assert window.trades == len(per_partition[(shop, key)])
            assert window.run_id == result.run_id
    warehouse.dispose()


def test_re_running_a_partition_changes_nothing(sim: Simulator, home: Path, pg_url: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    serial_loads(monkeypatch)
    config = write_sim_config(sim, home / "ordersync.yaml")
    instance = instance_with_shops(SHOPS)
    res = resources(config, pg_url, home / "lake")
    first = materialize(INCREMENT_ASSETS, shops=SHOPS, time_keys=EVENING[:2], instance=instance,
                        resources=res)
    assert first.success
    before = snapshot(pg_url)
    windows_before = query(pg_url, "SELECT shop_id, stream, window_start, window_end, pages, trades "
                           "FROM sync_windows ORDER BY shop_id, window_start")
    assert before["trades"] and before["trade_orders"]

    again = materialize(INCREMENT_ASSETS, shops=SHOPS, time_keys=EVENING[:2], instance=instance,
                        resources=res)
    assert again.success
    assert snapshot(pg_url) == before
    assert query(pg_url, "SELECT shop_id, stream, window_start, window_end, pages, trades "
                 "FROM sync_windows ORDER BY shop_id, window_start") == windows_before
    # The same rows were sent again; the monotonic upsert left every one as it was.
    assert metadata(again, "trades")["rows_upserted"] == metadata(first, "trades")["rows_upserted"]


def test_from_lake_rebuilds_the_same_rows_with_zero_api_calls(
        sim: Simulator, home: Path, pg_url: str, sqlite_url: str) -> None:
    config = write_sim_config(sim, home / "ordersync.yaml")
    instance = instance_with_shops(SHOPS)
    assert materialize(INCREMENT_ASSETS, shops=SHOPS, time_keys=EVENING, instance=instance,
                       resources=resources(config, pg_url, home / "lake")).success

    calls = sim.gateway.calls
    rebuilt = materialize(INCREMENT_ASSETS, shops=SHOPS, time_keys=EVENING, instance=instance,
                          resources=resources(config, sqlite_url, home / "lake"), run_config=FROM_LAKE)
    assert rebuilt.success
    assert sim.gateway.calls == calls
    assert query(sqlite_url, "SELECT COUNT(*) FROM api_calls") == [(0,)]
    assert metadata(rebuilt, "raw_trade_pages")["from_lake"] is True
    assert warehouse_rows(sqlite_url) == warehouse_rows(pg_url)
    assert len(Warehouse(sqlite_url).completed_windows("shop-2", "increment")) == len(EVENING)


def test_out_of_order_pages_converge_on_the_newest_state(
        home: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    serial_loads(monkeypatch)
    # A world whose clock stands at yesterday 04:10: the night's partitions are fetched then, the rest
    # of the day once the clock has moved on to 23:50, and then the night's (now stale) pages are
    # replayed from the lake, older pages arriving after newer ones.
    with start_simulator(SimulatorSettings(seed=33, shops=1, orders_per_day=300, history_days=2,
                                           clock="stepped",
                                           start_at=ANCHOR + timedelta(hours=4, minutes=10))) as sim:
        config = write_sim_config(sim, home / "ordersync.yaml")
        instance = instance_with_shops(["shop-1"])
        res = resources(config, pg_url, home / "lake")
        night = increment_keys(ANCHOR, 16)  # 00:00 .. 04:00
        assert materialize(INCREMENT_ASSETS, shops=["shop-1"], time_keys=night, instance=instance,
                           resources=res).success
        lake = PageLake(home / "lake")
        stale = {t["tid"]: top_time(t["modified"]) for key in night for page in lake.read_partition(
            shop_id="shop-1", stream="increment", partition_key=key, shape=TRADES) for t in page.items}
        assert len(stale) > 50

        sim.clock.advance(19 * 3600 + 40 * 60)  # 23:50: some of those trades shipped or finished since
        day = increment_keys(ANCHOR + timedelta(hours=4), 78)  # 04:00 .. 23:45
        assert materialize(INCREMENT_ASSETS, shops=["shop-1"], time_keys=day, instance=instance,
                           resources=res).success
        newest = snapshot(pg_url)

        assert materialize(INCREMENT_ASSETS, shops=["shop-1"], time_keys=night, instance=instance,
                           resources=res, run_config=FROM_LAKE).success
        assert snapshot(pg_url) == newest

        stored = warehouse_rows(pg_url, "shop-1")
        moved_on = [tid for tid in stale if stored[tid][1] > stale[tid]]
        assert len(moved_on) >= 5, "the replayed pages must really be older than the stored rows"
        truth = truth_rows(sim.world.trades("shop-1"))
        last_end = fetch_window(day[-1])[1]
        for tid in stale:
            if truth[tid][1] <= last_end:
                assert stored[tid] == truth[tid], tid
