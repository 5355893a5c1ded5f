"""TOP response envelopes, ``fields`` projection and the cache of serialized trade fragments.

A list page is a join of cached bytes: each (trade version, projection, simplify) is serialized once
with orjson, so repeated and overlapping page reads cost a dict lookup per trade.
"""

from __future__ import annotations

import itertools
from collections import deque
import random
import threading
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import orjson

# TOP returns these only from fullinfo, not from the list APIs (top-api.md appendix A).
FULLINFO_ONLY_TRADE = frozenset({"buyer_message", "seller_memo"})
FULLINFO_ONLY_ORDER = frozenset({"snapshot_url", "order_from", "is_oversold"})
LIST_WRAPPERS = {"trades": "trade", "orders": "order", "refunds": "refund", "messages": "tmc_message",
                 "trace_list": "transit_step_info", "items": "item", "skus": "sku"}

_rid_counter = itertools.count(random.SystemRandom().randrange(1 << 40))


def request_id() -> str:
    """A short lowercase base-36 id like TOP's ``15ryekq7hious``."""
    n = (next(_rid_counter) * 0x9E3779B97F4A7C15) & ((1 << 62) - 1)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out: list[str] = []
    while n and len(out) < 13:
        n, r = divmod(n, 36)
        out.append(digits[r])
    return "".join(out) or "0"


def response_key(method: str) -> str:
    """``taobao.trades.sold.get`` -> ``trades_sold_get_response``."""
    name = method[len("taobao."):] if method.startswith("taobao.") else method
    return name.replace(".", "_") + "_response"


@dataclass(frozen=True)
class Projection:
    key: int                              # small int naming this projection in cache keys
    trade_fields: tuple[str, ...]
    order_fields: tuple[str, ...] | None  # None: whole order objects
    orders: bool


class Projections:
    """Interns ``fields`` strings so cache keys stay small."""

    def __init__(self) -> None:
        self._by_text: dict[tuple[str, bool], Projection] = {}
        self._lock = threading.Lock()

    def get(self, fields: str, list_api: bool) -> Projection:
        hit = self._by_text.get((fields, list_api))
        if hit is not None:
            return hit
        names = [f.strip() for f in fields.split(",") if f.strip()]
        trade_fields = [n for n in names if "." not in n and n != "orders"]
        whole_orders = "orders" in names
        sub = [n.split(".", 1)[1] for n in names if n.startswith("orders.")]
        if list_api:
            trade_fields = [n for n in trade_fields if n not in FULLINFO_ONLY_TRADE]
            sub = [n for n in sub if n not in FULLINFO_ONLY_ORDER]
        order_fields: tuple[str, ...] | None
        if whole_orders:
            order_fields = None if not list_api else ("\0list",)
        else:
            order_fields = tuple(dict.fromkeys(sub))
        with self._lock:
            proj = Projection(len(self._by_text) + 1, tuple(dict.fromkeys(trade_fields)), order_fields,
                              whole_orders or bool(sub))
            self._by_text.setdefault((fields, list_api), proj)
            return self._by_text[(fields, list_api)]


def project_trade(trade: dict[str, Any], proj: Projection, simplify: bool) -> dict[str, Any]:
    out = {f: trade[f] for f in proj.trade_fields if f in trade}
    if proj.orders:
        orders = trade["orders"]
        if proj.order_fields is None:
            projected = orders
        elif proj.order_fields == ("\0list",):
            projected = [{k: v for k, v in o.items() if k not in FULLINFO_ONLY_ORDER} for o in orders]
        else:
            projected = [{f: o[f] for f in proj.order_fields if f in o} for o in orders]
        out["orders"] = projected if simplify else {"order": projected}
    return out


# Measured per entry beyond the fragment's length: bytes header, 6-tuple key and its ints, dict slot,
# deque slot.
ENTRY_OVERHEAD = 250


class FragmentCache:
    """Serialized trade fragments keyed by (shop, idx, modified, projection, simplify, list_api).

    Bounded by bytes; evicts oldest-inserted first (cheaper than LRU bookkeeping and good enough:
    pages are read in time order). Insertion order is kept in a deque: ``next(iter(dict))`` after
    many pops from the front rescans the freed slots on every eviction (quadratic: a 1M-trade sweep
    spent most of its time there once the cache was full).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = self.misses = 0
        self._d: dict[tuple[int, ...], bytes] = {}
        self._order: deque[tuple[int, ...]] = deque()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, ...]) -> bytes | None:
        return self._d.get(key)

    def put(self, key: tuple[int, ...], value: bytes) -> None:
        with self._lock:
            if key in self._d:
                return
            self._d[key] = value
            self._order.append(key)
            self.size += len(value) + ENTRY_OVERHEAD
            while self.size > self.max_bytes and self._order:
                self.size -= len(self._d.pop(self._order.popleft())) + ENTRY_OVERHEAD

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self._order.clear()
            self.size = 0


def wrap_lists(obj: Any, simplify: bool) -> Any:
    """Apply TOP's list wrappers (``{"trades": {"trade": [...]}}``) unless simplify."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            v = wrap_lists(v, simplify)
            if isinstance(v, list) and not simplify and k in LIST_WRAPPERS:
                v = {LIST_WRAPPERS[k]: v}
            out[k] = v
        return out
    if isinstance(obj, list):
        return [wrap_lists(v, simplify) for v in obj]
    return obj


def success(method: str, body: dict[str, Any], rid: str, simplify: bool) -> bytes:
    inner = wrap_lists(body, simplify)
    inner["request_id"] = rid
    return orjson.dumps(inner if simplify else {response_key(method): inner})


def error(code: int, msg: str, rid: str, sub_code: str | None = None, sub_msg: str | None = None) -> bytes:
    err: dict[str, Any] = {"code": code, "msg": msg}
    if sub_code:
        err["sub_code"] = sub_code
    if sub_msg:
        err["sub_msg"] = sub_msg
    err["request_id"] = rid
    return orjson.dumps({"error_response": err})


def list_page(method: str, list_key: str, fragments: list[bytes], rid: str, simplify: bool,
              total: int | None, has_next: bool | None) -> bytes:
    """Assemble a list response from pre-serialized item fragments.

    Exactly one page-sized allocation: the envelope's head is glued to the first fragment and its
    tail to the last, then one join. A page is ~170 KB, and each extra page-sized temporary costs
    ~50 us here (fresh pages from the allocator), more than serving a warm page otherwise does.
    """
    head: list[bytes] = [b"{" if simplify else b'{"%s":{' % response_key(method).encode()]
    if total is not None:
        head.append(b'"total_results":%d,' % total)
    if has_next is not None:
        head.append(b'"has_next":true,' if has_next else b'"has_next":false,')
    tail = b'"request_id":"%s"}' % rid.encode() + (b"" if simplify else b"}")
    if not fragments:
        return b"".join(head) + tail
    key = list_key.encode()
    head.append(b'"%s":[' % key if simplify else b'"%s":{"%s":[' % (key, LIST_WRAPPERS[list_key].encode()))
    tail = (b"]," if simplify else b"]},") + tail
    if len(fragments) == 1:
        return b"".join(head) + fragments[0] + tail
    items = list(fragments)
    items[0] = b"".join(head) + items[0]
    items[-1] = items[-1] + tail
    return b",".join(items)


def to_xml(json_body: bytes) -> bytes:
    """A minimal XML rendering of a JSON envelope (root element = the envelope key)."""
    doc = orjson.loads(json_body)

    def node(name: str, value: Any) -> str:
        if isinstance(value, dict):
            return f"<{name}>" + "".join(node(k, v) for k, v in value.items()) + f"</{name}>"
        if isinstance(value, list):
            return "".join(node(name, v) for v in value)
        if isinstance(value, bool):
            value = "true" if value else "false"
        return f"<{name}>{escape(str(value))}</{name}>"

    if len(doc) == 1:
        (root, inner), = doc.items()
    else:
        root, inner = "response", doc
    return ('<?xml version="1.0" encoding="utf-8" ?>' + node(root, inner)).encode("utf-8")
