"""The forecast's bulk reader: order lines read from every backend give the lines, fen and Shanghai days
that the same TOP trades give in memory (times near midnight, awkward amounts, NULL ids, chunk edges)."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest

from ordersync_pipeline.forecast import store
from ordersync_pipeline.forecast.frames import order_lines_from_trades
from ordersync_pipeline.forecast.keys import shanghai_days, to_fen
from ordersync_pipeline.forecast.sales import build_daily_sales
from ordersync_pipeline.sync.normalize import normalize_trades
from ordersync_pipeline.warehouse import Warehouse

SHOP = "shop-1"
# (pay time GMT+8, line payments): either side of Shanghai midnight, amounts a float cannot hold exactly.
TRADES = [("2026-11-20 23:59:59", ["0.29", "12345678.99"]), ("2026-11-21 00:00:00", ["0.01", "1.10"]),
          ("2026-11-21 07:59:59", ["19.99"]), ("2026-11-21 08:00:00", ["0.00", "100.07"]),
          ("2026-11-22 12:30:45", ["33.33"])]


def _trade(k: int, pay: str, payments: list[str]) -> dict[str, Any]:
    orders = [{"oid": 9_000_000_000_000 + 10 * k + j, "num_iid": None if j else 600000000001 + k,
               "sku_id": None if k == 2 else f"50000{k}", "outer_iid": "A1", "num": j + 1, "price": p,
               "payment": p, "title": "t", "status": "TRADE_FINISHED"} for j, p in enumerate(payments)]
    return {"tid": 8_000_000_000_000 + k, "status": "TRADE_FINISHED", "type": "fixed", "created": pay,
            "modified": pay, "pay_time": pay, "payment": "1.00", "orders": orders}


@pytest.mark.parametrize("chunk", [2, store.CHUNK_ROWS])
def test_lines_read_from_the_warehouse_equal_the_same_trades_in_memory(wh: Warehouse, chunk: int,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    trades = [_trade(k, pay, payments) for k, (pay, payments) in enumerate(TRADES)]
    batch = normalize_trades(SHOP, trades, fetched_at=datetime.now(timezone.utc),
                             synced_at=datetime.now(timezone.utc), source="increment")
    assert not batch.quarantine
    wh.upsert_trades_with_orders(batch.trades, batch.orders)
    monkeypatch.setattr(store, "CHUNK_ROWS", chunk)

    got = store.read_order_lines(wh, [SHOP], start=date(2026, 11, 20), end=date(2026, 11, 22))
    want = order_lines_from_trades(SHOP, trades)
    got, want = (f.sort_values("oid", kind="stable").reset_index(drop=True) for f in (got, want))
    assert len(got) == len(want) == 8
    assert to_fen(got["payment"], "got").tolist() == to_fen(want["payment"], "want").tolist()
    assert shanghai_days(got["pay_time"], "got").tolist() == shanghai_days(want["pay_time"], "want").tolist()
    assert (got["pay_time"] == want["pay_time"]).all()
    assert got["oid"].tolist() == want["oid"].tolist() and got["num"].tolist() == want["num"].tolist()

    sales = build_daily_sales(got, start=date(2026, 11, 20), end=date(2026, 11, 22)).frame
    expected = build_daily_sales(want, start=date(2026, 11, 20), end=date(2026, 11, 22)).frame
    pd.testing.assert_frame_equal(sales, expected)
    assert sales["revenue_gross"].sum() == sum(Decimal(p) for _, ps in TRADES for p in ps)


def test_no_lines_give_an_empty_frame_with_the_columns(wh: Warehouse) -> None:
    got = store.read_order_lines(wh, [SHOP], start=date(2026, 11, 20), end=date(2026, 11, 22))
    assert got.empty and list(got.columns) == [c.name for c in store.SALE_SELECT]
    assert build_daily_sales(got, start=date(2026, 11, 20), end=date(2026, 11, 22)).frame.empty


@pytest.mark.parametrize("chunk", [2, 3, store.CHUNK_ROWS])
def test_daily_sales_reduced_chunk_by_chunk_equal_daily_sales_of_the_whole_read(
        wh: Warehouse, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_daily_sales reduces each chunk of lines as it is read (bounded memory for large shops): the
    same frame, exclusion counts and line count as reducing the whole read at once."""
    from ordersync_pipeline.forecast.sales import daily_sales_of, sale_lines

    trades = [_trade(k, pay, payments) for k, (pay, payments) in enumerate(TRADES)]
    trades.append({**_trade(9, "2026-11-21 10:00:00", ["5.00"]), "status": "WAIT_BUYER_PAY", "pay_time": None})
    batch = normalize_trades(SHOP, trades, fetched_at=datetime.now(timezone.utc),
                             synced_at=datetime.now(timezone.utc), source="increment")
    wh.upsert_trades_with_orders(batch.trades, batch.orders)
    monkeypatch.setattr(store, "CHUNK_ROWS", chunk)
    window = {"start": date(2026, 11, 20), "end": date(2026, 11, 22)}

    whole = build_daily_sales(store.read_order_lines(wh, [SHOP], **window), **window)
    chunked = daily_sales_of(*sale_lines(store.iter_order_lines(wh, [SHOP], **window)), **window)
    pd.testing.assert_frame_equal(chunked.frame, whole.frame)
    assert (chunked.lines_counted, chunked.lines_excluded) == (whole.lines_counted, whole.lines_excluded)
    assert whole.lines_counted == 8


def test_sale_lines_of_no_chunks_is_empty_with_its_columns() -> None:
    from ordersync_pipeline.forecast.sales import sale_lines

    lines, excluded = sale_lines(iter([]))
    assert lines.empty and {"shop_id", "oid", "sku_key", "day", "num", "fen"} <= set(lines.columns)
    assert excluded.get("unpaid", 0) == 0


def test_the_lines_are_streamed_from_a_server_side_cursor_not_buffered_whole(pg_url: str) -> None:
    """A plain execute made psycopg buffer every line of the window before the first chunk (~630 MB at
    1M trades); the reader streams them."""
    import sqlalchemy as sa

    from ordersync_pipeline.warehouse.connect import open_warehouse

    wh = open_warehouse(pg_url, store_receiver_pii=False)
    cursors: list[str] = []
    sa.event.listen(wh.engine, "before_cursor_execute",
                    lambda conn, cursor, statement, *rest: cursors.append(type(cursor).__name__)
                    if "trade_orders" in statement else None)
    list(store.iter_order_lines(wh, [SHOP], start=date(2026, 11, 20), end=date(2026, 11, 22)))
    assert cursors and all(name == "ServerCursor" for name in cursors), cursors
    wh.engine.dispose()
