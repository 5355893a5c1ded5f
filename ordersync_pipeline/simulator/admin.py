"""Ground truth over HTTP for out-of-process users (the CLI simulator, demos, other test processes).

Kept apart from /router/rest on purpose: no signing, no faults, no rate limit.

    GET  /admin/state                         clock, shops, counts, cache and fault statistics
    GET  /admin/trades?shop_id=S[&tid=T]      every trade of a shop (or one), in full, orders as a list
    GET  /admin/refunds?shop_id=S             every refund of a shop
    GET  /admin/inventory?shop_id=S           items with SKU quantities
    POST /admin/advance?seconds=N             move a stepped clock forward
    POST /admin/session?shop_id=S&valid=false expire (or restore) a shop's session
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ordersync_pipeline.simulator.render import fmt_time

if TYPE_CHECKING:
    from ordersync_pipeline.simulator.server import Simulator


class Admin:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def handle(self, verb: str, path: str, params: dict[str, str]) -> tuple[int, bytes]:
        try:
            status, body = self._route(verb, path, params)
        except (KeyError, ValueError, RuntimeError) as exc:
            status, body = 400, {"error": str(exc)}
        return status, orjson.dumps(body)

    def _route(self, verb: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
        world = self.sim.world
        if path == "/admin/state" and verb == "GET":
            return 200, self.sim.state()
        if path == "/admin/trades" and verb == "GET":
            if params.get("tid"):
                trade = world.trade(int(params["tid"]))
                return (200, trade) if trade is not None else (404, {"error": "no such trade"})
            return 200, world.trades(params["shop_id"])
        if path == "/admin/refunds" and verb == "GET":
            return 200, world.refunds(params["shop_id"])
        if path == "/admin/inventory" and verb == "GET":
            return 200, world.inventory(params["shop_id"])
        if path == "/admin/advance" and verb == "POST":
            now = self.sim.clock.advance(float(params.get("seconds", "0")))
            return 200, {"now": fmt_time(int(now.timestamp()))}
        if path == "/admin/session" and verb == "POST":
            self.sim.set_session_valid(params["shop_id"], params.get("valid", "true").lower() == "true")
            return 200, {"ok": True}
        return 404, {"error": f"unknown admin route {verb} {path}"}
