"""The stream registry: one entry per kind of record ordersync keeps in step with the platform.

Everything generic iterates ``STREAMS``: the partition runners, the asset factory, ``ordersync sync`` and
``demo``, the summary and the generic tests. Adding a stream is a pager entry when the generic pagers do
not fit (top/paging.py), a normaliser module, one entry here, and a table plus its migration.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ordersync_pipeline.sync import normalize, normalize_inventory, normalize_refunds
from ordersync_pipeline.sync.stream import (KINDS, Batch, DetailApi, ListCall, Snapshot, Stream, StreamAssets,
                                            StreamName)
from ordersync_pipeline.sync.windows import Window
from ordersync_pipeline.top import paging
from ordersync_pipeline.top.errors import MalformedResponseError
from ordersync_pipeline.top.pages import ITEMS, REFUNDS, SKUS, TRADES, Page

if TYPE_CHECKING:
    # Annotations only: loader processes look streams up by name and never call the API.
    from ordersync_pipeline.top.client import TopClient

__all__ = ["STREAMS", "KINDS", "stream", "stream_names", "StreamName", "TRADE_FIELDS", "TRADES_STREAM",
           "REFUNDS_STREAM", "SNAPSHOTS", "snapshot"]

# ---------------------------------------------------------------------------------------------- trades

# Every column the warehouse keeps, plus the flags that decide whether a trade needs a fullinfo call.
# Receiver personal fields are deliberately not requested.
TRADE_FIELDS = ",".join([
    "tid", "status", "type", "created", "modified", "pay_time", "consign_time", "end_time",
    "payment", "total_fee", "post_fee", "discount_fee", "adjust_fee", "step_trade_status",
    "step_paid_fee", "buyer_open_uid", "buyer_nick", "seller_nick", "receiver_state", "receiver_city",
    "receiver_district", "num", "has_buyer_message", "orders",
])


def _trade_increment_pages(client: TopClient, *, shop_id: str, session: str, window: Window,
                           page_size: int) -> Iterator[Page]:
    return paging.iter_increment_pages(client, shop_id=shop_id, session=session, start_modified=window.start,
                                       end_modified=window.end, fields=TRADE_FIELDS, page_size=page_size)


def _trade_sold_pages(client: TopClient, *, shop_id: str, session: str, window: Window,
                      page_size: int) -> Iterator[Page]:
    return paging.iter_sold_pages(client, shop_id=shop_id, session=session, start_created=window.start,
                                  end_created=window.end, fields=TRADE_FIELDS, page_size=page_size)


def _trade_incomplete(trade: Mapping[str, Any]) -> bool:
    """The list record has no usable order lines: only fullinfo can describe the trade (a record
    without a usable tid cannot be looked up; the normaliser quarantines it)."""
    tid = trade.get("tid")
    if not (isinstance(tid, int) or (isinstance(tid, str) and tid.isascii() and tid.isdigit())):
        return False
    orders = trade.get("orders")
    return (not isinstance(orders, list) or not orders
            or any(not isinstance(o, dict) or "oid" not in o for o in orders))


def _trade_fullinfo_page(client: TopClient, *, shop_id: str, session: str, record: Mapping[str, Any],
                         window: Window) -> Page:
    return paging.detail_page(client, method=paging.FULLINFO_GET, shape=TRADES, shop_id=shop_id,
                              session=session, params={"tid": record.get("tid"), "fields": TRADE_FIELDS},
                              window_start=window.start, window_end=window.end)


def _normalize_trades(shop_id: str, items: Any, *, synced_at: Any, fetched_at: Any, source: str) -> Batch:
    batch = normalize.normalize_trades(shop_id, items, synced_at=synced_at, fetched_at=fetched_at,
                                       source=source)
    return Batch(rows={"trades": batch.trades, "trade_orders": batch.orders}, quarantine=batch.quarantine)


TRADES_STREAM = Stream(
    name="trades",
    title="trades",
    shape=TRADES,
    record_key="tid",
    time_field="modified",
    lists={
        "increment": ListCall(method=paging.INCREMENT_GET, pages=_trade_increment_pages, source="increment",
                              description="taobao.trades.sold.increment.get by modified time, last page first"),
        "historical": ListCall(method=paging.SOLD_GET, pages=_trade_sold_pages, source="sold",
                               description="taobao.trades.sold.get by created day, every trade type listed"),
    },
    detail=DetailApi(method=paging.FULLINFO_GET, incomplete=_trade_incomplete, fetch=_trade_fullinfo_page),
    normalize=_normalize_trades,
    tables=("trades", "trade_orders"),
    assets=StreamAssets(
        pages={"increment": "raw_trade_pages", "historical": "historical_trade_pages"},
        tables={"increment": ("trades", "trade_orders"), "historical": ("historical_trades",)},
        warehouse_tables={"trades": "trades", "trade_orders": "trade_orders"},
        followers={"increment": ("trade_details",)},
        descriptions={
            "raw_trade_pages": (
                "Every page of taobao.trades.sold.increment.get for the partition's window (the "
                "partition moved 5 minutes earlier, fetched once the safety lag has passed), read last "
                "page first, kept exactly as received in the Parquet page lake. Re-run a partition with "
                "`from_lake: true` to rebuild its rows with no API call."),
            "trades": (
                "One row per trade (tid): status, amounts (exact decimals), times (UTC), buyer and "
                "region. Upserted from the partition's pages; a row never goes back to an older "
                "`modified`, so overlaps, re-runs and late pages converge on the newest state."),
            "trade_orders": (
                "One row per order line (oid) of each trade: item, SKU, quantity, amounts and "
                "refund status. A trade's lines are exactly those of its newest version."),
            "historical_trade_pages": (
                "Every page of taobao.trades.sold.get for one Asia/Shanghai day of created time in the "
                "history horizon (every trade type listed), kept as received in the page lake."),
            "historical_trades": (
                "The day's historical pages loaded into the same `trades` and `trade_orders` tables, with "
                "the same newest-wins rule."),
        }),
)

# ---------------------------------------------------------------------------------------------- refunds

def _refund_pages(client: TopClient, *, shop_id: str, session: str, window: Window,
                  page_size: int) -> Iterator[Page]:
    """refunds.receive.get by modified time, every trade type, each day-long span walked last page first
    (refunds change while paged, as trades do). The historical path uses the same call over a whole
    modified day: modified time is the API's only time filter."""
    return paging.iter_increment_pages(client, shop_id=shop_id, session=session, start_modified=window.start,
                                       end_modified=window.end, fields=normalize_refunds.REFUND_FIELDS,
                                       page_size=page_size, api=paging.REFUNDS_RECEIVE)


def _refund_detail_page(client: TopClient, *, shop_id: str, session: str, record: Mapping[str, Any],
                        window: Window) -> Page:
    """taobao.refund.get for a list record missing a field the row needs; an answer still missing one is
    refused (retryable) rather than landing in the lake, where the normaliser would skip it."""
    page = paging.detail_page(client, method=paging.REFUND_GET, shape=REFUNDS, shop_id=shop_id,
                              session=session, params={"refund_id": record.get("refund_id"),
                                                       "fields": normalize_refunds.REFUND_FIELDS},
                              window_start=window.start, window_end=window.end)
    if any(not isinstance(item, dict) or normalize_refunds.refund_incomplete(item) for item in page.items):
        raise MalformedResponseError(
            f"refund.get answered refund {record.get('refund_id')!r} without one of "
            f"{', '.join(normalize_refunds.REQUIRED_FIELDS)}",
            method=paging.REFUND_GET, request_id=page.request_id, shop_id=shop_id)
    return page


REFUNDS_STREAM = Stream(
    name="refunds",
    title="refunds",
    shape=REFUNDS,
    record_key="refund_id",
    time_field="modified",
    lists={
        "increment": ListCall(method=paging.REFUNDS_RECEIVE_GET, pages=_refund_pages, source="increment",
                              description="taobao.refunds.receive.get by modified time, last page first"),
        "historical": ListCall(method=paging.REFUNDS_RECEIVE_GET, pages=_refund_pages, source="historical",
                               description="taobao.refunds.receive.get by modified day, last page first"),
    },
    detail=DetailApi(method=paging.REFUND_GET, incomplete=normalize_refunds.refund_incomplete,
                     fetch=_refund_detail_page),
    normalize=normalize_refunds.normalize_refunds,
    tables=("refunds",),
    assets=StreamAssets(
        pages={"increment": "raw_refund_pages", "historical": "historical_refund_pages"},
        tables={"increment": ("refunds",), "historical": ("historical_refunds",)},
        warehouse_tables={"refunds": "refunds"},
        descriptions={
            "raw_refund_pages": (
                "Every page of taobao.refunds.receive.get (refunds the shop received) for the partition's "
                "window of modified time: the same shops, 15-minute windows, 5-minute overlap and safety "
                "lag as the trades, read last page first, kept exactly as received in the Parquet page "
                "lake (with any taobao.refund.get answer that completed a record)."),
            "refunds": (
                "One row per refund (refund_id): its trade and order line, status, refunded amount, "
                "goods status, reason, times (UTC). Upserted from the partition's pages; a row never goes "
                "back to an older `modified`. Each refund's status also reaches "
                "`trade_orders.refund_status` when it is the newer state of that line, and successful "
                "refunds are netted out of the `net_sales` view."),
            "historical_refund_pages": (
                "Every page of taobao.refunds.receive.get for one Asia/Shanghai day of modified time in "
                "the history horizon, kept as received in the page lake."),
            "historical_refunds": (
                "The day's historical refund pages loaded into the same `refunds` table, with the same "
                "newest-wins rule and the same effect on `trade_orders.refund_status`."),
        }),
)

# ---------------------------------------------------------------------------------------------- registry

STREAMS: tuple[Stream, ...] = (TRADES_STREAM, REFUNDS_STREAM)


def stream(name: str) -> Stream:
    """The registered stream called ``name``; KeyError names the registered ones."""
    for entry in STREAMS:
        if entry.name == name:
            return entry
    raise KeyError(f"unknown stream {name!r}; registered: {stream_names()}")


def stream_names() -> list[StreamName]:
    return [entry.name for entry in STREAMS]


# ---------------------------------------------------------------------------------------------- snapshots

def _onsale_pages(client: TopClient, *, shop_id: str, session: str, taken_at: datetime,
                  page_size: int) -> Iterator[Page]:
    return paging.iter_onsale_pages(client, shop_id=shop_id, session=session, taken_at=taken_at,
                                    fields=normalize_inventory.ITEM_FIELDS, sku_fields=normalize_inventory.SKU_FIELDS,
                                    page_size=min(page_size, paging.MAX_SKU_ITEMS))


INVENTORY_SNAPSHOT = Snapshot(
    name="inventory",
    title="inventory",
    method=paging.ONSALE_GET,
    shape=ITEMS,
    detail_shapes={paging.SKUS_GET: SKUS},
    pages=_onsale_pages,
    normalize=normalize_inventory.normalize_items,
    table=normalize_inventory.TABLE,
    asset="inventory_snapshots",
    description=(
        "Stock on hand: every on-sale item (taobao.items.onsale.get) and its SKU quantities (taobao.item.skus.get, "
        "40 items a call), one dated copy per "
        "shop and run (taken_at), pages kept in the lake. Joins trade_orders on num_iid/sku_id (outer ids "
        "when those are missing); the view inventory_latest holds each shop's newest snapshot. Hourly by "
        "default (forecast.inventory_cron) and on demand."),
)

SNAPSHOTS: tuple[Snapshot, ...] = (INVENTORY_SNAPSHOT,)


def snapshot(name: str) -> Snapshot:
    """The registered snapshot called ``name``; KeyError names the registered ones."""
    for entry in SNAPSHOTS:
        if entry.name == name:
            return entry
    raise KeyError(f"unknown snapshot {name!r}; registered: {[s.name for s in SNAPSHOTS]}")
