"""The list APIs' hot path: a trade's projected fragment written straight to JSON, no trade dict.

``orjson.dumps(project_trade(render_trade(ref, t), proj, simplify))`` is the reference (fullinfo and
the ground truth still use it). On a cold sweep every trade goes through the list path exactly once,
and building ~35 trade keys plus ~25 keys per order only to drop half of them in the projection was
most of the cost. Here each (projection, simplify) is compiled once into a small generated function
that computes the trade's time-dependent state into locals and formats exactly the projected keys
with one f-string; each order line's static part (sku, quantity, money) is serialized once per
catalogue line and shared by every trade that sells it.

The output must stay byte-identical to the reference: tests/test_simulator_golden.py pins it and
tests/test_simulator_listing.py compares both paths trade by trade for every field.

JSON strings: values drawn from the world's fixed pools (regions, carriers, titles, nicks of shops)
go through orjson once and are memoised (``js``); values built per trade from fixed ASCII alphabets
(buyer nicks, open uids, digits, status words) need no escaping and are quoted directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ordersync_pipeline.simulator import plan as p
from ordersync_pipeline.simulator.envelope import FULLINFO_ONLY_ORDER, Projection
from ordersync_pipeline.simulator.render import (TradeRef, _step_status, fmt_time, latest_event, money,
                                                  seen_events, trade_status)

_js_memo: dict[str, str] = {}


def js(value: str) -> str:
    """JSON text of a string from a bounded pool (memoised: the pools hold a few hundred strings)."""
    out = _js_memo.get(value)
    if out is None:
        if len(_js_memo) > 10_000:
            _js_memo.clear()
        out = orjson.dumps(value).decode()
        _js_memo[value] = out
    return out


def _step_paid(payment: int, seen: dict[int, int]) -> str:
    deposit = (payment // 5) // 100 * 100
    return money(payment if p.FINAL in seen else deposit if p.DEPOSIT in seen else 0)


def _oaid(ref: TradeRef) -> str:
    tid = ref.tid
    return f"1{tid % 10**12:012d}OAID{ref.shop_no:02d}{p.mix(tid) % 10**10:010d}"


# Every key render_trade produces: (JSON value as f-string text, presence condition or None).
# Both are Python source evaluated inside the generated renderer, over the locals of _PRELUDE.
# Value texts use double quotes only for JSON and never contain single quotes or braces of their own.
SNIPPETS: dict[str, tuple[str, str | None]] = {
    "tid": ("{ref.tid}", None),
    "tid_str": ('"{ref.tid}"', None),
    "status": ('"{status}"', None),
    "type": ('"{TYPE_NAMES[ref.ttype]}"', None),
    "seller_nick": ("{js(ref.seller_nick)}", None),
    "buyer_nick": ('"{d.buyer_nick}"', None),
    "buyer_open_uid": ('"{d.buyer_open_uid}"', None),
    "title": ("{js(ref.seller_nick)}", None),
    "created": ('"{fmt_time(ref.events[0])}"', None),
    "modified": ('"{fmt_time(modified)}"', None),
    "payment": ('"{money(payment)}"', None),
    "total_fee": ('"{money(total)}"', None),
    "post_fee": ('"{money(d.post_fee_cents)}"', None),
    "discount_fee": ('"{money(discount)}"', None),
    "adjust_fee": ('"0.00"', None),
    "received_payment": ('"{money(payment if status == FINISHED else 0)}"', None),
    "shipping_type": ('"express"', None),
    "trade_from": ("{js(d.trade_from)}", None),
    "num": ("{num}", None),
    "has_buyer_message": ("{TRUE if d.buyer_message else FALSE}", None),
    "buyer_message": ("{js(d.buyer_message)}", None),
    "seller_flag": ("{1 if touched else 0}", None),
    "receiver_name": ("{js(d.receiver_name)}", None),
    "receiver_mobile": ('"{d.receiver_mobile}"', None),
    "receiver_phone": ('""', None),
    "receiver_state": ("{js(d.region[0])}", None),
    "receiver_city": ("{js(d.region[1])}", None),
    "receiver_district": ("{js(d.region[2])}", None),
    "receiver_town": ("{js(d.region[3])}", None),
    "receiver_address": ("{js(d.address_masked)}", None),
    "receiver_zip": ('"000000"', None),
    "receiver_country": ('""', None),
    "oaid": ('"{_oaid(ref)}"', None),
    "pay_time": ('"{fmt_time(paid_at)}"', "paid_at"),
    "consign_time": ('"{fmt_time(shipped_at)}"', "shipped_at"),
    "end_time": ('"{fmt_time(ended_at)}"', "ended_at"),
    "num_iid": ("{d.lines[0].sku.num_iid}", "ref.nlines == 1"),
    "price": ('"{money(d.lines[0].sku.price_cents)}"', "ref.nlines == 1"),
    "step_trade_status": ('"{_step_status(seen)}"', "ref.ttype == STEP"),
    "step_paid_fee": ('"{_step_paid(payment, seen)}"', "ref.ttype == STEP"),
    "seller_memo": ('"simulator: seller memo updated"', "touched"),
}

# The state render_trade derives before building its dict, as locals of the generated function.
_PRELUDE = """\
def render(ref, t, chunks, modified):
    d = ref.detail
    seen = seen_events(ref, t)
    status = trade_status(ref.outcome, ref.nlines, seen)
    total = discount = num = 0
    for line in d.lines:
        total += line.sku.price_cents * line.num
        discount += line.discount_cents
        num += line.num
    payment = total - discount + d.post_fee_cents
    paid_at = seen.get(PAID) or seen.get(FINAL)
    shipped_at = seen.get(SHIPPED)
    ended_at = seen[REFUND_OK] if status == CLOSED else (seen.get(FINISHED_EV) or seen.get(CLOSED_UNPAID)
                                                         or seen.get(FORFEIT))
    touched = any(x <= t for x in ref.extras)
"""

_NAMESPACE: dict[str, Any] = {
    "seen_events": seen_events, "trade_status": trade_status, "fmt_time": fmt_time, "money": money,
    "latest_event": latest_event, "_step_status": _step_status, "_step_paid": _step_paid, "_oaid": _oaid,
    "js": js, "TYPE_NAMES": p.TYPE_NAMES, "STEP": p.STEP, "PAID": p.PAID, "FINAL": p.FINAL,
    "SHIPPED": p.SHIPPED, "REFUND_OK": p.REFUND_OK, "FINISHED_EV": p.FINISHED, "CLOSED_UNPAID": p.CLOSED_UNPAID,
    "FORFEIT": p.FORFEIT, "CLOSED": "TRADE_CLOSED", "FINISHED": "TRADE_FINISHED", "TRUE": "true",
    "FALSE": "false",
}

Renderer = Callable[[TradeRef, int, dict[int, str], int], bytes]


def compile_renderer(trade_fields: tuple[str, ...], orders: bool, simplify: bool) -> Renderer:
    """Generate ``render(ref, t, chunks, modified) -> bytes`` for these projected trade fields.

    Generated rather than looped over per-field callables: one f-string per trade instead of a
    call, a concat and an append per field (the loop version spent half its time on that). Only
    names from SNIPPETS reach the source, never text from a request.
    """
    src = [_PRELUDE]
    body: list[str] = []
    for i, name in enumerate(n for n in trade_fields if n in SNIPPETS):
        value, cond = SNIPPETS[name]
        piece = f',"{name}":{value}'
        if cond is None:
            body.append(piece)
        else:
            src.append(f"    c{i} = f'{piece}' if {cond} else ''\n")
            body.append(f"{{c{i}}}")
    if orders:
        opener, closer = ('[', ']') if simplify else ('{{"order":[', ']}}')
        body.append(f',"orders":{opener}{{orders_json(ref, d, seen, status, shipped_at, ended_at, chunks)}}{closer}')
    if body and body[0].startswith(","):
        body[0] = body[0][1:]  # an unconditional first key (usually tid): no comma to strip later
        src.append(f"    return f'{{{{{''.join(body)}}}}}'.encode()\n")
    else:  # every piece starts with a comma; drop the first one (and "{}" stays "{}")
        src.append(f"    body = f'{''.join(body)}'\n")
        src.append("    return ('{' + body[1:] + '}').encode()\n")
    namespace = dict(_NAMESPACE, orders_json=orders_json)
    exec(compile("".join(src), f"<list renderer {','.join(trade_fields)}>", "exec"), namespace)  # noqa: S102
    return namespace["render"]  # type: ignore[no-any-return]


def line_chunk(line: p.Line) -> str:
    """The static middle of a list-API order object for this line (no braces, no leading comma).

    Same keys and order as render._order minus what the order's state decides (oid, status,
    refund, shipping, end) and minus the fullinfo-only keys.
    """
    sku = line.sku
    static = {
        "num_iid": sku.num_iid, "sku_id": sku.sku_id, "sku_properties_name": sku.properties,
        "outer_iid": sku.outer_iid, "outer_sku_id": sku.outer_sku_id, "title": sku.title, "cid": sku.cid,
        "num": line.num, "price": money(sku.price_cents), "total_fee": money(line.total_cents),
        "discount_fee": money(line.discount_cents), "adjust_fee": "0.00", "part_mjz_discount": "0.00",
        "divide_order_fee": money(line.payment_cents), "payment": money(line.payment_cents),
        "is_oversold": False, "seller_type": "B", "order_from": "", "snapshot_url": "",
        "buyer_rate": False, "seller_rate": False, "shipping_type": "express",
    }
    for key in FULLINFO_ONLY_ORDER:
        del static[key]
    return orjson.dumps(static).decode()[1:-1]


def orders_json(ref: TradeRef, d: p.Detail, seen: dict[int, int], status: str, shipped_at: int | None,
                ended_at: int | None, chunks: dict[int, str]) -> str:
    """The trade's list-API orders, comma-joined (render._order's rules, projected)."""
    ship = (f',"consign_time":"{fmt_time(shipped_at)}","logistics_company":{js(d.carrier)},'
            f'"invoice_no":"{d.out_sid}"') if shipped_at else ""
    end = f',"end_time":"{fmt_time(ended_at)}"' if ended_at else ""
    refund_at = d.refund_line if ref.outcome in (p.REFUND_ONSALE, p.REFUND_AFTERSALE) and p.REFUND_REQ in seen else -1
    single = ref.nlines == 1
    out: list[str] = []
    for i, line in enumerate(d.lines):
        oid = ref.tid if single else ref.tid + p.OID_OFFSET + i
        chunk = chunks.get(line.key)
        if chunk is None:
            chunk = chunks[line.key] = line_chunk(line)
        if i == refund_at:
            o_status, refund_status, tail = _refund_line(ref, seen, status, i, ship, end)
        else:
            # A line's own state is the trade's; closed trades ship nothing (end = refund time).
            o_status, refund_status, tail = status, "NO_REFUND", end if status == "TRADE_CLOSED" else ship + end
        out.append(f'{{"oid":{oid},"oid_str":"{oid}","status":"{o_status}","refund_status":"{refund_status}",'
                   f'{chunk}{tail}}}')
    return ",".join(out)


def _refund_line(ref: TradeRef, seen: dict[int, int], status: str, i: int, ship: str,
                 end: str) -> tuple[str, str, str]:
    """(order status, refund status, tail keys) of the line being refunded."""
    ok = p.REFUND_OK in seen
    o_status = "TRADE_CLOSED" if ref.outcome == p.REFUND_ONSALE and ok else status
    tail = f',"refund_id":"{p.refund_id_of(ref.shop_no, ref.idx, i)}"'
    if o_status == "TRADE_CLOSED":
        tail += f',"end_time":"{fmt_time(seen[p.REFUND_OK])}"'
    else:
        tail += ship + end
    return o_status, "SUCCESS" if ok else "WAIT_SELLER_AGREE", tail


class ListRenderer:
    """Compiled list projections plus the per-line chunk memo, for one world."""

    def __init__(self) -> None:
        self._renderers: dict[tuple[int, bool], Renderer] = {}
        self._chunks: dict[int, dict[int, str]] = {}  # shop_no -> Line.key -> line_chunk

    @staticmethod
    def supports(proj: Projection) -> bool:
        """Whole orders or no orders; order sub-field projections take the reference path."""
        return not proj.orders or proj.order_fields == ("\0list",)

    def fragment(self, ref: TradeRef, t: int, proj: Projection, simplify: bool, modified: int | None = None) -> bytes:
        """Equal to ``orjson.dumps(project_trade(render_trade(ref, t), proj, simplify))``.

        ``modified`` is the trade's latest event at t when the caller already knows it (list pages
        sort and cache by it)."""
        render = self._renderers.get((proj.key, simplify))
        if render is None:
            render = self._renderers[(proj.key, simplify)] = compile_renderer(proj.trade_fields, proj.orders,
                                                                              simplify)
        chunks = self._chunks.get(ref.shop_no)
        if chunks is None:
            chunks = self._chunks[ref.shop_no] = {}
        return render(ref, t, chunks, latest_event(ref, t) if modified is None else modified)
