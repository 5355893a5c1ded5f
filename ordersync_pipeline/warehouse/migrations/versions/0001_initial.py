"""Initial warehouse schema: trades, trade_orders, trade_details, api_calls, quarantine, sync_windows.

Written by hand as a snapshot of tables.py at this revision (later edits to tables.py need a new
revision, never an edit here). tests/test_warehouse_migrations.py checks the two agree.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ordersync_pipeline.warehouse.types import Money, UTCDateTime, big_id, long_text

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

MYSQL = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    op.create_table(
        "trades",
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("tid", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(64)),
        sa.Column("type", sa.String(64)),
        sa.Column("created", UTCDateTime),
        sa.Column("modified", UTCDateTime, nullable=False),
        sa.Column("pay_time", UTCDateTime),
        sa.Column("consign_time", UTCDateTime),
        sa.Column("end_time", UTCDateTime),
        sa.Column("payment", Money),
        sa.Column("total_fee", Money),
        sa.Column("post_fee", Money),
        sa.Column("discount_fee", Money),
        sa.Column("adjust_fee", Money),
        sa.Column("step_trade_status", sa.String(64)),
        sa.Column("step_paid_fee", Money),
        sa.Column("buyer_open_uid", sa.String(128)),
        sa.Column("buyer_nick", sa.String(128)),
        sa.Column("seller_nick", sa.String(128)),
        sa.Column("receiver_state", sa.String(64)),
        sa.Column("receiver_city", sa.String(64)),
        sa.Column("receiver_district", sa.String(64)),
        sa.Column("num", sa.Integer),
        sa.Column("source", sa.String(16)),
        sa.Column("synced_at", UTCDateTime, nullable=False),
        **MYSQL,
    )
    op.create_index("ix_trades_shop_modified", "trades", ["shop_id", "modified"])
    op.create_index("ix_trades_shop_created", "trades", ["shop_id", "created"])

    op.create_table(
        "trade_orders",
        sa.Column("oid", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("tid", sa.BigInteger, nullable=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("num_iid", sa.BigInteger),
        sa.Column("sku_id", sa.String(64)),
        sa.Column("outer_iid", sa.String(128)),
        sa.Column("outer_sku_id", sa.String(128)),
        sa.Column("title", sa.String(255)),
        sa.Column("num", sa.Integer),
        sa.Column("price", Money),
        sa.Column("payment", Money),
        sa.Column("total_fee", Money),
        sa.Column("discount_fee", Money),
        sa.Column("adjust_fee", Money),
        sa.Column("divide_order_fee", Money),
        sa.Column("status", sa.String(64)),
        sa.Column("refund_status", sa.String(64)),
        sa.Column("modified", UTCDateTime, nullable=False),
        sa.Column("synced_at", UTCDateTime, nullable=False),
        **MYSQL,
    )
    op.create_index("ix_trade_orders_tid", "trade_orders", ["tid"])
    op.create_index("ix_trade_orders_shop_item_sku", "trade_orders", ["shop_id", "num_iid", "sku_id"])

    op.create_table(
        "api_calls",
        sa.Column("id", big_id(), primary_key=True, autoincrement=True),
        sa.Column("called_at", UTCDateTime, nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("shop_id", sa.String(64)),
        sa.Column("method", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("code", sa.String(32)),
        sa.Column("sub_code", sa.String(128)),
        sa.Column("error_kind", sa.String(64)),
        sa.Column("latency_ms", sa.Integer),
        sa.Column("request_id", sa.String(64)),
        sa.Column("attempt", sa.Integer),
        **MYSQL,
    )
    op.create_index("ix_api_calls_called_at", "api_calls", ["called_at"])
    op.create_index("ix_api_calls_shop_called_at", "api_calls", ["shop_id", "called_at"])

    op.create_table(
        "quarantine",
        sa.Column("id", big_id(), primary_key=True, autoincrement=True),
        sa.Column("quarantined_at", UTCDateTime, nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("source", sa.String(32)),
        sa.Column("shop_id", sa.String(64)),
        sa.Column("record_key", sa.String(128)),
        sa.Column("reason", sa.Text),
        sa.Column("payload", long_text()),
        **MYSQL,
    )
    op.create_index("ix_quarantine_quarantined_at", "quarantine", ["quarantined_at"])

    op.create_table(
        "sync_windows",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("stream", sa.String(16), primary_key=True),
        sa.Column("window_start", UTCDateTime, primary_key=True),
        sa.Column("window_end", UTCDateTime, primary_key=True),
        sa.Column("partition_key", sa.String(64)),
        sa.Column("pages", sa.Integer, nullable=False),
        sa.Column("trades", sa.Integer, nullable=False),
        sa.Column("completed_at", UTCDateTime, nullable=False),
        sa.Column("run_id", sa.String(64)),
        **MYSQL,
    )

    op.create_table(
        "trade_details",
        sa.Column("tid", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("modified", UTCDateTime, nullable=False),
        sa.Column("fetched_at", UTCDateTime, nullable=False),
        sa.Column("detail", long_text(), nullable=False),
        **MYSQL,
    )


def downgrade() -> None:
    for table in ("trade_details", "sync_windows", "quarantine", "api_calls", "trade_orders", "trades"):
        op.drop_table(table)
