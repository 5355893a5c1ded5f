"""Every stream of the registry (trades, refunds) through the real Dagster definitions against the
simulator: ground truth on every backend (MariaDB and SQLite parity), re-runs change nothing, a rebuild
from the lake equals the fetch, historical plus increment cover the horizon, out-of-order pages converge,
and the refund state reaches trade_orders.refund_status."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pipeline_support import (
    ANCHOR,
    HISTORY_DAYS,
    STREAM_TABLE_KEYS,
    fetch_window,
    history_keys,
    in_windows,
    increment_keys,
    partition_metadata,
    query,
    run,
    serial_loads,
    sim_settings,
    snapshot,
    stored_of,
    top_time,
    truth_of,
    world_records,
)

from ordersync_pipeline.simulator import SimulatorSettings, start_simulator
from ordersync_pipeline.sync.streams import STREAMS, stream_names
from ordersync_pipeline.warehouse import Warehouse

SHOPS = ["shop-1", "shop-2"]
NAMES = stream_names()
# Yesterday 08:00-14:00 China time: busy enough for refunds in every shop.
DAYTIME = increment_keys(ANCHOR + timedelta(hours=8), 24)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ORDERSYNC_HOME", str(tmp_path))  # the local rate budget lives here
    return tmp_path


def test_the_registry_holds_trades_and_refunds() -> None:
    assert NAMES == ["trades", "refunds"]
    assert all(set(STREAM_TABLE_KEYS[s.name]) >= {(s.tables[0], s.record_key)} for s in STREAMS)


def test_every_stream_lands_ground_truth_and_re_runs_change_nothing_on_every_backend(
        home: Path, any_warehouse_url: str, sqlite_url: str) -> None:
    with start_simulator(SimulatorSettings(seed=21, shops=2, orders_per_day=600, history_days=3,
                                           clock="stepped")) as sim:
        settings = serial_loads(sim_settings(sim, home, any_warehouse_url))
        # One run syncs both streams for the window (what the schedule launches).
        result = run(settings, "increment", shops=SHOPS, time_keys=DAYTIME, streams=NAMES)
        assert result.success
        windows = [fetch_window(k) for k in DAYTIME]
        for name in NAMES:
            for shop in SHOPS:
                want = truth_of(name, in_windows(world_records(sim, name, shop), windows))
                assert len(want) >= (5 if name == "refunds" else 100), (name, shop)
                assert stored_of(name, any_warehouse_url, shop) == want, (name, shop)
            pages = partition_metadata(result, {"trades": "raw_trade_pages", "refunds": "raw_refund_pages"}[name])
            assert sorted(pages) == sorted(f"{s}|{k}" for s in SHOPS for k in DAYTIME)
        methods = query(any_warehouse_url, "SELECT DISTINCT method FROM api_calls ORDER BY method")
        assert methods == [("taobao.refunds.receive.get",), ("taobao.trades.sold.increment.get",)]
        warehouse = Warehouse(any_warehouse_url)
        for name in NAMES:
            assert [w.partition_key for w in warehouse.completed_windows("shop-1", name, "increment")] == DAYTIME
        warehouse.dispose()

        tables = [pair for name in NAMES for pair in STREAM_TABLE_KEYS[name]]
        before = snapshot(any_warehouse_url, tables)
        assert run(settings, "increment", shops=SHOPS, time_keys=DAYTIME, streams=NAMES).success
        assert snapshot(any_warehouse_url, tables) == before

        # The lake rebuilds the same rows elsewhere with no API call (SQLite parity).
        calls = sim.gateway.calls
        if not any_warehouse_url.startswith("sqlite"):
            rebuilt = sim_settings(sim, home, sqlite_url)
            assert run(rebuilt, "increment", shops=SHOPS, time_keys=DAYTIME, streams=NAMES, from_lake=True).success
            assert sim.gateway.calls == calls
            for name in NAMES:
                assert stored_of(name, sqlite_url) == stored_of(name, any_warehouse_url)


def test_history_and_increments_cover_the_horizon_and_stale_pages_converge(home: Path, pg_url: str) -> None:
    # The world starts at yesterday 06:00: history (by created day for trades, modified day for refunds)
    # and the night's increments are fetched then; after twelve hours the day's increments; then every
    # page fetched at 06:00 is replayed from the lake, older than what is stored.
    with start_simulator(SimulatorSettings(seed=33, shops=1, orders_per_day=600, history_days=HISTORY_DAYS,
                                           clock="stepped", start_at=ANCHOR + timedelta(hours=6))) as sim:
        settings = serial_loads(sim_settings(sim, home, pg_url, world_clock=True))
        night = increment_keys(ANCHOR, 23)                     # 00:00 .. 05:45
        assert run(settings, "historical", shops=["shop-1"], time_keys=history_keys(), streams=NAMES).success
        assert run(settings, "increment", shops=["shop-1"], time_keys=night, streams=NAMES).success
        early = stored_of("refunds", pg_url)

        sim.clock.advance(12 * 3600)                           # 18:00
        day = increment_keys(ANCHOR + timedelta(hours=5, minutes=45), 48)   # 05:45 .. 17:45
        assert run(settings, "increment", shops=["shop-1"], time_keys=day, streams=NAMES).success
        tables = [pair for name in NAMES for pair in STREAM_TABLE_KEYS[name]]
        newest = snapshot(pg_url, tables)
        assert run(settings, "historical", shops=["shop-1"], time_keys=history_keys(), streams=NAMES,
                   from_lake=True).success
        assert run(settings, "increment", shops=["shop-1"], time_keys=night, streams=NAMES, from_lake=True).success
        assert snapshot(pg_url, tables) == newest

        last_end = fetch_window(day[-1])[1]
        horizon_start = ANCHOR - timedelta(days=HISTORY_DAYS)
        for name in NAMES:
            stored = stored_of(name, pg_url, "shop-1")
            field = "created" if name == "trades" else "modified"
            truth = {k: v for k, v in truth_of(name, (
                r for r in world_records(sim, name, "shop-1")
                if horizon_start <= top_time(r[field]) and top_time(r["modified"]) <= last_end)).items()}
            assert len(truth) >= (20 if name == "refunds" else 500), name
            assert {k: stored.get(k) for k in truth} == truth, name
        moved_on = [k for k, v in early.items() if stored_of("refunds", pg_url)[k][3] > v[3]]
        assert moved_on, "some refunds must have changed since the replayed pages were fetched"

        # The line of each refund holds the refund's newest state.
        lines = dict(query(pg_url, "SELECT o.oid, o.refund_status FROM trade_orders o JOIN refunds r "
                                   "ON r.oid = o.oid"))
        statuses = {oid: status for oid, status in query(pg_url, "SELECT oid, status FROM refunds")}
        assert lines and all(lines[oid] == statuses[oid] for oid in lines)
