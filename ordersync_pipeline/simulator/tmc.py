"""TMC (message channel) polling: one queue per app key, at-least-once with redelivery.

Messages are produced from world events that happen after the simulator started (a seller's changes
before the app was permitted never reach the queue). A consumed message that is not confirmed comes
back after ``redelivery_s`` world seconds.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

from ordersync_pipeline.simulator import plan as p
from ordersync_pipeline.simulator.render import fmt_time, render_refund, render_trade
from ordersync_pipeline.simulator.world import World

PUB_APP_KEY = "12497914"  # official messages come from Taobao's own app key
TOPICS = {
    p.CREATED: "taobao_trade_TradeCreate", p.PAID: "taobao_trade_TradeBuyerPay",
    p.DEPOSIT: "taobao_trade_TradeBuyerStepPay", p.FINAL: "taobao_trade_TradeBuyerPay",
    p.SHIPPED: "taobao_trade_TradeSellerShip", p.FINISHED: "taobao_trade_TradeSuccess",
    p.CLOSED_UNPAID: "taobao_trade_TradeClose", p.FORFEIT: "taobao_trade_TradeClose",
    p.REFUND_REQ: "taobao_refund_RefundCreated", p.REFUND_OK: "taobao_refund_RefundSuccess",
    p.DRIFT: "taobao_trade_TradeMemoModified",
}


class TmcQueue:
    def __init__(self, world: World, redelivery_s: float) -> None:
        self.world = world
        self.redelivery_s = redelivery_s
        self.scanned_until = world.clock.now_ts()
        self._pending: dict[int, dict[str, Any]] = {}
        self._delivered_at: dict[int, int] = {}
        self._lock = threading.Lock()

    def _scan(self, now: int) -> None:
        lo = self.scanned_until + 1
        if now < lo:
            return
        self.world.ensure_horizon(now)
        for shop in self.world.shops:
            for idx in dict.fromkeys(shop.event_idxs(lo, now)):
                ref = self.world.ref(shop, idx)
                kinds = p.kinds_of(ref.outcome, ref.nlines)
                happened = [(ts, k) for k, ts in zip(kinds, ref.events) if lo <= ts <= now]
                happened += [(ts, p.DRIFT) for ts in ref.extras if lo <= ts <= now]
                for ts, kind in sorted(happened):
                    msg = self._message(shop.shop.user_id, ref, ts, kind)
                    self._pending.setdefault(msg["id"], msg)
        self.scanned_until = now

    def _message(self, user_id: int, ref: Any, ts: int, kind: int) -> dict[str, Any]:
        trade = render_trade(ref, ts)
        content: dict[str, Any]
        if kind in (p.REFUND_REQ, p.REFUND_OK):
            refund = render_refund(ref, ts) or {}
            content = {"buyer_nick": trade["buyer_nick"], "buyer_open_uid": trade["buyer_open_uid"],
                       "refund_fee": refund.get("refund_fee"), "oid": refund.get("oid"), "tid": ref.tid,
                       "refund_id": int(refund.get("refund_id", 0)), "refund_phase": refund.get("refund_phase"),
                       "bill_type": "refund_bill", "seller_nick": ref.seller_nick, "modified": fmt_time(ts)}
        else:
            content = {"buyer_nick": trade["buyer_nick"], "buyer_open_uid": trade["buyer_open_uid"],
                       "payment": trade["payment"], "oid": ref.tid, "tid": ref.tid, "status": trade["status"],
                       "type": trade["type"], "seller_nick": ref.seller_nick}
        return {"id": 1_172_200_000_000_000_000 + p.mix(ref.shop_no, ref.idx, ts, kind) % 10**17,
                "topic": TOPICS[kind], "pub_app_key": PUB_APP_KEY, "pub_time": fmt_time(ts),
                "user_id": user_id, "user_nick": ref.seller_nick,
                "content": orjson.dumps(content).decode()}

    def consume(self, quantity: int) -> list[dict[str, Any]]:
        now = self.world.clock.now_ts()
        with self._lock:
            self._scan(now)
            out = []
            for mid, msg in self._pending.items():
                last = self._delivered_at.get(mid)
                if last is None or now - last >= self.redelivery_s:
                    self._delivered_at[mid] = now
                    out.append(msg)
                    if len(out) >= quantity:
                        break
            return out

    def confirm(self, ids: list[int]) -> None:
        with self._lock:
            for mid in ids:
                self._pending.pop(mid, None)
                self._delivered_at.pop(mid, None)

    def backlog(self) -> int:
        return len(self._pending)
