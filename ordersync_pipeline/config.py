"""The ordersync configuration file and environment, validated once.

One YAML file names the gateway, the app and the shops. Secrets are given by the name of an
environment variable (``app_secret_env``, ``session_env``); inline values (``app_secret``,
``session``) are accepted for the simulator's throw-away credentials. Secret values are held as
``SecretStr`` so they never show up in a repr, a log line or an error.

Environment: ``ORDERSYNC_WAREHOUSE_URL`` (warehouse; SQLite under ``ORDERSYNC_HOME`` when unset),
``ORDERSYNC_HOME`` (default ``./.ordersync``), ``ORDERSYNC_REDIS_URL`` (shared rate budget; a local
SQLite lock file when unset).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ordersync_pipeline.top.signing import SIGN_METHODS

ENV_WAREHOUSE_URL = "ORDERSYNC_WAREHOUSE_URL"
ENV_HOME = "ORDERSYNC_HOME"
ENV_REDIS_URL = "ORDERSYNC_REDIS_URL"
ENV_CONFIG = "ORDERSYNC_CONFIG"
DEFAULT_HOME = ".ordersync"


class ConfigError(ValueError):
    """The configuration file or environment is unusable; the message says which key and why."""


def _resolve_secret(inline: SecretStr | None, env_name: str | None, what: str,
                    environ: Mapping[str, str]) -> SecretStr:
    if inline is not None and inline.get_secret_value():
        return inline
    if env_name:
        value = environ.get(env_name)
        if not value:
            raise ConfigError(f"{what}: environment variable {env_name} is not set")
        return SecretStr(value)
    raise ConfigError(f"{what}: give either an inline value or the name of an environment variable")


class ShopConfig(BaseModel):
    """One seller shop. ``shop_id`` is ordersync's own stable name for it (a partition key)."""

    model_config = ConfigDict(extra="forbid")

    shop_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    seller_nick: str
    session: SecretStr | None = None
    session_env: str | None = None

    def session_key(self, environ: Mapping[str, str] | None = None) -> SecretStr:
        return _resolve_secret(self.session, self.session_env, f"shop {self.shop_id} session",
                               os.environ if environ is None else environ)


_DEFAULT_DETAIL_REASONS: list[Literal["incomplete", "presale", "buyer_message"]] = ["incomplete"]


class SyncSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history_days: int = Field(default=90, ge=1, le=90)
    # Length of an increment partition; must divide an hour (the partitions follow a */N cron).
    incremental_minutes: int = Field(default=15, ge=5, le=60)
    overlap_minutes: int = Field(default=5, ge=0, le=60)
    # How far behind now an increment window must end before it is fetched: must be at least the
    # platform's maximum visibility lag; see docs/architecture.md ("Completeness").
    safety_lag_minutes: int = Field(default=3, ge=0, le=60)
    page_size: int = Field(default=100, ge=1, le=100)
    # Partitions fetched at once within a run; the shared rate budget still caps calls per minute.
    # Two keep a loopback simulator saturated and, at ~100 ms a call, reach ~1,200 calls/min against
    # the real gateway (above most app quotas); four cost ~90 MB more peak memory for no gain here.
    fetch_concurrency: int = Field(default=2, ge=1, le=32)
    # Loader processes for a run's partitions (PostgreSQL only; other backends load in-process).
    load_workers: int = Field(default=2, ge=1, le=16)
    # Optional fixed start of the incremental partitions (ISO date or datetime, Asia/Shanghai when
    # naive). Defaults to ``history_days`` before the first run.
    start: str | None = None
    # Receiver name, phone and address are kept (in cached fullinfo details) only when this is true.
    store_receiver_pii: bool = False
    # Why a trade gets a taobao.trade.fullinfo.get call: "incomplete" (the list record lacks order
    # lines), "presale" (step_pay_details), "buyer_message". Each costs one call per changed trade.
    detail_reasons: list[Literal["incomplete", "presale", "buyer_message"]] = Field(
        default_factory=lambda: _DEFAULT_DETAIL_REASONS.copy())


    @field_validator("incremental_minutes")
    @classmethod
    def _divides_an_hour(cls, value: int) -> int:
        if 60 % value:
            raise ValueError("incremental_minutes must divide 60 (5, 6, 10, 12, 15, 20, 30 or 60)")
        return value


class OrdersyncConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gateway: str
    app_key: str
    app_secret: SecretStr | None = None
    app_secret_env: str | None = None
    sign_method: str = "hmac-sha256"
    timeout_seconds: float = Field(default=30.0, gt=0)
    rate_limit_per_minute: int = Field(default=300, ge=1)
    shops: list[ShopConfig] = Field(min_length=1)
    sync: SyncSettings = Field(default_factory=SyncSettings)

    @field_validator("sign_method")
    @classmethod
    def _known_sign_method(cls, value: str) -> str:
        if value not in SIGN_METHODS:
            raise ValueError(f"sign_method must be one of {', '.join(SIGN_METHODS)}")
        return value

    @model_validator(mode="after")
    def _unique_shops(self) -> OrdersyncConfig:
        ids = [s.shop_id for s in self.shops]
        if len(ids) != len(set(ids)):
            raise ValueError(f"shop_id values must be unique, got {ids}")
        return self

    def secret(self, environ: Mapping[str, str] | None = None) -> SecretStr:
        return _resolve_secret(self.app_secret, self.app_secret_env, "app_secret",
                               os.environ if environ is None else environ)

    def shop(self, shop_id: str) -> ShopConfig:
        for shop in self.shops:
            if shop.shop_id == shop_id:
                return shop
        raise ConfigError(f"unknown shop_id {shop_id!r}; configured: {[s.shop_id for s in self.shops]}")


def load_config(path: str | os.PathLike[str]) -> OrdersyncConfig:
    """Read and validate a configuration file; errors name the file and the offending key."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {p} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {p} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {p} must hold a mapping at the top level")
    try:
        return OrdersyncConfig.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"configuration file {p}: {exc}") from None


def config_to_yaml(config: OrdersyncConfig, *, header: str = "") -> str:
    """Serialise a configuration, inline secrets included (only the simulator writes those)."""

    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    data = plain(config.model_dump())
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return (header + body) if header else body


def write_config(config: OrdersyncConfig, path: str | os.PathLike[str], *, header: str = "") -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(config_to_yaml(config, header=header), encoding="utf-8")
    p.chmod(0o600)  # the file may hold inline secrets
    return p


def ordersync_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(ENV_HOME) or DEFAULT_HOME).resolve()


def warehouse_url(environ: Mapping[str, str] | None = None) -> str:
    """``ORDERSYNC_WAREHOUSE_URL`` or the embedded SQLite default under ``ORDERSYNC_HOME``."""
    env = os.environ if environ is None else environ
    url = env.get(ENV_WAREHOUSE_URL)
    if url:
        return url
    home = ordersync_home(env)
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'warehouse.db'}"


def redis_url(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return env.get(ENV_REDIS_URL) or None
