"""Refunds: the ``refunds`` table, ``trade_orders.refund_modified`` and the ``net_sales`` view.

* ``refunds``: one row per refund (taobao.refunds.receive.get), kept at its newest ``(modified,
  fetched_at)`` like trades.
* ``trade_orders.refund_modified``: when the line's ``refund_status`` came from a refund, that refund's
  ``modified`` (NULL: the state is the trade's own, as of the line's ``modified``). The newer of the
  two wins, so neither a refund seen before its trade nor an older refund replayed after a newer trade
  change rolls the state back (warehouse/refund_status.py).
* ``net_sales``: a view, one row per order line, its units and amount net of successful refunds.
  Plain SQL that PostgreSQL, MariaDB and SQLite all accept (on SQLite money is integer fen, so the
  view's amounts are fen there too, like every money column).

Written by hand as a snapshot (later edits to tables.py need a new revision, never an edit here).
tests/test_warehouse_schema.py checks the migrated database against tables.py.

Revision ID: 0004_refunds
Revises: 0003_sync_windows_per_stream
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ordersync_pipeline.warehouse.types import Money, UTCDateTime

MYSQL_TABLE_ARGS: dict[str, str] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}

revision = "0004_refunds"
down_revision = "0003_sync_windows_per_stream"
branch_labels = None
depends_on = None

# A line counts as refunded by its SUCCESS refunds in ``refunds`` (their refund_fee summed); a line
# whose own refund_status is SUCCESS but whose refund has not been synced yet counts as refunded in
# full. A refund of the whole line's payment (or more) takes back its units; a partial refund only
# lowers the amount. Amounts never go below zero (a refund may include postage).
NET_SALES_VIEW = """
CREATE VIEW net_sales AS
SELECT s.shop_id, s.tid, s.oid, s.num_iid, s.sku_id, s.outer_sku_id, s.title, s.created, s.pay_time,
       s.trade_status, s.refund_status, s.units, s.amount, s.refunded_amount,
       CASE WHEN s.refunded_amount > 0 AND s.refunded_amount >= s.amount THEN s.units ELSE 0 END
           AS refunded_units,
       s.units - CASE WHEN s.refunded_amount > 0 AND s.refunded_amount >= s.amount THEN s.units ELSE 0 END
           AS net_units,
       CASE WHEN s.refunded_amount >= s.amount THEN 0 ELSE s.amount - s.refunded_amount END AS net_amount
FROM (
    SELECT o.shop_id, o.tid, o.oid, o.num_iid, o.sku_id, o.outer_sku_id, o.title, t.created, t.pay_time,
           t.status AS trade_status, o.refund_status, o.num AS units, o.payment AS amount,
           COALESCE(r.refunded_amount,
                    CASE WHEN o.refund_status = 'SUCCESS' THEN o.payment ELSE 0 END) AS refunded_amount
    FROM trade_orders o
    JOIN trades t ON t.tid = o.tid
    LEFT JOIN (SELECT oid, SUM(refund_fee) AS refunded_amount
               FROM refunds WHERE status = 'SUCCESS' GROUP BY oid) r ON r.oid = o.oid
) s
"""


def upgrade() -> None:
    op.create_table(
        "refunds",
        sa.Column("refund_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("shop_id", sa.String(64), nullable=False),
        sa.Column("tid", sa.BigInteger, nullable=False),
        sa.Column("oid", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("refund_fee", Money),
        sa.Column("total_fee", Money),
        sa.Column("payment", Money),
        sa.Column("good_status", sa.String(64)),
        sa.Column("has_good_return", sa.Boolean),
        sa.Column("reason", sa.String(255)),
        sa.Column("desc", sa.Text),
        sa.Column("created", UTCDateTime),
        sa.Column("modified", UTCDateTime, nullable=False),
        sa.Column("synced_at", UTCDateTime, nullable=False),
        sa.Column("fetched_at", UTCDateTime),
        **MYSQL_TABLE_ARGS,
    )
    op.create_index("ix_refunds_oid", "refunds", ["oid"])
    op.create_index("ix_refunds_tid", "refunds", ["tid"])
    op.create_index("ix_refunds_shop_modified", "refunds", ["shop_id", "modified"])
    op.add_column("trade_orders", sa.Column("refund_modified", UTCDateTime))
    op.execute(NET_SALES_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW net_sales")
    op.drop_column("trade_orders", "refund_modified")
    op.drop_table("refunds")
