"""The ground truth: per shop, columns of trade timelines plus indexes by created and by event time.

Memory per trade is a few dozen bytes (``array`` columns); details and rendered dicts are derived on
demand. Days are generated lazily: history at start, then one more GMT+8 day whenever the clock gets
within a day of the generated horizon.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import Any

from ordersync_pipeline.simulator import plan as p
from ordersync_pipeline.simulator.clock import Clock
from ordersync_pipeline.simulator.render import (TradeRef, render_refund, render_trace, render_trade,
                                                  trade_status)
from ordersync_pipeline.simulator.settings import SimShop, SimulatorSettings

NO_EXTRAS: list[int] = []  # shared by every trade without drift events; refs only read it
IDX_BITS = 24  # event keys pack (ts << 24 | idx): at most 16.7M trades per shop
IDX_MASK = (1 << IDX_BITS) - 1
TYPE_CODES = {name: code for code, name in enumerate(p.TYPE_NAMES)}
DEFAULT_TYPE_CODES = frozenset({p.FIXED, p.AUCTION, p.STEP})
STATUS_GROUPS = {"ALL_WAIT_PAY": {"WAIT_BUYER_PAY", "TRADE_NO_CREATE_PAY"},
                 "ALL_CLOSED": {"TRADE_CLOSED", "TRADE_CLOSED_BY_TAOBAO"}}


def type_codes(type_param: str | None) -> frozenset[int]:
    """TOP's ``type`` filter as type codes; ``guarantee_trade`` is the fixed+auction composite."""
    if not type_param:
        return DEFAULT_TYPE_CODES
    codes: set[int] = set()
    for name in (x.strip() for x in type_param.split(",")):
        if name == "guarantee_trade":
            codes |= {p.FIXED, p.AUCTION}
        elif name in TYPE_CODES:
            codes.add(TYPE_CODES[name])
    return frozenset(codes)


class ShopWorld:
    """One shop's trades. ``idx`` is the trade's position in created order (stable forever)."""

    def __init__(self, seed: int, shop_no: int, shop: SimShop) -> None:
        self.seed, self.shop_no, self.shop = seed, shop_no, shop
        self.catalogue = p.make_catalogue(seed, shop_no)
        self.created = array("q")
        self.types = array("b")
        self.outcomes = array("b")
        self.nlines = array("b")
        self.offsets = [array("i") for _ in range(p.MAX_EVENTS - 1)]  # event k>0 minus created
        self.chunks: list[tuple[int, int, array[int]]] = []  # (min_ts, max_ts, sorted event keys)
        self.extras: dict[int, list[int]] = {}          # drift events per idx
        self.extra_keys: list[int] = []                 # sorted drift event keys
        # Changes the increment API does not list: idx -> [(lo, hi)] modified ranges (inclusive).
        self.hidden: dict[int, list[tuple[int, int]]] = {}
        self.valid_session = True

    def add_day(self, plan: p.DayPlan) -> None:
        base = len(self.created)
        if base + len(plan.created) > IDX_MASK:
            raise ValueError("too many trades for one simulated shop (max 16.7M)")
        keys: list[int] = []
        for j, events in enumerate(plan.events):
            idx = base + j
            c = events[0]
            self.created.append(c)
            for k in range(p.MAX_EVENTS - 1):
                self.offsets[k].append(events[k + 1] - c if k + 1 < len(events) else 0)
            keys.extend((ts << IDX_BITS) | idx for ts in events)
        self.types.extend(plan.types)
        self.outcomes.extend(plan.outcomes)
        self.nlines.extend(plan.nlines)
        if keys:
            keys.sort()
            self.chunks.append((keys[0] >> IDX_BITS, keys[-1] >> IDX_BITS, array("q", keys)))

    def events(self, idx: int) -> tuple[int, ...]:
        c = self.created[idx]
        out = [c]
        for col in self.offsets:
            off = col[idx]
            if not off:
                break
            out.append(c + off)
        return tuple(out)

    def latest(self, idx: int, t: int) -> int:
        """The trade's ``modified`` at t (0 when it does not exist yet)."""
        c = self.created[idx]
        if c > t:
            return 0
        latest = c
        for col in self.offsets:
            off = col[idx]
            if not off or c + off > t:
                break
            latest = c + off
        extra = self.extras.get(idx)
        if extra:
            for ts in extra:
                if latest < ts <= t:
                    latest = ts
        return latest

    def event_idxs(self, lo: int, hi: int) -> Iterable[int]:
        """Indexes of trades with any event (timeline or drift) in [lo, hi]."""
        klo, khi = lo << IDX_BITS, (hi << IDX_BITS) | IDX_MASK
        for min_ts, max_ts, keys in self.chunks:
            if max_ts >= lo and min_ts <= hi:
                for key in keys[bisect_left(keys, klo):bisect_right(keys, khi)]:
                    yield key & IDX_MASK
        for key in self.extra_keys[bisect_left(self.extra_keys, klo):bisect_right(self.extra_keys, khi)]:
            yield key & IDX_MASK

    def add_extra(self, idx: int, ts: int) -> bool:
        lst = self.extras.setdefault(idx, [])
        if lst and lst[-1] >= ts:
            return False
        lst.append(ts)
        key = (ts << IDX_BITS) | idx
        self.extra_keys.insert(bisect_right(self.extra_keys, key), key)
        return True

    def status_at(self, idx: int, t: int) -> str:
        kinds = p.kinds_of(self.outcomes[idx], self.nlines[idx])
        seen = {k: ts for k, ts in zip(kinds, self.events(idx)) if ts <= t}
        return trade_status(self.outcomes[idx], self.nlines[idx], seen)


class World:
    """Ground truth for every shop, shared by the gateway, the admin API and tests."""

    def __init__(self, settings: SimulatorSettings, clock: Clock, shops: list[SimShop]) -> None:
        self.settings, self.clock = settings, clock
        self.seed = settings.seed
        self.lock = threading.RLock()
        self.shops = [ShopWorld(settings.seed, n, s) for n, s in enumerate(shops)]
        self.by_id = {s.shop.shop_id: s for s in self.shops}
        self.by_session = {s.shop.session: s for s in self.shops}
        start_day = p.day_start_gmt8(clock.now_ts())
        self.first_day = start_day - settings.history_days * p.DAY
        self.promo_day = start_day - 2 * p.DAY
        self.generated_until = self.first_day
        self._details: dict[tuple[int, int], p.Detail] = {}
        self.ensure_horizon(clock.now_ts())

    # ---------------------------------------------------------------- generation
    def ensure_horizon(self, now: int) -> None:
        """Generate whole days until the horizon is at least one day ahead of ``now``."""
        if now + p.DAY < self.generated_until:
            return
        with self.lock:
            while now + p.DAY >= self.generated_until:
                day = self.generated_until
                for shop in self.shops:
                    n = p.day_count(self.seed, shop.shop_no, day, self.promo_day, self.settings.orders_per_day)
                    shop.add_day(p.plan_day(self.seed, shop.shop_no, day, n))
                self.generated_until = day + p.DAY

    # ---------------------------------------------------------------- references
    def ref(self, shop: ShopWorld, idx: int, keep: bool = True) -> TradeRef:
        """``keep=False`` for one-off renders (a list page's cold fragment, cached as bytes anyway):
        the detail memo would only evict details that fullinfo or ground-truth reads may reuse."""
        key = (shop.shop_no, idx)
        trade_hash = p.mix(self.seed, shop.shop_no, idx)
        detail = self._details.get(key)
        if detail is None:
            detail = p.make_detail(self.seed, shop.shop_no, idx, shop.nlines[idx], shop.catalogue, trade_hash)
            if keep:
                if len(self._details) > 200_000:
                    self._details.clear()
                self._details[key] = detail
        return TradeRef(shop.shop_no, shop.shop.seller_nick, idx, p.tid_from_hash(shop.shop_no, idx, trade_hash),
                        shop.types[idx], shop.outcomes[idx], shop.nlines[idx], shop.events(idx),
                        shop.extras.get(idx, NO_EXTRAS), detail)

    def locate(self, tid: int, t: int) -> tuple[ShopWorld, int] | None:
        loc = p.locate_tid(tid, self.seed)
        if loc is None or loc[0] >= len(self.shops):
            return None
        shop = self.shops[loc[0]]
        if loc[1] >= len(shop.created) or shop.created[loc[1]] > t:
            return None
        return shop, loc[1]

    # ---------------------------------------------------------------- queries
    def created_range(self, shop: ShopWorld, start: int, end: int, t: int,
                      types: frozenset[int]) -> list[int]:
        """Trade indexes created in [start, end] and by t, newest first (created desc, tid desc)."""
        lo = bisect_left(shop.created, start)
        hi = bisect_right(shop.created, min(end, t))
        tarr = shop.types
        if types == DEFAULT_TYPE_CODES or len(types) < len(TYPE_CODES):
            return [i for i in range(hi - 1, lo - 1, -1) if tarr[i] in types]
        return list(range(hi - 1, lo - 1, -1))

    def modified_range(self, shop: ShopWorld, start: int, end: int, t: int,
                       types: frozenset[int]) -> list[tuple[int, int]]:
        """(modified, idx) of trades whose modified at t lies in [start, end], modified desc."""
        hits: dict[int, int] = {}
        latest, tarr = shop.latest, shop.types
        for idx in shop.event_idxs(start, min(end, t)):
            if idx not in hits and tarr[idx] in types:
                hits[idx] = latest(idx, t)
        out = [(m, i) for i, m in hits.items() if start <= m <= end]
        out.sort(reverse=True)
        return out

    # ---------------------------------------------------------------- changes the increment API misses
    def hide_from_increment(self, tid: int, start: int | None = None, end: int | None = None) -> None:
        """The increment API stops listing the trade while its ``modified`` lies in ``[start, end]``
        (epoch seconds, inclusive, unbounded when None): a change the platform's increment index
        dropped. sold.get, fullinfo and the ground truth still see every version."""
        loc = p.locate_tid(tid, self.seed)
        if loc is None or loc[0] >= len(self.shops):
            raise KeyError(f"no trade {tid} in this world")
        shop, idx = self.shops[loc[0]], loc[1]
        with self.lock:
            shop.hidden.setdefault(idx, []).append((start if start is not None else 0,
                                                    end if end is not None else 2**62))

    def hidden_from_increment(self, shop: ShopWorld, idx: int, modified: int) -> bool:
        """Is the trade's version stamped ``modified`` missing from the increment API?"""
        rate = self.settings.increment_miss_rate
        if rate > 0 and p.mix(self.seed, shop.shop_no, idx, 0x4D155) % 1_000_000 < rate * 1_000_000:
            return True
        spans = shop.hidden.get(idx)
        return spans is not None and any(lo <= modified <= hi for lo, hi in spans)

    def increment_hides_anything(self, shop: ShopWorld) -> bool:
        return bool(shop.hidden) or self.settings.increment_miss_rate > 0

    def drift(self, shop: ShopWorld, idxs: Iterable[int], now: int) -> list[int]:
        with self.lock:
            return [i for i in idxs if shop.add_extra(i, now)]

    # ---------------------------------------------------------------- ground truth for people and tests
    def shop(self, shop_id: str) -> ShopWorld:
        try:
            return self.by_id[shop_id]
        except KeyError:
            raise KeyError(f"unknown shop_id {shop_id!r}; known: {sorted(self.by_id)}") from None

    def trades(self, shop_id: str, at: int | None = None) -> list[dict[str, Any]]:
        """Every trade of the shop that exists at ``at`` (default now), in full, created ascending."""
        shop = self.shop(shop_id)
        t = self.clock.now_ts() if at is None else at
        self.ensure_horizon(t)
        hi = bisect_right(shop.created, t)
        return [render_trade(self.ref(shop, i), t) for i in range(hi)]

    def trade(self, tid: int, at: int | None = None) -> dict[str, Any] | None:
        t = self.clock.now_ts() if at is None else at
        loc = self.locate(tid, t)
        return None if loc is None else render_trade(self.ref(*loc), t)

    def trade_count(self, shop_id: str, at: int | None = None) -> int:
        t = self.clock.now_ts() if at is None else at
        return bisect_right(self.shop(shop_id).created, t)

    def refunds(self, shop_id: str, at: int | None = None) -> list[dict[str, Any]]:
        """Every refund of the shop at ``at`` (default now)."""
        shop = self.shop(shop_id)
        t = self.clock.now_ts() if at is None else at
        hi = bisect_right(shop.created, t)
        refunding = (p.REFUND_ONSALE, p.REFUND_AFTERSALE)
        out = []
        for i in range(hi):
            if shop.outcomes[i] in refunding:
                r = render_refund(self.ref(shop, i), t)
                if r is not None:
                    out.append(r)
        return out

    def refund(self, refund_id: int, at: int | None = None) -> dict[str, Any] | None:
        t = self.clock.now_ts() if at is None else at
        loc = p.locate_refund(refund_id)
        if loc is None or loc[0] >= len(self.shops):
            return None
        shop = self.shops[loc[0]]
        if loc[1] >= len(shop.created) or shop.created[loc[1]] > t:
            return None
        ref = self.ref(shop, loc[1])
        r = render_refund(ref, t)
        return r if r is not None and int(r["refund_id"]) == refund_id else None

    def trace(self, tid: int, at: int | None = None) -> dict[str, Any] | None:
        t = self.clock.now_ts() if at is None else at
        loc = self.locate(tid, t)
        return None if loc is None else render_trace(self.ref(*loc), t)

    def inventory(self, shop_id: str, at: int | None = None) -> list[dict[str, Any]]:
        """On-sale items with SKU quantities. Stock follows a weekly restock sawtooth (deterministic)."""
        shop = self.shop(shop_id)
        t = self.clock.now_ts() if at is None else at
        items: dict[int, dict[str, Any]] = {}
        for sku in shop.catalogue.skus:
            phase = (t + sku.num_iid) % (7 * p.DAY)
            qty = max(0, sku.base_stock - int(sku.base_stock * 1.1 * phase / (7 * p.DAY)))
            item = items.setdefault(sku.num_iid, {
                "num_iid": sku.num_iid, "title": sku.title, "outer_id": sku.outer_iid, "cid": sku.cid,
                "price": f"{sku.price_cents / 100:.2f}", "approve_status": "onsale", "num": 0,
                "nick": shop.shop.seller_nick, "skus": []})
            item["num"] += qty
            item["skus"].append({"sku_id": int(sku.sku_id), "outer_id": sku.outer_sku_id,
                                 "properties_name": sku.properties, "quantity": qty,
                                 "price": f"{sku.price_cents / 100:.2f}"})
        return list(items.values())
