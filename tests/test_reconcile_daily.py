"""Daily reconciliation against the simulator over loopback on every backend: the count, the cheap listing,
the diff, the targeted re-fetch through the same upserts, a gap that survives, and the rules on which days."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from ordersync_pipeline.reconcile.daily import DAY_CHECKS, Diff, day_checks, diff, reconcile_day
from ordersync_pipeline.reconcile.gaps import synced_until
from ordersync_pipeline.reconcile.load import load_pages
from ordersync_pipeline.reconcile.records import passed_days, read_days, save_day
from ordersync_pipeline.simulator import Simulator, SimulatorSettings, start_simulator
from ordersync_pipeline.sync.streams import TRADE_FIELDS, stream
from ordersync_pipeline.sync.windows import Timeline, day_window
from ordersync_pipeline.timeutil import SHANGHAI, parse_top_time
from ordersync_pipeline.top import paging
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.recorder import ListRecorder
from ordersync_pipeline.top.retry import RetryPolicy
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import trades

DAY = date(2026, 11, 24)
NOW = datetime(2026, 11, 25, 2, 0, tzinfo=SHANGHAI)    # the morning after
TRADES = stream("trades")
CHECK = DAY_CHECKS["trades"]
T0 = datetime(2020, 1, 1, tzinfo=timezone.utc)


def _at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def test_diff_names_missing_stale_and_extra_and_accepts_newer() -> None:
    listed = {1: _at(10), 2: _at(10), 3: _at(10), 4: _at(10)}
    stored = {2: _at(5), 3: _at(10), 4: _at(20)}          # 4 changed after it was listed: fine
    stored_day = {2: _at(5), 3: _at(10), 4: _at(20), 9: _at(1)}
    assert diff(listed, stored, stored_day) == Diff(missing=[1], stale=[2], extra=[9])
    assert diff({}, {}, {}).empty and not diff({}, {}, {}).gap
    assert Diff(missing=[1], stale=[2], extra=[9]).keys == [1, 2, 9]


def test_changes_after_the_synced_range_are_pending_not_gaps() -> None:
    listed = {1: _at(10), 2: _at(30), 3: _at(30), 4: _at(19)}
    stored = {3: _at(5), 4: _at(5)}
    found = diff(listed, stored, {3: _at(5), 4: _at(5)}, synced_until=_at(20))
    assert found == Diff(missing=[1], stale=[4], extra=[], unseen=[2], pending=[3])
    assert found.gap and found.keys == [1, 4, 2]       # an absent record is fetched whatever its time
    late = diff({2: _at(30), 3: _at(30)}, {3: _at(5)}, {3: _at(5)}, synced_until=_at(20))
    assert not late.gap and late.keys == [2]


def test_synced_until_is_the_end_of_the_unbroken_run_of_complete_windows(tmp_path: Path) -> None:
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    warehouse.migrate()
    anchor = datetime(2026, 11, 24, tzinfo=SHANGHAI)
    timeline = Timeline(anchor=anchor, history_days=2, increment_minutes=15)
    now = anchor + timedelta(hours=2)
    assert synced_until(warehouse, timeline, stream="trades", shop_id="s", since=anchor, now=now) == anchor
    keys = timeline.closed_increment_keys(now)
    for key in keys[:3] + keys[4:]:                  # 00:45-01:00 never completed
        window = timeline.increment_window(key)
        warehouse.mark_window_complete(shop_id="s", stream="trades", kind="increment", window_start=window.start,
                                       window_end=window.end, partition_key=key, pages=1, records=0, run_id=None)
    assert synced_until(warehouse, timeline, stream="trades", shop_id="s", since=anchor - timedelta(days=1),
                        now=now) == anchor + timedelta(minutes=45)
    assert synced_until(warehouse, timeline, stream="trades", shop_id="s", since=anchor + timedelta(hours=1),
                        now=now) == timeline.increment_partition(keys[-1]).end
    assert synced_until(warehouse, timeline, stream="trades", shop_id="other", since=anchor,
                        now=now) == anchor


def test_the_registered_streams_with_a_day_check_are_reconciled() -> None:
    assert [s.name for s, _ in day_checks()][0] == "trades"
    assert CHECK.day_field == "created" and CHECK.api.method == "taobao.trades.sold.get"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with start_simulator(SimulatorSettings(seed=13, shops=2, orders_per_day=300, history_days=3,
                                           clock="stepped", start_at=NOW)) as s:
        yield s


def _client(sim: Simulator, recorder: ListRecorder | None = None) -> TopClient:
    return TopClient(gateway=sim.gateway_url, app_key=sim.app_key, app_secret=sim.app_secret,
                     retry=RetryPolicy(max_attempts=3, base_delay_s=0.01), recorder=recorder)


def _load_day(sim: Simulator, warehouse: Warehouse, shop: str) -> None:
    """The day's trades as the historical path loads them (sold.get by created day)."""
    window = day_window(DAY)
    with _client(sim) as client:
        pages = paging.iter_sold_pages(client, shop_id=shop, session=sim.shops[int(shop[-1]) - 1].session,
                                       start_created=window.start, end_created=window.end - timedelta(seconds=1),
                                       fields=TRADE_FIELDS)
        load_pages(warehouse, TRADES, shop, pages, source="sold", run_id=None)


def _truth(sim: Simulator, shop: str) -> dict[int, datetime]:
    window = day_window(DAY)
    return {int(t["tid"]): parse_top_time(t["modified"]) for t in sim.world.trades(shop)
            if window.start <= parse_top_time(t["created"]) < window.end}


def _reconcile(sim: Simulator, warehouse: Warehouse, shop: str = "shop-1", *, always_list: bool = False,
               recorder: ListRecorder | None = None):  # type: ignore[no-untyped-def]
    with _client(sim, recorder) as client:
        return reconcile_day(client=client, warehouse=warehouse, stream=TRADES, check=CHECK, shop_id=shop,
                             session=sim.shops[int(shop[-1]) - 1].session, day=DAY, run_id="run-1",
                             always_list=always_list, now=NOW)


def test_a_complete_day_costs_one_call_and_a_gap_is_repaired_by_targeted_refetch(
        sim: Simulator, wh: Warehouse) -> None:
    _load_day(sim, wh, "shop-1")
    truth = _truth(sim, "shop-1")
    assert len(truth) > 100

    calls = ListRecorder()
    outcome = _reconcile(sim, wh, recorder=calls)
    assert outcome.result.status == "ok" and outcome.remaining.empty
    assert outcome.result.platform_count == outcome.result.warehouse_count == len(truth)
    assert [c.method for c in calls.calls] == ["taobao.trades.sold.get"]  # the count alone

    # Three trades lost, two left at an older version.
    gone = sorted(truth)[:3]
    older = sorted(truth)[10:12]
    with wh.engine.begin() as conn:
        conn.execute(sa.delete(sa.table("trade_orders", sa.column("tid"))).where(sa.column("tid").in_(gone)))
        conn.execute(trades.delete().where(trades.c.tid.in_(gone)))
        conn.execute(trades.update().where(trades.c.tid.in_(older)).values(modified=T0))

    calls = ListRecorder()
    outcome = _reconcile(sim, wh, recorder=calls)
    row = outcome.result
    assert (row.status, row.missing_count, row.stale_count, row.extra_count, row.refetched_count) == (
        "repaired", 3, 2, 0, 5)
    assert row.platform_count == row.warehouse_count == len(truth)
    fullinfo = [c for c in calls.calls if c.method == "taobao.trade.fullinfo.get"]
    assert len(fullinfo) == 5                     # exactly the missing and stale ones
    restored = {tid: wh.get_trade(tid) for tid in [*gone, *older]}
    assert all(t is not None and t["source"] == "refetch" for t in restored.values())
    assert all(wh.orders_for(tid) for tid in gone)   # with their order lines
    assert wh.versions_of("trades", truth) == truth

    # Stale alone leaves the counts equal: only a daily listing of versions sees it.
    with wh.engine.begin() as conn:
        conn.execute(trades.update().where(trades.c.tid.in_(older)).values(modified=T0))
    assert _reconcile(sim, wh).result.status == "ok"
    outcome = _reconcile(sim, wh, always_list=True)
    assert (outcome.result.status, outcome.result.stale_count, outcome.result.refetched_count) == ("repaired", 2, 2)
    stored = wh.versions_of("trades", truth)
    assert stored == truth

    # When the increments have synced only up to noon, a record changed later is not yet the sync's to
    # have: not a gap. Absent, it is fetched all the same; older, it is left to the next windows.
    noon = day_window(DAY).start + timedelta(hours=12)
    early = [tid for tid, modified in sorted(truth.items()) if modified < noon][:2]
    late = [tid for tid, modified in sorted(truth.items()) if modified >= noon][:3]
    with wh.engine.begin() as conn:
        gone = early + late[:2]
        conn.execute(sa.delete(sa.table("trade_orders", sa.column("tid"))).where(sa.column("tid").in_(gone)))
        conn.execute(trades.delete().where(trades.c.tid.in_(gone)))
        conn.execute(trades.update().where(trades.c.tid == late[2]).values(modified=T0))
    with _client(sim) as client:
        outcome = reconcile_day(client=client, warehouse=wh, stream=TRADES, check=CHECK, shop_id="shop-1",
                                session=sim.shops[0].session, day=DAY, run_id=None, now=NOW, synced_until=noon)
    row = outcome.result
    assert (row.status, row.missing_count, row.stale_count, row.pending_count, row.refetched_count) == (
        "repaired", 2, 0, 3, 4)
    assert all(wh.get_trade(tid) is not None for tid in gone)
    assert wh.versions_of("trades", [late[2]]) == {late[2]: T0}   # the increments will bring it


def test_a_record_the_platform_does_not_have_is_a_gap_that_survives(sim: Simulator, wh: Warehouse) -> None:
    _load_day(sim, wh, "shop-2")
    one = next(iter(_truth(sim, "shop-2")))
    ghost = {**wh.get_trade(one), "tid": 3_000_000_000_000_000_001}  # type: ignore[dict-item]
    wh.upsert_trades([ghost])
    outcome = _reconcile(sim, wh, "shop-2")
    assert outcome.result.status == "gap" and outcome.result.extra_count == 1
    assert outcome.remaining.extra == [ghost["tid"]]
    assert outcome.result.warehouse_count == outcome.result.platform_count + 1

    save_day(wh, outcome.result)
    save_day(wh, outcome.result)  # re-recording a day replaces it
    assert read_days(wh, shop_ids=["shop-2"]) == [outcome.result]
    assert passed_days(wh, stream="trades", since=DAY) == set()
    with wh.engine.begin() as conn:
        conn.execute(trades.delete().where(trades.c.tid == ghost["tid"]))
    fixed = _reconcile(sim, wh, "shop-2").result
    save_day(wh, fixed)
    assert fixed.status == "ok" and passed_days(wh, stream="trades", since=DAY) == {("shop-2", DAY)}


def test_only_a_complete_day_within_the_platform_horizon_can_be_reconciled(sim: Simulator, tmp_path: Path) -> None:
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    warehouse.migrate()
    with _client(sim) as client:
        for day, message in ((NOW.date(), "has not ended yet"), (DAY - timedelta(days=95), "90-day horizon")):
            with pytest.raises(ValueError, match=message):
                reconcile_day(client=client, warehouse=warehouse, stream=TRADES, check=CHECK, shop_id="shop-1",
                              session=sim.shops[0].session, day=day, run_id=None, now=NOW)
