"""``daily_sales`` reduced inside the warehouse: the same frame as ``build_daily_sales`` over the lines and
refunds that forecast/store.py reads, without shipping every order line of the window to pandas.

The database groups the lines (sales.py's "is a sale" rule in SQL) by shop, raw SKU ids and Shanghai day
with sums of units and payment, distinct trades and the line count; pandas keys those few groups
(keys.py, the one definition of a SKU key) and finishes with ``daily_sales_from_groups``. Paid trades per
shop and day (promotion detection) are a second grouped query. Only SUCCESS refunds of the window are read
with their line's detail, and go through the same ``sale_lines`` and ``refund_rows_of`` as before.

Where SQL and pandas could disagree, the exact answer is recomputed from the lines of the shop-days
concerned (few or none in practice):

* distinct trades do not add up when two raw id tuples of one shop-day share a SKU key (``sku:1`` sold
  under two outer codes) and one trade has both;
* SQL's TRIM strips spaces only, Python's strip all whitespace, so an id of a lone tab is a key in SQL
  and none in pandas.

On MariaDB text is grouped and compared as bytes: its ``utf8mb4_unicode_ci`` collation is case- and
trailing-space-insensitive, where pandas (and PostgreSQL and SQLite) tell ``A1`` from ``a1``. Shanghai
is a fixed UTC+8 (no DST since 1991), so its day is the UTC time shifted by 8 hours on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from ordersync_pipeline.forecast.keys import sku_keys
from ordersync_pipeline.forecast.sales import (BALANCE_PAID, CLOSED_UNPAID, PROMO_FACTOR, UNPAID_STATUSES,
                                               DailySales, PromoCalendar, daily_sales_from_groups, refund_rows_of,
                                               sale_lines)
from ordersync_pipeline.forecast.store import REFUND_LOOKBACK_DAYS, day_start
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import metadata, trade_orders, trades

__all__ = ["daily_sales_in_warehouse"]

_IDS = ("num_iid", "sku_id", "outer_iid", "outer_sku_id")
_SALE = "sale"
_PAIRS_PER_QUERY = 200  # shop-days recomputed per query: bounds the statement's size


class _ShanghaiDay(FunctionElement[int]):
    """The Asia/Shanghai calendar day of a UTCDateTime column, as days since 1970-01-01."""

    type = sa.Integer()
    inherit_cache = True
    name = "shanghai_day"


@compiles(_ShanghaiDay, "postgresql")
def _shanghai_day_pg(element: _ShanghaiDay, compiler: SQLCompiler, **kw: Any) -> str:
    # TIMESTAMPTZ: read as UTC whatever the session's time zone, then shift.
    col = compiler.process(element.clauses, **kw)
    return f"(CAST(({col}) AT TIME ZONE 'UTC' + INTERVAL '8 hours' AS DATE) - DATE '1970-01-01')"


@compiles(_ShanghaiDay, "mysql")
@compiles(_ShanghaiDay, "mariadb")
def _shanghai_day_mysql(element: _ShanghaiDay, compiler: SQLCompiler, **kw: Any) -> str:
    # DATETIME holding naive UTC; TO_DAYS('1970-01-01') = 719528.
    col = compiler.process(element.clauses, **kw)
    return f"(TO_DAYS(({col}) + INTERVAL 8 HOUR) - 719528)"


@compiles(_ShanghaiDay, "sqlite")
def _shanghai_day_sqlite(element: _ShanghaiDay, compiler: SQLCompiler, **kw: Any) -> str:
    # ISO text of naive UTC; julianday of a date is a whole day + .5, so the difference is exact.
    col = compiler.process(element.clauses, **kw)
    return f"CAST(julianday(date({col}, '+8 hours')) - 2440587.5 AS INTEGER)"


class _Exact(FunctionElement[str]):
    """A text column compared and grouped byte for byte (MariaDB's collation folds case and trailing
    spaces); the column itself elsewhere."""

    type = sa.String()
    inherit_cache = True
    name = "exact_text"


@compiles(_Exact)
def _exact_default(element: _Exact, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(_Exact, "mysql")
@compiles(_Exact, "mariadb")
def _exact_mysql(element: _Exact, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS BINARY)"


def daily_sales_in_warehouse(warehouse: Warehouse, shop_ids: Sequence[str], *, start: date, end: date,
                             promo_calendar: PromoCalendar | None = None,
                             promo_factor: float = PROMO_FACTOR) -> DailySales:
    """``build_daily_sales(read_order_lines(...), read_refunds(...), start=start, end=end)``, reduced in
    the database: same frame, exclusion counts and refund counts."""
    lo, hi = _day_number(start), _day_number(end)
    groups = _line_groups(warehouse, shop_ids, start=start, end=end)
    excluded, counted, disagree = _classify(groups, lo)
    gross = _gross(counted)
    per_day = _shop_trades(warehouse, shop_ids, start=start, end=end)
    pairs = _uncertain_shop_days(counted, disagree)
    if pairs:
        gross, per_day = _recount(warehouse, pairs, gross, per_day)
    refund_rows, ignored = _refunds(warehouse, shop_ids, start=start, end=end)
    return daily_sales_from_groups(gross, per_day, refund_rows, lo=lo, hi=hi,
                                   lines_counted=int(counted["lines"].sum()), excluded=excluded, ignored=ignored,
                                   promo_calendar=promo_calendar, promo_factor=promo_factor)


# ------------------------------------------------------------------ lines


def _sale_rule_whens() -> list[tuple[sa.ColumnElement[bool], str]]:
    """sales.py's exclusions as CASE branches, first matching reason first (a NULL matches nothing, as
    pandas' NA does)."""
    status, kind, step = _Exact(trades.c.status), _Exact(trades.c.type), _Exact(trades.c.step_trade_status)
    return [(status == CLOSED_UNPAID, "closed_unpaid"),
            ((kind == "step") & (step != BALANCE_PAID), "presale_balance_unpaid"),
            (status.in_(sorted(UNPAID_STATUSES)) | trades.c.pay_time.is_(None), "unpaid")]


def _is_sale() -> sa.ColumnElement[bool]:
    return sa.case(*_sale_rule_whens(), else_=_SALE) == _SALE


def _key_in_sql() -> sa.ColumnElement[bool]:
    """A line has some id to key it by, as SQL sees it (TRIM: spaces only; see the module docstring)."""
    return sa.or_(trade_orders.c.num_iid.is_not(None),
                  *(sa.func.trim(trade_orders.c[c]) != "" for c in _IDS[1:]))


def _lines_source() -> sa.FromClause:
    return trade_orders.join(trades, trades.c.tid == trade_orders.c.tid)


def _line_window(shop_ids: Sequence[str], since: Any, until: Any) -> list[sa.ColumnElement[bool]]:
    return [trade_orders.c.shop_id.in_(list(shop_ids)), trades.c.pay_time >= since, trades.c.pay_time < until]


def _line_groups(warehouse: Warehouse, shop_ids: Sequence[str], *, start: date, end: date) -> pd.DataFrame:
    """The lines paid in ``[start - lookback, end]`` (refunds in the window may reach sales before it)
    grouped by shop, reason (``sale`` or sales.py's exclusion), raw ids and day."""
    since, until = day_start(start - timedelta(days=REFUND_LOOKBACK_DAYS)), day_start(end + timedelta(days=1))
    # Grouped on columns of a subquery: grouped on expressions with bound values, PostgreSQL would take the
    # SELECT's and the GROUP BY's parameters for different expressions.
    lines = sa.select(
        _Exact(trade_orders.c.shop_id).label("shop_id"), trade_orders.c.tid, trade_orders.c.num,
        sa.type_coerce(trade_orders.c.payment, sa.types.NullType()).label("payment"),
        sa.case(*_sale_rule_whens(), else_=_SALE).label("reason"),
        trade_orders.c.num_iid, *(_Exact(trade_orders.c[c]).label(c) for c in _IDS[1:]),
        _ShanghaiDay(trades.c.pay_time).label("day"), sa.case((_key_in_sql(), 1), else_=0).label("sql_key"),
    ).select_from(_lines_source()).where(*_line_window(shop_ids, since, until)).subquery("lines")
    group_cols = [lines.c.shop_id, lines.c.reason, *(lines.c[c] for c in _IDS), lines.c.day]
    query = sa.select(*group_cols, sa.func.count().label("lines"), sa.func.sum(lines.c.num).label("units"),
                      sa.func.sum(lines.c.payment).label("payment"),
                      sa.func.count(sa.distinct(lines.c.tid)).label("trades"),
                      sa.func.max(lines.c.sql_key).label("sql_key")).group_by(*group_cols)
    with warehouse.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(query)]
    names = ["shop_id", "reason", *_IDS, "day", "lines", "units", "payment", "trades", "sql_key"]
    by_column = dict(zip(names, zip(*rows))) if rows else {n: () for n in names}
    return pd.DataFrame({
        "shop_id": pd.Series([_text(v) for v in by_column["shop_id"]], dtype="string"),
        "reason": pd.Series([_text(v) for v in by_column["reason"]], dtype="string"),
        # object, not float64 (ints with None): keys.py's text of an id must not depend on a float's 53 bits
        "num_iid": pd.Series(list(by_column["num_iid"]), dtype=object),
        **{c: pd.Series([_text(v) for v in by_column[c]], dtype=object) for c in _IDS[1:]},
        "day": pd.Series(list(by_column["day"]), dtype="Int64"),
        **{c: pd.Series([int(v or 0) for v in by_column[c]], dtype="int64")
           for c in ("lines", "units", "trades", "sql_key")},
        "fen": pd.Series([_fen(v, dialect=warehouse.engine.dialect.name) for v in by_column["payment"]],
                         dtype="int64")})


def _classify(groups: pd.DataFrame, lo: int) -> tuple[dict[str, int], pd.DataFrame, pd.DataFrame]:
    """sales.py's exclusion counts; the counted groups inside the window (from day ``lo``), with their
    ``sku_key``; and the (shop_id, day) of sales in the window that SQL and keys.py key differently."""
    lines_of = groups.groupby("reason")["lines"].sum()
    sales = groups[groups["reason"] == _SALE]
    sales = sales.assign(sku_key=sku_keys(sales))
    no_key = sales["sku_key"].isna()
    inside = sales["day"] >= lo
    # sales.py's reasons in its order (the run metadata lists them so)
    counts = {"duplicate_oid": 0,  # oid is trade_orders' primary key
              **{r: int(lines_of.get(r, 0)) for r in ("closed_unpaid", "presale_balance_unpaid", "unpaid")},
              "no_sku_key": int(sales.loc[no_key, "lines"].sum()),
              "outside_window": int(sales.loc[~no_key & ~inside, "lines"].sum())}
    counted = sales[~no_key & inside].astype({"day": "int64", "sku_key": "string"})
    disagree = sales.loc[inside & (no_key == (sales["sql_key"] == 1)), ["shop_id", "day"]].astype({"day": "int64"})
    return counts, counted.reset_index(drop=True), disagree


def _gross(counted: pd.DataFrame) -> pd.DataFrame:
    """``gross_groups`` of the counted groups (``orders`` exact unless ``_uncertain_shop_days`` says so)."""
    gross = counted.groupby(["shop_id", "sku_key", "day"], sort=False).agg(
        units_gross=("units", "sum"), fen_gross=("fen", "sum"), orders=("trades", "sum")).reset_index()
    return gross.astype({"units_gross": "int64", "fen_gross": "int64", "orders": "int64"})


def _shop_trades(warehouse: Warehouse, shop_ids: Sequence[str], *, start: date, end: date) -> pd.DataFrame:
    """``shop_day_trades``: distinct paid trades with a keyed line per shop and day of the window."""
    shop, day = _Exact(trade_orders.c.shop_id).label("shop_id"), _ShanghaiDay(trades.c.pay_time).label("day")
    query = (sa.select(shop, day, sa.func.count(sa.distinct(trade_orders.c.tid)))
             .select_from(_lines_source())
             .where(*_line_window(shop_ids, day_start(start), day_start(end + timedelta(days=1))),
                    _is_sale(), _key_in_sql())
             .group_by(shop, day))
    with warehouse.engine.connect() as conn:
        rows = [(_text(s), int(d), int(n)) for s, d, n in conn.execute(query)]
    return pd.DataFrame(rows, columns=["shop_id", "day", "trades"]).astype(
        {"shop_id": "string", "day": "int64", "trades": "int64"})


def _uncertain_shop_days(counted: pd.DataFrame, disagree: pd.DataFrame) -> list[tuple[str, int]]:
    """Shop-days whose distinct trade counts the groups cannot give exactly (module docstring): two raw
    id tuples with one key, or a line SQL and keys.py key differently."""
    parts = counted.groupby(["shop_id", "sku_key", "day"], sort=False).size()
    merged = parts[parts > 1].reset_index()[["shop_id", "day"]]
    both = pd.concat([merged, disagree]).drop_duplicates()
    return sorted((str(s), int(d)) for s, d in zip(both["shop_id"], both["day"]))


def _recount(warehouse: Warehouse, pairs: list[tuple[str, int]], gross: pd.DataFrame,
             per_day: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``gross`` and ``per_day`` (trades per shop and day) with the distinct trade counts of ``pairs`` taken from their lines."""
    shop = _Exact(trade_orders.c.shop_id).label("shop_id")
    parts = []
    for i in range(0, len(pairs), _PAIRS_PER_QUERY):
        chunk = pairs[i:i + _PAIRS_PER_QUERY]
        which = sa.or_(*((trade_orders.c.shop_id == s) & (trades.c.pay_time >= day_start(_date(d)))
                         & (trades.c.pay_time < day_start(_date(d + 1))) for s, d in chunk))
        query = (sa.select(shop, trade_orders.c.tid, trade_orders.c.num_iid,
                           *(_Exact(trade_orders.c[c]).label(c) for c in _IDS[1:]),
                           _ShanghaiDay(trades.c.pay_time).label("day"))
                 .select_from(_lines_source()).where(which, _is_sale()))
        with warehouse.engine.connect() as conn:
            parts += [tuple(_text(v) for v in r) for r in conn.execute(query)]
    lines = pd.DataFrame(parts, columns=["shop_id", "tid", *_IDS, "day"], dtype=object)
    lines = lines.assign(sku_key=sku_keys(lines), shop_id=lines["shop_id"].astype("string"),
                         day=lines["day"].astype("int64"))
    wanted = pd.MultiIndex.from_tuples(pairs, names=["shop_id", "day"])
    lines = lines[lines["sku_key"].notna() & pd.MultiIndex.from_frame(lines[["shop_id", "day"]]).isin(wanted)]
    keys = ["shop_id", "sku_key", "day"]
    exact = lines.groupby(keys)["tid"].nunique().rename("exact").reset_index().astype({"sku_key": "string"})
    in_pairs = pd.MultiIndex.from_frame(gross[["shop_id", "day"]]).isin(wanted)
    gross = gross.merge(exact, on=keys, how="left")
    gross["orders"] = np.where(in_pairs, gross["exact"].fillna(0), gross["orders"]).astype("int64")
    gross = gross.drop(columns="exact")
    recounted = lines.groupby(["shop_id", "day"])["tid"].nunique().rename("trades").reset_index()
    kept = per_day[~pd.MultiIndex.from_frame(per_day[["shop_id", "day"]]).isin(wanted)]
    per_day = pd.concat([kept, recounted.astype({"shop_id": "string", "day": "int64", "trades": "int64"})],
                        ignore_index=True)
    return gross, per_day


# ------------------------------------------------------------------ refunds


def _refunds(warehouse: Warehouse, shop_ids: Sequence[str], *, start: date,
             end: date) -> tuple[pd.DataFrame, dict[str, int]]:
    """``refund_rows_of`` the window's refunds: the SUCCESS ones read with their line (and its trade if
    paid within the lookback, as the bulk read would have had it); the others only counted."""
    refunds = metadata.tables.get("refunds")
    empty, _ = refund_rows_of(None, pd.DataFrame())
    if refunds is None or not sa.inspect(warehouse.engine).has_table("refunds"):
        return empty, {}
    since, first, until = (day_start(start - timedelta(days=REFUND_LOOKBACK_DAYS)), day_start(start),
                           day_start(end + timedelta(days=1)))
    window = [refunds.c.shop_id.in_(list(shop_ids)), refunds.c.modified >= first, refunds.c.modified < until]
    success = _Exact(refunds.c.status) == "SUCCESS"
    paid_in_reach = sa.and_(trades.c.tid == trade_orders.c.tid, trades.c.pay_time >= since,
                            trades.c.pay_time < until)
    detail = (sa.select(refunds.c.shop_id, refunds.c.oid, refunds.c.status, refunds.c.refund_fee, refunds.c.modified,
                        trade_orders.c.shop_id.label("line_shop_id"), trade_orders.c.tid, trade_orders.c.oid.label("line_oid"),
                        *(trade_orders.c[c] for c in _IDS), trade_orders.c.num, trade_orders.c.payment,
                        trades.c.status.label("trade_status"), trades.c.type, trades.c.step_trade_status,
                        trades.c.pay_time)
              .select_from(refunds.outerjoin(trade_orders, trade_orders.c.oid == refunds.c.oid)
                           .outerjoin(trades, paid_in_reach))
              .where(*window, success))
    others = sa.select(sa.func.count()).select_from(refunds).where(*window, sa.not_(success))
    with warehouse.engine.connect() as conn:
        # object columns: a LEFT JOIN's NULL would turn int ids into float64, which cannot hold TOP's
        # 19-digit oids exactly
        found = pd.DataFrame([tuple(r) for r in conn.execute(detail)], columns=list(detail.selected_columns.keys()),
                             dtype=object)
        not_success = int(conn.execute(others).scalar_one())
    if found.empty and not not_success:
        return empty, {}  # no refund in the window: as an empty refunds frame gives
    found["modified"] = pd.to_datetime(found["modified"], utc=True)
    found["pay_time"] = pd.to_datetime(found["pay_time"], utc=True)
    matched = found[found["line_oid"].notna()]
    lines = pd.DataFrame({"shop_id": matched["line_shop_id"], "tid": matched["tid"], "oid": matched["line_oid"],
                          **{c: matched[c] for c in (*_IDS, "num", "payment")},
                          "status": matched["trade_status"], "type": matched["type"],
                          "step_trade_status": matched["step_trade_status"], "pay_time": matched["pay_time"]})
    counted, _ = sale_lines(lines)
    rows, ignored = refund_rows_of(found[["shop_id", "oid", "status", "refund_fee", "modified"]], counted)
    if not ignored:  # no SUCCESS refund: refund_rows_of saw an empty frame
        ignored = {"no_modified": 0, "not_a_counted_sale": 0}
    return rows, {"not_success": not_success, "no_modified": ignored["no_modified"],
                  "not_a_counted_sale": ignored["not_a_counted_sale"]}


# ------------------------------------------------------------------ values


def _text(value: Any) -> Any:
    """MariaDB hands byte-compared text back as bytes."""
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else value


def _fen(value: Any, *, dialect: str) -> int:
    """A SUM of Money: Decimal yuan, or integer fen on SQLite (warehouse/types.py); NULL (no amount) = 0."""
    if value is None:
        return 0
    if dialect == "sqlite":
        return int(round(value))
    return int(Decimal(value).scaleb(2))


def _day_number(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def _date(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day)
