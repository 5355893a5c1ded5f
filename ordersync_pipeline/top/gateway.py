"""The configured platform: TOP clients for the app and each shop's session key.

One ``Gateway`` per set of settings. It builds clients that share the app's rate budget (Redis when
``ORDERSYNC_REDIS_URL`` is set, a SQLite file under ``ORDERSYNC_HOME`` otherwise), and resolves a shop's
session key only when that shop is synced, so one shop's unset environment variable fails that shop alone.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ordersync_pipeline.config import OrdersyncConfig
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.ratelimit import RateBudget, make_rate_budget
from ordersync_pipeline.top.recorder import CallRecorder
from ordersync_pipeline.top.retry import RetryPolicy

__all__ = ["Gateway"]


class Gateway:
    """Hands out configured ``TopClient``s and shop sessions; holds no secret in its repr."""

    def __init__(self, config: OrdersyncConfig, *, home: Path, redis_url: str | None,
                 retry: RetryPolicy | None = None) -> None:
        self.config = config
        self._home = Path(home)
        self._redis_url = redis_url
        self._retry = retry or RetryPolicy()
        self._budget: RateBudget | None = None
        self._budget_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Gateway({self.config.gateway!r}, app_key={self.config.app_key!r})"

    def rate_budget(self) -> RateBudget:
        """The app's shared budget, made once: fetch threads ask for clients at the same moment, and
        two of them creating the local budget file together would collide on SQLite's lock."""
        with self._budget_lock:
            if self._budget is None:
                self._budget = make_rate_budget(redis_url=self._redis_url, home=self._home,
                                                per_minute=self.config.rate_limit_per_minute)
            return self._budget

    def client(self, recorder: CallRecorder | None = None) -> TopClient:
        """A new client (one HTTP pool; not shared between threads) reporting calls to ``recorder``."""
        cfg = self.config
        return TopClient(gateway=cfg.gateway, app_key=cfg.app_key,
                         app_secret=cfg.secret().get_secret_value(), sign_method=cfg.sign_method,
                         timeout=cfg.timeout_seconds, retry=self._retry, rate_budget=self.rate_budget(),
                         recorder=recorder)

    def session(self, shop_id: str) -> str:
        """The shop's session key; ``ConfigError`` when the shop is unknown or its key is not set."""
        return self.config.shop(shop_id).session_key().get_secret_value()
