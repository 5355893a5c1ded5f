"""``Alerts``: open, resolve and deliver alerts, one open alert per condition.

A condition is ``(kind, shop_id, key)``. ``open`` writes a row to ``alerts`` unless the condition is
already open (the unique ``open_key`` decides, so two processes opening it at once still make one row),
logs one line, and posts every undelivered open alert to the webhook, oldest first. ``resolve`` closes
the open row, logs, and posts a "resolved" notice when the "opened" one had reached the receiver.

Delivery never fails the caller: a receiver that is down or refuses leaves the row with
``delivered = false``, and the next ``open`` or ``flush`` tries it again. Each notice is tried a bounded
number of times with doubling waits (``Webhook``); after a failed delivery this object stops trying for
``quiet_seconds``, so a caller opening many alerts while the receiver hangs does not wait on each. A
"resolved" notice is best effort (tried the same way, not recorded). Delivery is at least once: two
processes flushing at the same moment may both post the same alert.

Messages pass through the same rule as error descriptions (``failures.one_line``: one line, a URL's
password masked, at most 500 characters), after every known secret value (the app secret, session keys,
the webhook URL, the warehouse password) has been replaced by ``***``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import parse_qsl, urlsplit

import sqlalchemy as sa

from ordersync_pipeline.alerts.webhook import Notice, Webhook
from ordersync_pipeline.config import ConfigError
from ordersync_pipeline.failures import one_line
from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.warehouse import Warehouse
from ordersync_pipeline.warehouse.tables import alerts as alerts_table

if TYPE_CHECKING:
    from ordersync_pipeline.settings import Settings

__all__ = ["Alerts", "AlertKind", "AlertRow", "ALERT_KINDS", "condition_key", "Scrubber"]

AlertKind = Literal["failure_rate", "reconciliation_gap", "run_failed", "logistics_stall", "quarantine"]
ALERT_KINDS: tuple[AlertKind, ...] = get_args(AlertKind)
MAX_KEY_CHARS = 255
# Secrets shorter than this are not searched for: replacing every "abc" in a message would hide more
# than it protects (real app secrets and session keys are 32+ characters).
_MIN_SECRET_CHARS = 6
# Undelivered alerts posted per flush; the rest wait for the next one.
_FLUSH_BATCH = 100

log = logging.getLogger("ordersync.alerts")


@dataclass(frozen=True)
class AlertRow:
    """One row of ``alerts``. ``resolved_at`` is None while the alert is open."""

    id: int
    kind: str
    shop_id: str | None
    key: str
    opened_at: datetime
    resolved_at: datetime | None
    message: str
    delivered: bool

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


def condition_key(kind: str, shop_id: str | None, key: str) -> str:
    """The digest stored in ``open_key`` while the condition's alert is open (64 hex characters)."""
    return hashlib.sha256(json.dumps([kind, shop_id, key], ensure_ascii=False).encode("utf-8")).hexdigest()


class Scrubber:
    """Replaces known secret values with ``***``, then applies the error rule (``failures.one_line``)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET_CHARS}, key=len, reverse=True)

    def __repr__(self) -> str:
        return f"Scrubber({len(self._secrets)} secrets)"

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return one_line(text)


class Alerts:
    """The alert path: the ``alerts`` table of ``warehouse``, the log, and an optional webhook."""

    def __init__(self, warehouse: Warehouse, *, webhook: Webhook | None = None, secrets: Iterable[str] = (),
                 clock: Callable[[], datetime] = utc_now, quiet_seconds: float = 60.0) -> None:
        """``webhook`` None: the log and the table only. ``secrets``: values never to show in a message
        (``from_settings`` passes every one it knows). ``clock`` stamps opened_at / resolved_at."""
        self._engine = warehouse.engine
        self.webhook = webhook
        self._scrub = Scrubber(secrets)
        self._clock = clock
        self._quiet_seconds = quiet_seconds
        self._quiet_until = 0.0

    def __repr__(self) -> str:
        return f"Alerts(webhook={self.webhook!r})"

    @classmethod
    def from_settings(cls, settings: Settings, warehouse: Warehouse, **kwargs: Any) -> Alerts:
        """Alerts with the webhook of ``settings`` (``ORDERSYNC_ALERT_WEBHOOK_URL`` / ``_FORMAT``) and
        every secret the settings know kept out of messages."""
        webhook = None
        if settings.alert_webhook_url is not None:
            webhook = Webhook(settings.alert_webhook_url, format=settings.alert_webhook_format)
        return cls(warehouse, webhook=webhook, secrets=known_secrets(settings), **kwargs)

    # -- the API ------------------------------------------------------------------------------

    def open(self, kind: AlertKind, *, shop_id: str | None, key: str, message: str) -> bool:
        """Open an alert for the condition ``(kind, shop_id, key)``; True if it was not open already
        (an open condition keeps its first message). Posts undelivered alerts; never raises for the
        receiver."""
        _check(kind, key)
        text = self._scrub(message)
        digest = condition_key(kind, shop_id, key)
        row = {"kind": kind, "shop_id": shop_id, "key": key, "opened_at": self._clock(), "resolved_at": None,
               "message": text, "delivered": False, "open_key": digest}
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(alerts_table).values(**row))
        except sa.exc.IntegrityError:
            if self._open_row(digest) is None:  # refused for another reason than "already open"
                raise
            log.debug("alert %s already open: shop=%s key=%s", kind, shop_id, key)
            self.flush()
            return False
        log.warning("ALERT %s opened: shop=%s key=%s: %s", kind, shop_id or "-", key, text)
        self.flush()
        return True

    def resolve(self, kind: AlertKind, *, shop_id: str | None, key: str) -> bool:
        """Resolve the condition's open alert; True if one was open."""
        _check(kind, key)
        digest = condition_key(kind, shop_id, key)
        now = self._clock()
        with self._engine.begin() as conn:
            row = conn.execute(_open_query(digest)).mappings().first()
            if row is None:
                return False
            updated = conn.execute(
                sa.update(alerts_table)
                .where(alerts_table.c.id == row["id"], alerts_table.c.open_key == digest)
                .values(resolved_at=now, open_key=None)).rowcount
        if not updated:  # another process resolved it between the two statements
            return False
        alert = _row({**row, "resolved_at": now})
        log.info("alert %s resolved: shop=%s key=%s (open since %s)", kind, shop_id or "-", key,
                 alert.opened_at.isoformat(timespec="seconds"))
        if alert.delivered:
            self._deliver(Notice("resolved", alert))
        return True

    def open_alerts(self, kind: AlertKind | None = None) -> list[AlertRow]:
        """Open alerts (of ``kind``, or of every kind when None), oldest first."""
        query = sa.select(alerts_table).where(alerts_table.c.open_key.is_not(None))
        if kind is not None:
            query = query.where(alerts_table.c.kind == kind)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(alerts_table.c.opened_at, alerts_table.c.id)).mappings().all()
        return [_row(row) for row in rows]

    def flush(self) -> int:
        """Post open alerts not yet delivered, oldest first; stops at the first failure. Returns how
        many were delivered now."""
        if self.webhook is None or time.monotonic() < self._quiet_until:
            return 0
        query = (sa.select(alerts_table)
                 .where(alerts_table.c.open_key.is_not(None), alerts_table.c.delivered == sa.false())
                 .order_by(alerts_table.c.id).limit(_FLUSH_BATCH))
        with self._engine.connect() as conn:
            pending = [_row(row) for row in conn.execute(query).mappings()]
        delivered = 0
        for alert in pending:
            if not self._deliver(Notice("opened", alert)):
                break
            with self._engine.begin() as conn:
                conn.execute(sa.update(alerts_table).where(alerts_table.c.id == alert.id)
                             .values(delivered=True))
            delivered += 1
        return delivered

    # -- internals ----------------------------------------------------------------------------

    def _deliver(self, notice: Notice) -> bool:
        if self.webhook is None or time.monotonic() < self._quiet_until:
            return False
        result = self.webhook.send(notice)
        if result.ok:
            return True
        self._quiet_until = time.monotonic() + self._quiet_seconds
        log.warning("alert webhook %s did not take alert #%d (%s %s) after %d attempt(s): %s; it stays "
                    "undelivered and is posted again on the next alert or flush", self.webhook,
                    notice.alert.id, notice.alert.kind, notice.event, result.attempts, result.problem)
        return False

    def _open_row(self, digest: str) -> AlertRow | None:
        with self._engine.connect() as conn:
            row = conn.execute(_open_query(digest)).mappings().first()
        return _row(row) if row is not None else None


def known_secrets(settings: Settings) -> list[str]:
    """Every secret value ``settings`` can resolve in this process, for ``Scrubber``."""
    getters = [settings.config.secret, *(shop.session_key for shop in settings.config.shops)]
    values: list[str] = []
    for getter in getters:
        try:
            values.append(getter().get_secret_value())
        except ConfigError:  # not set in this process: there is nothing to leak
            continue
    if settings.alert_webhook_url is not None:
        url = settings.alert_webhook_url.get_secret_value()
        values.append(url)
        values += [value for _, value in parse_qsl(urlsplit(url).query)]  # the token alone
    password = sa.make_url(settings.warehouse_url).password
    if password:
        values.append(str(password))
    return values


def _check(kind: str, key: str) -> None:
    if kind not in ALERT_KINDS:
        raise ValueError(f"unknown alert kind {kind!r}; use one of {', '.join(ALERT_KINDS)}")
    if not key or len(key) > MAX_KEY_CHARS:
        raise ValueError(f"alert key must be 1 to {MAX_KEY_CHARS} characters, got {len(key)} for kind {kind}")


def _open_query(digest: str) -> sa.Select[Any]:
    return sa.select(alerts_table).where(alerts_table.c.open_key == digest)


def _row(row: Any) -> AlertRow:
    return AlertRow(id=int(row["id"]), kind=row["kind"], shop_id=row["shop_id"], key=row["key"],
                    opened_at=row["opened_at"], resolved_at=row["resolved_at"], message=row["message"],
                    delivered=bool(row["delivered"]))
