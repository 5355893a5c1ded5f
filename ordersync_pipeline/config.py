"""The ordersync configuration file and environment, validated once.

One YAML file names the gateway, the app and the shops. Secrets are given by the name of an
environment variable (``app_secret_env``, ``session_env``); inline values (``app_secret``,
``session``) are accepted for the simulator's throw-away credentials. Secret values are held as
``SecretStr`` so they never show up in a repr, a log line or an error.

Environment: ``ORDERSYNC_WAREHOUSE_URL`` (warehouse; SQLite under ``ORDERSYNC_HOME`` when unset),
``ORDERSYNC_HOME`` (default ``./.ordersync``), ``ORDERSYNC_REDIS_URL`` (shared rate budget; a local
SQLite lock file when unset). Alerts: ``ORDERSYNC_ALERT_WEBHOOK_URL`` (a secret: the URL carries the
receiver's token; no webhook when unset), ``ORDERSYNC_ALERT_WEBHOOK_FORMAT`` (dingtalk | wecom | slack |
json; guessed from the URL's host when unset), ``ORDERSYNC_UI_URL`` (the Dagster UI, for links in alerts).
Orchestration: ``ORDERSYNC_LAKE_URL`` (where the raw page lake lives: a folder or a pyarrow file system
URL such as ``s3://bucket/prefix``; overrides ``orchestration.lake_url``; ``ORDERSYNC_HOME/lake`` when both
are unset).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from ordersync_pipeline.timeutil import parse_local_time
from ordersync_pipeline.top.signing import SIGN_METHODS

ENV_WAREHOUSE_URL = "ORDERSYNC_WAREHOUSE_URL"
ENV_HOME = "ORDERSYNC_HOME"
ENV_REDIS_URL = "ORDERSYNC_REDIS_URL"
ENV_CONFIG = "ORDERSYNC_CONFIG"
ENV_ALERT_WEBHOOK_URL = "ORDERSYNC_ALERT_WEBHOOK_URL"
ENV_ALERT_WEBHOOK_FORMAT = "ORDERSYNC_ALERT_WEBHOOK_FORMAT"
ENV_UI_URL = "ORDERSYNC_UI_URL"
ENV_LAKE_URL = "ORDERSYNC_LAKE_URL"
DEFAULT_UI_URL = "http://127.0.0.1:3000"
# Payload shapes an alert webhook can be sent in (ordersync_pipeline/alerts/webhook.py builds them).
WebhookFormat = Literal["dingtalk", "wecom", "slack", "json"]
WEBHOOK_FORMATS: tuple[WebhookFormat, ...] = get_args(WebhookFormat)
# Hosts whose payload shape is known, so setting the URL alone is enough for the common receivers.
_WEBHOOK_HOSTS: dict[str, WebhookFormat] = {
    "oapi.dingtalk.com": "dingtalk", "qyapi.weixin.qq.com": "wecom", "hooks.slack.com": "slack"}
DEFAULT_HOME = ".ordersync"
# ORDERSYNC_HOME holds the warehouse, the page lake and Dagster's storage (buyer identifiers).
HOME_MODE = 0o700
# pydantic's own error text quotes the input (``input_value=...``), which may be a secret; our models
# never show it, and ``format_validation_error`` builds messages from the structured errors instead.
_MODEL_CONFIG = ConfigDict(extra="forbid", hide_input_in_errors=True)


class ConfigError(ValueError):
    """The configuration file or environment is unusable; the message says which key and why."""


def _resolve_secret(inline: SecretStr | None, env_name: str | None, what: str,
                    environ: Mapping[str, str]) -> SecretStr:
    if inline is not None and inline.get_secret_value():
        return inline
    if env_name:
        value = environ.get(env_name)
        if not value:
            raise ConfigError(f"{what}: environment variable {env_name} is not set; export it in the "
                              "environment that runs ordersync (or fix the name in the configuration)")
        return SecretStr(value)
    raise ConfigError(f"{what}: give either an inline value or the name of an environment variable")


class ShopConfig(BaseModel):
    """One seller shop. ``shop_id`` is ordersync's own stable name for it (a partition key)."""

    model_config = _MODEL_CONFIG

    shop_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    seller_nick: str
    session: SecretStr | None = None
    session_env: str | None = None

    def session_key(self, environ: Mapping[str, str] | None = None) -> SecretStr:
        return _resolve_secret(self.session, self.session_env, f"shop {self.shop_id} session",
                               os.environ if environ is None else environ)


_DEFAULT_DETAIL_REASONS: list[Literal["incomplete", "presale", "buyer_message"]] = ["incomplete"]


class SyncSettings(BaseModel):
    model_config = _MODEL_CONFIG

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
    # Loader processes for a run's partitions (PostgreSQL only; other backends load in-process), started
    # once a run has 20,000 records to load. Each holds ~190 MB; 1 loads in the pipeline process instead:
    # at 200k trades the process tree peaks at ~520 MB instead of ~765 MB, the history load ~1.5x slower.
    load_workers: int = Field(default=2, ge=1, le=16)
    # A partition whose failure can heal by waiting (timeouts, 5xx, a window still settling) is tried
    # this many times within its run, the waits growing from retry_delay_seconds (each API call is
    # already retried by the client); anything else fails the partition at once. A failed partition is
    # not marked complete and the next run (or `ordersync sync`) retries exactly it.
    partition_attempts: int = Field(default=3, ge=1, le=10)
    # A run covering several contiguous closed increment partitions of a shop (a catch-up) fetches
    # them as one API window of at most this many minutes (the increment API allows one day), then
    # accounts for each partition as if fetched alone; far fewer calls. 0 fetches each alone.
    coalesce_minutes: int = Field(default=1440, ge=0, le=1440)
    retry_delay_seconds: float = Field(default=10.0, ge=0, le=600)
    # Optional fixed start of the increment partitions (ISO date or datetime, Asia/Shanghai when naive);
    # history ends exactly there. Defaults to the start of the first sync's day.
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

    @field_validator("start", mode="before")
    @classmethod
    def _iso_start(cls, value: object) -> object:
        # YAML reads an unquoted 2026-11-30 as a date (and 2026-11-30 10:00:00 as a datetime).
        if isinstance(value, date):
            value = value.isoformat()
        if isinstance(value, str):
            try:
                parse_local_time(value)
            except ValueError:
                raise ValueError(
                    f"start must be an ISO date (2026-11-30) or date and time (2026-11-30T10:00, "
                    f"optionally with an offset such as +08:00; Asia/Shanghai when none), got {value!r}"
                ) from None
        return value


class BreakerSettings(BaseModel):
    """The failure-rate breaker (熔断降级) over the increment list APIs; see reconcile/breaker.py."""

    model_config = _MODEL_CONFIG

    # Open when more than this share of a shop's attempts at an increment API failed on the platform's
    # side (transport, malformed body, isp.* errors; never our rate limit or a shop's credentials).
    failure_rate: float = Field(default=0.05, gt=0, lt=1)
    # The sliding window the share is taken over, and the fewest attempts in it that may trip it.
    window_minutes: int = Field(default=15, ge=1, le=24 * 60)
    min_calls: int = Field(default=20, ge=1)
    # How long an open breaker waits before probing the API again (and between failed probes).
    cooldown_minutes: int = Field(default=30, ge=1, le=24 * 60)
    # Attempts one probe makes, without retries; the probe succeeds only when every one does.
    probe_calls: int = Field(default=5, ge=1, le=50)
    # While open: a full pull (taobao.trades.sold.get) of the trades created in the last
    # ``full_pull_hours``, every ``full_pull_every_minutes``.
    full_pull_hours: int = Field(default=24, ge=1, le=90 * 24)
    full_pull_every_minutes: int = Field(default=60, ge=5, le=24 * 60)


class MonitoringSettings(BaseModel):
    """Daily reconciliation, gap repair and the breaker."""

    model_config = _MODEL_CONFIG

    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    # When the daily reconciliation of the previous Asia/Shanghai day runs (HH:MM, Asia/Shanghai);
    # it must be after the day's last increment window has closed and been fetched.
    reconcile_at: str = Field(default="01:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    # List and compare every record's version every day, even when the counts agree (finds a change
    # the increment API dropped, at one call per 100 records of the day); by default a day is listed
    # only when the platform's count and the warehouse's differ.
    reconcile_always_list: bool = False
    # How far back the gap sensor looks for closed increment windows never completed (older gaps are
    # `ordersync sync`'s to repair).
    gap_lookback_days: int = Field(default=7, ge=1, le=90)

    @model_validator(mode="after")
    def _after_the_last_window(self) -> MonitoringSettings:
        if self.reconcile_at < "00:30":
            raise ValueError("reconcile_at must be 00:30 or later: the previous day's last increment "
                             "window closes after midnight (plus the safety lag) and must be fetched first")
        return self


# How the steps of a Dagster run are executed. in_process: one process per run (the work inside a run is
# already parallel by threads and loader processes); multiprocess: Dagster's default, a process per step;
# celery / k8s: steps on an existing Celery or Kubernetes cluster (optional extras, docs/scaling.md).
Executor = Literal["in_process", "multiprocess", "celery", "k8s"]


class OrchestrationSettings(BaseModel):
    """How runs are cut and executed, and where the page lake lives (docs/scaling.md)."""

    model_config = _MODEL_CONFIG

    executor: Executor = "in_process"
    # Shops per run launched by the increment schedule and the gap sensor: one run per tick covers
    # every shop's window, sharded into runs of at most this many shops (each partition still
    # succeeds or fails on its own). Each run the daemon launches is a new Python process (~2 CPU-s of
    # imports and definitions) while a shop's window costs ~55 CPU-ms in the run, so the default keeps
    # a few hundred shops in one run: 200 shops' tick is one process, not two (benchmarks/bench_tick.py).
    max_shops_per_run: int = Field(default=500, ge=1, le=10_000)
    # The raw page lake: a local folder, file:///path, or a pyarrow file system URL (s3://, gs://,
    # hdfs://, ...) that every process of a run can reach. ORDERSYNC_LAKE_URL overrides it; the default
    # is ORDERSYNC_HOME/lake.
    lake_url: str | None = None

    @field_validator("lake_url")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("lake_url must not be empty (leave it out for ORDERSYNC_HOME/lake)")
        return value.strip() if value is not None else None


class ForecastConfig(BaseModel):
    """Stock, the daily forecast and replenishment (issue 11); see forecast/ and defs/forecast.py."""

    model_config = _MODEL_CONFIG

    # Days from a purchase order to stock on hand: the suggestion covers the demand over them.
    lead_time_days: int = Field(default=7, ge=1, le=365)
    # Chance that the lead time's demand is covered (sets the safety stock), 0.5 .. 0.999.
    service_level: float = Field(default=0.95, ge=0.5, lt=1)
    # Suggested quantities are rounded up to whole packs of this many units.
    pack_size: int = Field(default=1, ge=1, le=100_000)
    # Days of daily_sales behind each forecast (the model uses at most the last 26 weeks).
    history_days: int = Field(default=182, ge=14, le=730)
    # When the inventory snapshot is taken (cron, Asia/Shanghai): hourly by default.
    inventory_cron: str = Field(default="0 * * * *", pattern=r"^\S+( \S+){4}$")
    # When the previous day's sales, forecast and suggestions run (HH:MM, Asia/Shanghai); after the
    # day's reconciliation (monitoring.reconcile_at), so the day's trades are complete.
    run_at: str = Field(default="02:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    # SKUs charted in the report (the largest suggestions).
    top_skus: int = Field(default=5, ge=0, le=50)


class OrdersyncConfig(BaseModel):
    model_config = _MODEL_CONFIG

    gateway: str
    app_key: str
    app_secret: SecretStr | None = None
    app_secret_env: str | None = None
    sign_method: str = "hmac-sha256"
    timeout_seconds: float = Field(default=30.0, gt=0)
    rate_limit_per_minute: int = Field(default=300, ge=1)
    # Who answers for the data, shown on every asset in the Dagster catalog: team:NAME or an email address.
    owners: list[Annotated[str, Field(pattern=r"^(team:[A-Za-z0-9_.-]+|[^@\s]+@[^@\s]+)$")]] = Field(
        default_factory=lambda: ["team:ordersync"])
    shops: list[ShopConfig] = Field(min_length=1)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)

    @field_validator("gateway")
    @classmethod
    def _gateway_url(cls, value: str) -> str:
        # The client's own check: imported here so `ordersync --help` does not load requests.
        from ordersync_pipeline.top.client import check_gateway_url

        return check_gateway_url(value)

    @field_validator("sign_method")
    @classmethod
    def _known_sign_method(cls, value: str) -> str:
        if value not in SIGN_METHODS:
            raise ValueError(f"sign_method must be one of {', '.join(SIGN_METHODS)}")
        return value

    @model_validator(mode="after")
    def _forecast_after_reconciliation(self) -> OrdersyncConfig:
        if self.forecast.run_at <= self.monitoring.reconcile_at:
            raise ValueError(f"forecast.run_at ({self.forecast.run_at}) must be later than monitoring.reconcile_at "
                             f"({self.monitoring.reconcile_at}): the forecast reads the reconciled day")
        return self

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
    """Read and validate a configuration file; errors name the file and the offending key, on one
    line, and never quote a secret."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {p} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"configuration file {p} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                          f"offset {exc.start}): give the ordersync YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {p}: {exc.strerror or type(exc).__name__}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {p} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {p} must hold a mapping (key: value lines) at the top level")
    return parse_config(raw, source=f"configuration file {p}")


def parse_config(data: Mapping[str, Any], *, source: str = "configuration") -> OrdersyncConfig:
    """Validate configuration data; a ``ConfigError`` names ``source`` and each offending key."""
    try:
        return OrdersyncConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without the offending line: PyYAML's own text quotes it, secret and all."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return where + (exc.problem or exc.context or type(exc).__name__)
    if isinstance(exc, yaml.reader.ReaderError):
        if isinstance(exc.character, int):
            return f"unacceptable character #x{exc.character:04x} at position {exc.position}"
        return f"undecodable byte at position {exc.position}"
    return type(exc).__name__


# Keys whose values are never secret, by path with list indices left out. An offending value is
# quoted only for these: a secret field's value, and any unknown key's (a misspelt ``app_secret``),
# never is.
_SHOWN_VALUES = frozenset({
    ("gateway",), ("app_key",), ("app_secret_env",), ("sign_method",), ("timeout_seconds",),
    ("rate_limit_per_minute",), ("shops", "shop_id"), ("shops", "seller_nick"), ("shops", "session_env"),
    *(("sync", name) for name in SyncSettings.model_fields),
    *(("monitoring", name) for name in MonitoringSettings.model_fields),
    *(("monitoring", "breaker", name) for name in BreakerSettings.model_fields),
    ("orchestration", "executor"), ("orchestration", "max_shops_per_run"),
})
_MAX_SHOWN = 80


def format_validation_error(exc: ValidationError) -> str:
    """One line for all of pydantic's errors: key path and problem, a value only where it is safe."""
    problems = [_format_error(error) for error in exc.errors(include_url=False)]
    head = f"{len(problems)} problems: " if len(problems) > 1 else ""
    return head + "; ".join(problems)


def _format_error(error: ErrorDetails) -> str:
    loc = error["loc"]
    where = _key_path(loc)
    if error["type"] == "extra_forbidden":
        return f"unknown key {where!r}{_did_you_mean(loc)}"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "string_type" and isinstance(error.get("input"), int | float):
        message += " (put the value in quotes in the YAML file)"
    if tuple(p for p in loc if isinstance(p, str)) in _SHOWN_VALUES and "input" in error:
        shown = repr(error["input"])
        if shown not in message:  # our own validators name the value already
            message += f" (got {shown[:_MAX_SHOWN]}{'...' if len(shown) > _MAX_SHOWN else ''})"
    leaf = f"{loc[-1]} " if loc else ""
    if leaf and message.startswith(leaf):  # "gateway must be ..." reads on without "gateway: "
        return f"{where} {message.removeprefix(leaf)}"
    return f"{where}: {message}" if where else message


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    """Known keys at the unknown key's level, closest first (keys, not values: nothing secret)."""
    parent = tuple(part for part in loc[:-1] if isinstance(part, str))
    model = _MODELS_AT.get(parent)
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(model.model_fields)})"


_MODELS_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): OrdersyncConfig, ("shops",): ShopConfig, ("sync",): SyncSettings,
    ("monitoring",): MonitoringSettings, ("monitoring", "breaker"): BreakerSettings,
    ("orchestration",): OrchestrationSettings}


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
    """``ORDERSYNC_HOME`` (default ``./.ordersync``), created readable by its owner only when missing.

    Created here, before anything puts a subdirectory in it, so that no ``mkdir(parents=True)``
    elsewhere creates it with the umask's wider mode. An existing directory keeps its mode.
    """
    env = os.environ if environ is None else environ
    home = Path(env.get(ENV_HOME) or DEFAULT_HOME).resolve()
    if not home.exists():
        home.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
    return home


def warehouse_url(environ: Mapping[str, str] | None = None) -> str:
    """``ORDERSYNC_WAREHOUSE_URL`` or the embedded SQLite default under ``ORDERSYNC_HOME``."""
    env = os.environ if environ is None else environ
    url = env.get(ENV_WAREHOUSE_URL)
    if url:
        return url
    # connect.py creates the file itself readable by the owner only (0o600) on first connect.
    return f"sqlite:///{ordersync_home(env) / 'warehouse.db'}"


def redis_url(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return env.get(ENV_REDIS_URL) or None


def alert_webhook(environ: Mapping[str, str] | None = None) -> tuple[SecretStr | None, WebhookFormat]:
    """``ORDERSYNC_ALERT_WEBHOOK_URL`` (None when unset) and its payload format.

    The format is ``ORDERSYNC_ALERT_WEBHOOK_FORMAT`` when set, else the one the URL's host is known to
    take (DingTalk, WeCom, Slack), else plain JSON. The URL is a credential and is never quoted in an
    error.
    """
    env = os.environ if environ is None else environ
    raw_format = (env.get(ENV_ALERT_WEBHOOK_FORMAT) or "").strip().lower()
    if raw_format and raw_format not in WEBHOOK_FORMATS:
        raise ConfigError(f"{ENV_ALERT_WEBHOOK_FORMAT} must be one of {', '.join(WEBHOOK_FORMATS)}, "
                          f"got {raw_format[:20]!r}")
    url = (env.get(ENV_ALERT_WEBHOOK_URL) or "").strip()
    if not url:
        return None, (raw_format or "json")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{ENV_ALERT_WEBHOOK_URL} must be an http:// or https:// URL with a host "
                          "(its value is not shown: it holds the receiver's token)")
    guessed: WebhookFormat = _WEBHOOK_HOSTS.get(parts.hostname, "json")
    return SecretStr(url), (raw_format or guessed)


def ui_url(environ: Mapping[str, str] | None = None) -> str:
    """``ORDERSYNC_UI_URL`` without a trailing slash: where links in alerts point (the Dagster UI)."""
    env = os.environ if environ is None else environ
    url = (env.get(ENV_UI_URL) or DEFAULT_UI_URL).strip().rstrip("/")
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ConfigError(f"{ENV_UI_URL} must be an http:// or https:// URL (the Dagster UI's address), "
                          f"got {'scheme ' + repr(scheme[:20]) if scheme else 'no scheme'}")
    return url


def lake_url(config: OrdersyncConfig, environ: Mapping[str, str] | None = None) -> str:
    """``ORDERSYNC_LAKE_URL``, else ``orchestration.lake_url``, else ``ORDERSYNC_HOME/lake``.

    The URL may carry object-store credentials, so it is never shown in full in logs or errors."""
    env = os.environ if environ is None else environ
    url = (env.get(ENV_LAKE_URL) or "").strip() or config.orchestration.lake_url
    return url or str(ordersync_home(env) / "lake")
