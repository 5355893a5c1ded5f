"""daily_sales grouped in the warehouse (forecast/sql_sales.py) equal build_daily_sales over the lines and
refunds read whole, on PostgreSQL, MariaDB and SQLite, for a warehouse of awkward lines and refunds."""

from __future__ import annotations

from datetime import date, datetime, timezone
from itertools import count
from typing import Any

import pandas as pd
import pytest

from ordersync_pipeline.forecast import store
from ordersync_pipeline.forecast.sales import DailySales, build_daily_sales
from ordersync_pipeline.forecast.sql_sales import daily_sales_in_warehouse
from ordersync_pipeline.sync.normalize import normalize_trades
from ordersync_pipeline.sync.normalize_refunds import normalize_refunds
from ordersync_pipeline.warehouse import Warehouse

START, END = date(2026, 11, 10), date(2026, 11, 22)
SHOPS = ["shop-a", "shop-b"]
_ids = count(1)


def _line(sku: str | None = None, *, num_iid: int | None = None, outer: str | None = None,
          outer_sku: str | None = None, num: int = 1, pay: str = "10.00") -> dict[str, Any]:
    return {"oid": 9_100_000_000_000_000 + next(_ids), "num_iid": num_iid, "sku_id": sku, "outer_iid": outer,
            "outer_sku_id": outer_sku, "num": num, "payment": pay, "price": pay, "title": "t"}


def _trade(pay_time: str | None, *lines: dict[str, Any], status: str = "TRADE_FINISHED", kind: str = "fixed",
           step: str | None = None) -> dict[str, Any]:
    return {"tid": 8_100_000_000_000_000 + next(_ids), "status": status, "type": kind, "step_trade_status": step,
            "created": pay_time or "2026-11-15 09:00:00", "modified": "2026-11-23 10:00:00", "pay_time": pay_time,
            "payment": "1.00", "orders": [{**line, "status": status} for line in lines]}


def _refund(trade: dict[str, Any], line: int, fee: str, modified: str, status: str = "SUCCESS") -> dict[str, Any]:
    order = trade["orders"][line]
    return {"refund_id": str(700_000_000_000_000 + next(_ids)), "tid": trade["tid"], "oid": order["oid"],
            "status": status, "refund_fee": fee, "total_fee": order["payment"], "payment": "0.00",
            "created": modified, "modified": modified}


def _world() -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Trades and refunds per shop: every rule of sales.py and every place SQL could part from pandas."""
    near_midnight = _trade("2026-11-20 23:59:59", _line("S1", num_iid=11, num=2, pay="10.00"),
                           _line("S2", num_iid=11, pay="0.29"))
    after_midnight = _trade("2026-11-21 00:00:00", _line("S1", num_iid=11, pay="5.00"))
    unpaid = _trade("2026-11-18 10:00:00", _line("S1", num_iid=11), status="WAIT_BUYER_PAY")
    before_window = _trade("2026-11-01 12:00:00", _line("S1", num_iid=11, num=3, pay="30.00"))
    beyond_lookback = _trade("2026-07-01 12:00:00", _line("S1", num_iid=11, pay="9.00"))
    shop_a = [
        near_midnight, after_midnight, unpaid, before_window, beyond_lookback,
        _trade("2026-11-18 07:59:59", _line("S1", num_iid=11, pay="12345678.99")),
        _trade("2026-11-18 08:00:00", _line("S1", num_iid=11, pay="0.01")),
        _trade("2026-11-19 10:00:00", _line("S1", num_iid=11), status="TRADE_NO_CREATE_PAY"),
        _trade("2026-11-19 10:00:00", _line("S1", num_iid=11), status="TRADE_CLOSED_BY_TAOBAO"),
        # presale: deposit only, balance paid, and a step trade without a step status (pandas' NA rule)
        _trade("2026-11-15 12:00:00", _line("S3", num_iid=12, pay="50.00"), kind="step",
               step="FRONT_PAID_FINAL_NOPAID"),
        _trade("2026-11-15 12:00:00", _line("S3", num_iid=12, num=3, pay="300.00"), kind="step",
               step="FRONT_PAID_FINAL_PAID"),
        _trade("2026-11-15 13:00:00", _line("S3", num_iid=12, pay="100.00"), kind="step"),
        # keys: item, outer (two spellings differing in case: two SKUs), none at all
        _trade("2026-11-16 09:00:00", _line(num_iid=700, pay="7.00")),
        _trade("2026-11-16 09:00:00", _line(outer="A1", pay="1.00")),
        _trade("2026-11-16 10:00:00", _line(outer="a1", pay="2.00")),
        _trade("2026-11-16 11:00:00", _line(pay="3.00")),
        # one trade, one SKU key from two raw id tuples: one order, not two
        _trade("2026-11-17 09:00:00", _line("S4", num_iid=13, outer_sku="x"), _line("S4", num_iid=13, outer_sku="y")),
        _trade("2026-11-17 10:00:00", _line("S4", num_iid=13, outer_sku="x")),
        # "B2" and "B2 " are one key to pandas (ids are stripped), two tuples to SQL
        _trade("2026-11-17 11:00:00", _line(outer="B2"), _line(outer="B2 ")),
        # an id of a lone tab: a key to SQL's TRIM, none to pandas; the trade's only line
        _trade("2026-11-19 12:00:00", _line("\t", pay="4.00")),
    ]
    refunds_a = [
        _refund(near_midnight, 0, "5.00", "2026-11-21 08:00:00"),      # partial: 1 of 2 units
        _refund(near_midnight, 0, "6.00", "2026-11-22 23:59:59"),      # the rest, capped at the line's units
        _refund(after_midnight, 0, "7.00", "2026-11-21 23:59:59"),     # more than paid: all units
        _refund(near_midnight, 1, "0.10", "2026-11-22 00:00:00"),      # a price difference: no unit
        _refund(unpaid, 0, "10.00", "2026-11-20 10:00:00"),            # not a counted sale
        _refund(before_window, 0, "20.00", "2026-11-12 10:00:00"),     # a sale before the window
        _refund(beyond_lookback, 0, "9.00", "2026-11-12 10:00:00"),    # sale beyond the lookback
        _refund(after_midnight, 0, "1.00", "2026-11-21 10:00:00", status="WAIT_SELLER_AGREE"),
        _refund(near_midnight, 1, "0.29", "2026-11-05 10:00:00"),      # before the window: not read
    ]
    # shop-b: a trade a day, then a spike (a detected promotion day), with SKU S1 as shop-a names one
    shop_b = [_trade(f"2026-11-{d:02d} 15:00:00", _line("S1", num_iid=21, pay="8.00")) for d in range(10, 21)]
    shop_b += [_trade("2026-11-21 15:00:00", _line("S1", num_iid=21, pay="8.00"), _line("S9", num_iid=22))
               for _ in range(4)]
    # trades whose only line has a tab for an id are no paid trades to pandas: no promotion on the 20th
    shop_b += [_trade("2026-11-20 16:00:00", _line("\t")) for _ in range(2)]
    refunds_b = [_refund(shop_b[0], 0, "8.00", "2026-11-21 12:00:00")]
    shop_c = [_trade("2026-11-20 10:00:00", _line("S1", num_iid=31))]  # not asked for
    return {"shop-a": shop_a, "shop-b": shop_b, "shop-c": shop_c}, {"shop-a": refunds_a, "shop-b": refunds_b}


def _load(wh: Warehouse) -> None:
    trades, refunds = _world()
    now = datetime.now(timezone.utc)
    for shop, shop_trades in trades.items():
        batch = normalize_trades(shop, shop_trades, fetched_at=now, synced_at=now, source="increment")
        assert not batch.quarantine, batch.quarantine
        wh.upsert_many([("trades", batch.trades), ("trade_orders", batch.orders)])
    for shop, shop_refunds in refunds.items():
        rbatch = normalize_refunds(shop, shop_refunds, fetched_at=now, synced_at=now, source="increment")
        assert not rbatch.quarantine, rbatch.quarantine
        wh.upsert_many(list(rbatch.rows.items()))


def _in_pandas(wh: Warehouse) -> DailySales:
    return build_daily_sales(store.read_order_lines(wh, SHOPS, start=START, end=END),
                             store.read_refunds(wh, SHOPS, start=START, end=END), start=START, end=END)


def _assert_same(got: DailySales, want: DailySales) -> None:
    pd.testing.assert_frame_equal(got.frame, want.frame)
    assert [type(v) for v in got.frame["revenue_net"].head(3)] == [type(v) for v in want.frame["revenue_net"].head(3)]
    assert (got.start, got.end, got.lines_counted, got.refunds_applied) == (
        want.start, want.end, want.lines_counted, want.refunds_applied)
    assert list(got.lines_excluded.items()) == list(want.lines_excluded.items())
    assert list(got.refunds_ignored.items()) == list(want.refunds_ignored.items())
    assert got.promo_days == want.promo_days


def test_sales_grouped_in_the_warehouse_equal_the_pandas_reduction_of_the_whole_read(wh: Warehouse) -> None:
    _load(wh)
    want = _in_pandas(wh)
    got = daily_sales_in_warehouse(wh, SHOPS, start=START, end=END)
    _assert_same(got, want)

    # The world is as awkward as meant: each rule left its mark on the expected result.
    frame = got.frame.set_index(["shop_id", "sku_key", "day"])
    assert set(frame.index.get_level_values("sku_key")) >= {"sku:S1", "item:700", "outer:A1/", "outer:a1/",
                                                             "outer:B2/", "sku:S4"}
    assert frame.loc[("shop-a", "sku:S4", date(2026, 11, 17)), "orders"] == 2
    assert frame.loc[("shop-a", "outer:B2/", date(2026, 11, 17)), ["units_gross", "orders"]].tolist() == [2, 1]
    assert frame.loc[("shop-a", "sku:S1", date(2026, 11, 20)), "units_gross"] == 2
    assert frame.loc[("shop-a", "sku:S1", date(2026, 11, 12)), "units_net"] == -2  # 20 of 30 yuan: 2 of 3
    assert got.lines_excluded == {"duplicate_oid": 0, "closed_unpaid": 1, "presale_balance_unpaid": 1, "unpaid": 2,
                                  "no_sku_key": 4, "outside_window": 1}
    assert got.refunds_ignored == {"not_success": 1, "no_modified": 0, "not_a_counted_sale": 2, "outside_window": 0}
    assert got.promo_days["shop-b"] == [date(2026, 11, 21)]
    assert "shop-c" not in set(got.frame["shop_id"])


def test_an_empty_warehouse_gives_the_same_empty_result(wh: Warehouse) -> None:
    _assert_same(daily_sales_in_warehouse(wh, SHOPS, start=START, end=END), _in_pandas(wh))


@pytest.mark.parametrize("status", ["SUCCESS", "CLOSED"])
def test_refunds_without_a_counted_sale_are_counted_alike(wh: Warehouse, status: str) -> None:
    trades, _ = _world()
    unpaid = trades["shop-a"][2]
    now = datetime.now(timezone.utc)
    batch = normalize_trades("shop-a", [unpaid], fetched_at=now, synced_at=now, source="increment")
    wh.upsert_many([("trades", batch.trades), ("trade_orders", batch.orders)])
    rbatch = normalize_refunds("shop-a", [_refund(unpaid, 0, "1.00", "2026-11-20 10:00:00", status)],
                               fetched_at=now, synced_at=now, source="increment")
    wh.upsert_many(list(rbatch.rows.items()))
    _assert_same(daily_sales_in_warehouse(wh, SHOPS, start=START, end=END), _in_pandas(wh))
