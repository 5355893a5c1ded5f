"""Byte-for-byte pins of the simulator's output: performance work must not change a single byte.

The world runs on a stepped clock pinned to a fixed instant and handlers are called directly with a
fixed request id, so every body below is a pure function of (seed, clock, request). The hashes were
recorded before the cold-path optimisation (per-trade templates) and must never change unless the
simulated world is meant to change.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from ordersync_pipeline.simulator import plan as p
from ordersync_pipeline.simulator.apis import Apis, Call
from ordersync_pipeline.simulator.clock import SteppedClock
from ordersync_pipeline.simulator.envelope import FragmentCache
from ordersync_pipeline.simulator.server import make_shops
from ordersync_pipeline.simulator.settings import SimulatorSettings
from ordersync_pipeline.simulator.tmc import TmcQueue
from ordersync_pipeline.simulator.world import World
from ordersync_pipeline.timeutil import GMT8, format_top_time

NOW = 1_718_000_000  # 2024-06-10 14:13:20 GMT+8
PIPELINE_FIELDS = ("tid,status,type,created,modified,pay_time,consign_time,end_time,payment,total_fee,post_fee,"
                   "discount_fee,adjust_fee,step_trade_status,step_paid_fee,buyer_open_uid,buyer_nick,seller_nick,"
                   "receiver_state,receiver_city,receiver_district,num,has_buyer_message,orders")
BENCH_FIELDS = ("tid,tid_str,status,type,created,modified,pay_time,consign_time,end_time,payment,total_fee,"
                "post_fee,discount_fee,buyer_nick,buyer_open_uid,receiver_state,receiver_city,receiver_district,"
                "step_trade_status,step_paid_fee,orders")
EVERY_TRADE_FIELD = ("tid,tid_str,status,type,seller_nick,buyer_nick,buyer_open_uid,title,created,modified,"
                     "payment,total_fee,post_fee,discount_fee,adjust_fee,received_payment,shipping_type,"
                     "trade_from,num,has_buyer_message,buyer_message,seller_flag,receiver_name,receiver_mobile,"
                     "receiver_phone,receiver_state,receiver_city,receiver_district,receiver_town,"
                     "receiver_address,receiver_zip,receiver_country,oaid,pay_time,consign_time,end_time,"
                     "num_iid,price,step_trade_status,step_paid_fee,seller_memo,no_such_field,orders")
SUB_FIELDS = ("receiver_city,tid,modified,orders.oid,orders.status,orders.refund_status,orders.refund_id,"
              "orders.end_time,orders.consign_time,orders.snapshot_url,orders.payment,buyer_message")

EXPECTED = {
    "sold_pipeline": "188242b3613cc8757197c38dbdf614ab66c2c0e708960d319ee0561471b72fdb",
    "sold_bench_simplify": "22f9b53b502e3c11f8cbc6a77bf4d207f6519d8dff9036c123ea25d241fd2219",
    "sold_every_field": "204a15c2b8fea6edfa003b8c76f03f817ea06a87d264e49d2563f5b3910a6d73",
    "sold_sub_fields": "868921c9c03be38d6e64a429d07767eb589756de70f680b44e47df90edc44302",
    "sold_types_status_total": "2304b58c66fa6a352951919f21d08d3638afca8fac0947f6e4fbb8cd14322005",
    "increment_reverse": "477abda7d7ad073588569b8266597100812e6c900c6445486c7668d451b8f5f3",
    "fullinfo": "2b0d9069d219342ee19fc299fe1dff1dd8136cc1b4fc96652931dde3a82632a0",
    "later_with_drift": "c8d03a75b7aefab4ee70f9e92b6e07558f636d6b02b844af083d931096458dbe",
    "ground_truth": "6c61e4437dc2a76ad59cb44ce01c8a3fea54782cdc4a5d6dd615ddaf518ca098",
}


class Golden:
    def __init__(self) -> None:
        settings = SimulatorSettings(seed=11, shops=2, orders_per_day=150, history_days=12, clock="stepped")
        self.clock = SteppedClock()
        self.clock.start_ts = self.clock._now = NOW
        self.world = World(settings, self.clock, make_shops(settings.seed, settings.shops))
        self.apis = Apis(self.world, TmcQueue(self.world, 30.0), FragmentCache(64 * 1024 * 1024), 0.0, 0.0,
                         settings.seed)

    def call(self, method: str, shop_no: int = 0, simplify: bool = False, **params: Any) -> bytes:
        args = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        handler = self.apis.table[method][0]
        call = Call(method, args, self.world.shops[shop_no], self.clock.now_ts(), "golden0rid", simplify)
        return handler(call)

    def pages(self, method: str, shop_no: int = 0, simplify: bool = False, **params: Any) -> list[bytes]:
        """Every page of a forward-paged list query (page_size 100)."""
        out, page = [], 1
        while True:
            body = self.call(method, shop_no, simplify, page_no=page, page_size=100, use_has_next=True, **params)
            out.append(body)
            if b'"has_next":true' not in body:
                return out
            page += 1

    def window(self, days_back: float, days: float = 1.0) -> dict[str, str]:
        start = NOW - int(days_back * p.DAY)
        return {"start_created": top_time(start), "end_created": top_time(start + int(days * p.DAY))}


def top_time(ts: int) -> str:
    return format_top_time(datetime.fromtimestamp(ts, GMT8))


def digest(bodies: list[bytes]) -> str:
    h = hashlib.sha256()
    for b in bodies:
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()


@pytest.fixture()
def g() -> Iterator[Golden]:
    yield Golden()


def _sold(g: Golden, fields: str, simplify: bool = False, **extra: Any) -> list[bytes]:
    out: list[bytes] = []
    for shop_no in (0, 1):
        for back in (13, 9, 4, 1.5, 0.5):
            out += g.pages("taobao.trades.sold.get", shop_no, simplify, fields=fields, **g.window(back), **extra)
    return out


def case_sold_pipeline(g: Golden) -> list[bytes]:
    return _sold(g, PIPELINE_FIELDS)


def case_sold_bench_simplify(g: Golden) -> list[bytes]:
    return _sold(g, BENCH_FIELDS, simplify=True)


def case_sold_every_field(g: Golden) -> list[bytes]:
    return _sold(g, EVERY_TRADE_FIELD)


def case_sold_sub_fields(g: Golden) -> list[bytes]:
    return _sold(g, SUB_FIELDS)


def case_sold_types_status_total(g: Golden) -> list[bytes]:
    out = []
    for types, status in (("tmall_i18n,step", ""), ("guarantee_trade", "ALL_CLOSED"), ("", "TRADE_FINISHED"),
                          ("fixed,auction,step,tmall_i18n", "WAIT_BUYER_CONFIRM_GOODS")):
        for page in (1, 2):
            out.append(g.call("taobao.trades.sold.get", fields=PIPELINE_FIELDS, type=types, status=status,
                              page_no=page, page_size=37, **g.window(6, 3)))
    return out


def case_increment_reverse(g: Golden) -> list[bytes]:
    """The pipeline's reverse paging: a count call, then pages last to first."""
    out = []
    for shop_no in (0, 1):
        for back in (11, 6, 2, 1):
            start = NOW - back * p.DAY
            w = {"start_modified": top_time(start), "end_modified": top_time(start + p.DAY)}
            count = g.call("taobao.trades.sold.increment.get", shop_no, fields="tid", page_size=1, **w)
            out.append(count)
            total = orjson.loads(count)["trades_sold_increment_get_response"]["total_results"]
            for page in range((total + 99) // 100, 0, -1):
                out.append(g.call("taobao.trades.sold.increment.get", shop_no, fields=PIPELINE_FIELDS,
                                  page_no=page, page_size=100, use_has_next=True, **w))
    return out


def _tids(g: Golden, shop_no: int, step: int) -> list[int]:
    shop = g.world.shops[shop_no]
    return [p.tid_of(shop_no, i, g.world.seed) for i in range(0, g.world.trade_count(shop.shop.shop_id), step)]


def case_fullinfo(g: Golden) -> list[bytes]:
    out = []
    for shop_no in (0, 1):
        for tid in _tids(g, shop_no, 7):
            out.append(g.call("taobao.trade.fullinfo.get", shop_no, fields=EVERY_TRADE_FIELD, tid=tid))
            out.append(g.call("taobao.trade.fullinfo.get", shop_no, True, fields=SUB_FIELDS, tid=tid))
    return out


def case_later_with_drift(g: Golden) -> list[bytes]:
    """Time moves on and drift events (seller memo) land on some trades: versions change."""
    shop = g.world.shops[0]
    for hours in (5, 30):
        g.clock.advance(hours * 3600)
        g.world.ensure_horizon(g.clock.now_ts())
        g.world.drift(shop, range(0, g.world.trade_count("shop-1"), 11), g.clock.now_ts())
    out = g.pages("taobao.trades.sold.get", fields=PIPELINE_FIELDS, **g.window(3, 4))
    out += g.pages("taobao.trades.sold.get", fields=EVERY_TRADE_FIELD, **g.window(3, 4))
    start = g.clock.now_ts() - 2 * 3600
    out += g.pages("taobao.trades.sold.increment.get", fields=PIPELINE_FIELDS,
                   start_modified=top_time(start), end_modified=top_time(g.clock.now_ts()))
    out += [g.call("taobao.trade.fullinfo.get", fields=EVERY_TRADE_FIELD, tid=tid) for tid in _tids(g, 0, 11)]
    return out


def case_ground_truth(g: Golden) -> list[bytes]:
    out = []
    for at in (NOW - 5 * p.DAY, NOW):
        out.append(orjson.dumps(g.world.trades("shop-1", at)))
        out.append(orjson.dumps(g.world.refunds("shop-2", at)))
        out.append(orjson.dumps([g.world.trace(tid, at) for tid in _tids(g, 0, 5)]))
    # Every trade type named: without ``type`` the API lists only its default types (top-api.md 3.6).
    out.append(g.call("taobao.refunds.receive.get", 1, fields="refund_id,tid,oid,status,modified,reason,sku",
                      page_size=100, type="fixed,auction,step,tmall_i18n"))
    return out


CASES: dict[str, Callable[[Golden], list[bytes]]] = {
    name: globals()[f"case_{name}"] for name in EXPECTED
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_output_is_byte_identical(g: Golden, name: str) -> None:
    bodies = CASES[name](g)
    assert len(bodies) > 3 and all(bodies)
    assert digest(bodies) == EXPECTED[name]


def test_cached_and_cold_renders_agree(g: Golden) -> None:
    """The fragment cache serves exactly what a cold render produces."""
    first = _sold(g, PIPELINE_FIELDS)
    again = _sold(g, PIPELINE_FIELDS)
    assert first == again and g.apis.fragments.hits > 0
