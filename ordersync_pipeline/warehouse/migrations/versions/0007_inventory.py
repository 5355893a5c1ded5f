"""Inventory, presale freeze, daily sales, forecast and replenishment suggestions (issue 11).

* ``inventory_snapshots``: dated copies of each shop's on-sale items and SKU quantities, and the view
  ``inventory_latest`` over them (each shop's newest snapshot: a SKU missing from it is off sale now);
* ``inventory_freeze``: stock held by presale deposits, one row per presale order line;
* ``daily_sales``, ``sales_forecast``, ``replenishment_suggestions``: the daily forecast assets' tables.

Written by hand as a snapshot (later edits to tables.py need a new revision, never an edit here).

Revision ID: 0007_inventory
Revises: 0006_reconciliation
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ordersync_pipeline.warehouse.types import Money, UTCDateTime

MYSQL_TABLE_ARGS: dict[str, str] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}

revision = "0007_inventory"
down_revision = "0006_reconciliation"
branch_labels = None
depends_on = None

# Plain SQL every backend reads the same way: the rows of each shop's newest taken_at.
LATEST_VIEW = """
CREATE VIEW inventory_latest AS
SELECT s.shop_id, s.num_iid, s.sku_id, s.outer_iid, s.outer_sku_id, s.title, s.quantity, s.price,
       s.approve_status, s.taken_at
FROM inventory_snapshots s
JOIN (SELECT shop_id, MAX(taken_at) AS taken_at FROM inventory_snapshots GROUP BY shop_id) newest
  ON newest.shop_id = s.shop_id AND newest.taken_at = s.taken_at
"""


def upgrade() -> None:
    op.create_table(
        "inventory_snapshots",
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("num_iid", sa.BigInteger, nullable=False),
        sa.Column("sku_id", sa.String(64)),
        sa.Column("outer_iid", sa.String(128)),
        sa.Column("outer_sku_id", sa.String(128)),
        sa.Column("title", sa.String(255)),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("price", Money),
        sa.Column("approve_status", sa.String(32)),
        sa.Column("taken_at", UTCDateTime, nullable=False),
        **MYSQL_TABLE_ARGS,
    )
    op.create_index("ix_inventory_snapshots_shop_taken", "inventory_snapshots", ["shop_id", "taken_at"])
    op.create_index("ix_inventory_snapshots_shop_item_sku", "inventory_snapshots", ["shop_id", "num_iid", "sku_id"])
    op.execute(LATEST_VIEW)
    op.create_table(
        "inventory_freeze",
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("tid", sa.BigInteger, nullable=False),
        sa.Column("oid", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("sku_key", sa.String(160)),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("frozen_at", UTCDateTime, nullable=False),
        sa.Column("released_at", UTCDateTime),
        sa.Column("release_reason", sa.String(32)),
        **MYSQL_TABLE_ARGS,
    )
    op.create_index("ix_inventory_freeze_shop_sku", "inventory_freeze", ["shop_id", "sku_key"])
    op.create_table(
        "daily_sales",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("sku_key", sa.String(160), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("units_gross", sa.Integer, nullable=False),
        sa.Column("units_net", sa.Integer, nullable=False),
        sa.Column("revenue_gross", Money, nullable=False),
        sa.Column("revenue_net", Money, nullable=False),
        sa.Column("orders", sa.Integer, nullable=False),
        sa.Column("promo_day", sa.Boolean, nullable=False),
        **MYSQL_TABLE_ARGS,
    )
    op.create_index("ix_daily_sales_day", "daily_sales", ["day"])
    op.create_table(
        "sales_forecast",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("sku_key", sa.String(160), primary_key=True),
        sa.Column("as_of", sa.Date, primary_key=True),
        sa.Column("target_day", sa.Date, primary_key=True),
        sa.Column("units", sa.Double, nullable=False),
        sa.Column("lower", sa.Double, nullable=False),
        sa.Column("upper", sa.Double, nullable=False),
        sa.Column("model", sa.String(32), nullable=False),
        **MYSQL_TABLE_ARGS,
    )
    op.create_index("ix_sales_forecast_as_of", "sales_forecast", ["as_of"])
    op.create_table(
        "replenishment_suggestions",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("sku_key", sa.String(160), primary_key=True),
        sa.Column("as_of", sa.Date, primary_key=True),
        sa.Column("on_hand", sa.Integer),
        sa.Column("frozen", sa.Integer, nullable=False),
        sa.Column("available", sa.Integer),
        sa.Column("forecast_lead_time", sa.Double, nullable=False),
        sa.Column("safety_stock", sa.Double, nullable=False),
        sa.Column("lead_time_days", sa.Integer, nullable=False),
        sa.Column("service_level", sa.Double, nullable=False),
        sa.Column("suggested_qty", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        **MYSQL_TABLE_ARGS,
    )
    op.create_index("ix_replenishment_suggestions_as_of", "replenishment_suggestions", ["as_of"])


def downgrade() -> None:
    op.drop_table("replenishment_suggestions")
    op.drop_table("sales_forecast")
    op.drop_table("daily_sales")
    op.drop_table("inventory_freeze")
    op.execute("DROP VIEW inventory_latest")
    op.drop_table("inventory_snapshots")
