"""The warehouse schema (SQLAlchemy Core). Table and column names are a contract analysts query
against: add columns freely, rename or drop only with a migration and a note in docs/warehouse.md.

Migrations in ``migrations/versions`` are hand-written snapshots of this file; a test compares the
migrated database with this metadata on every backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ordersync_pipeline.warehouse.types import Money, UTCDateTime, big_id, long_text

# utf8mb4 so Chinese titles, nicks and emoji survive on MariaDB/MySQL (ignored elsewhere).
MYSQL_TABLE_ARGS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}

# Values of trades.source: which path last wrote the row.
SOURCES = ("increment", "sold", "fullinfo", "tmc", "refetch")
# Values of sync_windows.kind: the two paths every stream is fetched by.
KINDS = ("increment", "historical")

metadata = sa.MetaData()

trades = sa.Table(
    "trades",
    metadata,
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
    # When the platform returned this version (its page's fetched_at): breaks ties between versions
    # with equal modified. NULL only in rows written before revision 0002.
    sa.Column("fetched_at", UTCDateTime),
    sa.Index("ix_trades_shop_modified", "shop_id", "modified"),
    sa.Index("ix_trades_shop_created", "shop_id", "created"),
    **MYSQL_TABLE_ARGS,
)

trade_orders = sa.Table(
    "trade_orders",
    metadata,
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
    # The parent trade's modified: order lines follow the same newer-wins rule as their trade.
    sa.Column("modified", UTCDateTime, nullable=False),
    sa.Column("synced_at", UTCDateTime, nullable=False),
    sa.Column("fetched_at", UTCDateTime),  # the parent trade's, like modified
    # When refund_status came from the refunds table: that refund's modified (NULL: it is the trade's
    # own, as of the line's modified). The newer of the two states wins (warehouse/refund_status.py).
    sa.Column("refund_modified", UTCDateTime),
    sa.Index("ix_trade_orders_tid", "tid"),
    sa.Index("ix_trade_orders_shop_item_sku", "shop_id", "num_iid", "sku_id"),
    **MYSQL_TABLE_ARGS,
)

# Refunds the seller received (taobao.refunds.receive.get), one row per refund, newest state.
refunds = sa.Table(
    "refunds",
    metadata,
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
    # "desc" is an SQL keyword: SQLAlchemy quotes it in every statement it writes; hand-written SQL
    # must quote it too ("desc" on PostgreSQL and SQLite, `desc` on MariaDB).
    sa.Column("desc", sa.Text),
    sa.Column("created", UTCDateTime),
    sa.Column("modified", UTCDateTime, nullable=False),
    sa.Column("synced_at", UTCDateTime, nullable=False),
    sa.Column("fetched_at", UTCDateTime),  # the version tie-breaker, as on trades
    sa.Index("ix_refunds_oid", "oid"),
    sa.Index("ix_refunds_tid", "tid"),
    sa.Index("ix_refunds_shop_modified", "shop_id", "modified"),
    **MYSQL_TABLE_ARGS,
)

api_calls = sa.Table(
    "api_calls",
    metadata,
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
    sa.Index("ix_api_calls_called_at", "called_at"),
    sa.Index("ix_api_calls_shop_called_at", "shop_id", "called_at"),
    **MYSQL_TABLE_ARGS,
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", big_id(), primary_key=True, autoincrement=True),
    sa.Column("quarantined_at", UTCDateTime, nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("source", sa.String(32)),
    sa.Column("shop_id", sa.String(64)),
    sa.Column("record_key", sa.String(128)),
    sa.Column("reason", sa.Text),
    sa.Column("payload", long_text()),
    sa.Index("ix_quarantine_quarantined_at", "quarantined_at"),
    **MYSQL_TABLE_ARGS,
)

sync_windows = sa.Table(
    "sync_windows",
    metadata,
    sa.Column("shop_id", sa.String(64), primary_key=True),
    sa.Column("stream", sa.String(32), primary_key=True),     # the registry's stream: trades, refunds
    sa.Column("kind", sa.String(16), primary_key=True),       # increment (modified) | historical
    sa.Column("window_start", UTCDateTime, primary_key=True),
    sa.Column("window_end", UTCDateTime, primary_key=True),
    sa.Column("partition_key", sa.String(64)),
    sa.Column("pages", sa.Integer, nullable=False),
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("completed_at", UTCDateTime, nullable=False),
    sa.Column("run_id", sa.String(64)),
    **MYSQL_TABLE_ARGS,
)

trade_details = sa.Table(
    "trade_details",
    metadata,
    sa.Column("tid", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("shop_id", sa.String(64), nullable=False),
    sa.Column("modified", UTCDateTime, nullable=False),
    sa.Column("fetched_at", UTCDateTime, nullable=False),
    sa.Column("detail", long_text(), nullable=False),
    **MYSQL_TABLE_ARGS,
)

# One row per alert (ordersync_pipeline/alerts): a condition (kind, shop_id, key) opened, and resolved
# when it clears. ``open_key`` identifies the condition while it is open and is NULL once resolved: its
# unique index makes "one open alert per condition" hold across processes on every backend (NULLs never
# collide; shop_id itself may be NULL, so a unique index on the three columns could not say it).
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", big_id(), primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("shop_id", sa.String(64)),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("opened_at", UTCDateTime, nullable=False),
    sa.Column("resolved_at", UTCDateTime),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("delivered", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.Column("open_key", sa.String(64)),
    sa.Index("ux_alerts_open_key", "open_key", unique=True),
    sa.Index("ix_alerts_opened_at", "opened_at"),
    **MYSQL_TABLE_ARGS,
)

# Values of reconciliation_daily.status: ``ok`` (the platform and the warehouse agreed at once),
# ``repaired`` (they differed and the re-fetch closed the gap), ``gap`` (a gap survived the re-fetch).
RECONCILIATION_STATUSES = ("ok", "repaired", "gap")

reconciliation_daily = sa.Table(
    "reconciliation_daily",
    metadata,
    sa.Column("shop_id", sa.String(64), primary_key=True),
    sa.Column("stream", sa.String(32), primary_key=True),     # the registry's stream: trades, refunds
    sa.Column("day", sa.Date, primary_key=True),               # an Asia/Shanghai calendar day
    sa.Column("platform_count", sa.Integer, nullable=False),   # the platform's records of the day
    sa.Column("warehouse_count", sa.Integer, nullable=False),  # the warehouse's, after the re-fetch
    sa.Column("missing_count", sa.Integer, nullable=False),    # listed by the platform, absent here
    sa.Column("stale_count", sa.Integer, nullable=False),      # here, but older than the platform's
    sa.Column("extra_count", sa.Integer, nullable=False),      # here for the day, not listed there
    # Listed, absent or older here, but changed after the increments' synced range: not yet due.
    sa.Column("pending_count", sa.Integer, nullable=False),
    sa.Column("refetched_count", sa.Integer, nullable=False),  # records re-fetched to close the gap
    sa.Column("status", sa.String(16), nullable=False),        # RECONCILIATION_STATUSES
    sa.Column("checked_at", UTCDateTime, nullable=False),
    sa.Column("run_id", sa.String(64)),
    **MYSQL_TABLE_ARGS,
)

# Values of breaker_state.state.
BREAKER_STATES = ("closed", "open")

breaker_state = sa.Table(
    "breaker_state",
    metadata,
    sa.Column("shop_id", sa.String(64), primary_key=True),
    sa.Column("api", sa.String(128), primary_key=True),        # the TOP method guarded
    sa.Column("state", sa.String(16), nullable=False),         # BREAKER_STATES
    sa.Column("failure_rate", sa.Double, nullable=False),      # at the last evaluation
    sa.Column("calls", sa.Integer, nullable=False),            # attempts in the window then
    sa.Column("errors", sa.Integer, nullable=False),           # of which the platform failed
    sa.Column("opened_at", UTCDateTime),                       # when it last opened
    sa.Column("closed_at", UTCDateTime),                       # when it last closed
    sa.Column("next_probe_at", UTCDateTime),                   # open: when the API is probed next
    sa.Column("last_full_pull_at", UTCDateTime),               # open: when a full pull was last launched
    # api_calls.id at the last change of state: calls up to it no longer count (a window that still
    # holds the failures that opened it must not reopen a breaker that has just closed).
    sa.Column("calls_after_id", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("reason", sa.Text),
    **MYSQL_TABLE_ARGS,
)


# ---------------------------------------------------------------- inventory, presale, sales, forecast (0007)

# One dated copy of each shop's on-sale catalogue per snapshot (sync/snapshot.py): a row per SKU, or per
# item sold without SKUs (sku_id NULL). No primary key: the rows of one (shop_id, taken_at) are replaced
# together. The view ``inventory_latest`` (migration 0007) holds each shop's newest snapshot.
inventory_snapshots = sa.Table(
    "inventory_snapshots",
    metadata,
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
    sa.Index("ix_inventory_snapshots_shop_taken", "shop_id", "taken_at"),
    sa.Index("ix_inventory_snapshots_shop_item_sku", "shop_id", "num_iid", "sku_id"),
    **MYSQL_TABLE_ARGS,
)
INVENTORY_LATEST_VIEW = "inventory_latest"

# Values of inventory_freeze.release_reason.
FREEZE_RELEASE_REASONS = ("balance_paid", "forfeited", "closed")

# Stock held by presale deposits (forecast/freeze.py), rebuilt from trades/trade_orders on every run.
inventory_freeze = sa.Table(
    "inventory_freeze",
    metadata,
    sa.Column("shop_id", sa.String(64), nullable=False),
    sa.Column("tid", sa.BigInteger, nullable=False),
    sa.Column("oid", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("sku_key", sa.String(160)),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("frozen_at", UTCDateTime, nullable=False),
    sa.Column("released_at", UTCDateTime),
    sa.Column("release_reason", sa.String(32)),          # FREEZE_RELEASE_REASONS; NULL while frozen
    sa.Index("ix_inventory_freeze_shop_sku", "shop_id", "sku_key"),
    **MYSQL_TABLE_ARGS,
)

daily_sales = sa.Table(
    "daily_sales",
    metadata,
    sa.Column("shop_id", sa.String(64), primary_key=True),
    sa.Column("sku_key", sa.String(160), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),              # an Asia/Shanghai calendar day
    sa.Column("units_gross", sa.Integer, nullable=False),
    sa.Column("units_net", sa.Integer, nullable=False),
    sa.Column("revenue_gross", Money, nullable=False),
    sa.Column("revenue_net", Money, nullable=False),
    sa.Column("orders", sa.Integer, nullable=False),
    sa.Column("promo_day", sa.Boolean, nullable=False),
    sa.Index("ix_daily_sales_day", "day"),
    **MYSQL_TABLE_ARGS,
)

sales_forecast = sa.Table(
    "sales_forecast",
    metadata,
    sa.Column("shop_id", sa.String(64), primary_key=True),
    sa.Column("sku_key", sa.String(160), primary_key=True),
    sa.Column("as_of", sa.Date, primary_key=True),            # the last day of history used
    sa.Column("target_day", sa.Date, primary_key=True),
    sa.Column("units", sa.Double, nullable=False),
    sa.Column("lower", sa.Double, nullable=False),
    sa.Column("upper", sa.Double, nullable=False),
    sa.Column("model", sa.String(32), nullable=False),
    sa.Index("ix_sales_forecast_as_of", "as_of"),
    **MYSQL_TABLE_ARGS,
)

replenishment_suggestions = sa.Table(
    "replenishment_suggestions",
    metadata,
    sa.Column("shop_id", sa.String(64), primary_key=True),
    sa.Column("sku_key", sa.String(160), primary_key=True),
    sa.Column("as_of", sa.Date, primary_key=True),
    sa.Column("on_hand", sa.Integer),                         # NULL: no inventory snapshot of the SKU
    sa.Column("frozen", sa.Integer, nullable=False),
    sa.Column("available", sa.Integer),
    sa.Column("forecast_lead_time", sa.Double, nullable=False),
    sa.Column("safety_stock", sa.Double, nullable=False),
    sa.Column("lead_time_days", sa.Integer, nullable=False),
    sa.Column("service_level", sa.Double, nullable=False),
    sa.Column("suggested_qty", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Index("ix_replenishment_suggestions_as_of", "as_of"),
    **MYSQL_TABLE_ARGS,
)

@dataclass(frozen=True)
class Monotonic:
    """How a monotonic table is kept current (docs/warehouse.md, "How rows are kept current").

    Every such table has ``modified`` and ``fetched_at``; a row replaces the stored one when its
    version ``(modified, fetched_at)`` is at least the stored one (a NULL ``fetched_at`` loses ties).
    ``key`` is the primary key column. A child table (order lines) names its ``parent`` table and the
    column here that holds the parent's key: its rows carry the parent's version, and once a parent
    version that brought children is stored, children of older versions are deleted. Rows of one
    parent are loaded, and refused by the database, together.
    """

    key: str
    parent: tuple[str, str] | None = None

    @property
    def group(self) -> str:
        """The column whose value ties rows that must land (or be quarantined) together."""
        return self.parent[1] if self.parent else self.key


# Tables loaded with the monotonic upsert. A new stream's table needs its table and an entry here.
MONOTONIC_TABLES: dict[str, Monotonic] = {
    "trades": Monotonic(key="tid"),
    "trade_orders": Monotonic(key="oid", parent=("trades", "tid")),
    "trade_details": Monotonic(key="tid"),
    "refunds": Monotonic(key="refund_id"),
}
