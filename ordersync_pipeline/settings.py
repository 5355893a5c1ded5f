"""Everything a sync needs to know, resolved once: the configuration file, the environment and the anchor.

``Settings`` is the one object passed down: the Dagster definitions are built from it
(``defs.build_definitions``), the terminal drivers (``app/``) and the resources read it, and nothing reads
the environment or the configuration file again afterwards. Tests build one directly with
``Settings.for_config``.

The sync anchor is where the increment partitions begin and the historical load ends. It is
``sync.start`` when configured; otherwise it is fixed the first time settings are loaded for a home (the
start of that Asia/Shanghai day) and kept in ``ORDERSYNC_HOME/sync_anchor``, so every process, reload
and day after agrees on the same partitions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import SecretStr

from ordersync_pipeline.config import (
    DEFAULT_UI_URL,
    ENV_CONFIG,
    ConfigError,
    OrdersyncConfig,
    WebhookFormat,
    alert_webhook,
    lake_url,
    load_config,
    ordersync_home,
    redis_url,
    ui_url,
    warehouse_url,
)
from ordersync_pipeline.timeutil import SHANGHAI, parse_local_time
from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.top.retry import RetryPolicy

__all__ = ["Settings", "load_settings", "resolve_config_path", "ANCHOR_FILE", "DEFAULT_CONFIG_NAME"]

ANCHOR_FILE = "sync_anchor"
DEFAULT_CONFIG_NAME = "ordersync.yaml"


@dataclass(frozen=True)
class Settings:
    """The configuration file plus where things live on this machine."""

    config: OrdersyncConfig
    home: Path
    warehouse_url: str
    redis_url: str | None
    lake_root: str                   # the page lake: a folder or a pyarrow file system URL
    anchor: datetime                 # aware; see the module docstring
    config_path: Path | None = None
    # What "now" is for deciding which windows have closed: the wall clock, or a simulator's world
    # clock in tests and benchmarks that step time.
    clock: Callable[[], datetime] = field(default=utc_now, compare=False)
    # How each API call is retried (None: the client's defaults); tests shorten the waits.
    retry: RetryPolicy | None = field(default=None, compare=False)
    # Where alerts are posted (None: the log and the alerts table only) and in which payload shape.
    alert_webhook_url: SecretStr | None = None
    alert_webhook_format: WebhookFormat = "json"
    # The Dagster UI, for links in alerts (``{ui_url}/runs/{run_id}``).
    ui_url: str = DEFAULT_UI_URL

    def __repr__(self) -> str:  # the warehouse URL may carry a password
        return f"Settings(home={str(self.home)!r}, shops={self.shop_ids}, anchor={self.anchor.isoformat()})"

    @property
    def shop_ids(self) -> list[str]:
        """Configured shops, sorted: the order of the shop partition dimension."""
        return sorted(shop.shop_id for shop in self.config.shops)

    @classmethod
    def for_config(cls, config: OrdersyncConfig, *, home: Path, warehouse_url: str | None = None,
                   redis_url: str | None = None, lake_root: str | None = None,
                   anchor: datetime | None = None, config_path: Path | None = None,
                   clock: Callable[[], datetime] = utc_now) -> Settings:
        """Settings from an in-memory configuration (tests, the simulator, embedding)."""
        home = Path(home)
        return cls(config=config, home=home,
                   warehouse_url=warehouse_url or f"sqlite:///{home / 'warehouse.db'}",
                   redis_url=redis_url,
                   lake_root=lake_root or config.orchestration.lake_url or str(home / "lake"),
                   anchor=anchor or resolve_anchor(config, home), config_path=config_path, clock=clock)


def resolve_config_path(explicit: str | os.PathLike[str] | None = None,
                        environ: Mapping[str, str] | None = None) -> Path:
    """Explicit path, else ``ORDERSYNC_CONFIG``, else ``ORDERSYNC_HOME/ordersync.yaml``."""
    env = os.environ if environ is None else environ
    raw = explicit or env.get(ENV_CONFIG)
    return Path(raw) if raw else ordersync_home(env) / DEFAULT_CONFIG_NAME


def load_settings(config_path: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Read the configuration file and the environment once. Raises ``ConfigError`` with one line."""
    env = os.environ if environ is None else environ
    path = resolve_config_path(config_path, env)
    if not path.exists():
        raise ConfigError(f"no ordersync configuration at {path}: pass --config, set {ENV_CONFIG}, or run "
                          "`ordersync demo` (which writes one for the simulator)")
    config = load_config(path)
    home = ordersync_home(env)
    webhook_url, webhook_format = alert_webhook(env)
    return Settings(config=config, home=home, warehouse_url=warehouse_url(env), redis_url=redis_url(env),
                    lake_root=lake_url(config, env), anchor=resolve_anchor(config, home),
                    config_path=path.resolve(), alert_webhook_url=webhook_url,
                    alert_webhook_format=webhook_format, ui_url=ui_url(env))


def resolve_anchor(config: OrdersyncConfig, home: Path) -> datetime:
    """``sync.start``, else the anchor kept under ``home``, else today's Asia/Shanghai midnight (kept)."""
    if config.sync.start:
        return parse_local_time(config.sync.start)
    path = home / ANCHOR_FILE
    if path.exists():
        return datetime.fromisoformat(path.read_text(encoding="utf-8").strip())
    anchor = datetime.now(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0)
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(anchor.isoformat(), encoding="utf-8")
    return anchor
