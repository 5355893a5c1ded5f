"""The TOP APIs the simulator answers, with their argument rules (codes 40/41, 15 + isv.*)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from ordersync_pipeline.simulator import envelope as env
from ordersync_pipeline.simulator import plan as p
from ordersync_pipeline.simulator.listing import ListRenderer
from ordersync_pipeline.simulator.render import fmt_time, render_refund, render_trade
from ordersync_pipeline.simulator.tmc import TmcQueue
from ordersync_pipeline.simulator.world import STATUS_GROUPS, ShopWorld, World, type_codes
from ordersync_pipeline.timeutil import GMT8, TOP_TIME_FORMAT

HORIZON = 90 * p.DAY  # the list APIs only see the last three months
KNOWN_STATUSES = {"TRADE_NO_CREATE_PAY", "WAIT_BUYER_PAY", "SELLER_CONSIGNED_PART", "WAIT_SELLER_SEND_GOODS",
                  "WAIT_BUYER_CONFIRM_GOODS", "TRADE_BUYER_SIGNED", "TRADE_FINISHED", "TRADE_CLOSED",
                  "TRADE_CLOSED_BY_TAOBAO", "PAY_PENDING", "WAIT_PRE_AUTH_CONFIRM", "PAID_FORBID_CONSIGN",
                  *STATUS_GROUPS}
# refunds.receive.get lists these trade types when ``type`` is not given (top-api.md 3.6).
REFUND_DEFAULT_TYPES = "guarantee_trade,auto_delivery"
REFUND_STATUSES = {"WAIT_SELLER_AGREE", "WAIT_BUYER_RETURN_GOODS", "WAIT_SELLER_CONFIRM_GOODS",
                   "SELLER_REFUSE_BUYER", "CLOSED", "SUCCESS"}

# taobao.items.onsale.get returns only these Item fields; SKUs come from taobao.item.skus.get, at most
# MAX_SKU_ITEMS items per call.
ONSALE_FIELDS = frozenset((
    "approve_status,num_iid,title,nick,type,cid,pic_url,num,props,valid_thru,list_time,price,has_discount,"
    "has_invoice,has_warranty,has_showcase,modified,delist_time,postage_id,seller_cids,outer_id,sold_quantity"
).split(","))
MAX_SKU_ITEMS = 40


class TopError(Exception):
    def __init__(self, code: int, msg: str, sub_code: str | None = None, sub_msg: str | None = None) -> None:
        super().__init__(f"{code} {msg} {sub_code or ''}")
        self.code, self.msg, self.sub_code, self.sub_msg = code, msg, sub_code, sub_msg


def missing(name: str) -> TopError:
    return TopError(40, f"Missing required arguments:{name}")


def invalid(name: str) -> TopError:
    return TopError(41, f"Invalid arguments:{name}")


_top_time_memo: dict[str, int | None] = {}


def _parse_top_time(raw: str) -> int | None:
    """GMT+8 ``yyyy-MM-dd HH:mm:ss`` to epoch seconds, None if malformed. Memoised: a sweep sends
    the same window bounds with every page, and strptime is a visible share of a warm page."""
    if raw in _top_time_memo:
        return _top_time_memo[raw]
    try:
        ts: int | None = int(datetime.strptime(raw.strip(), TOP_TIME_FORMAT).replace(tzinfo=GMT8).timestamp())
    except ValueError:
        ts = None
    if len(_top_time_memo) > 4096:
        _top_time_memo.clear()
    _top_time_memo[raw] = ts
    return ts


@dataclass
class Call:
    method: str
    params: dict[str, str]
    shop: ShopWorld | None
    now: int
    rid: str
    simplify: bool

    def required(self, name: str) -> str:
        value = self.params.get(name, "")
        if not value.strip():
            raise missing(name)
        return value

    def int_arg(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise invalid(name) from None
        if not lo <= value <= hi:
            raise invalid(name)
        return value

    def date_arg(self, name: str) -> int | None:
        raw = self.params.get(name)
        if not raw:
            return None
        ts = _parse_top_time(raw)
        if ts is None:
            raise invalid(name)
        return ts

    def bool_arg(self, name: str) -> bool:
        return self.params.get(name, "").lower() == "true"


class Apis:
    """Handlers return the full response body (JSON bytes)."""

    def __init__(self, world: World, tmc: TmcQueue, fragments: env.FragmentCache, lag_s: float,
                 page_drift: float, seed: int, *, refund_vanish_rate: float = 0.0) -> None:
        self.world, self.tmc, self.fragments = world, tmc, fragments
        self.seed, self.refund_vanish_rate = seed, refund_vanish_rate
        # Refunds the list describes without ``status`` (refund.get completes them), and refunds gone
        # by the time refund.get is asked (listed incompletely, then refused): Simulator.vanish_refund.
        self.partial_refunds: set[int] = set()
        self.vanished_refunds: set[int] = set()
        self.lag_s, self.page_drift = int(round(lag_s)), page_drift
        self.projections = env.Projections()
        self.lister = ListRenderer()
        self._drift_rng = random.Random(seed ^ 0xD41F7)
        self._drift_lock = threading.Lock()
        self._modified_cache: dict[tuple[Any, ...], tuple[int, int, list[tuple[int, int]]]] = {}
        self._drift_gen = 0
        self._created_cache: dict[tuple[Any, ...], list[int]] = {}
        self.drifted = 0
        self.table: dict[str, tuple[Callable[[Call], bytes], bool]] = {
            "taobao.trades.sold.get": (self.trades_sold_get, True),
            "taobao.trades.sold.increment.get": (self.trades_sold_increment_get, True),
            "taobao.trade.fullinfo.get": (self.trade_fullinfo_get, True),
            "taobao.refunds.receive.get": (self.refunds_receive_get, True),
            "taobao.refund.get": (self.refund_get, True),
            "taobao.logistics.trace.search": (self.logistics_trace_search, True),
            "taobao.items.onsale.get": (self.items_onsale_get, True),
            "taobao.item.skus.get": (self.item_skus_get, True),
            "taobao.tmc.messages.consume": (self.tmc_messages_consume, False),
            "taobao.tmc.messages.confirm": (self.tmc_messages_confirm, False),
            "taobao.time.get": (self.time_get, False),
        }

    # ---------------------------------------------------------------- trades
    def _fragment(self, call: Call, idx: int, modified: int, t: int, proj: env.Projection,
                  list_api: bool) -> bytes:
        shop = call.shop
        assert shop is not None
        key = (shop.shop_no, idx, modified, proj.key, call.simplify, list_api)
        frag = self.fragments.get(key)
        if frag is None:
            self.fragments.misses += 1
            if list_api and self.lister.supports(proj):
                frag = self.lister.fragment(self.world.ref(shop, idx, keep=False), t, proj, call.simplify, modified)
            else:
                ref = self.world.ref(shop, idx)
                # orjson hands back a 16 KB allocation whatever the length: copy to the exact size
                # before caching, or each ~1.7 KB fragment pins 16 KB (2 GB RSS for a 100k sweep).
                frag = bytes(memoryview(orjson.dumps(env.project_trade(render_trade(ref, t), proj, call.simplify))))
            self.fragments.put(key, frag)
        else:
            self.fragments.hits += 1
        return frag

    def _list_fragments(self, call: Call, page: list[tuple[int, int]], t: int, proj: env.Projection) -> list[bytes]:
        """``_fragment`` for a whole page on the compiled path: same cache keys, one loop (a cold
        page renders 100 trades, and per-trade dispatch was a few percent of it)."""
        shop = call.shop
        assert shop is not None
        cache, ref, fragment = self.fragments, self.world.ref, self.lister.fragment
        shop_no, simplify, pkey = shop.shop_no, call.simplify, proj.key
        out = []
        for modified, idx in page:
            key = (shop_no, idx, modified, pkey, simplify, True)
            frag = cache.get(key)
            if frag is None:
                cache.misses += 1
                frag = fragment(ref(shop, idx, keep=False), t, proj, simplify, modified)
                cache.put(key, frag)
            else:
                cache.hits += 1
            out.append(frag)
        return out

    def _page_args(self, call: Call) -> tuple[int, int, bool, frozenset[int], str | None]:
        page_no = call.int_arg("page_no", 1, 1, 10**9)
        page_size = call.int_arg("page_size", 40, 1, 100)
        status = call.params.get("status") or None
        if status is not None and status not in KNOWN_STATUSES:
            raise invalid("status")
        return page_no, page_size, call.bool_arg("use_has_next"), type_codes(call.params.get("type")), status

    def _status_ok(self, shop: ShopWorld, idx: int, t: int, status: str) -> bool:
        return shop.status_at(idx, t) in STATUS_GROUPS.get(status, {status})

    def _maybe_drift(self, shop: ShopWorld, candidates: list[int]) -> None:
        """Page drift: some trades in the queried window change right now, before this page is cut."""
        if self.page_drift <= 0 or not candidates:
            return
        with self._drift_lock:
            if self._drift_rng.random() >= self.page_drift:
                return
            picks = self._drift_rng.sample(candidates, min(len(candidates), self._drift_rng.randint(1, 3)))
        changed = self.world.drift(shop, picks, self.world.clock.now_ts())
        if changed:
            self._drift_gen += 1
            self.drifted += len(changed)

    def _list_response(self, call: Call, total: int, page: list[tuple[int, int]], t: int, page_no: int,
                       page_size: int, use_has_next: bool) -> bytes:
        """``page`` holds (modified, idx) of this page's trades; ``total`` counts the whole result."""
        proj = self.projections.get(call.required("fields"), list_api=True)
        if self.lister.supports(proj):
            frags = self._list_fragments(call, page, t, proj)
        else:
            frags = [self._fragment(call, idx, m, t, proj, True) for m, idx in page]
        has_next = page_no * page_size < total
        return env.list_page(call.method, "trades", frags, call.rid, call.simplify,
                             None if use_has_next else total, has_next)

    def trades_sold_get(self, call: Call) -> bytes:
        call.required("fields")
        shop = call.shop
        assert shop is not None
        page_no, page_size, use_has_next, types, status = self._page_args(call)
        t = call.now
        start = call.date_arg("start_created")
        end = call.date_arg("end_created")
        start = max(start if start is not None else 0, t - HORIZON)
        end = end if end is not None else t
        if end < start:
            raise invalid("end_created")
        idxs = self._created_idxs(shop, start, min(end, t), t, types)
        self._maybe_drift(shop, idxs)
        if status:
            idxs = [i for i in idxs if self._status_ok(shop, i, t, status)]
        lo = (page_no - 1) * page_size
        page = [(shop.latest(i, t), i) for i in idxs[lo:lo + page_size]]
        return self._list_response(call, len(idxs), page, t, page_no, page_size, use_has_next)

    def _created_idxs(self, shop: ShopWorld, start: int, end: int, t: int, types: frozenset[int]) -> list[int]:
        """Cached: ``created`` never changes, so [start, end] with end <= t has a fixed answer."""
        key = ("created", shop.shop_no, start, end, types)
        hit = self._created_cache.get(key)
        if hit is None:
            hit = self.world.created_range(shop, start, end, t, types)
            if len(self._created_cache) > 256:
                self._created_cache.clear()
            self._created_cache[key] = hit
        return hit

    def _modified_hits(self, shop: ShopWorld, start: int, end: int, t: int,
                       types: frozenset[int]) -> list[tuple[int, int]]:
        """Cached window query; a window that closed before the cached instant only loses trades."""
        key = (shop.shop_no, start, end, types)
        entry = self._modified_cache.get(key)
        if entry is not None:
            t0, gen, hits = entry
            if t0 == t and gen == self._drift_gen:
                return hits
            if end < t0 <= t:
                # Any event at or after t0 moves that trade's modified past the window's end.
                gone = set(shop.event_idxs(t0, t))
                hits = [h for h in hits if h[1] not in gone] if gone else hits
                self._store(key, (t, self._drift_gen, hits))
                return hits
        hits = self.world.modified_range(shop, start, end, t, types)
        self._store(key, (t, self._drift_gen, hits))
        return hits

    def _store(self, key: tuple[Any, ...], value: tuple[int, int, list[tuple[int, int]]]) -> None:
        if len(self._modified_cache) > 256:
            self._modified_cache.clear()
        self._modified_cache[key] = value

    def trades_sold_increment_get(self, call: Call) -> bytes:
        call.required("fields")
        start_raw, end_raw = call.required("start_modified"), call.required("end_modified")
        del start_raw, end_raw
        shop = call.shop
        assert shop is not None
        page_no, page_size, use_has_next, types, status = self._page_args(call)
        start, end = call.date_arg("start_modified"), call.date_arg("end_modified")
        assert start is not None and end is not None
        if end <= start or end - start > p.DAY:
            raise invalid("end_modified")
        if start < call.now - HORIZON:
            raise invalid("start_modified")
        # Visibility lag: the increment index trails the world by lag_s seconds.
        t = call.now - self.lag_s
        self.world.ensure_horizon(call.now)
        hits = self._modified_hits(shop, start, end, t, types)
        if self.page_drift > 0:
            self._maybe_drift(shop, [idx for _, idx in hits])
            hits = self._modified_hits(shop, start, end, t, types)
        if self.world.increment_hides_anything(shop):
            hidden = self.world.hidden_from_increment
            hits = [h for h in hits if not hidden(shop, h[1], h[0])]
        if status:
            hits = [h for h in hits if self._status_ok(shop, h[1], t, status)]
        lo = (page_no - 1) * page_size
        return self._list_response(call, len(hits), hits[lo:lo + page_size], t, page_no, page_size,
                                   use_has_next)

    def trade_fullinfo_get(self, call: Call) -> bytes:
        fields = call.required("fields")
        tid_raw = call.required("tid")
        try:
            tid = int(tid_raw)
        except ValueError:
            raise invalid("tid") from None
        loc = self.world.locate(tid, call.now)
        if loc is None or loc[0] is not call.shop:
            raise TopError(15, "Remote service error", "isv.trade-not-exist", "交易订单不存在")
        shop, idx = loc
        proj = self.projections.get(fields, list_api=False)
        frag = self._fragment(call, idx, shop.latest(idx, call.now), call.now, proj, False)
        inner = b'{"trade":%s,"request_id":"%s"}' % (frag, call.rid.encode())
        return inner if call.simplify else b'{"trade_fullinfo_get_response":%s}' % inner

    # ---------------------------------------------------------------- refunds, logistics, items
    def refunds_receive_get(self, call: Call) -> bytes:
        """Refunds by modified time, newest first, as the increment API lists trades: the ``type`` filter
        (default ``guarantee_trade,auto_delivery``, top-api.md 3.6), the same visibility lag, and only
        the list APIs' three-month horizon. No span limit: none is documented for this API."""
        names = [f.strip() for f in call.required("fields").split(",") if f.strip()]
        shop = call.shop
        assert shop is not None
        page_no = call.int_arg("page_no", 1, 1, 10**9)
        page_size = call.int_arg("page_size", 40, 1, 100)
        status = call.params.get("status") or None
        if status and status not in REFUND_STATUSES:
            raise invalid("status")
        types = type_codes(call.params.get("type") or REFUND_DEFAULT_TYPES)
        start, end = call.date_arg("start_modified"), call.date_arg("end_modified")
        if start is not None and end is not None and end < start:
            raise invalid("end_modified")
        # Visibility lag: like the trades' increment index, the refunds list trails the world.
        t = call.now - self.lag_s
        self.world.ensure_horizon(call.now)
        start = max(start if start is not None else 0, call.now - HORIZON)
        stop = min(end if end is not None else t, t)
        refunding = (p.REFUND_ONSALE, p.REFUND_AFTERSALE)
        lo_text, hi_text = fmt_time(start), fmt_time(stop)
        refunds = []
        for idx in dict.fromkeys(shop.event_idxs(start, stop)):
            if shop.outcomes[idx] not in refunding or shop.types[idx] not in types:
                continue
            r = render_refund(self.world.ref(shop, idx), t)
            if r is None or (status and r["status"] != status):
                continue
            if not lo_text <= r["modified"] <= hi_text:
                continue
            refunds.append(r)
        refunds.sort(key=lambda r: (r["modified"], r["refund_id"]), reverse=True)
        lo = (page_no - 1) * page_size
        page = [{k: r[k] for k in names if k in r and not (k == "status" and self._listed_partially(r))}
                for r in refunds[lo:lo + page_size]]
        body: dict[str, Any] = {"has_next": lo + page_size < len(refunds)}
        if not call.bool_arg("use_has_next"):
            body["total_results"] = len(refunds)
        if page:
            body["refunds"] = page
        return env.success(call.method, body, call.rid, call.simplify)

    def refund_get(self, call: Call) -> bytes:
        names = [f.strip() for f in call.required("fields").split(",") if f.strip()]
        try:
            refund_id = int(call.required("refund_id"))
        except ValueError:
            raise invalid("refund_id") from None
        r = self.world.refund(refund_id, call.now)
        loc = p.locate_refund(refund_id)
        if (r is None or loc is None or call.shop is None or loc[0] != call.shop.shop_no
                or self._vanished(refund_id)):
            raise TopError(15, "Remote service error", "isv.refund-not-exist", "退款不存在")
        return env.success(call.method, {"refund": {k: r[k] for k in names if k in r}}, call.rid, call.simplify)

    def _vanished(self, refund_id: int) -> bool:
        """Deleted between the list and the detail call: chosen, or seeded at ``refund_vanish_rate``."""
        if refund_id in self.vanished_refunds:
            return True
        return (self.refund_vanish_rate > 0
                and p.mix(self.seed, refund_id, 0x7A415) % 1_000_000 < self.refund_vanish_rate * 1_000_000)

    def _listed_partially(self, refund: dict[str, Any]) -> bool:
        refund_id = int(refund["refund_id"])
        return refund_id in self.partial_refunds or self._vanished(refund_id)

    def logistics_trace_search(self, call: Call) -> bytes:
        try:
            tid = int(call.required("tid"))
        except ValueError:
            raise invalid("tid") from None
        loc = self.world.locate(tid, call.now)
        if loc is None or loc[0] is not call.shop:
            raise TopError(15, "Remote service error", "isv.trade-not-exist", "交易订单不存在")
        trace = self.world.trace(tid, call.now)
        if trace is None:  # not shipped yet: TOP answers with the trade and no steps
            trace = {"tid": tid, "status": "等待发货"}
        return env.success(call.method, trace, call.rid, call.simplify)

    def items_onsale_get(self, call: Call) -> bytes:
        # Only Item's list fields: SKU detail is not served here (TOP: use taobao.item.skus.get).
        names = [f.strip() for f in call.required("fields").split(",") if f.strip() in ONSALE_FIELDS]
        shop = call.shop
        assert shop is not None
        page_no = call.int_arg("page_no", 1, 1, 10**9)
        page_size = call.int_arg("page_size", 40, 1, 200)
        items = self.world.inventory(shop.shop.shop_id, call.now)
        lo = (page_no - 1) * page_size
        page = [{k: it[k] for k in names if k in it} for it in items[lo:lo + page_size]]
        body: dict[str, Any] = {"total_results": len(items)}
        if page:
            body["items"] = page
        return env.success(call.method, body, call.rid, call.simplify)

    def item_skus_get(self, call: Call) -> bytes:
        """The SKUs of up to 40 of the shop's items (``num_iids``), each with its ``num_iid``."""
        names = [f.strip() for f in call.required("fields").split(",") if f.strip()]
        try:
            wanted = [int(x) for x in call.required("num_iids").split(",") if x.strip()]
        except ValueError:
            raise invalid("num_iids") from None
        if not 1 <= len(wanted) <= MAX_SKU_ITEMS:
            raise invalid("num_iids")
        shop = call.shop
        assert shop is not None
        items = {it["num_iid"]: it for it in self.world.inventory(shop.shop.shop_id, call.now)}
        skus = [{k: sku[k] for k in names if k in sku} for n in wanted if n in items
                for sku in ({**s, "num_iid": n} for s in items[n]["skus"])]
        body: dict[str, Any] = {"skus": skus} if skus else {}
        return env.success(call.method, body, call.rid, call.simplify)

    # ---------------------------------------------------------------- tmc, time
    def tmc_messages_consume(self, call: Call) -> bytes:
        quantity = call.int_arg("quantity", 100, 10, 200)
        messages = self.tmc.consume(quantity)
        body: dict[str, Any] = {"messages": messages} if messages else {}
        return env.success(call.method, body, call.rid, call.simplify)

    def tmc_messages_confirm(self, call: Call) -> bytes:
        raw = call.required("s_message_ids")
        try:
            ids = [int(x) for x in raw.split(",") if x.strip()]
        except ValueError:
            raise invalid("s_message_ids") from None
        if len(ids) > 200:
            raise invalid("s_message_ids")
        self.tmc.confirm(ids)
        return env.success(call.method, {"is_success": True}, call.rid, call.simplify)

    def time_get(self, call: Call) -> bytes:
        return env.success(call.method, {"time": fmt_time(call.now)}, call.rid, call.simplify)
