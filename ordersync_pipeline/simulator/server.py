"""``start_simulator``: build the world, serve it on a real socket, hand back handles and ground truth."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from types import TracebackType
from typing import Any, cast

from pydantic import SecretStr

from ordersync_pipeline.config import OrdersyncConfig, ShopConfig, SyncSettings
from ordersync_pipeline.simulator import envelope as env
from ordersync_pipeline.simulator import plan as p
from ordersync_pipeline.simulator.admin import Admin
from ordersync_pipeline.simulator.apis import Apis
from ordersync_pipeline.simulator.clock import Clock, make_clock
from ordersync_pipeline.simulator.gateway import Gateway, Handler, Server
from ordersync_pipeline.simulator.render import fmt_time
from ordersync_pipeline.simulator.settings import ApiFailure, FailureKind, SimShop, SimulatorSettings
from ordersync_pipeline.simulator.tmc import TmcQueue
from ordersync_pipeline.simulator.world import World


def make_shops(seed: int, n: int) -> list[SimShop]:
    """Deterministic sellers: the same seed gives the same shop ids, nicks, user ids and sessions."""
    return [SimShop(shop_id=f"shop-{i + 1}", seller_nick=f"模拟旗舰店{i + 1}",
                    user_id=2_200_000_000_000 + p.mix(seed, i, 0x05E) % 10**9,
                    session=f"6102{p.mix(seed, i, 0x5E55):016x}{p.mix(seed, i, 0x5E56):016x}")
            for i in range(n)]


class Simulator:
    """A running simulated TOP gateway. Use as a context manager or call ``stop()``."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.app_key = settings.app_key or str(20_000_000 + p.mix(settings.seed, 0xA99) % 10_000_000)
        self.app_secret = settings.app_secret or f"{p.mix(settings.seed, 0x5EC):016x}{p.mix(settings.seed, 0x5ED):016x}"
        self.clock: Clock = make_clock(settings.clock, settings.speed, settings.start_at)
        self.shops = make_shops(settings.seed, settings.shops)
        started = time.perf_counter()
        self.world = World(settings, self.clock, self.shops)
        self.build_seconds = time.perf_counter() - started
        self.tmc = TmcQueue(self.world, settings.tmc_redelivery_s)
        self.fragments = env.FragmentCache(settings.fragment_cache_mb * 1024 * 1024)
        apis = Apis(self.world, self.tmc, self.fragments, settings.visibility_lag_s, settings.page_drift,
                    settings.seed, refund_vanish_rate=settings.refund_vanish_rate)
        self.gateway = Gateway(self, apis)
        self.admin = Admin(self)
        handler = type("SimHandler", (Handler,), {"sim": self})
        self._server = Server((settings.host, settings.port), handler)
        # An AF_INET server: its address is (host str, port), whatever the broad stub type says.
        self.host, self.port = cast("tuple[str, int]", self._server.server_address[:2])
        self._thread = threading.Thread(target=self._server.serve_forever, name="ordersync-simulator",
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def gateway_url(self) -> str:
        return f"{self.base_url}/router/rest"

    def config(self, *, sign_method: str = "hmac-sha256") -> OrdersyncConfig:
        """An ordersync configuration for this gateway and its shops, secrets inline."""
        limits: dict[str, Any] = ({"rate_limit_per_minute": self.settings.rate_limit_per_min}
                                  if self.settings.rate_limit_per_min else {})
        return OrdersyncConfig(
            gateway=self.gateway_url, app_key=self.app_key, app_secret=SecretStr(self.app_secret),
            sign_method=sign_method, shops=[ShopConfig(shop_id=s.shop_id, seller_nick=s.seller_nick,
                                                       session=SecretStr(s.session)) for s in self.shops],
            sync=SyncSettings(history_days=max(1, min(90, self.settings.history_days))), **limits)

    def set_session_valid(self, shop_id: str, valid: bool) -> None:
        """Expire (False) or restore (True) a shop's session: calls with it then get code 27."""
        self.world.shop(shop_id).valid_session = valid

    def fail_api(self, method: str, rate: float, *, start: datetime | None = None,
                 end: datetime | None = None, shop_id: str | None = None, kind: FailureKind = "isp") -> None:
        """From now on, ``rate`` of the calls to ``method`` whose world time lies in ``[start, end)`` fail
        as ``kind`` (every shop's, or ``shop_id``'s only). E.g. the increment API failing 20 % for an
        hour: ``fail_api("taobao.trades.sold.increment.get", 0.2, start=t1, end=t1 + 1h)``."""
        if shop_id is not None:
            self.world.shop(shop_id)  # KeyError naming the known shops
        self.gateway.failures.add(ApiFailure(method, rate, start, end, shop_id, kind))

    def clear_failures(self) -> None:
        """Remove every API failure window (the background ``fault_rate`` stays)."""
        self.gateway.failures.clear()

    def hide_from_increment(self, tid: int, *, start: datetime | None = None,
                            end: datetime | None = None) -> None:
        """The increment API stops listing trade ``tid`` while its ``modified`` is in ``[start, end]``
        (every version when both are None); only a reconciliation against sold.get can find it."""
        self.world.hide_from_increment(tid, None if start is None else int(start.timestamp()),
                                       None if end is None else int(end.timestamp()))

    def list_refund_incompletely(self, refund_id: int | str) -> None:
        """refunds.receive.get lists refund ``refund_id`` without ``status`` from now on, so a client must
        complete it with taobao.refund.get (which still answers)."""
        self.gateway.apis.partial_refunds.add(int(refund_id))

    def vanish_refund(self, refund_id: int | str) -> None:
        """Refund ``refund_id`` is listed incompletely and taobao.refund.get answers ``isv.refund-not-exist``
        for it from now on: deleted between the list and the detail call."""
        self.gateway.apis.vanished_refunds.add(int(refund_id))

    def state(self) -> dict[str, Any]:
        now = self.clock.now_ts()
        return {
            "now": fmt_time(now), "clock": self.clock.kind, "gateway": self.gateway_url,
            "shops": [{"shop_id": s.shop.shop_id, "seller_nick": s.shop.seller_nick,
                       "trades": self.world.trade_count(s.shop.shop_id, now),
                       "session_valid": s.valid_session} for s in self.world.shops],
            "calls": self.gateway.calls, "faults": dict(self.gateway.faults.injected),
            "api_failures": dict(self.gateway.failures.injected),
            "hidden_from_increment": sum(len(s.hidden) for s in self.world.shops),
            "drifted": self.gateway.apis.drifted, "tmc_backlog": self.tmc.backlog(),
            "fragment_cache": {"entries": len(self.fragments._d), "bytes": self.fragments.size,
                               "hits": self.fragments.hits, "misses": self.fragments.misses},
            "build_seconds": round(self.build_seconds, 3),
        }

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_simulator(settings: SimulatorSettings | None = None) -> Simulator:
    """Build the seeded world and start serving it; returns once the socket is listening."""
    return Simulator(settings or SimulatorSettings())
