"""One line for people per warehouse column: what the Dagster catalog shows in each table's column schema.

Kept beside ``tables.py`` rather than inside it so the schema file stays a plain schema; a column may also
carry its doc inline (``sa.Column(..., info={"doc": "..."})``), which wins. ``column_doc`` is what the
catalog reads, and tests/test_catalog.py fails when any column of any table has no doc or a doc names a
column that does not exist, so the two cannot drift apart. docs/warehouse.md is the long form.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

__all__ = ["COLUMN_DOCS", "column_doc"]

_SHOP = "ordersync's name for the shop (from the configuration file)"
_SYNCED = "when ordersync wrote this version (UTC)"

COLUMN_DOCS: dict[str, dict[str, str]] = {
    "trades": {
        "shop_id": _SHOP,
        "tid": "platform trade id",
        "status": "trade status, e.g. WAIT_SELLER_SEND_GOODS, TRADE_FINISHED, TRADE_CLOSED",
        "type": "trade type: fixed (buy-it-now), step (presale / staged payment), auction, cod, ...",
        "created": "when the buyer placed the order",
        "modified": "last change on the platform; the newer version wins",
        "pay_time": "when it was paid (empty until paid)",
        "consign_time": "when the seller shipped",
        "end_time": "when the trade ended (finished or closed)",
        "payment": "amount the buyer actually paid, yuan",
        "total_fee": "goods total (price x quantity) before discounts, yuan",
        "post_fee": "shipping fee, yuan",
        "discount_fee": "discounts, yuan",
        "adjust_fee": "manual price adjustment by the seller, yuan",
        "step_trade_status": "presale progress, e.g. FRONT_PAID_FINAL_NOPAID (deposit paid)",
        "step_paid_fee": "amount paid so far on a staged (presale) trade, yuan",
        "buyer_open_uid": "stable per-app buyer id",
        "buyer_nick": "buyer nick as the platform gives it (may be masked)",
        "seller_nick": "the shop's seller nick",
        "receiver_state": "receiver's province",
        "receiver_city": "receiver's city (may be empty for county-level cities: use the district)",
        "receiver_district": "receiver's district",
        "num": "number of items in the trade",
        "source": "which path last wrote the row: increment, sold (history), fullinfo, tmc or refetch",
        "synced_at": _SYNCED,
        "fetched_at": "when the platform returned this version; breaks ties on modified",
    },
    "trade_orders": {
        "oid": "platform sub-order (order line) id",
        "tid": "the trade it belongs to (trades.tid)",
        "shop_id": _SHOP,
        "num_iid": "item (listing) id",
        "sku_id": "SKU id (text; empty for items without SKUs)",
        "outer_iid": "merchant's own item code",
        "outer_sku_id": "merchant's own SKU code (what the ERP knows)",
        "title": "item title at the time of purchase",
        "num": "quantity",
        "price": "unit price, yuan",
        "payment": "line amount paid, yuan",
        "total_fee": "line total before discounts, yuan",
        "discount_fee": "line discount, yuan",
        "adjust_fee": "line price adjustment, yuan",
        "divide_order_fee": "the trade's payment apportioned to this line: revenue per SKU, yuan",
        "status": "line status (same values as trades.status)",
        "refund_status": "NO_REFUND, WAIT_SELLER_AGREE, WAIT_BUYER_RETURN_GOODS, SUCCESS, CLOSED, ...",
        "modified": "the parent trade's modified (lines follow their trade's newest version)",
        "synced_at": _SYNCED,
        "fetched_at": "the parent trade's fetched_at",
        "refund_modified": ("when refund_status came from a refund: that refund's modified; NULL when it is "
                            "the trade's own (the newer state wins)"),
    },
    "trade_details": {
        "tid": "platform trade id",
        "shop_id": _SHOP,
        "modified": "the trade's modified this detail was fetched at (cache key with tid)",
        "fetched_at": "when it was fetched",
        "detail": "the fullinfo trade as JSON, receiver personal fields removed",
    },
    "api_calls": {
        "id": "surrogate key",
        "called_at": "when the attempt started",
        "run_id": "Dagster run that made the call (empty outside runs)",
        "shop_id": "shop the call was for (empty for app-level calls)",
        "method": "API name, e.g. taobao.trades.sold.increment.get",
        "outcome": "ok or error",
        "code": "platform error code (7 rate limit, 15 remote service error, ...); empty when ok",
        "sub_code": "platform sub-code, e.g. isp.top-remote-connection-timeout",
        "error_kind": "ordersync's error class (e.g. a timeout with no platform code)",
        "latency_ms": "round-trip time in milliseconds",
        "request_id": "platform request id (quote it to platform support)",
        "attempt": "1 for the first try, 2 and up for retries",
    },
    "quarantine": {
        "id": "surrogate key",
        "quarantined_at": "when the record was set aside",
        "run_id": "the run that rejected it",
        "source": "the path it came from (increment, sold, ...)",
        "shop_id": "shop",
        "record_key": "best available identifier (e.g. the tid as given)",
        "reason": "why it was rejected",
        "payload": "the raw record as received (JSON)",
    },
    "sync_windows": {
        "shop_id": "shop",
        "stream": "the stream: trades, ...",
        "kind": "increment (by modified time) or historical (by created time for trades)",
        "window_start": "start of the window fetched, inclusive (increment windows include the overlap)",
        "window_end": "end of the window fetched, exclusive",
        "partition_key": "the Dagster partition that fetched it",
        "pages": "pages read",
        "records": "records read (before de-duplication)",
        "completed_at": "when it was recorded complete",
        "run_id": "run that completed it",
    },
    "alerts": {
        "id": "surrogate key",
        "kind": "failure_rate, reconciliation_gap, run_failed, logistics_stall or quarantine",
        "shop_id": "the shop, when the condition is about one",
        "key": "what within the kind and shop (an API method, a day, a job and shop range, ...)",
        "opened_at": "when the alert opened",
        "resolved_at": "when the condition cleared (empty while open)",
        "message": "one line for people",
        "delivered": "the webhook took the alert",
        "open_key": "digest of (kind, shop_id, key) while open; keeps one open row per condition",
    },
    "reconciliation_daily": {
        "shop_id": "shop",
        "stream": "trades (refunds when registered)",
        "day": "the Asia/Shanghai calendar day",
        "platform_count": "the platform's records of the day",
        "warehouse_count": "the warehouse's records of the day, after the re-fetch",
        "missing_count": "listed by the platform, absent here (before the re-fetch)",
        "stale_count": "here at an older modified than listed",
        "extra_count": "here for the day, not listed by the platform",
        "pending_count": "changed after the synced range (absent ones re-fetched anyway)",
        "refetched_count": "records fetched again one by one",
        "status": "ok, repaired (a gap found and closed) or gap (a gap survived; an alert is open)",
        "checked_at": "when it was checked",
        "run_id": "run that checked it",
    },
    "breaker_state": {
        "shop_id": "shop",
        "api": "the TOP method guarded, e.g. taobao.trades.sold.increment.get",
        "state": "closed or open",
        "failure_rate": "the share of failed attempts at the last evaluation",
        "calls": "attempts in the window at the last evaluation",
        "errors": "platform failures in the window at the last evaluation",
        "opened_at": "when it last opened",
        "closed_at": "when it last closed",
        "next_probe_at": "while open: when the API is probed next",
        "last_full_pull_at": "while open: when a degraded full pull was last launched",
        "calls_after_id": "api_calls.id at the last change of state: calls up to it no longer count",
        "updated_at": "last evaluation",
        "reason": "why it is in its state",
    },
    # Tables of the refunds and inventory streams (feat/refunds, feat/inventory): documented here ahead
    # of their merge so the catalog test stays green when they land. A table that is not in the
    # metadata yet is ignored.
    "refunds": {
        "refund_id": "platform refund id",
        "shop_id": _SHOP,
        "tid": "the trade refunded (trades.tid)",
        "oid": "the order line refunded (trade_orders.oid)",
        "status": "refund status, e.g. WAIT_SELLER_AGREE, WAIT_BUYER_RETURN_GOODS, SUCCESS, CLOSED",
        "refund_fee": "amount refunded, yuan",
        "total_fee": "the trade's total, yuan",
        "payment": "what the buyer still has paid after the refund, yuan",
        "good_status": "goods status, e.g. BUYER_NOT_RECEIVED, BUYER_RECEIVED, BUYER_RETURNED_GOODS",
        "has_good_return": "the buyer is to send the goods back",
        "reason": "the buyer's reason",
        "desc": "the buyer's description (desc is an SQL keyword: quote it in hand-written SQL)",
        "created": "when the refund was requested",
        "modified": "last change on the platform; the newer version wins",
        "synced_at": _SYNCED,
        "fetched_at": "when the platform returned this version; breaks ties on modified",
    },
    "inventory_snapshots": {
        "shop_id": _SHOP,
        "num_iid": "item id (joins trade_orders.num_iid)",
        "sku_id": "SKU id (joins trade_orders.sku_id); empty for an item without SKUs",
        "outer_iid": "merchant's own item code",
        "outer_sku_id": "merchant's own SKU code",
        "title": "item title",
        "quantity": "units in stock (the SKU's, or the item's when it has no SKUs)",
        "price": "the SKU's price (the item's when the SKU has none), yuan",
        "approve_status": "listing status (onsale)",
        "taken_at": "when the snapshot was taken",
    },
    "inventory_freeze": {
        "shop_id": _SHOP,
        "tid": "the presale trade",
        "oid": "the order line whose units are held",
        "sku_key": "the line's SKU key",
        "quantity": "units held",
        "frozen_at": "when the hold began",
        "released_at": "when it ended (empty while frozen)",
        "release_reason": "balance_paid, forfeited or closed (empty while frozen)",
    },
    "daily_sales": {
        "shop_id": _SHOP,
        "sku_key": "the SKU key",
        "day": "the Asia/Shanghai calendar day",
        "units_gross": "units paid that day",
        "units_net": "units paid minus units refunded that day (may be negative)",
        "revenue_gross": "revenue paid that day, yuan",
        "revenue_net": "revenue paid minus refunds that day, yuan",
        "orders": "paid trades with the SKU that day",
        "promo_day": "a promotion day (its sales are replaced in the forecast's history)",
    },
    "sales_forecast": {
        "shop_id": _SHOP,
        "sku_key": "the SKU key",
        "as_of": "the last day of history used",
        "target_day": "the day forecast",
        "units": "units forecast",
        "lower": "lower bound of the 80 % interval",
        "upper": "upper bound of the 80 % interval",
        "model": "the model that made the forecast",
    },
    "replenishment_suggestions": {
        "shop_id": _SHOP,
        "sku_key": "the SKU key",
        "as_of": "the day the suggestion is for",
        "on_hand": "units in stock at the latest snapshot (empty: no snapshot of the SKU)",
        "frozen": "units held by presale deposits",
        "available": "on hand minus frozen",
        "forecast_lead_time": "units forecast over the lead time",
        "safety_stock": "safety stock, units",
        "lead_time_days": "supplier lead time, days",
        "service_level": "the service level the safety stock is for",
        "suggested_qty": "units to order (a multiple of the pack size, never negative)",
        "reason": "why, in words",
    },
}


def column_doc(table: str, column: sa.Column[Any]) -> str | None:
    """The column's doc: ``info["doc"]`` on the column, else its ``comment``, else ``COLUMN_DOCS``."""
    inline = column.info.get("doc") or column.comment
    if inline:
        return str(inline)
    return COLUMN_DOCS.get(table, {}).get(column.name)
