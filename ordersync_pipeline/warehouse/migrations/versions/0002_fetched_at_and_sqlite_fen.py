"""Versions with a tie-breaker, and exact money on SQLite.

* ``trades.fetched_at`` and ``trade_orders.fetched_at`` (nullable): when the platform returned the
  stored version. The upsert guard becomes ``(modified, fetched_at)``; rows loaded before this
  revision keep NULL, which loses ties to any version that has one.
* SQLite only: the money columns held floating point (NUMERIC affinity turns "89.50" into a REAL), so
  sums drifted. They now hold integer fen; this converts the stored values. The declared type stays
  NUMERIC(14, 2), and ``types.Money`` does the conversion both ways.

Written by hand as a snapshot (later edits to tables.py need a new revision, never an edit here).
tests/test_warehouse_schema.py checks the migrated database against tables.py.

Revision ID: 0002_fetched_at_and_sqlite_fen
Revises: 0001_initial
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ordersync_pipeline.warehouse.types import UTCDateTime

revision = "0002_fetched_at_and_sqlite_fen"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

# The Money columns as they are at this revision (not read from tables.py, which may change later).
MONEY_COLUMNS = {
    "trades": ("payment", "total_fee", "post_fee", "discount_fee", "adjust_fee", "step_paid_fee"),
    "trade_orders": ("price", "payment", "total_fee", "discount_fee", "adjust_fee", "divide_order_fee"),
}


def upgrade() -> None:
    for table in ("trades", "trade_orders"):
        op.add_column(table, sa.Column("fetched_at", UTCDateTime))
    if op.get_bind().dialect.name == "sqlite":
        for table, columns in MONEY_COLUMNS.items():
            # round() first: a REAL such as 0.29 is 28.999999999999996 fen.
            assignments = ", ".join(f"{c} = CAST(round({c} * 100) AS INTEGER)" for c in columns)
            op.execute(f"UPDATE {table} SET {assignments}")  # NULL stays NULL


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table, columns in MONEY_COLUMNS.items():
            op.execute(f"UPDATE {table} SET {', '.join(f'{c} = {c} / 100.0' for c in columns)}")
    for table in ("trade_orders", "trades"):
        op.drop_column(table, "fetched_at")
