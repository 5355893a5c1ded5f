"""Schema and types: the migrated database equals tables.py, and values round-trip exactly on every backend."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from ordersync_pipeline.warehouse import Warehouse, normalize_url
from ordersync_pipeline.warehouse.migrator import VERSION_TABLE, alembic_config, current_revision
from ordersync_pipeline.warehouse.tables import metadata

GMT8 = timezone(timedelta(hours=8))



def test_migrated_schema_matches_tables_py(wh: Warehouse) -> None:
    def ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        return not (type_ == "table" and name == VERSION_TABLE)

    with wh.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": ours, "version_table": VERSION_TABLE}
        )
        assert compare_metadata(context, metadata) == []


def test_the_schema_comparison_would_notice_drift(wh: Warehouse) -> None:
    drifted = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["trades"].append_column(sa.Column("not_migrated", sa.Integer))
    with wh.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diffs = compare_metadata(context, drifted)
    assert [d[0] for d in diffs] == ["add_column"]


def test_migrate_is_idempotent_and_records_its_revision(wh: Warehouse) -> None:
    wh.migrate()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None and current_revision(wh.engine) == head
    assert set(sa.inspect(wh.engine).get_table_names()) >= {
        "trades", "trade_orders", "trade_details", "api_calls", "quarantine", "sync_windows", VERSION_TABLE,
    }


def test_upgrading_a_warehouse_keeps_its_rows_with_fetched_at_unknown(any_warehouse_url: str) -> None:
    engine = Warehouse(any_warehouse_url).engine
    with engine.connect() as conn:
        command.upgrade(alembic_config(conn), "0001_initial")
        conn.commit()
        conn.exec_driver_sql(
            "INSERT INTO trades (tid, shop_id, modified, synced_at, payment) "
            "VALUES (1, 's', '2026-11-11 00:00:00', '2026-11-11 00:00:00', 89.5)")
        conn.commit()
    engine.dispose()
    wh = Warehouse(any_warehouse_url)
    wh.migrate()
    stored = wh.get_trade(1)
    assert stored is not None
    assert (stored["payment"], stored["fetched_at"]) == (Decimal("89.50"), None)
    wh.dispose()


def test_migrate_needs_no_alembic_ini_in_the_working_directory(sqlite_url: str, tmp_path: Path) -> None:
    script = "import sys; from ordersync_pipeline.warehouse import Warehouse; Warehouse(sys.argv[1]).migrate()"
    subprocess.run([sys.executable, "-c", script, sqlite_url], cwd=tmp_path, check=True)
    assert "trades" in sa.inspect(sa.create_engine(sqlite_url)).get_table_names()


def test_values_round_trip_exactly(wh: Warehouse) -> None:
    tid = 4_123_456_789_012_345_678  # 19 digits, above 2**53
    paid = datetime(2026, 11, 11, 0, 0, 1, tzinfo=GMT8)  # midnight in Shanghai = 16:00 UTC the day before
    wh.upsert_trades([{
        "tid": tid, "shop_id": "旗舰店", "modified": paid, "pay_time": paid,
        "payment": Decimal("123456789012.34"), "discount_fee": Decimal("0.01"),
        "buyer_nick": "小明😀", "seller_nick": "天猫旗舰店", "receiver_city": "杭州市",
    }])
    wh.upsert_trade_orders([{
        "oid": tid + 1, "tid": tid, "shop_id": "旗舰店", "num_iid": 9_223_372_036_854_775_807,
        "sku_id": "4988000000001", "title": "春季新款 女装连衣裙", "modified": paid,
    }])
    stored = wh.get_trade(tid)
    assert stored is not None
    assert stored["tid"] == tid
    assert stored["payment"] == Decimal("123456789012.34") and isinstance(stored["payment"], Decimal)
    assert stored["discount_fee"] == Decimal("0.01")
    assert stored["pay_time"] == paid  # the same instant...
    assert stored["pay_time"].utcoffset() == timedelta(0)  # ...returned aware, in UTC
    assert stored["pay_time"].isoformat() == "2026-11-10T16:00:01+00:00"
    assert (stored["shop_id"], stored["buyer_nick"], stored["seller_nick"]) == ("旗舰店", "小明😀", "天猫旗舰店")
    (line,) = wh.orders_for(tid)
    assert (line["num_iid"], line["sku_id"], line["title"]) == (
        9_223_372_036_854_775_807, "4988000000001", "春季新款 女装连衣裙",
    )


@pytest.mark.parametrize(
    "given, expected",
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("mysql://root@h:3306/w", "mysql+pymysql://root@h:3306/w?charset=utf8mb4"),
        ("mariadb://root@h/w", "mysql+pymysql://root@h/w?charset=utf8mb4"),
        ("sqlite:///tmp/w.db", "sqlite:///tmp/w.db"),
    ],
)
def test_user_urls_map_to_the_drivers_ordersync_uses(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected


def test_unsupported_drivers_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        normalize_url("oracle://scott@h/db")
