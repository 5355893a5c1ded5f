"""Pagers over the TOP list APIs, yielding one ``top.pages.Page`` at a time (bounded memory).

- ``iter_sold_pages``: ``taobao.trades.sold.get`` by created window, forward with ``use_has_next``.
  Safe because ``created`` never changes: a trade cannot leave or move within a created window.
- ``iter_increment_pages``: a list API filtered by modified window (``TRADES_INCREMENT``, the default,
  or ``REFUNDS_RECEIVE``), split into spans of at most one day, each walked from the last page back
  to page 1 (see ``_walk_span``).
- ``iter_onsale_pages``: ``taobao.items.onsale.get``, forward by page number (a snapshot of the on-sale
  catalogue: no time window, nothing to walk backwards for), each page followed by the
  ``taobao.item.skus.get`` answer for its items (items.onsale.get cannot return SKUs).
- ``get_trade_fullinfo``: one trade's ``taobao.trade.fullinfo.get`` object.

Windows are half-open ``[start, end)`` in the contract. TOP's end parameters are inclusive to the
second, so a trade stamped exactly ``end`` can appear in two adjacent windows; the warehouse upserts
by (tid, modified), so that duplicate is harmless, whereas sending ``end - 1s`` would lose trades on a
gateway that treats ``end`` as exclusive.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.timeutil import require_aware
from ordersync_pipeline.top.envelope import unwrap_trade
from ordersync_pipeline.top.errors import MalformedResponseError, UnstableWindowError
from ordersync_pipeline.top.pages import ITEMS, REFUNDS, SKUS, TRADES, ListShape, Page, list_from_response

if TYPE_CHECKING:
    # Annotations only: the HTTP client (requests, urllib3) is not needed to split windows or to
    # read the lake, so loader processes never import it.
    from ordersync_pipeline.top.client import TopClient, TopResponse

__all__ = ["ALL_TRADE_TYPES", "SOLD_GET", "INCREMENT_GET", "REFUNDS_RECEIVE_GET", "REFUND_GET",
           "FULLINFO_GET", "MAX_PAGE_SIZE", "MAX_INCREMENT_SPAN", "ListApi", "TRADES_SOLD", "TRADES_INCREMENT",
           "REFUNDS_RECEIVE", "iter_sold_pages", "iter_increment_pages", "get_trade_fullinfo",
           "split_window", "detail_page", "ONSALE_GET", "SKUS_GET", "MAX_SKU_ITEMS", "iter_onsale_pages"]

SOLD_GET = "taobao.trades.sold.get"
INCREMENT_GET = "taobao.trades.sold.increment.get"
REFUNDS_RECEIVE_GET = "taobao.refunds.receive.get"
REFUND_GET = "taobao.refund.get"
FULLINFO_GET = "taobao.trade.fullinfo.get"
ONSALE_GET = "taobao.items.onsale.get"
SKUS_GET = "taobao.item.skus.get"
MAX_SKU_ITEMS = 40     # num_iids per taobao.item.skus.get call
MAX_PAGE_SIZE = 100
MAX_INCREMENT_SPAN = timedelta(days=1)

# Every returned trade type (top-api.md 4.2). Omitting ``type`` makes TOP return only its five default
# types, silently dropping the rest. ``guarantee_trade`` is a query composite of fixed + auction,
# both listed here, so it is not needed.
ALL_TRADE_TYPES: tuple[str, ...] = (
    "fixed", "auction", "step", "independent_simple_trade", "independent_shop_trade",
    "auto_delivery", "ec", "cod", "game_equipment", "shopex_trade", "netcn_trade", "external_trade",
    "instant_trade", "b2c_cod", "hotel_trade", "super_market_trade", "super_market_cod_trade",
    "taohua", "waimai", "o2o_offlinetrade", "nopaid", "eticket", "tmall_i18n", "insurance_plus",
    "finance", "pre_auth_type", "lazada", "fenxiao",
)
# Walks of one span before giving up with ``UnstableWindowError``. A re-walk means rows entered a
# window that should already be settled (the caller's safety lag is meant to prevent that), so a
# span still changing after three walks is retried later rather than walked on and on.
_MAX_WALKS = 3


@dataclass(frozen=True)
class ListApi:
    """A list API a pager walks: the method called and how its answer is laid out."""

    method: str
    shape: ListShape
    key: str = "tid"              # the record's id: with ``modified`` it tells entries from leaves


TRADES_SOLD = ListApi(SOLD_GET, TRADES)
TRADES_INCREMENT = ListApi(INCREMENT_GET, TRADES)
# Sorted by modified desc like the trades increment, so the same reverse walk applies.
REFUNDS_RECEIVE = ListApi(REFUNDS_RECEIVE_GET, REFUNDS, key="refund_id")


def split_window(start: datetime, end: datetime, max_span: timedelta) -> list[tuple[datetime, datetime]]:
    """Contiguous ``[s, e)`` pieces covering ``[start, end)`` exactly, none longer than ``max_span``."""
    require_aware(start, "start")
    require_aware(end, "end")
    if max_span <= timedelta(0):
        raise ValueError("max_span must be positive")
    pieces: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        stop = min(cursor + max_span, end)
        pieces.append((cursor, stop))
        cursor = stop
    return pieces


def _check_page_size(page_size: int) -> None:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")


def _page(resp: TopResponse, shape: ListShape, *, shop_id: str, start: datetime, end: datetime,
          page_no: int, page_size: int) -> Page:
    # The client already ran parse_body over resp.body; the lake re-reads it with parse_list_body,
    # which is parse_body followed by this same list_from_response.
    items, total, has_next = list_from_response(resp.data, shape, method=resp.method, shop_id=shop_id)
    return Page(
        shop_id=shop_id, method=resp.method, window_start=start, window_end=end, page_no=page_no,
        page_size=page_size, request_id=resp.request_id, fetched_at=utc_now(), body=resp.body,
        items=items, total_results=total, has_next=has_next)


def iter_sold_pages(client: TopClient, *, shop_id: str, session: str, start_created: datetime,
                    end_created: datetime, fields: str, page_size: int = 100,
                    types: Sequence[str] = ALL_TRADE_TYPES) -> Iterator[Page]:
    """Pages of trades created in ``[start_created, end_created)``, forward until ``has_next`` is false."""
    _check_page_size(page_size)
    require_aware(start_created, "start_created")
    require_aware(end_created, "end_created")
    page_no = 1
    while True:
        resp = client.call(TRADES_SOLD.method, {
            "fields": fields, "start_created": start_created, "end_created": end_created,
            "type": list(types), "page_no": page_no, "page_size": page_size, "use_has_next": True,
        }, session=session, shop_id=shop_id)
        page = _page(resp, TRADES_SOLD.shape, shop_id=shop_id, start=start_created, end=end_created,
                     page_no=page_no, page_size=page_size)
        yield page
        if not _more(page):
            return
        page_no += 1


def iter_onsale_pages(client: TopClient, *, shop_id: str, session: str, fields: str, sku_fields: str,
                      taken_at: datetime, page_size: int = MAX_SKU_ITEMS) -> Iterator[Page]:
    """Every page of the shop's on-sale items, forward by ``page_no`` until ``total_results`` is covered,
    each followed by one ``taobao.item.skus.get`` page (``page_no`` 0) with the SKUs of its items.

    A listing has no time window; ``taken_at`` (aware) stands in for both window ends of each page so the
    lake records when the snapshot was taken. The order of the catalogue does not move while it is read
    (unlike an increment window), so forward paging loses nothing. ``page_size`` is at most 40, the
    items one SKU call may name.
    """
    if not 1 <= page_size <= MAX_SKU_ITEMS:
        raise ValueError(f"page_size must be between 1 and {MAX_SKU_ITEMS}, got {page_size}")
    require_aware(taken_at, "taken_at")
    page_no = 1
    while True:
        resp = client.call(ONSALE_GET, {"fields": fields, "page_no": page_no, "page_size": page_size},
                           session=session, shop_id=shop_id)
        page = _page(resp, ITEMS, shop_id=shop_id, start=taken_at, end=taken_at, page_no=page_no,
                     page_size=page_size)
        yield page
        ids = [str(item["num_iid"]) for item in page.items
               if isinstance(item, dict) and isinstance(item.get("num_iid"), (int, str)) and str(item["num_iid"])]
        if ids:
            yield detail_page(client, method=SKUS_GET, shape=SKUS, shop_id=shop_id, session=session,
                              params={"fields": sku_fields, "num_iids": ",".join(ids)},
                              window_start=taken_at, window_end=taken_at)
        if not page.items or not _more(page):
            return
        page_no += 1


def _more(page: Page) -> bool:
    if page.has_next is not None:
        return page.has_next
    if page.total_results is not None:
        return page.page_no * page.page_size < page.total_results
    return len(page.items) >= page.page_size


def iter_increment_pages(client: TopClient, *, shop_id: str, session: str, start_modified: datetime,
                         end_modified: datetime, fields: str, page_size: int = 100,
                         types: Sequence[str] = ALL_TRADE_TYPES,
                         api: ListApi = TRADES_INCREMENT) -> Iterator[Page]:
    """Pages of ``api``'s records (trades by default) modified in ``[start_modified, end_modified)``,
    in spans of at most one day. ``types`` are trade types, a filter refunds take too.

    Completeness rests on the caller's safety lag: ``end_modified`` must trail the platform's clock
    by at least the platform's maximum visibility lag (``sync.safety_lag_minutes``). Then every change
    stamped before ``end_modified`` is visible before the walk starts, rows can only LEAVE the window
    while it is paged, and reverse paging is loss-free. If the lag is longer than that, changes ENTER
    the window mid-walk; ``_walk_span`` detects the entries it can see on page 1 and walks the span
    again (raising ``UnstableWindowError`` when it will not settle), and the next window's overlap
    re-reads changes that became visible only after this window was fetched, which suffices while
    ``max visibility lag <= safety lag + overlap``. ``fields`` always gets the record key and
    ``modified`` added: the entry check needs them. See docs/architecture.md ("Completeness").
    """
    _check_page_size(page_size)
    for span_start, span_end in split_window(start_modified, end_modified, MAX_INCREMENT_SPAN):
        yield from _walk_span(client, shop_id=shop_id, session=session, start=span_start,
                              end=span_end, fields=fields, page_size=page_size, types=types, api=api)


def _walk_span(client: TopClient, *, shop_id: str, session: str, start: datetime, end: datetime,
               fields: str, page_size: int, types: Sequence[str], api: ListApi) -> Iterator[Page]:
    """Every page of one span, last page first and page 1 last, walked again while rows enter.

    Results are sorted by ``modified`` desc. While we page, a trade in the window can be modified
    again: its new ``modified`` is past ``end``, so it LEAVES the window and every row behind it moves
    one place toward page 1. Walking forward, such a shift slides an unread row onto a page already
    read: lost. Walking backward, it only slides an already-read row onto a page not yet read: a
    duplicate, which upserts absorb. Page 1 is therefore read again last; the first read only told us
    how many pages there are (and what page 1 held).

    A row ENTERS when a change becomes visible mid-walk (a new trade, a trade modified into the
    window, or a trade moved to a newer place inside it). An entry pushes every row behind it one
    place toward the last page, so an unread row at a page boundary can slide onto a page already
    read. Entries are the only way to lose a row, so the span is walked again when the two reads of
    page 1 (``first``, ``last``) show one:

    Detected (walk again):
      1. ``last``'s total is larger than ``first``'s: more entries than leaves.
      2. A row of ``last`` that ``first`` did not hold (a new ``(tid, modified)``) sits above a row that
         ``first`` did hold. Leaves keep the relative order of the rows that stay, and a row coming up
         from page 2 was below all of ``first``'s rows, so only an entry can be there.
      3. A new row of ``last`` is newer than ``first``'s oldest row. Rows coming up from page 2 are
         never newer than that. (A newest row of ``last`` that ``first`` did not hold is an instance
         of 2 or 3 unless every row of ``first`` left, which leaves alone explain.)
      So every entry still on page 1 at the final read is seen, except one stamped in the same
      second as ``first``'s oldest row that ends below every row kept from ``first`` (it cannot be
      told from a page-2 row tied with it). Rules 2 and 3 assume nothing about how TOP orders rows
      stamped in the same second, only that it orders them the same way on every call.

    Not detected, when leaves keep the total from growing:
      a. an entry that lands below page 1 (older than the page-size newest rows, i.e. a change that
         became visible later than newer ones, deeper than one page);
      b. an entry that leaves again (is modified past ``end``) before the final read of page 1;
      c. the same-second tie named above.
    All three need an entry, and entries need a change stamped before ``end`` that was not yet
    visible when the walk started: with ``end`` trailing the platform's clock by at least its
    maximum visibility lag (the safety lag), there are none, and leaves alone never lose a row.
    Pure leaves never cause a re-walk (a busy shop's newest trades change all the time and a walk
    costs every page again). A span still changing after ``_MAX_WALKS`` walks raises the retryable
    ``UnstableWindowError`` instead of returning, so the partition is not marked complete.
    """
    def fetch(page_no: int) -> Page:
        resp = client.call(api.method, {
            "fields": _with_key_fields(fields, api.key), "start_modified": start, "end_modified": end,
            "type": list(types), "page_no": page_no, "page_size": page_size, "use_has_next": False,
        }, session=session, shop_id=shop_id)
        return _page(resp, api.shape, shop_id=shop_id, start=start, end=end, page_no=page_no,
                     page_size=page_size)

    first = fetch(1)
    if _total(first) <= page_size:
        yield first  # everything fit in one page: one call for the span
        return
    for _ in range(_MAX_WALKS):
        for page_no in range(math.ceil(_total(first) / page_size), 1, -1):
            yield fetch(page_no)
        last = fetch(1)
        yield last
        # A total that now fits in one page means ``last`` alone held every row: nothing can be lost.
        if _total(last) <= page_size or not _changed(first, last, api.key):
            return
        first = last  # rows entered mid-walk: walk again, counting pages from the newest read
    raise UnstableWindowError(
        f"window {start.isoformat()}..{end.isoformat()} of shop {shop_id} was still changing after "
        f"{_MAX_WALKS} walks (rows kept entering it); retried later. If this repeats, the platform's "
        f"visibility lag exceeds sync.safety_lag_minutes: raise it.",
        method=api.method, request_id=first.request_id, shop_id=shop_id)


def _with_key_fields(fields: str, key: str) -> str:
    """``fields`` plus the record key and ``modified`` when missing (the entry check compares both)."""
    names = {f.strip() for f in fields.split(",")}
    missing = [k for k in (key, "modified") if k not in names]
    return ",".join([fields, *missing]) if missing else fields


def _row_key(record: Any, key: str) -> tuple[str, str]:
    """(modified, record key) as text; TOP's ``yyyy-MM-dd HH:mm:ss`` sorts chronologically as text."""
    if not isinstance(record, dict):
        return "", ""
    return str(record.get("modified") or ""), str(record.get(key) or "")


def _changed(first: Page, last: Page, key: str) -> bool:
    """Did rows enter the span between two reads of page 1? (Rules 1-3 of ``_walk_span``.)"""
    if _total(last) > _total(first):
        return True
    before = {_row_key(t, key) for t in first.items}
    oldest = min((key[0] for key in before), default="")
    kept_below = False  # a row of ``first`` seen further down ``last`` (scanning bottom up)
    for record in reversed(last.items):
        row = _row_key(record, key)
        if row in before:
            kept_below = True
        elif kept_below or row[0] > oldest:
            return True
    return False


def _total(page: Page) -> int:
    if page.total_results is None:
        raise MalformedResponseError("increment response without total_results (use_has_next=false)",
                                     method=page.method, request_id=page.request_id,
                                     shop_id=page.shop_id)
    return page.total_results


def detail_page(client: TopClient, *, method: str, shape: ListShape, shop_id: str, session: str,
                params: dict[str, Any], window_start: datetime, window_end: datetime) -> Page:
    """One record from a detail API (fullinfo, refund.get) as a one-item ``Page``, body kept as received,
    so it can sit in the lake beside the list pages it completes (``page_no`` 0 marks it)."""
    resp = client.call(method, params, session=session, shop_id=shop_id)
    items, _, _ = list_from_response(resp.data, shape, method=method, shop_id=shop_id)
    return Page(shop_id=shop_id, method=method, window_start=window_start, window_end=window_end, page_no=0,
                page_size=1, request_id=resp.request_id, fetched_at=utc_now(), body=resp.body, items=items,
                total_results=None, has_next=None)


def get_trade_fullinfo(client: TopClient, *, shop_id: str, session: str, tid: int,
                       fields: str) -> dict[str, Any]:
    """The ``trade`` object of ``taobao.trade.fullinfo.get``, nested lists unwrapped."""
    resp = client.call(FULLINFO_GET, {"fields": fields, "tid": tid}, session=session, shop_id=shop_id)
    trade = resp.data.get("trade")
    if not isinstance(trade, dict):
        raise MalformedResponseError("trade_fullinfo_get_response has no trade object",
                                     method=FULLINFO_GET, request_id=resp.request_id, shop_id=shop_id)
    return unwrap_trade(trade)
