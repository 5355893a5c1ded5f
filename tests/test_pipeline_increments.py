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
    fetch_window,
    in_windows,
    increment_keys,
    partition_metadata,
    query,
    run,
    serial_loads,
    sim_settings,
    snapshot,
    top_time,
    truth_rows,
    warehouse_rows,
)

from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.top.pages import TRADES
from ordersync_pipeline.warehouse import Warehouse

SHOPS = ["shop-1", "shop-2"]
# Yesterday 19:00-20:00 China time: a busy evening hour, closed long ago in host time.
EVENING = increment_keys(ANCHOR + timedelta(hours=19), 4)


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
    settings = sim_settings(sim, home, any_warehouse_url)
    calls_before = sim.gateway.calls
    # The warehouse is brand new (not migrated): the first materialisation has to cope.
    result = run(settings, "increment", shops=SHOPS, time_keys=EVENING)
    assert result.success

    per_partition = {(shop, key): _truth(sim, shop, [key]) for shop in SHOPS for key in EVENING}
    for shop in SHOPS:
        want = _truth(sim, shop, EVENING)
        assert len(want) > 20
        assert warehouse_rows(any_warehouse_url, shop) == want

    # Each partition carries its own figures, not the run's totals.
    pages, trades_meta = partition_metadata(result, "raw_trade_pages"), partition_metadata(result, "trades")
    orders_meta = partition_metadata(result, "trade_orders")
    assert sorted(pages) == sorted(f"{shop}|{key}" for shop in SHOPS for key in EVENING)
    for (shop, key), rows in per_partition.items():
        part = f"{shop}|{key}"
        start, end = fetch_window(key)
        assert pages[part]["trades_fetched"] == len(rows)
        # The evening's contiguous partitions are one coalesced API window per shop; its calls are
        # spread over them (sums below stay exact).
        assert pages[part]["api_errors"] == 0 and pages[part]["fetched_with_partitions"] == len(EVENING)
        assert (pages[part]["window_start"], pages[part]["window_end"]) == (start.isoformat(), end.isoformat())
        assert trades_meta[part]["rows_upserted"] == len(rows)
        assert orders_meta[part]["rows_upserted"] == sum(len(row[3]) for row in rows.values())
        assert trades_meta[part]["quarantined"] == 0
    assert sum(p["api_calls"] for p in pages.values()) == sim.gateway.calls - calls_before

    # Every HTTP attempt is in the ledger, attributed to this run and shop.
    ledger = query(any_warehouse_url, "SELECT shop_id, method, outcome, COUNT(*) FROM api_calls "
                   "WHERE run_id = :run GROUP BY shop_id, method, outcome ORDER BY shop_id",
                   run=result.run_id)
    assert [(s, m, o) for s, m, o, _ in ledger] == [
        (shop, "taobao.trades.sold.increment.get", "ok") for shop in SHOPS]
    assert sum(n for *_, n in ledger) == sum(p["api_calls"] for p in pages.values())

    # Each partition's fetch window [start - 5 min, end) is recorded complete with its counts.
    warehouse = Warehouse(any_warehouse_url)
    for shop in SHOPS:
        windows = warehouse.completed_windows(shop, "trades", "increment")
        assert [w.partition_key for w in windows] == EVENING
        for window, key in zip(windows, EVENING):
            start, end = fetch_window(key)
            assert (window.window_start, window.window_end) == (start, end)
            assert window.records == len(per_partition[(shop, key)])
            assert window.run_id == result.run_id
    warehouse.dispose()


def test_re_running_a_partition_changes_nothing(sim: Simulator, home: Path, pg_url: str) -> None:
    settings = serial_loads(sim_settings(sim, home, pg_url))
    first = run(settings, "increment", shops=SHOPS, time_keys=EVENING[:2])
    assert first.success
    before = snapshot(pg_url)
    windows_sql = ("SELECT shop_id, stream, kind, window_start, window_end, pages, records "
                   "FROM sync_windows ORDER BY shop_id, window_start")
    windows_before = query(pg_url, windows_sql)
    assert before["trades"] and before["trade_orders"]

    again = run(settings, "increment", shops=SHOPS, time_keys=EVENING[:2])
    assert again.success
    assert snapshot(pg_url) == before
    assert query(pg_url, windows_sql) == windows_before
    # The same rows were sent again; the monotonic upsert left every one as it was.
    assert partition_metadata(again, "trades") .keys() == partition_metadata(first, "trades").keys()
    assert ({k: v["rows_upserted"] for k, v in partition_metadata(again, "trades").items()}
            == {k: v["rows_upserted"] for k, v in partition_metadata(first, "trades").items()})


def test_from_lake_rebuilds_the_same_rows_with_zero_api_calls(
        sim: Simulator, home: Path, pg_url: str, sqlite_url: str) -> None:
    assert run(sim_settings(sim, home, pg_url), "increment", shops=SHOPS, time_keys=EVENING).success

    calls = sim.gateway.calls
    rebuilt = run(sim_settings(sim, home, sqlite_url), "increment", shops=SHOPS, time_keys=EVENING,
                  from_lake=True)
    assert rebuilt.success
    assert sim.gateway.calls == calls
    assert query(sqlite_url, "SELECT COUNT(*) FROM api_calls") == [(0,)]
    assert all(meta["from_lake"] is True for meta in partition_metadata(rebuilt, "raw_trade_pages").values())
    assert warehouse_rows(sqlite_url) == warehouse_rows(pg_url)
    assert len(Warehouse(sqlite_url).completed_windows("shop-2", "trades", "increment")) == len(EVENING)


def test_out_of_order_pages_converge_on_the_newest_state(home: Path, pg_url: str) -> None:
    # A world whose clock stands at yesterday 04:10: the night's partitions are fetched then, the rest
    # of the day once the clock has moved on to 23:50, and then the night's (now stale) pages are
    # replayed from the lake, older pages arriving after newer ones.
    with start_simulator(SimulatorSettings(seed=33, shops=1, orders_per_day=300, history_days=2,
                                           clock="stepped",
                                           start_at=ANCHOR + timedelta(hours=4, minutes=10))) as sim:
        settings = serial_loads(sim_settings(sim, home, pg_url, world_clock=True))
        night = increment_keys(ANCHOR, 16)  # 00:00 .. 04:00
        assert run(settings, "increment", shops=["shop-1"], time_keys=night).success
        lake = PageLake(home / "lake")
        stale = {t["tid"]: top_time(t["modified"]) for key in night for page in lake.read_partition(
            shop_id="shop-1", stream="trades.increment", partition_key=key, shape=TRADES) for t in page.items}
        assert len(stale) > 50

        sim.clock.advance(19 * 3600 + 40 * 60)  # 23:50: some of those trades shipped or finished since
        day = increment_keys(ANCHOR + timedelta(hours=4), 78)  # 04:00 .. 23:45
        assert run(settings, "increment", shops=["shop-1"], time_keys=day).success
        newest = snapshot(pg_url)

        assert run(settings, "increment", shops=["shop-1"], time_keys=night, from_lake=True).success
        assert snapshot(pg_url) == newest

        stored = warehouse_rows(pg_url, "shop-1")
        moved_on = [tid for tid in stale if stored[tid][1] > stale[tid]]
        assert len(moved_on) >= 5, "the replayed pages must really be older than the stored rows"
        truth = truth_rows(sim.world.trades("shop-1"))
        last_end = fetch_window(day[-1])[1]
        for tid in stale:
            if truth[tid][1] <= last_end:
                assert stored[tid] == truth[tid], tid


def test_trade_details_are_cached_in_the_same_run_for_every_partition(
        sim: Simulator, home: Path, sqlite_url: str) -> None:
    # The details step used to be skipped in every run ("skipped dependencies: increment_sync.trades"):
    # the sync step reports its partitions one by one and yields no output for Dagster to pass along.
    settings = sim_settings(sim, home, sqlite_url, sync={"detail_reasons": ["incomplete", "presale",
                                                                            "buyer_message"]})
    result = run(settings, "increment", shops=SHOPS, time_keys=EVENING)
    assert result.success
    details = partition_metadata(result, "trade_details")
    assert sorted(details) == sorted(f"{shop}|{key}" for shop in SHOPS for key in EVENING)
    want = {t["tid"] for shop in SHOPS
            for t in in_windows(sim.world.trades(shop), [fetch_window(k) for k in EVENING])
            if t.get("type") == "step" or t.get("has_buyer_message")}
    assert want, "the evening holds presale trades or buyer messages"
    stored = {tid for (tid,) in query(sqlite_url, "SELECT tid FROM trade_details")}
    assert stored == want
    assert sum(d["fetched"] for d in details.values()) == len(want)


def test_trade_details_take_their_candidates_from_the_load_not_a_second_lake_read(
        sim: Simulator, home: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The follower used to read every trades partition from the lake again after its load had read it.
    settings = sim_settings(sim, home, sqlite_url, sync={"detail_reasons": ["presale", "buyer_message"]})
    reads: list[tuple[str, str]] = []
    real_read = PageLake.read_partition

    def counting_read(self: PageLake, **kwargs: Any) -> Any:
        reads.append((kwargs["stream"], f"{kwargs['shop_id']}|{kwargs['partition_key']}"))
        return real_read(self, **kwargs)

    monkeypatch.setattr(PageLake, "read_partition", counting_read)
    result = run(settings, "increment", shops=SHOPS, time_keys=EVENING)
    assert result.success
    trade_reads = sorted(key for stream, key in reads if stream == "trades.increment")
    assert trade_reads == sorted(f"{shop}|{key}" for shop in SHOPS for key in EVENING)  # once each
    details = partition_metadata(result, "trade_details")
    assert sorted(details) == sorted(f"{shop}|{key}" for shop in SHOPS for key in EVENING)
    want = {t["tid"] for shop in SHOPS
            for t in in_windows(sim.world.trades(shop), [fetch_window(k) for k in EVENING])
            if t.get("type") == "step" or t.get("has_buyer_message")}
    assert {tid for (tid,) in query(sqlite_url, "SELECT tid FROM trade_details")} == want
