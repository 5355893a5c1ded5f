"""One page of a TOP list API as fetched, and the one parser that reads a page's body.

``Page`` is the seam between the pagers (``top/paging.py``), the raw page lake (``sync/lake.py``) and
the loaders (see docs/architecture.md). It knows no stream: a ``ListShape`` says how a list answer is
laid out (``TRADES``, ``REFUNDS``, ...), and whoever fetches or re-reads a page names the shape.

The parser is ``list_from_response`` (a response object -> ``(items, total_results, has_next)``); the
pager applies it to what the client parsed (``top.envelope.parse_body``), and ``parse_list_body`` applies
the same two steps to a stored body, so a page re-read from the lake is parsed exactly as it was at
fetch: same JSON decoder (ids exact beyond 2**53, lone surrogates accepted), same unwrapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ordersync_pipeline.top.envelope import LIST_WRAPPERS, parse_body, unwrap_list, unwrap_nested
from ordersync_pipeline.top.errors import MalformedResponseError

__all__ = ["Page", "ListShape", "TRADES", "REFUNDS", "ITEMS", "SKUS", "ListContent", "list_from_response",
           "parse_list_body"]


@dataclass(frozen=True)
class ListShape:
    """How a list API lays out its answer: ``{list_key: {item_key: [...]}}`` (``simplify=false``) or
    ``{list_key: [...]}`` (``simplify=true``), and which lists inside each item are unwrapped too."""

    list_key: str                 # "trades"
    item_key: str                 # "trade"
    nested: tuple[str, ...] = ()  # lists inside each item to unwrap, e.g. ("orders",)
    # The key holding the one record of the matching detail API's answer (fullinfo: ``{"trade": {...}}``,
    # refund.get: ``{"refund": {...}}``): such a page (see ``paging.detail_page``) reads as one item.
    single_key: str | None = None
    # A detail API answering with a list of records and no paging fields (taobao.item.skus.get): an
    # answer without ``total_results``/``has_next`` is accepted, and one without the list has no records.
    unpaged: bool = False

    def __post_init__(self) -> None:
        unknown = [key for key in self.nested if key not in LIST_WRAPPERS]
        if unknown:
            raise ValueError(f"ListShape {self.list_key!r}: nested list(s) {unknown} have no item key; "
                             "add them to top.envelope.LIST_WRAPPERS")


TRADES = ListShape(list_key="trades", item_key="trade", nested=("orders",), single_key="trade")
REFUNDS = ListShape(list_key="refunds", item_key="refund", single_key="refund")
# taobao.items.onsale.get: ``{"items": {"item": [{..., "skus": {"sku": [...]}}]}}``.
ITEMS = ListShape(list_key="items", item_key="item", nested=("skus",))
# taobao.item.skus.get: ``{"skus": {"sku": [...]}}``, the SKUs of up to 40 items, each naming its num_iid.
SKUS = ListShape(list_key="skus", item_key="sku", unpaged=True)


@dataclass(frozen=True)
class Page:
    shop_id: str
    method: str                  # the list API called, e.g. "taobao.trades.sold.increment.get"
    window_start: datetime       # aware; created-window or modified-window, as the API filters
    window_end: datetime         # aware, exclusive
    page_no: int
    page_size: int
    request_id: str | None
    fetched_at: datetime         # aware (UTC)
    body: bytes                  # response body as received
    # Records as received, nested lists unwrapped. An entry that is not a JSON object is kept (not
    # dropped) so the normaliser quarantines it where it can be seen.
    items: list[Any]
    total_results: int | None
    has_next: bool | None


ListContent = tuple[list[Any], int | None, bool | None]  # (items, total_results, has_next)


def list_from_response(data: dict[str, Any], shape: ListShape, *, method: str,
                       shop_id: str | None = None) -> ListContent:
    """``(items, total_results, has_next)`` of a list API's response object.

    Raises the retryable ``MalformedResponseError`` when the answer has neither ``total_results`` nor
    ``has_next`` or its list is not a list: such a page must never be read as "no records". A nested
    list that cannot be unwrapped stays as it is, so only that record fails validation later.
    """
    request_id = data.get("request_id")
    rid = request_id if isinstance(request_id, str) else None
    single = data.get(shape.single_key) if shape.single_key else None
    if isinstance(single, dict) and shape.list_key not in data:  # a detail API's one-record answer
        return [unwrap_nested(single, shape.nested, strict=False)], None, None
    if "total_results" not in data and "has_next" not in data and not shape.unpaged:
        raise MalformedResponseError(
            f"{shape.list_key} response has neither total_results nor has_next",
            method=method, request_id=rid, shop_id=shop_id)
    try:
        raw = unwrap_list(data.get(shape.list_key), shape.item_key)
    except ValueError as exc:
        raise MalformedResponseError(f"{shape.list_key}: {exc}", method=method, request_id=rid,
                                     shop_id=shop_id) from None
    items = [unwrap_nested(item, shape.nested, strict=False) if isinstance(item, dict) else item
             for item in raw]
    total = data.get("total_results")
    has_next = data.get("has_next")
    return (items,
            total if isinstance(total, int) and not isinstance(total, bool) else None,
            has_next if isinstance(has_next, bool) else None)


def parse_list_body(body: bytes, shape: ListShape, *, method: str,
                    shop_id: str | None = None) -> ListContent:
    """``list_from_response`` over a body as received, wrapped (``simplify=false``) or not.

    Raises what ``top.envelope.parse_body`` raises (``MalformedResponseError``, or the classified
    ``TopError`` of an ``error_response``) and what ``list_from_response`` raises.
    """
    # simplify=True accepts both layouts; a wrapped body must still carry this method's envelope.
    data = parse_body(body, method, simplify=True, shop_id=shop_id)
    return list_from_response(data, shape, method=method, shop_id=shop_id)
