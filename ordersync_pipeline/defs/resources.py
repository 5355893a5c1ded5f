"""Resources hand out core objects; they hold only where to find configuration, never secrets.

Session keys and the app secret are resolved from the configuration file at run time (itself naming
environment variables for real credentials), so nothing secret is part of Dagster's run config, tags
or metadata.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import dagster as dg

from ordersync_pipeline.config import (
    ENV_CONFIG,
    ConfigError,
    OrdersyncConfig,
    load_config,
    ordersync_home,
    redis_url,
    warehouse_url,
)
from ordersync_pipeline.sync.lake import PageLake
from ordersync_pipeline.top.client import TopClient
from ordersync_pipeline.top.ratelimit import make_rate_budget
from ordersync_pipeline.top.retry import RetryPolicy
from ordersync_pipeline.warehouse import Warehouse

DEFAULT_CONFIG_NAME = "ordersync.yaml"


def resolve_config_path(explicit: str | None = None) -> Path:
    """Explicit path, else ``ORDERSYNC_CONFIG``, else ``ORDERSYNC_HOME/ordersync.yaml``."""
    raw = explicit or os.environ.get(ENV_CONFIG)
    return Path(raw) if raw else ordersync_home() / DEFAULT_CONFIG_NAME


@functools.lru_cache(maxsize=8)
def _load_config_cached(path: str, mtime_ns: int) -> OrdersyncConfig:
    """Parsed once per file version: a run asks for shop sessions once per partition."""
    return load_config(path)


class TopApiResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Hands out a configured ``TopClient`` and each shop's session key."""

    config_path: str | None = None

    def settings(self) -> OrdersyncConfig:
        path = resolve_config_path(self.config_path)
        if not path.exists():
            raise ConfigError(
                f"no ordersync configuration at {path}: set {ENV_CONFIG} or run `ordersync demo` "
                "(which writes one for the simulator)")
        return _load_config_cached(str(path.resolve()), path.stat().st_mtime_ns)

    def get_client(self, *, recorder: object | None = None) -> TopClient:
        cfg = self.settings()
        home = ordersync_home()
        budget = make_rate_budget(redis_url=redis_url(), home=home,
                                  per_minute=cfg.rate_limit_per_minute)
        return TopClient(gateway=cfg.gateway, app_key=cfg.app_key,
                         app_secret=cfg.secret().get_secret_value(), sign_method=cfg.sign_method,
                         timeout=cfg.timeout_seconds, retry=RetryPolicy(), rate_budget=budget,
                         recorder=recorder)  # type: ignore[arg-type]

    def session_for(self, shop_id: str) -> str:
        return self.settings().shop(shop_id).session_key().get_secret_value()


class WarehouseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The warehouse database: ``url`` or ``ORDERSYNC_WAREHOUSE_URL`` or SQLite under ORDERSYNC_HOME."""

    url: str | None = None
    store_receiver_pii: bool = False

    def get_warehouse(self) -> Warehouse:
        """The warehouse, migrated to the newest schema on first use in this process: a run launched
        by the schedule or the UI may be the first thing to touch a new warehouse."""
        return _open_warehouse(self.url or warehouse_url(), self.store_receiver_pii)


@functools.lru_cache(maxsize=8)
def _open_warehouse(url: str, store_receiver_pii: bool) -> Warehouse:
    """One ``Warehouse`` (one engine and connection pool) per database and process, migrated once.

    Every step of a run asks for the warehouse; a new engine each time would leave pools of open
    connections behind and repeat the migration check.
    """
    warehouse = Warehouse(url, store_receiver_pii=store_receiver_pii)
    warehouse.migrate()
    return warehouse


class PageLakeResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The raw page lake: ``root`` or ``ORDERSYNC_HOME/lake``."""

    root: str | None = None

    def get_lake(self) -> PageLake:
        return PageLake(Path(self.root) if self.root else ordersync_home() / "lake")
