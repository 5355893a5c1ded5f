"""``daily_sales``: units and revenue per shop, SKU and Asia/Shanghai day, net of successful refunds.

Input ``order_lines``: one row per order line, ``trade_orders`` joined with its trade, with columns
``shop_id, tid, oid, num_iid, sku_id, outer_iid, outer_sku_id, num, payment`` (the line's) and
``status, type, step_trade_status, pay_time`` (the *trade's*: ``trades.status`` etc.). Input
``refunds``: ``shop_id, oid, status, refund_fee, modified`` (``refund_id`` optional). Times must be
timezone-aware; money is yuan (Decimal, str, int or float), converted to exact integer fen.

The rules:

* **SKU key**: keys.py (``sku:<sku_id>``, else ``item:<num_iid>``, else ``outer:<outer_iid>/<outer_sku_id>``).
* **What is a sale**: a line whose trade is paid: ``pay_time`` is set and the trade's status is not an
  unpaid one (``WAIT_BUYER_PAY``, ``TRADE_NO_CREATE_PAY``, ``PAY_PENDING``) nor closed-unpaid
  (``TRADE_CLOSED_BY_TAOBAO``). It counts on the Shanghai day of ``pay_time``: money changed hands
  then, and a trade created at 23:59 and paid at 00:01 is the next day's sale.
* **Presale** (``type == "step"``): a sale only once the balance is paid (``step_trade_status ==
  FRONT_PAID_FINAL_PAID``), on the day of ``pay_time``, which on a step trade is the balance payment
  (the simulator's rule; TOP's TradeBuyerPay message fires on the final payment). Deposit-only and
  forfeited presales are not sales (the freeze table holds their stock).
* **Refunds** count on the Shanghai day of ``modified`` of a refund whose status is ``SUCCESS`` (a
  successful refund does not change afterwards, so its last change is its success), and only against
  a line counted as a sale above. Revenue loses ``refund_fee``. Units: a refund of at least the line's
  payment returns all the line's units; a partial refund returns ``floor(num * refund_fee / payment)``
  units (a price-difference refund of a few yuan returns none; 2 of 3 units' money returns 2), and a
  line never returns more units than it sold, however many refunds it has. A refund may land after
  its sale day, so a day's ``units_net`` can be negative (the forecast clips such days, see model.py).
* **Rows**: every SKU with a sale or a successful refund in the window gets a row for *every* day of
  the window, zeros where nothing happened ("active" SKUs; the forecast additionally drops SKUs that
  left the catalogue and treats SKUs without a sale as having no history).
* **Promotion days** (per shop): a day whose number of paid trades exceeds ``promo_factor`` (2.0) times
  the median of the previous 28 days (at least 7 of them), or a day in the caller's ``promo_calendar``.
  Detection catches unannounced spikes from the data alone (a weekly peak is ~1.4x the median, a
  campaign 3x); the calendar covers known campaigns and the first week of history, where there is no
  median yet. Every SKU of the shop carries the shop's flag for that day.

Output columns: ``shop_id, sku_key, day`` (``datetime.date``), ``units_gross, units_net, orders``
(int64; ``orders`` = paid trades with the SKU that day), ``revenue_gross, revenue_net`` (``Decimal``
yuan, 2 places, like the warehouse's money columns), ``promo_day`` (bool).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from ordersync_pipeline.forecast.keys import (day_dates, id_text, require_columns, shanghai_days, sku_keys,
                                              to_fen)

LINE_COLUMNS = ("shop_id", "tid", "oid", "num_iid", "sku_id", "outer_iid", "outer_sku_id", "num", "payment",
                "status", "type", "step_trade_status", "pay_time")
REFUND_COLUMNS = ("shop_id", "oid", "status", "refund_fee", "modified")
UNPAID_STATUSES = frozenset({"WAIT_BUYER_PAY", "TRADE_NO_CREATE_PAY", "PAY_PENDING"})
CLOSED_UNPAID = "TRADE_CLOSED_BY_TAOBAO"
BALANCE_PAID = "FRONT_PAID_FINAL_PAID"
PROMO_FACTOR = 2.0
PROMO_WINDOW_DAYS = 28
PROMO_MIN_DAYS = 7
OUTPUT_COLUMNS = ("shop_id", "sku_key", "day", "units_gross", "units_net", "revenue_gross", "revenue_net",
                  "orders", "promo_day")

PromoCalendar = Iterable[date] | Mapping[str, Iterable[date]]
# Column types of an empty read (forecast/store.py): times aware, money float yuan.
_EMPTY_DTYPES = {"pay_time": "datetime64[ns, UTC]", "payment": "float64"}


@dataclass(frozen=True)
class DailySales:
    """The ``daily_sales`` frame plus what was left out and why (for run metadata)."""

    frame: pd.DataFrame
    start: date | None
    end: date | None
    lines_counted: int
    lines_excluded: dict[str, int] = field(default_factory=dict)   # reason -> lines
    refunds_applied: int = 0
    refunds_ignored: dict[str, int] = field(default_factory=dict)  # reason -> refunds
    promo_days: dict[str, list[date]] = field(default_factory=dict)  # shop_id -> flagged days


def build_daily_sales(order_lines: pd.DataFrame, refunds: pd.DataFrame | None = None, *,
                      start: date | None = None, end: date | None = None,
                      promo_calendar: PromoCalendar | None = None,
                      promo_factor: float = PROMO_FACTOR) -> DailySales:
    """Daily sales per shop, SKU and day over ``[start, end]`` (inclusive Shanghai days).

    ``start``/``end`` None = the first/last day with a sale or a refund. ``refunds`` None = no refunds
    known (gross equals net). ``promo_calendar`` is a list of days for every shop, or a mapping
    shop_id -> days.
    """
    return daily_sales_of(*sale_lines(order_lines), refunds, start=start, end=end,
                          promo_calendar=promo_calendar, promo_factor=promo_factor)


def sale_lines(order_lines: pd.DataFrame | Iterable[pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The lines that are sales (shop, oid, tid, SKU key, day, units, fen) and the counts of the rest by
    reason, from one frame of order lines or from chunks of them. Each chunk is reduced as it comes, so
    only the reduced lines of the whole window are held at once, never the raw ones (a line's
    classification is its own; an oid is one row of trade_orders, so it never spans chunks)."""
    chunks = [order_lines] if isinstance(order_lines, pd.DataFrame) else order_lines
    parts: list[pd.DataFrame] = []
    excluded: dict[str, int] = {}
    for chunk in chunks:
        require_columns(chunk, LINE_COLUMNS, "order_lines")
        lines, counts = _sale_lines(chunk)
        parts.append(lines)
        for reason, n in counts.items():
            excluded[reason] = excluded.get(reason, 0) + n
    if not parts:  # no chunk at all: the reduction of an empty frame gives the columns and reasons
        return _sale_lines(pd.DataFrame({c: pd.Series(dtype=_EMPTY_DTYPES.get(c, object)) for c in LINE_COLUMNS}))
    return (pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]), excluded


def daily_sales_of(lines: pd.DataFrame, excluded: dict[str, int], refunds: pd.DataFrame | None = None, *,
                   start: date | None = None, end: date | None = None,
                   promo_calendar: PromoCalendar | None = None,
                   promo_factor: float = PROMO_FACTOR) -> DailySales:
    """``build_daily_sales`` from lines already reduced by ``sale_lines``."""
    excluded = dict(excluded)
    refund_rows, ignored = refund_rows_of(refunds, lines)
    lo = _day_number(start) if start is not None else _min_day(lines["day"], refund_rows["day"])
    hi = _day_number(end) if end is not None else _max_day(lines["day"], refund_rows["day"])
    if lo is None or hi is None or hi < lo:
        return DailySales(_empty_frame(), start, end, 0, excluded, 0, ignored)
    inside = lines["day"].between(lo, hi)
    excluded["outside_window"] = int((~inside).sum())
    lines = lines[inside]
    return daily_sales_from_groups(gross_groups(lines), shop_day_trades(lines), refund_rows, lo=lo, hi=hi,
                                   lines_counted=len(lines), excluded=excluded, ignored=ignored,
                                   promo_calendar=promo_calendar, promo_factor=promo_factor)


def gross_groups(lines: pd.DataFrame) -> pd.DataFrame:
    """Counted lines -> units, fen and distinct trades per (shop_id, sku_key, day)."""
    keys = ["shop_id", "sku_key", "day"]
    return lines.groupby(keys, sort=False).agg(units_gross=("num", "sum"), fen_gross=("fen", "sum"),
                                               orders=("tid", "nunique")).reset_index()


def shop_day_trades(lines: pd.DataFrame) -> pd.DataFrame:
    """Counted lines -> distinct paid trades per (shop_id, day), what promotion detection counts."""
    return lines.groupby(["shop_id", "day"], sort=True)["tid"].nunique().rename("trades").reset_index()


def daily_sales_from_groups(gross: pd.DataFrame, trades: pd.DataFrame, refund_rows: pd.DataFrame, *,
                            lo: int, hi: int, lines_counted: int,
                            excluded: dict[str, int], ignored: dict[str, int],
                            promo_calendar: PromoCalendar | None = None,
                            promo_factor: float = PROMO_FACTOR) -> DailySales:
    """The ``daily_sales`` of a window ``[lo, hi]`` (day numbers) from its sales already reduced: ``gross``
    (``gross_groups`` of the counted lines inside the window), ``trades`` (``shop_day_trades`` of them) and
    ``refund_rows`` (``refund_rows_of``; those outside the window are counted in ``ignored`` and left out).
    The pandas path and the warehouse's grouped reads (forecast/sql_sales.py) both end here."""
    ignored = dict(ignored)
    refund_inside = refund_rows["day"].between(lo, hi)
    ignored["outside_window"] = int((~refund_inside).sum())
    refund_rows = refund_rows[refund_inside]
    frame = _daily_grid(gross, refund_rows, lo, hi)
    promo = _promo_days(trades, lo, hi, promo_factor, promo_calendar)
    flagged = promo[promo["promo_day"]]
    frame = frame.merge(promo, on=["shop_id", "day"], how="left")
    frame["promo_day"] = frame["promo_day"].fillna(False).astype(bool)
    frame = _finish(frame)
    return DailySales(
        frame, day_dates(np.array([lo]))[0], day_dates(np.array([hi]))[0], lines_counted, excluded, len(refund_rows),
        ignored, {str(s): list(day_dates(g["day"].to_numpy("int64"))) for s, g in flagged.groupby("shop_id")})


def _sale_lines(order_lines: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The lines that are sales, with key, day, units and fen; and counts of the rest by reason."""
    src = order_lines.drop_duplicates(subset=["shop_id", "oid"], keep="last")
    status = src["status"].astype("string")
    step = src["type"].astype("string") == "step"
    day = shanghai_days(src["pay_time"], "order_lines.pay_time")
    key = sku_keys(src)
    reasons = [
        ("closed_unpaid", status == CLOSED_UNPAID),
        ("presale_balance_unpaid", step & (src["step_trade_status"].astype("string") != BALANCE_PAID)),
        ("unpaid", status.isin(UNPAID_STATUSES) | day.isna()),
        ("no_sku_key", key.isna()),
    ]
    keep = pd.Series(True, index=src.index)
    excluded: dict[str, int] = {"duplicate_oid": len(order_lines) - len(src)}
    for reason, mask in reasons:
        hit = keep & mask.fillna(False).astype(bool)
        excluded[reason] = int(hit.sum())
        keep &= ~hit
    kept = src[keep]
    lines = pd.DataFrame({
        "shop_id": kept["shop_id"].astype("string"), "oid": id_text(kept["oid"]), "tid": id_text(kept["tid"]),
        "sku_key": key[keep], "day": day[keep].astype("int64"),
        "num": pd.to_numeric(kept["num"]).fillna(0).astype("int64"),
        "fen": to_fen(kept["payment"], "order_lines.payment")})
    return lines.reset_index(drop=True), excluded


def refund_rows_of(refunds: pd.DataFrame | None, lines: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Successful refunds of counted lines (``lines`` as ``sale_lines`` gives them): shop, SKU, day, units
    returned and fen refunded; and the refunds left out, by reason."""
    columns = {"shop_id": "string", "sku_key": "string", "day": "int64", "units": "int64", "fen": "int64"}
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    if refunds is None or refunds.empty:
        return empty, {}
    require_columns(refunds, REFUND_COLUMNS, "refunds")
    src = refunds
    if "refund_id" in src.columns:
        src = src.sort_values("modified", kind="stable").drop_duplicates(subset=["refund_id"], keep="last")
    success = src["status"].astype("string") == "SUCCESS"
    ignored = {"not_success": int((~success.fillna(False)).sum())}
    src = src[success.fillna(False).astype(bool)]
    rows = pd.DataFrame({"shop_id": src["shop_id"].astype("string"), "oid": id_text(src["oid"]),
                         "day": shanghai_days(src["modified"], "refunds.modified"),
                         "refund_fen": to_fen(src["refund_fee"], "refunds.refund_fee")})
    merged = rows.merge(lines[["shop_id", "oid", "sku_key", "num", "fen"]], on=["shop_id", "oid"], how="left")
    no_day = merged["day"].isna()
    unmatched = merged["sku_key"].isna() & ~no_day
    ignored["no_modified"] = int(no_day.sum())
    ignored["not_a_counted_sale"] = int(unmatched.sum())
    unmatched |= no_day
    merged = merged[~unmatched].copy()
    if merged.empty:
        return empty, ignored
    merged["day"] = merged["day"].astype("int64")
    whole = merged["refund_fen"] >= merged["fen"]
    partial = (merged["num"] * merged["refund_fen"]) // merged["fen"].where(merged["fen"] > 0, 1)
    merged["units"] = np.where(whole, merged["num"], partial).astype("int64")
    # A line never returns more units than it sold: cap the running total per line.
    merged = merged.sort_values(["shop_id", "oid", "day"], kind="stable")
    running = merged.groupby(["shop_id", "oid"])["units"].cumsum().clip(upper=merged["num"])
    merged["units"] = running - running.groupby([merged["shop_id"], merged["oid"]]).shift(fill_value=0)
    out = merged.rename(columns={"fen": "line_fen"}).assign(fen=merged["refund_fen"])
    return out[list(columns)].astype(columns), ignored


def _daily_grid(gross: pd.DataFrame, refund_rows: pd.DataFrame, lo: int, hi: int) -> pd.DataFrame:
    """Every active (shop, SKU) x every day, with gross sales (``gross_groups``) and refunds summed in."""
    keys = ["shop_id", "sku_key", "day"]
    back = refund_rows.groupby(keys, sort=False).agg(units_back=("units", "sum"),
                                                      fen_back=("fen", "sum")).reset_index()
    skus = pd.concat([gross[["shop_id", "sku_key"]], back[["shop_id", "sku_key"]]]).drop_duplicates()
    skus = skus.sort_values(["shop_id", "sku_key"]).reset_index(drop=True)
    n_days = hi - lo + 1
    grid = pd.DataFrame({"shop_id": np.repeat(skus["shop_id"].to_numpy(), n_days),
                         "sku_key": np.repeat(skus["sku_key"].to_numpy(), n_days),
                         "day": np.tile(np.arange(lo, hi + 1, dtype="int64"), len(skus))})
    grid = grid.astype({"shop_id": "string", "sku_key": "string"})
    grid = grid.merge(gross, on=keys, how="left").merge(back, on=keys, how="left")
    for col in ("units_gross", "fen_gross", "orders", "units_back", "fen_back"):
        grid[col] = grid[col].fillna(0).astype("int64")
    grid["units_net"] = grid["units_gross"] - grid["units_back"]
    grid["fen_net"] = grid["fen_gross"] - grid["fen_back"]
    return grid


def _promo_days(trades: pd.DataFrame, lo: int, hi: int, factor: float,
                calendar: PromoCalendar | None) -> pd.DataFrame:
    """(shop_id, day, promo_day) for every shop with a paid trade (``shop_day_trades``) and every day of
    the window."""
    days = np.arange(lo, hi + 1, dtype="int64")
    parts = []
    for shop_id, shop_trades in trades.groupby("shop_id", sort=True):
        orders = shop_trades.set_index("day")["trades"].reindex(days, fill_value=0).astype("float64")
        median = orders.shift(1).rolling(PROMO_WINDOW_DAYS, min_periods=PROMO_MIN_DAYS).median()
        detected = (orders > factor * median).fillna(False).to_numpy(dtype=bool)
        listed = np.isin(days, _calendar_days(calendar, str(shop_id)))
        parts.append(pd.DataFrame({"shop_id": str(shop_id), "day": days, "promo_day": detected | listed}))
    if not parts:
        return pd.DataFrame({"shop_id": pd.Series(dtype="string"), "day": pd.Series(dtype="int64"),
                             "promo_day": pd.Series(dtype=bool)})
    return pd.concat(parts, ignore_index=True).astype({"shop_id": "string"})


def _calendar_days(calendar: PromoCalendar | None, shop_id: str) -> list[int]:
    if calendar is None:
        return []
    days: Collection[date] | Iterable[date] = (calendar.get(shop_id, ()) if isinstance(calendar, Mapping)
                                               else calendar)
    return [_day_number(d) for d in days]


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({
        "shop_id": frame["shop_id"].astype("string"), "sku_key": frame["sku_key"].astype("string"),
        "day": day_dates(frame["day"].to_numpy("int64")),
        "units_gross": frame["units_gross"], "units_net": frame["units_net"],
        "revenue_gross": _yuan(frame["fen_gross"]), "revenue_net": _yuan(frame["fen_net"]),
        "orders": frame["orders"], "promo_day": frame["promo_day"]})
    return out.sort_values(["shop_id", "sku_key", "day"], kind="stable").reset_index(drop=True)


def _yuan(fen: pd.Series) -> pd.Series:
    memo: dict[int, Decimal] = {}  # daily amounts repeat a lot (zeros above all)

    def one(v: int) -> Decimal:
        d = memo.get(v)
        if d is None:
            d = memo[v] = Decimal(v).scaleb(-2)
        return d
    return pd.Series([one(v) for v in fen.to_numpy("int64").tolist()], index=fen.index, dtype=object)


def _empty_frame() -> pd.DataFrame:
    dtypes: dict[str, Any] = {"shop_id": "string", "sku_key": "string", "day": object, "units_gross": "int64",
                              "units_net": "int64", "revenue_gross": object, "revenue_net": object,
                              "orders": "int64", "promo_day": bool}
    return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in OUTPUT_COLUMNS})


def _day_number(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def _min_day(*series: pd.Series) -> int | None:
    values = [int(s.min()) for s in series if len(s)]
    return min(values) if values else None


def _max_day(*series: pd.Series) -> int | None:
    values = [int(s.max()) for s in series if len(s)]
    return max(values) if values else None
