"""The compiled list renderer writes exactly what the reference path (dict + projection + orjson) writes."""

from __future__ import annotations

import orjson
import pytest

from ordersync_pipeline.simulator import plan as p
from ordersync_pipeline.simulator.clock import SteppedClock
from ordersync_pipeline.simulator.envelope import Projections, project_trade
from ordersync_pipeline.simulator.listing import SNIPPETS, ListRenderer
from ordersync_pipeline.simulator.render import render_trade
from ordersync_pipeline.simulator.server import make_shops
from ordersync_pipeline.simulator.settings import SimulatorSettings
from ordersync_pipeline.simulator.world import World

NOW = 1_718_000_000


@pytest.fixture(scope="module")
def world() -> World:
    settings = SimulatorSettings(seed=3, shops=2, orders_per_day=120, history_days=20, clock="stepped")
    clock = SteppedClock()
    clock.start_ts = clock._now = NOW
    w = World(settings, clock, make_shops(settings.seed, settings.shops))
    w.drift(w.shops[1], range(0, w.trade_count("shop-2"), 7), NOW - 3 * p.DAY)  # seller memos
    return w


def every_field() -> list[str]:
    return [*SNIPPETS, "orders", "no_such_field"]


@pytest.mark.parametrize("simplify", [False, True])
@pytest.mark.parametrize("fields", [
    ",".join(every_field()),
    ",".join(reversed(every_field())),
    "pay_time,tid,orders",          # a conditional field first: the leading comma must go
    "step_trade_status",
    "seller_memo,buyer_message,orders",  # fullinfo-only: dropped by the list projection
    "orders",
    "tid,tid,status",
])
def test_list_fragment_equals_reference(world: World, fields: str, simplify: bool) -> None:
    proj = Projections().get(fields, list_api=True)
    lister = ListRenderer()
    assert lister.supports(proj)
    checked = 0
    for shop in world.shops:
        n = world.trade_count(shop.shop.shop_id)
        for idx in range(0, n, 3):
            for t in (shop.created[idx], shop.created[idx] + p.HOUR, shop.created[idx] + 3 * p.DAY, NOW):
                if t > NOW:
                    continue
                ref = world.ref(shop, idx)
                expected = orjson.dumps(project_trade(render_trade(ref, t), proj, simplify))
                assert lister.fragment(ref, t, proj, simplify) == expected, (shop.shop_no, idx, t)
                checked += 1
    assert checked > 1000


def test_every_rendered_key_has_a_snippet(world: World) -> None:
    shop = world.shops[1]
    keys: set[str] = set()
    for idx in range(world.trade_count("shop-2")):
        keys |= set(render_trade(world.ref(shop, idx), NOW))
    assert keys - {"orders"} == set(SNIPPETS)


def test_order_subfields_take_the_reference_path() -> None:
    assert not ListRenderer.supports(Projections().get("tid,orders.oid", list_api=True))
