"""The warehouse side of the forecast: read its tables into the frames sales/model/replenish/freeze take,
and write their results back. No Dagster; SQLAlchemy Core on every backend.

Writes replace a whole slice in one transaction (a shop's freezes; the days of a daily_sales window; one
``as_of`` of the forecast and of the suggestions), so re-running any of them leaves one current copy.
The ``refunds`` table belongs to the refunds stream: while a warehouse has none, sales are gross = net.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ordersync_pipeline.timeutil import SHANGHAI
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import (INVENTORY_LATEST_VIEW, daily_sales, inventory_freeze,
                                                 inventory_snapshots, metadata, replenishment_suggestions,
                                                 sales_forecast, trade_orders, trades)

__all__ = ["day_start", "read_order_lines", "iter_order_lines", "read_presale_lines", "read_refunds", "read_daily_sales", "read_forecast",
           "read_inventory", "read_freezes", "read_suggestions", "replace_freezes", "replace_daily_sales",
           "replace_forecast", "replace_suggestions", "REFUND_LOOKBACK_DAYS"]

# Sales lines are read from this many days before a window: a refund in the window may belong to a sale
# before it (its units leave the day it succeeds; the sale must be known to count it).
REFUND_LOOKBACK_DAYS = 90
LINE_SELECT = (trade_orders.c.shop_id, trade_orders.c.tid, trade_orders.c.oid, trade_orders.c.num_iid,
               trade_orders.c.sku_id, trade_orders.c.outer_iid, trade_orders.c.outer_sku_id, trade_orders.c.num,
               trade_orders.c.payment, trades.c.status, trades.c.type, trades.c.step_trade_status,
               trades.c.pay_time, trades.c.created, trades.c.modified, trades.c.end_time)
# What daily sales read of a line (sales.py LINE_COLUMNS): the bulk read, so nothing more.
SALE_SELECT = LINE_SELECT[:13]
LINE_TIMES = ("pay_time", "created", "modified", "end_time")
CHUNK_ROWS = 10_000  # rows converted at a time: bounds the driver objects alive at once (50k: +58 MB peak)
inventory_latest = sa.table(INVENTORY_LATEST_VIEW, *(sa.column(c.name) for c in inventory_snapshots.columns))


def _frame(warehouse: Warehouse, query: sa.Select[Any], columns: Sequence[str],
           times: Sequence[str] = ()) -> pd.DataFrame:
    with warehouse.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(query)]
    frame = pd.DataFrame(rows, columns=list(columns))
    for col in times:  # aware datetimes (UTCDateTime) -> datetime64[ns, UTC], NaT for NULL
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def _bulk_frame(warehouse: Warehouse, select: Sequence[sa.ColumnElement[Any]], where: Sequence[sa.ColumnElement[bool]],
                source: sa.FromClause, *, times: Sequence[str] = (), money: Sequence[str] = ()) -> pd.DataFrame:
    """The rows of a large read as compact columns, without SQLAlchemy's per-value type processing.

    Times and money are read as the driver returns them (type-coerced to no type) and converted a column
    at a time: times are aware datetimes on PostgreSQL, naive UTC datetimes on MariaDB and ISO text on
    SQLite (warehouse/types.py), all UTC -> datetime64[ns, UTC] (NaT for NULL); money is Decimal yuan on
    PostgreSQL/MariaDB and integer fen on SQLite -> float64 yuan (NaN for NULL; exact to the fen, so
    ``keys.to_fen`` gets the same fen on every backend). Rows are converted in chunks so only one chunk's
    driver objects live at a time.
    """
    return _concat(_bulk_frames(warehouse, select, where, source, times=times, money=money))


def _concat(chunks: Iterable[pd.DataFrame]) -> pd.DataFrame:
    parts = list(chunks)
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _bulk_frames(warehouse: Warehouse, select: Sequence[sa.ColumnElement[Any]],
                 where: Sequence[sa.ColumnElement[bool]], source: sa.FromClause, *,
                 times: Sequence[str] = (), money: Sequence[str] = ()) -> Iterator[pd.DataFrame]:
    """``_bulk_frame``'s rows, one frame of at most ``CHUNK_ROWS`` rows at a time (one empty frame with
    the columns' types when there is no row)."""
    raw = set(times) | set(money)
    columns = [sa.type_coerce(c, sa.types.NullType()).label(c.name) if c.name in raw else c for c in select]
    query = sa.select(*columns).select_from(source).where(*where)
    names = [c.name for c in select]
    fen = warehouse.engine.dialect.name == "sqlite"  # Money is stored as integer fen there
    empty = True
    with warehouse.engine.connect() as conn:
        # Streamed CHUNK_ROWS at a time (a server-side cursor on PostgreSQL and MariaDB): a plain
        # execute buffers the whole result in the driver first, ~630 MB for a 1M-trade shop's window.
        result = conn.execution_options(yield_per=CHUNK_ROWS).execute(query)
        for rows in result.partitions(CHUNK_ROWS):
            by_column = list(zip(*rows))
            del rows
            data: dict[str, Any] = {}
            for name, values in zip(names, by_column):
                if name in times:
                    data[name] = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
                elif name in money:
                    amounts = np.array([np.nan if v is None else v for v in values], dtype="float64")
                    data[name] = amounts / 100 if fen else amounts
                else:  # text becomes pandas' str dtype (Arrow-backed): compact whatever repeats
                    data[name] = pd.Series(values)
            yield pd.DataFrame(data, columns=names)
            empty = False
    if empty:
        yield pd.DataFrame({n: pd.Series(dtype="datetime64[ns, UTC]" if n in times else
                                         "float64" if n in money else object) for n in names})


def day_start(day: date) -> datetime:
    """The first instant of an Asia/Shanghai day (the forecast's days; shared with sql_sales.py)."""
    return datetime(day.year, day.month, day.day, tzinfo=SHANGHAI)


def read_order_lines(warehouse: Warehouse, shop_ids: Sequence[str], *, start: date, end: date) -> pd.DataFrame:
    """Order lines (sales.py ``LINE_COLUMNS``: the line's ids, ``num``, ``payment`` as float yuan, and its
    trade's status/type/step status/``pay_time``), paid within ``[start - lookback, end]`` (Shanghai days)."""
    return _concat(iter_order_lines(warehouse, shop_ids, start=start, end=end))


def iter_order_lines(warehouse: Warehouse, shop_ids: Sequence[str], *, start: date,
                     end: date) -> Iterator[pd.DataFrame]:
    """``read_order_lines``' rows a chunk at a time, so a caller can reduce each chunk as it comes: the
    whole window's lines of a large shop are over a GB as one frame (1M trades: 1.8M lines)."""
    since = day_start(start - timedelta(days=REFUND_LOOKBACK_DAYS))
    until = day_start(end + timedelta(days=1))
    return _bulk_frames(warehouse, SALE_SELECT, [trade_orders.c.shop_id.in_(list(shop_ids)),
                                                 trades.c.pay_time >= since, trades.c.pay_time < until],
                        trade_orders.join(trades, trades.c.tid == trade_orders.c.tid),
                        times=("pay_time",), money=("payment",))


def read_presale_lines(warehouse: Warehouse, shop_ids: Sequence[str]) -> pd.DataFrame:
    """Every order line of a presale (``type == "step"``) trade of the shops (``payment`` as float yuan)."""
    return _bulk_frame(warehouse, LINE_SELECT, [trade_orders.c.shop_id.in_(list(shop_ids)), trades.c.type == "step"],
                       trade_orders.join(trades, trades.c.tid == trade_orders.c.tid), times=LINE_TIMES,
                       money=("payment",))


def read_refunds(warehouse: Warehouse, shop_ids: Sequence[str], *, start: date, end: date) -> pd.DataFrame | None:
    """Refunds modified within ``[start, end]`` (Shanghai days): ``shop_id, oid, status, refund_fee,
    modified``; None when the warehouse has no ``refunds`` table yet."""
    refunds = metadata.tables.get("refunds")
    if refunds is None or not sa.inspect(warehouse.engine).has_table("refunds"):
        return None
    query = sa.select(refunds.c.shop_id, refunds.c.oid, refunds.c.status, refunds.c.refund_fee,
                      refunds.c.modified).where(refunds.c.shop_id.in_(list(shop_ids)),
                                                refunds.c.modified >= day_start(start),
                                                refunds.c.modified < day_start(end + timedelta(days=1)))
    return _frame(warehouse, query, ["shop_id", "oid", "status", "refund_fee", "modified"], ("modified",))


def read_daily_sales(warehouse: Warehouse, shop_ids: Sequence[str], *, start: date, end: date) -> pd.DataFrame:
    cols = [c.name for c in daily_sales.columns]
    query = (sa.select(daily_sales).where(daily_sales.c.shop_id.in_(list(shop_ids)),
                                          daily_sales.c.day.between(start, end)))
    frame = _frame(warehouse, query, cols)
    return frame.astype({"units_gross": "int64", "units_net": "int64", "orders": "int64", "promo_day": "bool"})


def read_forecast(warehouse: Warehouse, shop_ids: Sequence[str], *, as_of: date) -> pd.DataFrame:
    query = sa.select(sales_forecast).where(sales_forecast.c.shop_id.in_(list(shop_ids)),
                                            sales_forecast.c.as_of == as_of)
    return _frame(warehouse, query, [c.name for c in sales_forecast.columns])


def read_inventory(warehouse: Warehouse, shop_ids: Sequence[str]) -> pd.DataFrame:
    """Each shop's newest snapshot (the ``inventory_latest`` view)."""
    query = sa.select(*inventory_latest.columns).where(inventory_latest.c.shop_id.in_(list(shop_ids)))
    return _frame(warehouse, query, [c.name for c in inventory_snapshots.columns], ("taken_at",))


def read_freezes(warehouse: Warehouse, shop_ids: Sequence[str]) -> pd.DataFrame:
    query = sa.select(inventory_freeze).where(inventory_freeze.c.shop_id.in_(list(shop_ids)))
    return _frame(warehouse, query, [c.name for c in inventory_freeze.columns], ("frozen_at", "released_at"))


def read_suggestions(warehouse: Warehouse, shop_ids: Sequence[str], *, as_of: date) -> pd.DataFrame:
    query = sa.select(replenishment_suggestions).where(replenishment_suggestions.c.shop_id.in_(list(shop_ids)),
                                                       replenishment_suggestions.c.as_of == as_of)
    return _frame(warehouse, query, [c.name for c in replenishment_suggestions.columns])


# ------------------------------------------------------------------ writes


def replace_freezes(warehouse: Warehouse, shop_ids: Sequence[str], frame: pd.DataFrame) -> int:
    """The shops' freeze rows become exactly ``frame``'s."""
    rows = _rows(frame, inventory_freeze)
    with warehouse.engine.begin() as conn:
        conn.execute(sa.delete(inventory_freeze).where(inventory_freeze.c.shop_id.in_(list(shop_ids))))
        _insert(conn, inventory_freeze, rows)
    return len(rows)


def replace_daily_sales(warehouse: Warehouse, shop_ids: Sequence[str], frame: pd.DataFrame, *, start: date,
                        end: date) -> int:
    """The shops' daily_sales rows for the days ``[start, end]`` become exactly ``frame``'s."""
    rows = _rows(frame, daily_sales)
    with warehouse.engine.begin() as conn:
        conn.execute(sa.delete(daily_sales).where(daily_sales.c.shop_id.in_(list(shop_ids)),
                                                  daily_sales.c.day.between(start, end)))
        _insert(conn, daily_sales, rows)
    return len(rows)


def replace_forecast(warehouse: Warehouse, shop_ids: Sequence[str], frame: pd.DataFrame, *, as_of: date) -> int:
    rows = _rows(frame, sales_forecast)
    with warehouse.engine.begin() as conn:
        conn.execute(sa.delete(sales_forecast).where(sales_forecast.c.shop_id.in_(list(shop_ids)),
                                                     sales_forecast.c.as_of == as_of))
        _insert(conn, sales_forecast, rows)
    return len(rows)


def replace_suggestions(warehouse: Warehouse, shop_ids: Sequence[str], frame: pd.DataFrame, *, as_of: date) -> int:
    rows = _rows(frame, replenishment_suggestions)
    with warehouse.engine.begin() as conn:
        conn.execute(sa.delete(replenishment_suggestions).where(
            replenishment_suggestions.c.shop_id.in_(list(shop_ids)), replenishment_suggestions.c.as_of == as_of))
        _insert(conn, replenishment_suggestions, rows)
    return len(rows)


def _insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], chunk: int = 5000) -> None:
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        _copy(conn, table, rows)
        return
    for i in range(0, len(rows), chunk):
        conn.execute(sa.insert(table), rows[i:i + chunk])


def _copy(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL: COPY the rows in, on the transaction's own connection (19k daily_sales rows: 1.3 s by
    executemany, 0.5 s by COPY, on a loaded machine). Values pass the columns' bind processing first, as
    an INSERT's would (a naive datetime is refused the same way)."""
    if not rows:
        return
    columns = list(table.columns)
    processors = [c.type.dialect_impl(conn.dialect).bind_processor(conn.dialect) for c in columns]
    names = ", ".join(conn.dialect.identifier_preparer.quote(c.name) for c in columns)
    driver: Any = conn.connection.driver_connection  # psycopg.Connection, inside the transaction begun
    with driver.cursor() as cursor, cursor.copy(f"COPY {conn.dialect.identifier_preparer.format_table(table)} "
                                               f"({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([v if p is None or v is None else p(v)
                            for v, p in zip((row[c.name] for c in columns), processors)])


def _rows(frame: pd.DataFrame, table: sa.Table) -> list[dict[str, Any]]:
    """The table's columns of ``frame`` as plain Python values (None for missing), ready to insert."""
    names = [c.name for c in table.columns]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ValueError(f"{table.name}: frame lacks column(s) {missing}")
    return [{n: _plain(v) for n, v in zip(names, values)}
            for values in frame[names].itertuples(index=False, name=None)]


def _plain(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (bool, int, float, str, Decimal, date, datetime)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value
