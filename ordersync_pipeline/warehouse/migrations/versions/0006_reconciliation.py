"""Daily reconciliation results and the failure-rate breaker's state.

* ``reconciliation_daily``: one row per (shop, stream, Asia/Shanghai day): the platform's count, the
  warehouse's, what was missing, stale or extra, what was not yet due (pending), what was re-fetched
  and the outcome.
* ``breaker_state``: one row per (shop, guarded API): closed or open, the failure rate it last saw,
  when it opened, when it probes next, when a full pull was last launched. It is the breaker's memory
  across restarts.

Written by hand as a snapshot (later edits to tables.py need a new revision, never an edit here).

Revision ID: 0006_reconciliation
Revises: 0005_alerts
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ordersync_pipeline.warehouse.types import UTCDateTime

MYSQL_TABLE_ARGS: dict[str, str] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}

revision = "0006_reconciliation"
# Chain: 0004_refunds -> 0005_alerts -> 0006_reconciliation.
down_revision = "0005_alerts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconciliation_daily",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("stream", sa.String(32), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("platform_count", sa.Integer, nullable=False),
        sa.Column("warehouse_count", sa.Integer, nullable=False),
        sa.Column("missing_count", sa.Integer, nullable=False),
        sa.Column("stale_count", sa.Integer, nullable=False),
        sa.Column("extra_count", sa.Integer, nullable=False),
        sa.Column("pending_count", sa.Integer, nullable=False),
        sa.Column("refetched_count", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("checked_at", UTCDateTime, nullable=False),
        sa.Column("run_id", sa.String(64)),
        **MYSQL_TABLE_ARGS,
    )
    op.create_table(
        "breaker_state",
        sa.Column("shop_id", sa.String(64), primary_key=True),
        sa.Column("api", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failure_rate", sa.Double, nullable=False),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("opened_at", UTCDateTime),
        sa.Column("closed_at", UTCDateTime),
        sa.Column("next_probe_at", UTCDateTime),
        sa.Column("last_full_pull_at", UTCDateTime),
        sa.Column("calls_after_id", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("reason", sa.Text),
        **MYSQL_TABLE_ARGS,
    )


def downgrade() -> None:
    op.drop_table("breaker_state")
    op.drop_table("reconciliation_daily")
