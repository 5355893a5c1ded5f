"""One page of trades as fetched from TOP, and the one place that knows how to read a page body.

``TradePage`` is the seam between the pager (``top/paging.py``), the raw page lake and the loaders
(see docs/architecture.md). It lives here, free of any client or storage import, so both sides can
depend on it without depending on each other.

``trades_from_body`` turns a response body (``simplify=false`` with its ``<api>_response`` wrapper and
``{"trade": [...]}`` list wrappers, or ``simplify=true`` with plain arrays at the root) into the same
``(trades, total_results, has_next)`` triple, so a page re-read from the lake equals the page fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

__all__ = ["TradePage", "PageBodyError", "unwrap_list", "unwrap_orders", "trades_from_body"]


@dataclass(frozen=True)
class TradePage:
    shop_id: str
    method: str                  # "taobao.trades.sold.get" | "taobao.trades.sold.increment.get"
    window_start: datetime       # aware; created-window for sold.get, modified-window for increment
    window_end: datetime         # aware, exclusive
    page_no: int
    page_size: int
    request_id: str | None
    fetched_at: datetime         # aware (UTC)
    body: bytes                  # response body as received
    trades: list[dict[str, Any]]  # trade objects; each trade's "orders" unwrapped to a plain list
    total_results: int | None
    has_next: bool | None


class PageBodyError(ValueError):
    """A response body is not a trades list response (not JSON, an error envelope, or a wrong shape)."""


def unwrap_list(value: Any, item_key: str) -> Any:
    """``{"order": [...]}`` -> ``[...]``; a plain list (simplify=true) is returned as is.

    A single item sent as an object (``{"order": {...}}``, XML heritage) becomes a one-item list, as
    the client's ``top.envelope.unwrap_list`` does. Anything else is returned unchanged so validation
    further on can name what was wrong with it.
    """
    if isinstance(value, dict) and len(value) == 1 and item_key in value:
        items = value[item_key]
        return [items] if isinstance(items, dict) else items
    return value


def unwrap_orders(trade: dict[str, Any]) -> dict[str, Any]:
    """Replace a trade's wrapped ``orders`` with a plain list, in place (and return the trade)."""
    orders = trade.get("orders")
    if isinstance(orders, dict):
        trade["orders"] = unwrap_list(orders, "order")
    return trade


def _response_object(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise PageBodyError(f"response body is a JSON {type(doc).__name__}, expected an object")
    if "error_response" in doc:
        err = doc["error_response"]
        code = err.get("code") if isinstance(err, dict) else None
        raise PageBodyError(f"response body is a TOP error envelope (code={code!r})")
    # simplify=false: exactly one "<api>_response" key holds the fields.
    if len(doc) == 1:
        (key, inner), = doc.items()
        if key.endswith("_response"):
            if not isinstance(inner, dict):
                raise PageBodyError(f"{key} is a JSON {type(inner).__name__}, expected an object")
            return inner
    return doc  # simplify=true: fields at the root


def trades_from_body(body: bytes) -> tuple[list[dict[str, Any]], int | None, bool | None]:
    """Parse a trades list response body into ``(trades, total_results, has_next)``.

    Ids stay exact Python ints (orjson). Each trade's ``orders`` is unwrapped to a plain list. An
    absent ``trades`` key means an empty page (TOP omits empty lists). Raises ``PageBodyError``.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PageBodyError(f"response body is not valid JSON: {exc}") from None
    inner = _response_object(doc)
    raw = unwrap_list(inner.get("trades", []), "trade")
    if not isinstance(raw, list):
        raise PageBodyError(f"'trades' is a JSON {type(raw).__name__}, expected a list")
    trades = [unwrap_orders(t) if isinstance(t, dict) else t for t in raw]
    total = inner.get("total_results")
    has_next = inner.get("has_next")
    return (trades,
            total if isinstance(total, int) and not isinstance(total, bool) else None,
            has_next if isinstance(has_next, bool) else None)
