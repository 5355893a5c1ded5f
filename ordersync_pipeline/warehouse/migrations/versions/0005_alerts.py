"""The ``alerts`` table: one row per alert, at most one open per condition (ordersync_pipeline/alerts).

``open_key`` holds a digest of (kind, shop_id, key) while the alert is open and NULL once resolved; its
unique index keeps a condition to one open alert even when several processes open it at once.

Written by hand as a snapshot (later edits to tables.py need a new revision, never an edit here).
tests/test_warehouse_schema.py checks the migrated database against tables.py.

Revision ID: 0005_alerts
Revises: 0004_refunds
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ordersync_pipeline.warehouse.types import UTCDateTime, big_id

MYSQL_TABLE_ARGS: dict[str, str] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}

revision = "0005_alerts"
down_revision = "0004_refunds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", big_id(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("shop_id", sa.String(64)),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("opened_at", UTCDateTime, nullable=False),
        sa.Column("resolved_at", UTCDateTime),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("delivered", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("open_key", sa.String(64)),
        **MYSQL_TABLE_ARGS,
    )
    op.create_index("ux_alerts_open_key", "alerts", ["open_key"], unique=True)
    op.create_index("ix_alerts_opened_at", "alerts", ["opened_at"])


def downgrade() -> None:
    op.drop_table("alerts")
