"""Posting an alert to a chat or HTTP receiver: the payload shapes, and delivery with bounded retries.

Payload shapes (each platform's public incoming-webhook format; ``render`` builds them):

* ``dingtalk``  DingTalk custom robot: ``{"msgtype": "markdown", "markdown": {"title", "text"}}``; it
  answers HTTP 200 with ``{"errcode": 0, "errmsg": "ok"}``, and a refusal (keyword missing, too fast)
  also comes with HTTP 200 and a non-zero ``errcode``. Every message contains "ordersync", so a robot
  secured by the keyword "ordersync" accepts them.
* ``wecom``     WeCom (企业微信) group robot: ``{"msgtype": "markdown", "markdown": {"content"}}``, answered
  like DingTalk with ``errcode``. Content may hold at most 4096 bytes: a message (500 characters at most,
  see core.py) and a key (255) in four-byte characters stay within it.
* ``slack``     Slack incoming webhook: ``{"text"}`` in Slack's mrkdwn (``&``, ``<``, ``>`` escaped).
* ``json``      ordersync's own object: ``source``, ``event`` ("opened" | "resolved") and the alert's
  fields, for any receiver of your own.

The webhook URL is a credential (it carries the robot's token): it never appears in a repr, a log line
or a delivery problem; transport errors are named by their class only, because the HTTP library's own
text quotes the URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import requests
from pydantic import SecretStr

from ordersync_pipeline.config import WEBHOOK_FORMATS, WebhookFormat

if TYPE_CHECKING:
    from ordersync_pipeline.alerts.core import AlertRow

__all__ = ["Webhook", "Notice", "Delivery", "render", "judge_response", "backoff_delays", "WEBHOOK_FORMATS"]

Event = Literal["opened", "resolved"]
# errcodes that mean "too fast, try again later": DingTalk 130101 (send too fast), WeCom 45009 (API
# frequency limit). Any other non-zero errcode is a refusal that repeating cannot change.
RETRYABLE_ERRCODES = frozenset({130101, 45009})
WECOM_MAX_BYTES = 4096


@dataclass(frozen=True)
class Notice:
    """What is sent: an alert that opened or resolved."""

    event: Event
    alert: AlertRow

    @property
    def title(self) -> str:
        shop = f" shop {self.alert.shop_id}" if self.alert.shop_id else ""
        state = "RESOLVED" if self.event == "resolved" else "ALERT"
        return f"[ordersync {state}] {self.alert.kind}{shop}"

    def facts(self) -> list[tuple[str, str]]:
        alert = self.alert
        rows = [("kind", alert.kind), ("shop", alert.shop_id or "-"), ("key", alert.key),
                ("opened", _iso(alert.opened_at))]
        if alert.resolved_at is not None:
            rows.append(("resolved", _iso(alert.resolved_at)))
        return rows


@dataclass(frozen=True)
class Delivery:
    """The outcome of sending one notice: ``ok``, how many HTTP attempts, and what went wrong last."""

    ok: bool
    attempts: int
    problem: str | None = None


def render(fmt: WebhookFormat, notice: Notice) -> dict[str, Any]:
    """The JSON body for ``fmt``."""
    alert = notice.alert
    if fmt == "dingtalk":
        lines = [f"#### {notice.title}", "", alert.message, ""]
        lines += [f"- {name}: {value}" for name, value in notice.facts()]
        return {"msgtype": "markdown", "markdown": {"title": notice.title, "text": "\n".join(lines)}}
    if fmt == "wecom":
        facts = "\n".join(f"> {name}: {value}" for name, value in notice.facts())
        content = f"**{notice.title}**\n{alert.message}\n{facts}"
        return {"msgtype": "markdown", "markdown": {"content": content}}
    if fmt == "slack":
        facts = "\n".join(f"• {name}: {_slack_escape(value)}" for name, value in notice.facts())
        return {"text": f"*{_slack_escape(notice.title)}*\n{_slack_escape(alert.message)}\n{facts}"}
    if fmt == "json":
        return {"source": "ordersync", "event": notice.event, "id": alert.id, "kind": alert.kind,
                "shop_id": alert.shop_id, "key": alert.key, "message": alert.message,
                "opened_at": _iso(alert.opened_at),
                "resolved_at": _iso(alert.resolved_at) if alert.resolved_at else None}
    raise ValueError(f"unknown webhook format {fmt!r}; use one of {', '.join(WEBHOOK_FORMATS)}")


def judge_response(fmt: WebhookFormat, status: int, body: bytes) -> tuple[str | None, bool]:
    """``(problem, retryable)`` for a receiver's answer; ``(None, False)`` when it took the notice."""
    if status == 429 or status == 408 or status >= 500:
        return f"HTTP {status}", True
    if status >= 300:
        return f"HTTP {status}", False
    if fmt in ("dingtalk", "wecom"):
        try:
            answer = json.loads(body)
        except ValueError:
            return f"HTTP {status} with a body that is not JSON", True
        errcode = answer.get("errcode") if isinstance(answer, Mapping) else None
        if errcode == 0:
            return None, False
        errmsg = str(answer.get("errmsg", ""))[:200] if isinstance(answer, Mapping) else ""
        return f"errcode={errcode} errmsg={errmsg!r}", errcode in RETRYABLE_ERRCODES
    return None, False


def backoff_delays(attempts: int, base_seconds: float) -> list[float]:
    """Waits between ``attempts`` tries: base, 2 x base, 4 x base, ..."""
    return [base_seconds * 2 ** i for i in range(max(attempts - 1, 0))]


class Webhook:
    """An HTTP receiver for alerts: POSTs a notice, retrying transport errors, 5xx and rate limits."""

    def __init__(self, url: str | SecretStr, *, format: WebhookFormat = "json", attempts: int = 3,
                 backoff_seconds: float = 0.5, timeout_seconds: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """``attempts`` bounds the tries per notice (the waits double from ``backoff_seconds``), and
        ``timeout_seconds`` each try, so a receiver that hangs costs the caller seconds, not minutes."""
        if format not in WEBHOOK_FORMATS:
            raise ValueError(f"unknown webhook format {format!r}; use one of {', '.join(WEBHOOK_FORMATS)}")
        self._url = url if isinstance(url, SecretStr) else SecretStr(url)
        self.format: WebhookFormat = format
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self._sleep = sleep
        self._session = requests.Session()

    @property
    def host(self) -> str:
        """Where notices go, without the path and query that hold the token."""
        return urlsplit(self._url.get_secret_value()).netloc.rpartition("@")[2]

    def __repr__(self) -> str:
        return f"Webhook(format={self.format!r}, host={self.host!r})"

    def send(self, notice: Notice) -> Delivery:
        """Post ``notice``; never raises for a receiver that is down or refuses."""
        body = json.dumps(render(self.format, notice), ensure_ascii=False).encode("utf-8")
        delays = backoff_delays(self.attempts, self.backoff_seconds)
        problem: str | None = None
        for attempt in range(1, self.attempts + 1):
            problem, retryable = self._post(body)
            if problem is None:
                return Delivery(ok=True, attempts=attempt)
            if not retryable or attempt == self.attempts:
                return Delivery(ok=False, attempts=attempt, problem=problem)
            self._sleep(delays[attempt - 1])
        return Delivery(ok=False, attempts=self.attempts, problem=problem)

    def _post(self, body: bytes) -> tuple[str | None, bool]:
        try:
            response = self._session.post(
                self._url.get_secret_value(), data=body, timeout=self.timeout_seconds,
                headers={"Content-Type": "application/json; charset=utf-8"})
        except requests.RequestException as exc:
            # requests' message quotes the URL (the token): the class name says enough.
            return type(exc).__name__, True
        return judge_response(self.format, response.status_code, response.content)

    def close(self) -> None:
        self._session.close()


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
