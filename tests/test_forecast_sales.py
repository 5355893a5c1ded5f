"""daily_sales rules: what counts as a sale and on which Shanghai day, refunds, zero-filled days, keys, promotions."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest

from ordersync_pipeline.forecast.frames import inventory_from_items, order_lines_from_trades, refunds_from_records
from ordersync_pipeline.forecast.keys import sku_keys
from ordersync_pipeline.forecast.sales import build_daily_sales
from ordersync_pipeline.simulator import SimulatorSettings, start_simulator
from ordersync_pipeline.timeutil import GMT8

D = date(2026, 11, 20)


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=GMT8)


def line(tid: int, *, oid: int | None = None, sku: str | None = "S1", num: int = 1, payment: str = "10.00",
         status: str = "WAIT_SELLER_SEND_GOODS", kind: str = "fixed", step: str | None = None,
         pay: datetime | None = at("2026-11-20 10:00"), shop: str = "shop-1", num_iid: int | None = 1001,
         outer_iid: str | None = None, outer_sku_id: str | None = None) -> dict[str, Any]:
    return {"shop_id": shop, "tid": tid, "oid": oid or tid, "num_iid": num_iid, "sku_id": sku,
            "outer_iid": outer_iid, "outer_sku_id": outer_sku_id, "num": num, "payment": payment,
            "status": status, "type": kind, "step_trade_status": step, "pay_time": pay}


def refund(oid: int, fee: str, when: datetime, *, status: str = "SUCCESS", refund_id: int | None = None,
           shop: str = "shop-1") -> dict[str, Any]:
    return {"refund_id": refund_id or oid, "shop_id": shop, "tid": oid, "oid": oid, "status": status,
            "refund_fee": fee, "modified": when}


def build(lines: list[dict[str, Any]], refunds: list[dict[str, Any]] | None = None, **kw: Any) -> pd.DataFrame:
    frame = pd.DataFrame(lines)
    frame["pay_time"] = pd.Series(frame["pay_time"].tolist(), dtype=object)
    rf = pd.DataFrame(refunds) if refunds else None
    return build_daily_sales(frame, rf, **kw).frame


def cell(frame: pd.DataFrame, sku_key: str, day: date, column: str) -> Any:
    row = frame[(frame["sku_key"] == sku_key) & (frame["day"] == day)]
    assert len(row) == 1, f"expected one row for {sku_key} {day}, got {len(row)}"
    return row[column].iloc[0]


def test_closed_unpaid_and_unpaid_trades_are_not_sales() -> None:
    result = build_daily_sales(pd.DataFrame([
        line(1, num=2),
        line(2, status="TRADE_CLOSED_BY_TAOBAO", pay=None),
        line(3, status="WAIT_BUYER_PAY", pay=None),
        line(4, status="TRADE_CLOSED_BY_TAOBAO", pay=at("2026-11-20 11:00")),  # closed unpaid wins over a stray time
    ]), None)
    assert cell(result.frame, "sku:S1", D, "units_gross") == 2
    assert cell(result.frame, "sku:S1", D, "orders") == 1
    assert result.lines_excluded["closed_unpaid"] == 2 and result.lines_excluded["unpaid"] == 1


def test_sale_day_is_the_shanghai_day_of_payment() -> None:
    late_utc = datetime(2026, 11, 20, 16, 30, tzinfo=timezone.utc)  # 00:30 on the 21st in Shanghai
    frame = build([line(1, pay=at("2026-11-20 23:59")), line(2, pay=late_utc)])
    assert cell(frame, "sku:S1", D, "units_gross") == 1
    assert cell(frame, "sku:S1", D + timedelta(days=1), "units_gross") == 1


def test_presale_counts_on_the_balance_day_only() -> None:
    lines = [
        line(1, kind="step", step="FRONT_PAID_FINAL_PAID", pay=at("2026-11-23 09:00"), num=3),
        line(2, kind="step", step="FRONT_PAID_FINAL_NOPAID", status="WAIT_BUYER_PAY", pay=None, num=5),
        line(3, kind="step", step="FRONT_PAID_FRONT_FORFEITED", status="TRADE_CLOSED_BY_TAOBAO", pay=None),
        # a deposit-only presale that carries a time must still wait for the balance
        line(4, kind="step", step="FRONT_PAID_FINAL_NOPAID", status="WAIT_BUYER_PAY", pay=at("2026-11-21 09:00")),
        line(5, pay=at("2026-11-21 09:00")),
    ]
    result = build_daily_sales(pd.DataFrame(lines), None)
    frame = result.frame
    assert cell(frame, "sku:S1", date(2026, 11, 21), "units_gross") == 1
    assert cell(frame, "sku:S1", date(2026, 11, 23), "units_gross") == 3
    assert frame["units_gross"].sum() == 4
    assert result.lines_excluded["presale_balance_unpaid"] == 2


def test_refunds_count_on_the_day_they_succeed() -> None:
    lines = [line(1, num=3, payment="30.00"), line(2, num=1, payment="10.00")]
    refunds = [refund(1, "30.00", at("2026-11-22 15:00")),                      # whole line: 3 units back
               refund(2, "10.00", at("2026-11-21 08:00"), status="WAIT_SELLER_AGREE")]  # not successful
    frame = build(lines, refunds)
    assert cell(frame, "sku:S1", D, "units_net") == 4                      # the sale day is untouched
    assert cell(frame, "sku:S1", date(2026, 11, 21), "units_net") == 0
    assert cell(frame, "sku:S1", date(2026, 11, 22), "units_net") == -3    # refunds after the day go negative
    assert cell(frame, "sku:S1", date(2026, 11, 22), "revenue_net") == Decimal("-30.00")
    assert cell(frame, "sku:S1", D, "revenue_gross") == Decimal("40.00")


def test_partial_refunds_return_whole_units_in_proportion_and_never_more_than_sold() -> None:
    lines = [line(1, num=3, payment="30.00"), line(2, num=2, payment="20.00", sku="S2")]
    refunds = [refund(1, "20.00", at("2026-11-21 10:00"), refund_id=11),   # 2 of 3 units' money -> 2 units
               refund(1, "15.00", at("2026-11-22 10:00"), refund_id=12),   # would be 1.5 -> 1, capped at 1 left
               refund(2, "3.50", at("2026-11-21 10:00"), refund_id=21)]    # a price difference: no unit back
    frame = build(lines, refunds)
    assert cell(frame, "sku:S1", date(2026, 11, 21), "units_net") == -2
    assert cell(frame, "sku:S1", date(2026, 11, 22), "units_net") == -1
    assert cell(frame, "sku:S2", date(2026, 11, 21), "units_net") == 0
    assert cell(frame, "sku:S2", date(2026, 11, 21), "revenue_net") == Decimal("-3.50")
    assert frame[frame["sku_key"] == "sku:S1"]["units_net"].sum() == 0


def test_refund_of_a_line_that_was_never_a_sale_is_ignored() -> None:
    lines = [line(1), line(2, status="TRADE_CLOSED_BY_TAOBAO", pay=None)]
    result = build_daily_sales(pd.DataFrame(lines), pd.DataFrame([refund(2, "10.00", at("2026-11-21 10:00"))]))
    assert result.frame["units_net"].sum() == 1
    assert result.refunds_ignored["not_a_counted_sale"] == 1 and result.refunds_applied == 0


def test_days_without_sales_are_zero_rows_for_every_active_sku() -> None:
    lines = [line(1, sku="A", pay=at("2026-11-20 10:00")), line(2, sku="B", pay=at("2026-11-24 10:00"))]
    frame = build(lines, start=date(2026, 11, 19), end=date(2026, 11, 25))
    assert len(frame) == 2 * 7
    for key in ("sku:A", "sku:B"):
        days = frame[frame["sku_key"] == key]["day"].tolist()
        assert days == [date(2026, 11, 19) + timedelta(days=k) for k in range(7)]
    assert frame["units_gross"].sum() == 2 and (frame["units_gross"] >= 0).all()
    assert cell(frame, "sku:A", date(2026, 11, 21), "revenue_net") == Decimal("0.00")
    assert list(frame.columns) == ["shop_id", "sku_key", "day", "units_gross", "units_net", "revenue_gross",
                                   "revenue_net", "orders", "promo_day"]


def test_sales_outside_the_window_are_left_out() -> None:
    result = build_daily_sales(pd.DataFrame([line(1), line(2, pay=at("2026-11-30 10:00"))]), None,
                               end=date(2026, 11, 29))
    assert result.frame["units_gross"].sum() == 1 and result.lines_excluded["outside_window"] == 1


def test_sku_key_falls_back_from_sku_id_to_item_to_outer_ids() -> None:
    frame = pd.DataFrame([
        {"sku_id": "5001", "num_iid": 9, "outer_iid": "A", "outer_sku_id": "A-1"},
        {"sku_id": None, "num_iid": 9.0, "outer_iid": "A", "outer_sku_id": None},
        {"sku_id": "", "num_iid": None, "outer_iid": "A", "outer_sku_id": "A-1"},
        {"sku_id": None, "num_iid": None, "outer_iid": None, "outer_sku_id": None},
    ])
    assert sku_keys(frame).tolist() == ["sku:5001", "item:9", "outer:A/A-1", pd.NA]
    result = build_daily_sales(pd.DataFrame([line(1, sku=None, num_iid=None, outer_iid=None)]), None)
    assert result.frame.empty and result.lines_excluded["no_sku_key"] == 1


def test_promotion_days_are_detected_and_taken_from_a_calendar() -> None:
    lines, tid = [], 0
    start = date(2026, 10, 1)
    for k in range(40):
        count = 30 if k == 35 else 10  # one 3x day
        for _ in range(count):
            tid += 1
            lines.append(line(tid, pay=at(f"{start + timedelta(days=k)} 12:00")))
    result = build_daily_sales(pd.DataFrame(lines), None, promo_calendar=[date(2026, 10, 3)])
    assert result.promo_days == {"shop-1": [date(2026, 10, 3), start + timedelta(days=35)]}
    flagged = result.frame[result.frame["promo_day"]]["day"].tolist()
    assert flagged == [date(2026, 10, 3), start + timedelta(days=35)]


def test_bad_frames_are_refused_with_the_column_named() -> None:
    with pytest.raises(ValueError, match=r"order_lines frame is missing column\(s\) \['pay_time'\]"):
        build_daily_sales(pd.DataFrame([line(1)]).drop(columns=["pay_time"]), None)
    naive = pd.DataFrame([line(1, pay=datetime(2026, 11, 20, 10, 0))])
    naive["pay_time"] = pd.Series([datetime(2026, 11, 20, 10, 0)], dtype=object)
    with pytest.raises(ValueError, match="pay_time holds naive"):
        build_daily_sales(naive, None)


def test_simulator_ground_truth_gives_its_promotion_day_and_consistent_totals() -> None:
    start_at = datetime(2026, 11, 30, 6, 0, tzinfo=GMT8)
    with start_simulator(SimulatorSettings(seed=3, shops=1, orders_per_day=80, history_days=40, clock="stepped",
                                           start_at=start_at)) as sim:
        shop = sim.shops[0].shop_id
        trades, refunds = sim.world.trades(shop), sim.world.refunds(shop)
        items = sim.world.inventory(shop)
        promo = datetime.fromtimestamp(sim.world.promo_day, GMT8).date()
    result = build_daily_sales(order_lines_from_trades(shop, trades), refunds_from_records(shop, refunds),
                               end=date(2026, 11, 29))
    assert result.promo_days == {shop: [promo]}
    frame = result.frame
    paid_units = sum(o["num"] for t in trades if t.get("pay_time") and t["pay_time"] < "2026-11-30"
                     and t["status"] != "TRADE_CLOSED_BY_TAOBAO" for o in t["orders"])
    assert frame["units_gross"].sum() == paid_units
    success = [r for r in refunds if r["status"] == "SUCCESS" and r["modified"] < "2026-11-30"]
    assert frame["units_gross"].sum() - frame["units_net"].sum() == sum(r["num"] for r in success)
    inventory = inventory_from_items(shop, items)
    assert set(frame["sku_key"]) <= set(sku_keys(inventory))
