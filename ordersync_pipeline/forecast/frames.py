"""TOP trade and refund dicts -> the input frames of sales.py (and inventory items -> inventory rows).

For the simulator's ground truth (``sim.world.trades(shop_id)``, ``sim.world.refunds(shop_id)``,
``sim.world.inventory(shop_id)``) and for fullinfo-shaped trades: times are TOP's GMT+8 wall-clock
strings and become aware datetimes; money stays the text TOP sent (sales.py converts it to exact
fen). The warehouse path builds the same frames from ``trade_orders`` joined with ``trades``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from ordersync_pipeline.forecast.sales import LINE_COLUMNS, REFUND_COLUMNS
from ordersync_pipeline.timeutil import SHANGHAI, TOP_TIME_FORMAT

LINE_FIELDS = ("oid", "num_iid", "sku_id", "outer_iid", "outer_sku_id", "num", "payment")
TRADE_FIELDS = ("tid", "status", "type", "step_trade_status", "pay_time")


def order_lines_from_trades(shop_id: str, trades: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per order line with the trade's status, type, step status and pay time."""
    rows = []
    for trade in trades:
        head = {f: trade.get(f) for f in TRADE_FIELDS}
        for order in trade.get("orders") or ():
            rows.append({"shop_id": shop_id, **head, **{f: order.get(f) for f in LINE_FIELDS}})
    frame = pd.DataFrame(rows, columns=list(LINE_COLUMNS))
    frame["pay_time"] = top_times(frame["pay_time"])
    return frame


def refunds_from_records(shop_id: str, refunds: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per refund: ``refund_id, shop_id, tid, oid, status, refund_fee, created, modified``."""
    columns = ["refund_id", "tid", *REFUND_COLUMNS, "created"]
    frame = pd.DataFrame([{**{c: r.get(c) for c in columns}, "shop_id": shop_id} for r in refunds],
                         columns=columns)
    for col in ("modified", "created"):
        frame[col] = top_times(frame[col])
    return frame


def inventory_from_items(shop_id: str, items: Iterable[Mapping[str, Any]], *,
                         taken_at: datetime | None = None) -> pd.DataFrame:
    """``items.onsale.get``-shaped items (with ``skus``) -> one row per SKU (or per item without
    SKUs): ``shop_id, num_iid, sku_id, outer_iid, outer_sku_id, quantity, taken_at``."""
    rows = []
    for item in items:
        skus = item.get("skus") or []
        base = {"shop_id": shop_id, "num_iid": item.get("num_iid"), "outer_iid": item.get("outer_id"),
                "taken_at": taken_at}
        if not skus:
            rows.append({**base, "sku_id": None, "outer_sku_id": None, "quantity": item.get("num")})
        for sku in skus:
            rows.append({**base, "sku_id": sku.get("sku_id"), "outer_sku_id": sku.get("outer_id"),
                         "quantity": sku.get("quantity")})
    return pd.DataFrame(rows, columns=["shop_id", "num_iid", "sku_id", "outer_iid", "outer_sku_id", "quantity",
                                       "taken_at"])


def top_times(values: pd.Series) -> pd.Series:
    """TOP ``yyyy-MM-dd HH:mm:ss`` (GMT+8) strings -> aware datetimes; missing or empty -> NaT."""
    text = values.astype("string").mask(values.astype("string") == "")
    return pd.to_datetime(text, format=TOP_TIME_FORMAT).dt.tz_localize(SHANGHAI)
