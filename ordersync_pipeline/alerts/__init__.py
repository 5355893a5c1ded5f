"""STAND-IN for the alert path (branch feat/alerts builds the real one; the lead keeps theirs at merge).

Exactly the interface the reconciliation and the breaker call:

    alerts = Alerts.from_settings(settings, warehouse)
    alerts.open(kind, *, shop_id, key, message) -> bool     # True when newly opened
    alerts.resolve(kind, *, shop_id, key) -> bool           # True when it was open
    alerts.open_alerts(kind=None) -> list[AlertRow]

This stand-in only logs (``ordersync.alerts``) and deduplicates in this process's memory, per
warehouse: no ``alerts`` table, no webhook.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ordersync_pipeline.timeutil import now as utc_now

__all__ = ["Alerts", "AlertKind", "AlertRow"]

log = logging.getLogger("ordersync.alerts")

AlertKind = Literal["failure_rate", "reconciliation_gap", "run_failed", "logistics_stall", "quarantine"]


@dataclass(frozen=True)
class AlertRow:
    kind: str
    shop_id: str | None
    key: str
    opened_at: datetime
    message: str


_OPEN: dict[str, dict[tuple[str, str | None, str], AlertRow]] = {}
_LOCK = threading.Lock()


class Alerts:
    """Open and resolve deduplicated alerts (stand-in: a log line each, state in memory)."""

    def __init__(self, scope: str) -> None:
        self._scope = scope

    @classmethod
    def from_settings(cls, settings: Any, warehouse: Any) -> Alerts:
        return cls(str(getattr(warehouse, "engine", warehouse).url.render_as_string(hide_password=True)))

    def open(self, kind: AlertKind, *, shop_id: str | None, key: str, message: str) -> bool:
        with _LOCK:
            alerts = _OPEN.setdefault(self._scope, {})
            if (kind, shop_id, key) in alerts:
                return False
            alerts[(kind, shop_id, key)] = AlertRow(kind, shop_id, key, utc_now(), message)
        log.warning("ALERT %s shop=%s key=%s: %s", kind, shop_id, key, message)
        return True

    def resolve(self, kind: AlertKind, *, shop_id: str | None, key: str) -> bool:
        with _LOCK:
            row = _OPEN.get(self._scope, {}).pop((kind, shop_id, key), None)
        if row is None:
            return False
        log.info("RESOLVED %s shop=%s key=%s", kind, shop_id, key)
        return True

    def open_alerts(self, kind: AlertKind | None = None) -> list[AlertRow]:
        with _LOCK:
            rows = list(_OPEN.get(self._scope, {}).values())
        return [row for row in rows if kind is None or row.kind == kind]
