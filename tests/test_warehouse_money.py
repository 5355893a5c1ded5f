"""Money is exact on every backend: a million random cent amounts sum to the exact Python total, and on
SQLite the money columns hold integer fen (also after migrating a warehouse that held floats)."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic import command

from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.migrator import alembic_config
from ordersync_pipeline.warehouse.tables import MYSQL_TABLE_ARGS
from ordersync_pipeline.warehouse.types import Money

N_AMOUNTS = 1_000_000
T0 = datetime(2026, 11, 11, tzinfo=timezone(timedelta(hours=8)))

# A scratch table with the warehouse's own Money type: the property under test is the type's storage.
amounts = sa.Table("money_sum_check", sa.MetaData(), sa.Column("amount", Money), **MYSQL_TABLE_ARGS)


@pytest.fixture
def engine(any_warehouse_url: str) -> Iterator[sa.Engine]:
    warehouse = Warehouse(any_warehouse_url)  # the warehouse's own engine setup (drivers, charset)
    amounts.create(warehouse.engine)
    yield warehouse.engine
    warehouse.dispose()


@functools.cache
def random_amounts() -> tuple[Decimal, ...]:
    """Cents from 0.01 to 99,999.99, the shape that made SQLite's float sums drift."""
    rng = random.Random(20261130)
    return tuple(Decimal(rng.randint(1, 9_999_999)).scaleb(-2) for _ in range(N_AMOUNTS))


def _insert(engine: sa.Engine, values: tuple[Decimal, ...]) -> None:
    """Bulk paths, each value converted by the Money type's own bind processing (what every load
    through SQLAlchemy applies), so the test measures the type's storage and not the loader."""
    dialect = engine.dialect
    bind = Money().dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)
    with engine.begin() as conn:
        if dialect.name == "postgresql":
            # Binary COPY of Decimals, as the warehouse loads trades on PostgreSQL.
            raw = conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cursor, cursor.copy("COPY money_sum_check (amount) FROM STDIN") as copy:
                for value in values:
                    copy.write_row((value,))
        elif dialect.name == "sqlite":
            conn.exec_driver_sql("INSERT INTO money_sum_check (amount) VALUES (?)",
                                 [(bind(value),) for value in values])
        else:
            # Multi-row INSERTs, as PyMySQL's executemany sends them, without its per-value escaping
            # (the values are our own Decimals: plain numeric literals).
            for start in range(0, len(values), 100_000):
                rows = ",".join(f"({bind(value)})" for value in values[start : start + 100_000])
                conn.exec_driver_sql(f"INSERT INTO money_sum_check (amount) VALUES {rows}")


def test_a_million_random_cents_sum_exactly(engine: sa.Engine) -> None:
    values = random_amounts()
    _insert(engine, values)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(amounts)).scalar_one() == N_AMOUNTS
        total = conn.execute(sa.select(sa.func.sum(amounts.c.amount))).scalar_one()
        raw_total = conn.exec_driver_sql("SELECT sum(amount) FROM money_sum_check").scalar_one()
    expected = sum(values, Decimal(0))
    assert total == expected and isinstance(total, Decimal)  # through SQLAlchemy: Decimal yuan
    if engine.dialect.name == "sqlite":
        assert raw_total == int(expected * 100)  # raw SQL on SQLite: integer fen, exact
    else:
        assert Decimal(raw_total) == expected


def test_sqlite_stores_integer_fen_and_reads_decimal_yuan(sqlite_url: str) -> None:
    wh = Warehouse(sqlite_url)
    wh.migrate()
    wh.upsert_trades([{"tid": 1, "shop_id": "s", "modified": T0, "payment": Decimal("0.29"),
                       "total_fee": Decimal("999999999999.99"), "post_fee": Decimal("-3.50")}])
    with wh.engine.connect() as conn:
        stored = conn.exec_driver_sql(
            "SELECT payment, typeof(payment), total_fee, post_fee FROM trades").one()
    assert tuple(stored) == (29, "integer", 99999999999999, -350)
    trade = wh.get_trade(1)
    assert trade is not None
    assert (trade["payment"], trade["total_fee"], trade["post_fee"]) == (
        Decimal("0.29"), Decimal("999999999999.99"), Decimal("-3.50"))


def test_migrating_a_sqlite_warehouse_turns_its_float_money_into_fen(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        command.upgrade(alembic_config(conn), "0001_initial")
        conn.commit()
        # What revision 0001 stored: NUMERIC affinity made "0.29" a REAL, "89.00" an INTEGER.
        conn.exec_driver_sql(
            "INSERT INTO trades (tid, shop_id, modified, synced_at, payment, total_fee, post_fee) "
            "VALUES (1, 's', '2026-11-11 00:00:00', '2026-11-11 00:00:00', 0.29, 89, NULL)")
        conn.exec_driver_sql(
            "INSERT INTO trade_orders (oid, tid, shop_id, modified, synced_at, price, divide_order_fee) "
            "VALUES (11, 1, 's', '2026-11-11 00:00:00', '2026-11-11 00:00:00', 505015.38, 0.07)")
        conn.commit()
    engine.dispose()
    wh = Warehouse(sqlite_url)
    wh.migrate()
    with wh.engine.connect() as conn:
        assert tuple(conn.exec_driver_sql("SELECT payment, total_fee, post_fee FROM trades").one()) == (
            29, 8900, None)
        assert tuple(conn.exec_driver_sql("SELECT price, divide_order_fee FROM trade_orders").one()) == (
            50501538, 7)
    trade = wh.get_trade(1)
    assert trade is not None and (trade["payment"], trade["total_fee"]) == (Decimal("0.29"), Decimal("89.00"))
    (line,) = wh.orders_for(1)
    assert (line["price"], line["divide_order_fee"]) == (Decimal("505015.38"), Decimal("0.07"))
