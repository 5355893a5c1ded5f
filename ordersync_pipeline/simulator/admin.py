"""Ground truth over HTTP for out-of-process users (the CLI simulator, demos, other test processes).

Kept apart from /router/rest on purpose: no signing, no faults, no rate limit.

    GET  /admin/state                         clock, shops, counts, cache and fault statistics
    GET  /admin/trades?shop_id=S[&tid=T]      every trade of a shop (or one), in full, orders as a list
    GET  /admin/refunds?shop_id=S             every refund of a shop
    GET  /admin/inventory?shop_id=S           items with SKU quantities
    POST /admin/advance?seconds=N             move a stepped clock forward
    POST /admin/session?shop_id=S&valid=false expire (or restore) a shop's session
    GET  /admin/failures                      the API failure windows in force, and failures injected
    POST /admin/failures?method=M&rate=R[&start=T][&end=T][&shop_id=S][&kind=K]
                                              make one API fail for a while (K: isp, timeout,
                                              truncated, malformed, http502; T: world time as
                                              yyyy-MM-dd HH:mm:ss GMT+8; unbounded when left out)
    POST /admin/failures/clear                remove every API failure window
    POST /admin/hide?tid=T[&start=T1][&end=T2] the increment API stops listing the trade while its
                                              modified lies in [T1, T2] (every version by default)
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from ordersync_pipeline.simulator.render import fmt_time
from ordersync_pipeline.simulator.settings import FAILURE_KINDS, ApiFailure
from ordersync_pipeline.timeutil import format_top_time, parse_top_time

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
        if path == "/admin/failures" and verb == "GET":
            return 200, {"failures": [_failure_json(f) for f in self.sim.gateway.failures.active()],
                         "injected": dict(self.sim.gateway.failures.injected)}
        if path == "/admin/failures" and verb == "POST":
            kind = params.get("kind", "isp")
            if kind not in FAILURE_KINDS:
                raise ValueError(f"kind must be one of {', '.join(FAILURE_KINDS)}, got {kind!r}")
            self.sim.fail_api(params["method"], float(params["rate"]), start=_time_param(params, "start"),
                              end=_time_param(params, "end"), shop_id=params.get("shop_id") or None,
                              kind=kind)
            return 200, {"ok": True}
        if path == "/admin/failures/clear" and verb == "POST":
            self.sim.clear_failures()
            return 200, {"ok": True}
        if path == "/admin/hide" and verb == "POST":
            self.sim.hide_from_increment(int(params["tid"]), start=_time_param(params, "start"),
                                         end=_time_param(params, "end"))
            return 200, {"ok": True}
        return 404, {"error": f"unknown admin route {verb} {path}"}


def _time_param(params: dict[str, str], name: str) -> datetime | None:
    raw = params.get(name)
    if not raw:
        return None
    try:
        return parse_top_time(raw)
    except ValueError:
        raise ValueError(f"{name} must be yyyy-MM-dd HH:mm:ss (GMT+8), got {raw!r}") from None


def _failure_json(failure: ApiFailure) -> dict[str, Any]:
    return {"method": failure.method, "rate": failure.rate, "shop_id": failure.shop_id, "kind": failure.kind,
            "start": format_top_time(failure.start) if failure.start else None,
            "end": format_top_time(failure.end) if failure.end else None}
