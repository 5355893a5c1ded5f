"""A reconciliation's per-day questions asked once for many days answer what each day asked alone does, on
every backend: the stored counts (boundaries, other shops, days not adjacent), the quality checks' counts
(clean days named, days with violations left to their own query), the synced range of any day, and
``ShopDays`` asking once for the days left and again, narrowly, after a re-fetch changed the warehouse; a
day's streams saved in one delete and one insert."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ordersync_pipeline.reconcile import quality
from ordersync_pipeline.reconcile.batch import ShopDays
from ordersync_pipeline.reconcile.daily import day_checks
from ordersync_pipeline.reconcile.gaps import SyncedRange, synced_until
from ordersync_pipeline.reconcile.records import DayResult, read_days, save_days
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.sync.streams import stream
from ordersync_pipeline.sync.windows import Timeline, Window, day_window
from ordersync_pipeline.timeutil import SHANGHAI
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import refunds, trade_orders, trades

DAYS = [date(2026, 11, 20) + timedelta(days=i) for i in range(6)]
WINDOWS = [day_window(day) for day in DAYS]
NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)
OK, ZERO = Decimal("10.00"), Decimal("0.00")


def _trade(tid: int, day: int, *, hours: float = 3, **values: Any) -> dict[str, Any]:
    at = WINDOWS[day].start + timedelta(hours=hours)
    row = {"shop_id": "shop-1", "tid": tid, "type": "fixed", "status": "WAIT_SELLER_SEND_GOODS", "created": at,
           "modified": at, "synced_at": NOW, "payment": OK, "post_fee": ZERO, "step_trade_status": None,
           "step_paid_fee": None}
    return {**row, **values}


def _line(oid: int, tid: int, payment: Decimal | None) -> dict[str, Any]:
    return {"oid": oid, "tid": tid, "shop_id": "shop-1", "payment": payment, "modified": NOW, "synced_at": NOW}


def _refund(refund_id: int, tid: int, oid: int, fee: Decimal | None, status: str = "SUCCESS",
            modified: datetime = NOW) -> dict[str, Any]:
    return {"refund_id": refund_id, "shop_id": "shop-1", "tid": tid, "oid": oid, "status": status,
            "refund_fee": fee, "modified": modified, "synced_at": NOW}


def _load(warehouse: Warehouse) -> None:
    """Day 0 clean; day 1: a trade without lines, lines that do not add up, a refund above its line; day 2:
    a presale out of step, successful refunds above the trade's payment (a case variant of SUCCESS does not
    count); day 3 (never asked) full of violations; day 4: the first and last instant, and successful refunds
    within the payment unless a case variant of SUCCESS were counted; day 5 empty but for another shop."""
    rows = [_trade(1, 0), _trade(2, 0, hours=0), _trade(3, 0, hours=23.99),
            _trade(4, 0, type="step", status="WAIT_SELLER_SEND_GOODS", step_trade_status="FRONT_PAID_FINAL_PAID",
                   step_paid_fee=OK),
            _trade(10, 1), _trade(11, 1), _trade(12, 1, payment=None),
            _trade(20, 2, type="step", status="WAIT_BUYER_PAY", step_trade_status="FRONT_PAID_FINAL_PAID",
                   step_paid_fee=OK), _trade(21, 2), _trade(22, 2),
            _trade(30, 3), _trade(31, 3, type="step", step_trade_status=None),
            _trade(40, 4, hours=0), _trade(41, 4, hours=24) | {"created": WINDOWS[4].end - timedelta(microseconds=1)},
            _trade(50, 5, shop_id="shop-2")]
    lines = [_line(1, 1, OK), _line(2, 2, OK), _line(3, 3, Decimal("4.00")), _line(4, 3, Decimal("6.00")),
             _line(5, 4, OK),
             _line(11, 11, Decimal("9.99")), _line(12, 12, None),                  # 10 has no line at all
             _line(20, 20, OK), _line(21, 21, Decimal("6.00")), _line(22, 21, Decimal("4.00")), _line(23, 22, OK),
             _line(40, 40, OK), _line(41, 41, OK), _line(50, 50, OK)]
    refund_rows = [_refund(1, 1, 1, OK), _refund(2, 3, 3, Decimal("4.00"), status="CLOSED"),
                   _refund(10, 11, 11, Decimal("11.00"), status="WAIT_SELLER_AGREE"), _refund(11, 12, 12, OK),
                   _refund(20, 21, 21, Decimal("6.00")), _refund(21, 21, 22, Decimal("4.00")),
                   _refund(22, 21, 22, Decimal("4.00")), _refund(23, 22, 23, Decimal("8.00"), status="success"),
                   _refund(24, 22, 23, Decimal("8.00"), status="SUCCESS"),
                   _refund(30, 30, 99, Decimal("99.00")), _refund(40, 41, 41, None),
                   _refund(41, 40, 40, Decimal("6.00")), _refund(42, 40, 40, Decimal("6.00"), status="success")]
    with warehouse.engine.begin() as conn:
        conn.execute(trades.insert(), rows)
        conn.execute(trade_orders.insert(), lines)
        conn.execute(refunds.insert(), refund_rows)


def _alone(warehouse: Warehouse, window: Window) -> dict[str, quality.QualityResult]:
    results = [quality.order_lines_add_up(warehouse, "shop-1", window),
               quality.refunds_within_payment(warehouse, "shop-1", window),
               quality.presale_amounts_agree(warehouse, "shop-1", window)]
    return {result.name: result for result in results if result is not None}


def test_quality_counted_for_many_days_names_the_clean_days_as_each_day_alone(wh: Warehouse) -> None:
    _load(wh)
    asked = [WINDOWS[i] for i in (2, 0, 1, 4, 5)]        # any order; day 3 between them never asked
    clean = quality.clean_days(wh, "shop-1", asked)
    for window, known in zip(asked, clean, strict=True):
        alone = _alone(wh, window)
        assert known == {name: r.checked for name, r in alone.items() if r.passed}, window
    by_day = dict(zip((2, 0, 1, 4, 5), clean, strict=True))
    assert by_day[0] == {"order_lines_add_up": 4, "refunds_within_payment": 2, "presale_amounts_agree": 1}
    assert set(by_day[1]) == {"presale_amounts_agree"} and set(by_day[2]) == {"order_lines_add_up"}
    assert by_day[4]["order_lines_add_up"] == 2 and by_day[4]["refunds_within_payment"] == 3 and by_day[5] == dict.fromkeys(by_day[0], 0)
    # run_all with them answers as without: a clean check is not asked again, the others are.
    for i in (0, 1, 2):
        lake = PageLake(Path("/nonexistent-lake"))
        assert (quality.run_all(wh, lake, "shop-1", WINDOWS[i], increment_minutes=15, clean=by_day[i])
                == quality.run_all(wh, lake, "shop-1", WINDOWS[i], increment_minutes=15))


def test_stored_counts_of_many_days_are_each_days_count(wh: Warehouse) -> None:
    _load(wh)
    with wh.engine.begin() as conn:   # refunds by modified: one exactly at a day's end belongs to the next
        conn.execute(refunds.update().where(refunds.c.refund_id == 1).values(modified=WINDOWS[1].end))
        conn.execute(refunds.update().where(refunds.c.refund_id == 2).values(modified=WINDOWS[1].start))
    spans = [(w.start, w.end) for w in (WINDOWS[4], WINDOWS[0], WINDOWS[1], WINDOWS[2], WINDOWS[5])]
    for table, column in (("trades", "created"), ("refunds", "modified")):
        assert wh.counts_between(table, shop_id="shop-1", column=column, spans=spans) == [
            wh.count_between(table, shop_id="shop-1", column=column, start=s, end=e) for s, e in spans]
    assert wh.counts_between("trades", shop_id="shop-1", column="created", spans=spans) == [2, 4, 3, 3, 0]
    assert wh.counts_between("trades", shop_id="shop-9", column="created", spans=spans) == [0] * 5


def test_a_synced_range_read_once_answers_as_synced_until_for_every_day(tmp_path: Path) -> None:
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    warehouse.migrate()
    anchor = datetime(2026, 11, 24, 0, 7, tzinfo=SHANGHAI)     # increments start mid-partition
    timeline = Timeline(anchor=anchor, history_days=2, increment_minutes=15)
    keys = timeline.closed_increment_keys(anchor + timedelta(hours=30))
    for i, key in enumerate(keys):
        if i in (5, 40, 41, 90):                                 # holes
            continue
        window = timeline.increment_window(key)
        warehouse.mark_window_complete(shop_id="s", stream="trades", kind="increment", window_start=window.start,
                                       window_end=window.end, partition_key=key, pages=1, records=0, run_id=None)
    first = anchor - timedelta(days=2)
    read = SyncedRange(warehouse, timeline, stream="trades", shop_id="s", since=first)
    sinces = [first + timedelta(minutes=37 * i) for i in range(120)]
    for now in (anchor + timedelta(hours=h) for h in (0, 1, 11, 12, 30)):
        for since in sinces:
            assert read.until(since=since, now=now) == synced_until(warehouse, timeline, stream="trades",
                                                                    shop_id="s", since=since, now=now), (since, now)
    with pytest.raises(ValueError, match="synced range read from"):
        read.until(since=first - timedelta(seconds=1), now=anchor)


def test_shop_days_ask_once_for_the_days_left_and_again_after_a_change(
        wh: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _load(wh)
    asked: list[tuple[str, list[date]]] = []
    counts_between, clean_days = wh.counts_between, quality.clean_days

    def counting(table: str, **kw: Any) -> list[int]:
        asked.append((table, [DAYS[WINDOWS.index(Window(*span))] for span in kw["spans"]]))
        return counts_between(table, **kw)

    def cleaning(warehouse: Warehouse, shop_id: str, windows: Sequence[Window]) -> list[dict[str, int]]:
        asked.append(("quality", [DAYS[WINDOWS.index(w)] for w in windows]))
        return clean_days(warehouse, shop_id, windows)

    monkeypatch.setattr(wh, "counts_between", counting)
    monkeypatch.setattr(quality, "clean_days", cleaning)
    timeline = Timeline(anchor=datetime(2026, 11, 27, tzinfo=SHANGHAI), history_days=10, increment_minutes=15)
    days = [DAYS[0], DAYS[1], DAYS[2]]
    shop = ShopDays(warehouse=wh, lake=PageLake(tmp_path), timeline=timeline, shop_id="shop-1", days=days,
                    checks=day_checks())
    trades_stream = stream("trades")

    def expected(day: date) -> int:
        window = day_window(day)
        return wh.count_between("trades", shop_id="shop-1", column="created", start=window.start, end=window.end)

    def all_checks(day: date) -> Mapping[str, quality.QualityResult]:
        return {r.name: r for r in quality.run_all(wh, PageLake(tmp_path), "shop-1", day_window(day),
                                                   increment_minutes=15)}

    assert [shop.stored_count(trades_stream, day) for day in days] == [expected(day) for day in days]
    assert [{r.name: r for r in shop.quality(day)} for day in days] == [all_checks(day) for day in days]
    streams = [s.tables[0] for s, _ in day_checks()]
    assert asked == [(table, days) for table in streams] + [("quality", days)]   # once for all three

    asked.clear()
    with wh.engine.begin() as conn:   # a re-fetch loads a trade of day 1 without lines
        conn.execute(trades.insert(), [_trade(13, 1)])
    shop.changed()
    assert shop.stored_count(trades_stream, DAYS[1]) == expected(DAYS[1]) == 4
    assert {r.name: r for r in shop.quality(DAYS[1])} == all_checks(DAYS[1])
    assert shop.stored_count(trades_stream, DAYS[2]) == expected(DAYS[2])
    # The day after a change asks for itself alone, the next for the days left.
    assert asked == ([(table, [DAYS[1]]) for table in streams] + [("quality", [DAYS[1]])]
                     + [(table, [DAYS[2]]) for table in streams])
    assert shop.synced_until(trades_stream, DAYS[1], now=NOW) == synced_until(
        wh, timeline, stream="trades", shop_id="shop-1", since=WINDOWS[1].start, now=NOW)


def test_reading_the_loaded_days_in_one_query_keeps_the_query_count_flat(wh: Warehouse) -> None:
    _load(wh)
    statements: list[str] = []
    sa.event.listen(wh.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    quality.clean_days(wh, "shop-1", WINDOWS)
    wh.counts_between("trades", shop_id="shop-1", column="created", spans=[(w.start, w.end) for w in WINDOWS])
    sql_checks = [name for name in quality.check_names() if name != "status_transitions_valid"]
    assert len(statements) == len(sql_checks) + 1       # each SQL check once, then the counts once


def test_saving_a_days_streams_replaces_their_rows_in_one_delete_and_one_insert(wh: Warehouse) -> None:
    def row(stream_name: str, status: str, day: date = DAYS[0]) -> DayResult:
        return DayResult(shop_id="shop-1", stream=stream_name, day=day, platform_count=1, warehouse_count=1,
                         missing_count=0, stale_count=0, extra_count=0, refetched_count=0, pending_count=0,
                         status=status, checked_at=NOW)

    save_days(wh, [row("trades", "gap"), row("refunds", "ok"), row("trades", "gap", DAYS[1])])
    statements: list[str] = []
    sa.event.listen(wh.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    save_days(wh, [row("trades", "gap"), row("refunds", "repaired"), row("trades", "repaired")])  # last one wins
    assert len([s for s in statements if s.lstrip().upper().startswith(("DELETE", "INSERT"))]) == 2
    assert [(d.day, d.stream, d.status) for d in read_days(wh, shop_ids=["shop-1"])] == [
        (DAYS[0], "refunds", "repaired"), (DAYS[0], "trades", "repaired"), (DAYS[1], "trades", "gap")]
    save_days(wh, [])
