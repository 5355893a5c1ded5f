"""``inventory_freeze``: stock held by presale (预售) deposits, derived from the warehouse's own trades.

Input: one row per order line, ``trade_orders`` joined with its trade: ``shop_id, tid, oid, num_iid, sku_id,
outer_iid, outer_sku_id, num`` (the line's) and ``type, status, step_trade_status, created, modified,
pay_time, end_time`` (the trade's; times aware). Output: one row per order line of a presale trade whose
deposit was paid, ``shop_id, tid, oid, sku_key, quantity, frozen_at, released_at, release_reason``.

The rules (TOP's ``step_trade_status`` on trades of ``type == "step"``):

* ``FRONT_NOPAID_FINAL_NOPAID`` (deposit not paid): nothing is held, no row;
* ``FRONT_PAID_FINAL_NOPAID`` (deposit paid, balance not): the line's quantity is frozen, ``released_at``
  NULL, unless the trade has closed (``TRADE_CLOSED``/``TRADE_CLOSED_BY_TAOBAO``): then released,
  ``closed``;
* ``FRONT_PAID_FINAL_PAID`` (balance paid): released, ``balance_paid``, at ``pay_time`` (on a step trade
  the balance payment); the line is an ordinary sale from then on (daily_sales counts it);
* a forfeited deposit (``FRONT_PAID_FRONT_FORFEITED``, or any status naming a forfeit): released,
  ``forfeited``, at ``end_time``.

``frozen_at`` is the trade's ``created``: TOP lists no deposit time on the trade, and the deposit is paid
at checkout. A release without its own time (``pay_time``/``end_time`` missing) takes ``modified``. The
table is a function of the trades alone, so a re-run rebuilds it exactly (the caller replaces a shop's
rows as a whole). A line without any id has no ``sku_key`` (NULL) and still holds its units.
"""

from __future__ import annotations

import pandas as pd

from ordersync_pipeline.forecast.keys import require_columns, sku_keys

__all__ = ["presale_freezes", "FREEZE_COLUMNS", "FREEZE_INPUT_COLUMNS", "DEPOSIT_ONLY", "BALANCE_PAID"]

FREEZE_COLUMNS = ("shop_id", "tid", "oid", "sku_key", "quantity", "frozen_at", "released_at", "release_reason")
FREEZE_INPUT_COLUMNS = ("shop_id", "tid", "oid", "num", "type", "status", "step_trade_status", "created",
                        "modified", "pay_time", "end_time")
DEPOSIT_ONLY = "FRONT_PAID_FINAL_NOPAID"
BALANCE_PAID = "FRONT_PAID_FINAL_PAID"
CLOSED = frozenset({"TRADE_CLOSED", "TRADE_CLOSED_BY_TAOBAO"})


def presale_freezes(lines: pd.DataFrame) -> pd.DataFrame:
    """The freeze rows of ``lines`` (see the module docstring), sorted by shop and oid."""
    require_columns(lines, FREEZE_INPUT_COLUMNS, "order_lines")
    step = lines[lines["type"].astype("string") == "step"]
    status = step["step_trade_status"].astype("string").fillna("")
    forfeited = status.str.contains("FORFEIT")
    paid = status == BALANCE_PAID
    deposit = status == DEPOSIT_ONLY
    held = step[paid | forfeited | deposit].copy()
    if held.empty:
        return _empty()
    status = status[held.index]
    forfeited, paid = forfeited[held.index], paid[held.index]
    closed = held["status"].astype("string").isin(CLOSED).fillna(False)
    reason = pd.Series(pd.NA, index=held.index, dtype="string")
    reason = reason.mask(closed, "closed").mask(forfeited, "forfeited").mask(paid, "balance_paid")
    released = pd.Series(pd.NaT, index=held.index, dtype=held["modified"].dtype)
    released = released.mask(reason == "closed", held["end_time"]).mask(reason == "forfeited", held["end_time"])
    released = released.mask(reason == "balance_paid", held["pay_time"])
    released = released.fillna(held["modified"].where(reason.notna()))
    out = pd.DataFrame({
        "shop_id": held["shop_id"].astype("string"),
        "tid": held["tid"].astype("int64"),
        "oid": held["oid"].astype("int64"),
        "sku_key": sku_keys(held) if any(c in held.columns for c in ("num_iid", "sku_id", "outer_iid", "outer_sku_id"))
        else pd.Series(pd.NA, index=held.index, dtype="string"),
        "quantity": pd.to_numeric(held["num"], errors="coerce").fillna(0).clip(lower=0).astype("int64"),
        "frozen_at": held["created"].fillna(held["modified"]),
        "released_at": released,
        "release_reason": reason,
    })
    return out.sort_values(["shop_id", "oid"], kind="stable").reset_index(drop=True)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in FREEZE_COLUMNS})
