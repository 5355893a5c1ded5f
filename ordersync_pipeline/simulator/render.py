"""A trade's state at time t, as TOP's fullinfo would return it (orders as a plain list).

State is a pure function of (timeline, drift events, t): the trade's ``modified`` is its latest
event at or before t, so the same (trade, modified) always renders to the same bytes and can be
cached by version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ordersync_pipeline.simulator import plan as p
from ordersync_pipeline.timeutil import GMT8

_day_prefix: dict[int, str] = {}   # GMT+8 day number -> "yyyy-MM-dd "; a few hundred entries at most
_CLOCK = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
_SECONDS = tuple(f"{s:02d}" for s in range(60))


def fmt_time(ts: int) -> str:
    """GMT+8 ``yyyy-MM-dd HH:mm:ss``. GMT+8 has no DST, so the date comes from a per-day memo and the
    clock from two small tables: about ten times cheaper than strftime, and every trade formats
    up to five distinct seconds on a cold read."""
    day, sec = divmod(ts + p.GMT8_OFFSET, p.DAY)
    prefix = _day_prefix.get(day)
    if prefix is None:
        if len(_day_prefix) > 100_000:  # only reachable with absurd timestamps; keep it bounded anyway
            _day_prefix.clear()
        prefix = datetime.fromtimestamp(day * p.DAY - p.GMT8_OFFSET, GMT8).strftime("%Y-%m-%d ")
        _day_prefix[day] = prefix
    minute, s = divmod(sec, 60)
    return prefix + _CLOCK[minute] + _SECONDS[s]


_money_memo: dict[int, str] = {}


def money(cents: int) -> str:
    """``12.30`` from 1230. Memoised: amounts are sums of a few catalogue prices, so a world has a
    few thousand distinct ones, and the list path formats five or six per trade."""
    s = _money_memo.get(cents)
    if s is None:
        if len(_money_memo) > 100_000:
            _money_memo.clear()
        s = _money_memo[cents] = f"{cents // 100}.{cents % 100:02d}"
    return s


class TradeRef:
    """Everything needed to render one trade (timeline columns + lazily built detail)."""

    __slots__ = ("shop_no", "seller_nick", "idx", "tid", "ttype", "outcome", "nlines", "events", "extras",
                 "detail")

    def __init__(self, shop_no: int, seller_nick: str, idx: int, tid: int, ttype: int, outcome: int,
                 nlines: int, events: tuple[int, ...], extras: list[int], detail: p.Detail) -> None:
        self.shop_no, self.seller_nick, self.idx, self.tid = shop_no, seller_nick, idx, tid
        self.ttype, self.outcome, self.nlines = ttype, outcome, nlines
        self.events, self.extras, self.detail = events, extras, detail


def seen_events(ref: TradeRef, t: int) -> dict[int, int]:
    """kind -> timestamp for the timeline events that have happened by t."""
    kinds = p.kinds_of(ref.outcome, ref.nlines)
    return {k: ts for k, ts in zip(kinds, ref.events) if ts <= t}


def latest_event(ref: TradeRef, t: int) -> int:
    latest = max((ts for ts in ref.events if ts <= t), default=0)
    for ts in ref.extras:
        if latest < ts <= t:
            latest = ts
    return latest


def trade_status(outcome: int, nlines: int, seen: dict[int, int]) -> str:
    if p.FORFEIT in seen or p.CLOSED_UNPAID in seen:
        return "TRADE_CLOSED_BY_TAOBAO"
    if outcome == p.REFUND_ONSALE and nlines == 1 and p.REFUND_OK in seen:
        return "TRADE_CLOSED"
    if p.FINISHED in seen:
        return "TRADE_FINISHED"
    if p.SHIPPED in seen:
        return "WAIT_BUYER_CONFIRM_GOODS"
    if p.PAID in seen or p.FINAL in seen:
        return "WAIT_SELLER_SEND_GOODS"
    return "WAIT_BUYER_PAY"


def _step_status(seen: dict[int, int]) -> str:
    if p.FORFEIT in seen:
        return "FRONT_PAID_FRONT_FORFEITED"
    if p.FINAL in seen:
        return "FRONT_PAID_FINAL_PAID"
    if p.DEPOSIT in seen:
        return "FRONT_PAID_FINAL_NOPAID"
    return "FRONT_NOPAID_FINAL_NOPAID"


def render_trade(ref: TradeRef, t: int) -> dict[str, Any]:
    """The full trade at time t (all fields this simulator knows; orders as a plain list)."""
    d = ref.detail
    seen = seen_events(ref, t)
    status = trade_status(ref.outcome, ref.nlines, seen)
    tid = ref.tid
    total = sum(line.total_cents for line in d.lines)
    discount = sum(line.discount_cents for line in d.lines)
    payment = total - discount + d.post_fee_cents
    paid_at = seen.get(p.PAID) or seen.get(p.FINAL)
    shipped_at = seen.get(p.SHIPPED)
    ended_at = seen.get(p.FINISHED) or seen.get(p.CLOSED_UNPAID) or seen.get(p.FORFEIT)
    if status == "TRADE_CLOSED":
        ended_at = seen[p.REFUND_OK]
    region = d.region
    trade: dict[str, Any] = {
        "tid": tid, "tid_str": str(tid), "status": status, "type": p.TYPE_NAMES[ref.ttype],
        "seller_nick": ref.seller_nick, "buyer_nick": d.buyer_nick, "buyer_open_uid": d.buyer_open_uid,
        "title": ref.seller_nick, "created": fmt_time(ref.events[0]),
        "modified": fmt_time(latest_event(ref, t)),
        "payment": money(payment), "total_fee": money(total), "post_fee": money(d.post_fee_cents),
        "discount_fee": money(discount), "adjust_fee": "0.00",
        "received_payment": money(payment if status == "TRADE_FINISHED" else 0),
        "shipping_type": "express", "trade_from": d.trade_from,
        "num": sum(line.num for line in d.lines),
        "has_buyer_message": bool(d.buyer_message), "buyer_message": d.buyer_message,
        "seller_flag": 1 if any(x <= t for x in ref.extras) else 0,
        "receiver_name": d.receiver_name, "receiver_mobile": d.receiver_mobile, "receiver_phone": "",
        "receiver_state": region[0], "receiver_city": region[1], "receiver_district": region[2],
        "receiver_town": region[3], "receiver_address": d.address_masked, "receiver_zip": "000000",
        "receiver_country": "", "oaid": f"1{tid % 10**12:012d}OAID{ref.shop_no:02d}{p.mix(tid) % 10**10:010d}",
    }
    if paid_at:
        trade["pay_time"] = fmt_time(paid_at)
    if shipped_at:
        trade["consign_time"] = fmt_time(shipped_at)
    if ended_at:
        trade["end_time"] = fmt_time(ended_at)
    if ref.nlines == 1:
        line0 = d.lines[0]
        trade["num_iid"] = line0.sku.num_iid
        trade["price"] = money(line0.sku.price_cents)
    if ref.ttype == p.STEP:
        trade["step_trade_status"] = _step_status(seen)
        deposit = (payment // 5) // 100 * 100
        trade["step_paid_fee"] = money(payment if p.FINAL in seen else deposit if p.DEPOSIT in seen else 0)
    if any(x <= t for x in ref.extras):
        trade["seller_memo"] = "simulator: seller memo updated"
    trade["orders"] = [_order(ref, i, status, seen, paid_at, shipped_at, ended_at) for i in range(ref.nlines)]
    return trade


def _order(ref: TradeRef, i: int, status: str, seen: dict[int, int], paid_at: int | None,
           shipped_at: int | None, ended_at: int | None) -> dict[str, Any]:
    d = ref.detail
    line = d.lines[i]
    sku = line.sku
    oid = p.oid_of(ref.tid, i, ref.nlines)
    refund_line = ref.outcome in (p.REFUND_ONSALE, p.REFUND_AFTERSALE) and i == d.refund_line
    o_status, refund_status = status, "NO_REFUND"
    if refund_line and p.REFUND_REQ in seen:
        refund_status = "SUCCESS" if p.REFUND_OK in seen else "WAIT_SELLER_AGREE"
        if ref.outcome == p.REFUND_ONSALE and p.REFUND_OK in seen:
            o_status = "TRADE_CLOSED"
    order: dict[str, Any] = {
        "oid": oid, "oid_str": str(oid), "status": o_status, "refund_status": refund_status,
        "num_iid": sku.num_iid, "sku_id": sku.sku_id, "sku_properties_name": sku.properties,
        "outer_iid": sku.outer_iid, "outer_sku_id": sku.outer_sku_id, "title": sku.title, "cid": sku.cid,
        "num": line.num, "price": money(sku.price_cents), "total_fee": money(line.total_cents),
        "discount_fee": money(line.discount_cents), "adjust_fee": "0.00", "part_mjz_discount": "0.00",
        "divide_order_fee": money(line.payment_cents), "payment": money(line.payment_cents),
        "is_oversold": False, "seller_type": "B", "order_from": d.trade_from,
        "snapshot_url": f"s:{oid}_1", "buyer_rate": False, "seller_rate": False, "shipping_type": "express",
    }
    if refund_line and p.REFUND_REQ in seen:
        order["refund_id"] = str(p.refund_id_of(ref.shop_no, ref.idx, i))
    if shipped_at and o_status != "TRADE_CLOSED":
        order["consign_time"] = fmt_time(shipped_at)
        order["logistics_company"] = d.carrier
        order["invoice_no"] = d.out_sid
    if o_status == "TRADE_CLOSED":
        order["end_time"] = fmt_time(seen[p.REFUND_OK])
    elif ended_at:
        order["end_time"] = fmt_time(ended_at)
    return order


def render_refund(ref: TradeRef, t: int) -> dict[str, Any] | None:
    """The trade's refund at time t (one refundable line per refunding trade), or None."""
    if ref.outcome not in (p.REFUND_ONSALE, p.REFUND_AFTERSALE):
        return None
    seen = seen_events(ref, t)
    if p.REFUND_REQ not in seen:
        return None
    d = ref.detail
    i = d.refund_line
    line = d.lines[i]
    ok = seen.get(p.REFUND_OK)
    onsale = ref.outcome == p.REFUND_ONSALE
    order_status = "WAIT_SELLER_SEND_GOODS" if onsale else "TRADE_FINISHED"
    if onsale and ok:
        order_status = "TRADE_CLOSED"
    return {
        "refund_id": str(p.refund_id_of(ref.shop_no, ref.idx, i)), "tid": ref.tid,
        "oid": p.oid_of(ref.tid, i, ref.nlines),
        "status": "SUCCESS" if ok else "WAIT_SELLER_AGREE", "order_status": order_status,
        "good_status": "BUYER_NOT_RECEIVED" if onsale else "BUYER_RETURNED_GOODS",
        "has_good_return": not onsale, "total_fee": money(line.total_cents),
        "refund_fee": money(line.payment_cents), "payment": money(0 if ok else line.payment_cents),
        "created": fmt_time(seen[p.REFUND_REQ]), "modified": fmt_time(ok or seen[p.REFUND_REQ]),
        "reason": d.refund_reason, "desc": "", "title": line.sku.title, "num": line.num,
        "num_iid": line.sku.num_iid, "price": money(line.sku.price_cents),
        "sku": f"{line.sku.sku_id}|{line.sku.properties}", "outer_id": line.sku.outer_sku_id,
        "refund_phase": "onsale" if onsale else "aftersale",
        "refund_version": (ok or seen[p.REFUND_REQ]) * 1000,
        "dispute_type": "REFUND" if onsale else "REFUND_AND_RETURN",
        "buyer_nick": d.buyer_nick, "buyer_open_uid": d.buyer_open_uid, "seller_nick": ref.seller_nick,
        "company_name": d.carrier if not onsale else "", "sid": d.out_sid if not onsale else "",
    }


TRACE_STEPS = ((0, "已揽收", "GOT", "您的包裹已被{carrier}揽收"),
               (4 * p.HOUR, "运输中", "DEPARTURE", "快件已从揽收网点发出"),
               (12 * p.HOUR, "运输中", "ARRIVAL", "快件已到达{city}转运中心"),
               (30 * p.HOUR, "派送中", "SENT_SCAN", "快件正在派送中"),
               (36 * p.HOUR, "已签收", "SIGNED", "您的快件已签收"))


def render_trace(ref: TradeRef, t: int) -> dict[str, Any] | None:
    """Carrier trace for a shipped trade; STALLED trades stop after reaching the transit hub."""
    seen = seen_events(ref, t)
    shipped = seen.get(p.SHIPPED)
    if shipped is None:
        return None
    d = ref.detail
    steps = TRACE_STEPS[:3] if ref.outcome == p.STALLED else TRACE_STEPS
    trace = [{"status_time": fmt_time(shipped + off), "status_desc": desc.format(carrier=d.carrier,
                                                                                   city=d.region[1]),
              "action": action} for off, _, action, desc in steps if shipped + off <= t]
    status = next(label for off, label, _, _ in reversed(steps) if shipped + off <= t)
    return {"tid": ref.tid, "out_sid": d.out_sid, "company_name": d.carrier, "status": status,
            "trace_list": trace}
