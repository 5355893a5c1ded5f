"""The presale freeze (forecast/freeze.py) over a real warehouse on every backend: a presale trade driven
through deposit -> balance paid, deposit -> forfeit and deposit -> closed, re-runs that rebuild the table
exactly, and trades that hold nothing (deposit unpaid, ordinary trades)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest

from ordersync_pipeline.forecast import store
from ordersync_pipeline.forecast.daily import rebuild_freezes
from ordersync_pipeline.forecast.freeze import FREEZE_COLUMNS, presale_freezes
from ordersync_pipeline.sync.normalize import normalize_trades
from ordersync_pipeline.warehouse import Warehouse

SHOP = "shop-1"
T0 = datetime(2026, 11, 1, 20, 0, tzinfo=timezone(timedelta(hours=8)))


def _top(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _presale(tid: int, step: str, *, status: str, modified: datetime, pay_time: datetime | None = None,
             end_time: datetime | None = None, ttype: str = "step") -> dict[str, Any]:
    trade: dict[str, Any] = {
        "tid": tid, "status": status, "type": ttype, "created": _top(T0), "modified": _top(modified),
        "payment": "300.00", "total_fee": "300.00", "step_trade_status": step, "step_paid_fee": "60.00",
        "orders": [
            {"oid": tid * 10 + 1, "num_iid": 600000000001, "sku_id": "5000000000011", "outer_iid": "A001",
             "outer_sku_id": "A001-0S", "num": 2, "price": "100.00", "payment": "200.00", "title": "t",
             "status": status},
            {"oid": tid * 10 + 2, "num_iid": 600000000002, "outer_iid": "A002", "num": 1, "price": "100.00",
             "payment": "100.00", "title": "t2", "status": status},
        ]}
    if pay_time is not None:
        trade["pay_time"] = _top(pay_time)
    if end_time is not None:
        trade["end_time"] = _top(end_time)
    return trade


def _load(wh: Warehouse, *trades: dict[str, Any]) -> None:
    batch = normalize_trades(SHOP, list(trades), fetched_at=datetime.now(timezone.utc),
                             synced_at=datetime.now(timezone.utc), source="increment")
    assert not batch.quarantine
    wh.upsert_trades_with_orders(batch.trades, batch.orders)


def _freezes(wh: Warehouse) -> dict[int, tuple[Any, ...]]:
    frame = store.read_freezes(wh, [SHOP])
    return {int(r.oid): (r.sku_key, int(r.quantity), None if pd.isna(r.released_at) else r.released_at,
                         r.release_reason) for r in frame.itertuples(index=False)}


def test_a_presale_through_deposit_then_balance_then_a_second_one_forfeited(wh: Warehouse) -> None:
    deposit_at, balance_at, forfeit_at = T0 + timedelta(minutes=3), T0 + timedelta(days=2), T0 + timedelta(days=5)
    _load(wh, _presale(1001, "FRONT_PAID_FINAL_NOPAID", status="WAIT_BUYER_PAY", modified=deposit_at),
          _presale(1002, "FRONT_PAID_FINAL_NOPAID", status="WAIT_BUYER_PAY", modified=deposit_at))
    result = rebuild_freezes(wh, [SHOP])
    assert (result.rows, result.open_lines, result.frozen_units) == (4, 4, 6)
    frozen = _freezes(wh)
    assert frozen[10011] == ("sku:5000000000011", 2, None, None)
    assert frozen[10012] == ("item:600000000002", 1, None, None)  # no SKU: keyed by the item
    frame = store.read_freezes(wh, [SHOP])
    assert set(frame["frozen_at"].dt.tz_convert(timezone.utc)) == {T0.astimezone(timezone.utc)}

    # 1001: the balance is paid (the sale becomes ordinary); 1002: the deposit is forfeited.
    _load(wh, _presale(1001, "FRONT_PAID_FINAL_PAID", status="WAIT_SELLER_SEND_GOODS", modified=balance_at,
                       pay_time=balance_at),
          _presale(1002, "FRONT_PAID_FRONT_FORFEITED", status="TRADE_CLOSED_BY_TAOBAO", modified=forfeit_at,
                   end_time=forfeit_at))
    result = rebuild_freezes(wh, [SHOP])
    assert (result.rows, result.open_lines, result.frozen_units) == (4, 0, 0)
    released = _freezes(wh)
    assert {oid: row[3] for oid, row in released.items()} == {
        10011: "balance_paid", 10012: "balance_paid", 10021: "forfeited", 10022: "forfeited"}
    assert released[10011][2] == balance_at.astimezone(timezone.utc)
    assert released[10021][2] == forfeit_at.astimezone(timezone.utc)

    # A re-run rebuilds exactly the same table.
    before = store.read_freezes(wh, [SHOP]).sort_values("oid").reset_index(drop=True)
    rebuild_freezes(wh, [SHOP])
    after = store.read_freezes(wh, [SHOP]).sort_values("oid").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)


def test_a_deposit_on_a_closed_trade_is_released_and_unpaid_deposits_hold_nothing(wh: Warehouse) -> None:
    closed_at = T0 + timedelta(days=1)
    _load(wh, _presale(2001, "FRONT_PAID_FINAL_NOPAID", status="TRADE_CLOSED", modified=closed_at, end_time=closed_at),
          _presale(2002, "FRONT_NOPAID_FINAL_NOPAID", status="WAIT_BUYER_PAY", modified=T0),
          _presale(2003, "", status="WAIT_SELLER_SEND_GOODS", modified=T0, pay_time=T0, ttype="fixed"))
    rebuild_freezes(wh, [SHOP])
    rows = _freezes(wh)
    assert set(rows) == {20011, 20012}
    assert {row[3] for row in rows.values()} == {"closed"}
    assert rows[20011][2] == closed_at.astimezone(timezone.utc)


def test_a_release_without_its_own_time_takes_modified() -> None:
    modified = pd.Timestamp("2026-11-03 12:00", tz="UTC")
    lines = pd.DataFrame([{
        "shop_id": SHOP, "tid": 1, "oid": 11, "num_iid": 5, "sku_id": None, "outer_iid": None, "outer_sku_id": None,
        "num": 3, "type": "step", "status": "WAIT_SELLER_SEND_GOODS", "step_trade_status": "FRONT_PAID_FINAL_PAID",
        "created": pd.Timestamp("2026-11-01", tz="UTC"), "modified": modified, "pay_time": pd.NaT, "end_time": pd.NaT}])
    frame = presale_freezes(lines)
    assert list(frame.columns) == list(FREEZE_COLUMNS)
    assert (frame["released_at"].iloc[0], frame["release_reason"].iloc[0]) == (modified, "balance_paid")


@pytest.mark.parametrize("missing", ["step_trade_status", "created"])
def test_input_without_a_needed_column_names_it(missing: str) -> None:
    lines = pd.DataFrame({c: [] for c in ("shop_id", "tid", "oid", "num", "type", "status", "step_trade_status",
                                          "created", "modified", "pay_time", "end_time") if c != missing})
    with pytest.raises(ValueError, match=missing):
        presale_freezes(lines)
