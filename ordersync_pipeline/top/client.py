"""The TOP REST client: sign, POST, parse, classify, retry, respect the shared rate budget.

One ``requests.Session`` per client (connection pooling; ``trust_env=False`` so a stray proxy or
``.netrc`` in the environment never sees a session key). Every parameter goes in the form body, so
no URL (and thus no log line or exception about a URL) carries a credential.

Secrets: the app secret and session keys are used only to build the form and are never logged,
put in an exception or shown by ``repr``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import LocationValueError

from ordersync_pipeline.timeutil import parse_top_time
from ordersync_pipeline.timeutil import now as utc_now
from ordersync_pipeline.top.envelope import loads, parse_body
from ordersync_pipeline.top.errors import (
    GatewayURLError,
    MalformedResponseError,
    RateLimitedError,
    TopError,
    TransportError,
)
from ordersync_pipeline.top.ratelimit import RateBudget, method_key
from ordersync_pipeline.top.recorder import CallRecord, CallRecorder, NullRecorder
from ordersync_pipeline.top.request import build_request
from ordersync_pipeline.top.retry import RetryPolicy, apply_jitter, decide
from ordersync_pipeline.top.signing import SIGN_METHODS, SignMethod

__all__ = ["TopClient", "TopResponse", "PRODUCTION_GATEWAY", "check_gateway_url"]

log = logging.getLogger("ordersync.top")

PRODUCTION_GATEWAY = "https://gw.api.taobao.com/router/rest"
USER_AGENT = "ordersync-top-client/0.1"


def check_gateway_url(url: str) -> str:
    """``url`` when it is an absolute http(s) URL with a host, else a ``ValueError`` naming it.

    Checked up front because the HTTP library's refusal of a URL is permanent: no retry can fix
    ``gw.api.taobao.com/router/rest`` (no scheme). A gateway URL carries no credential.
    """
    problem = None
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a port that is not a number in 0..65535
    except ValueError as exc:
        problem = str(exc)
    else:
        if parts.scheme not in ("http", "https"):
            problem = "no http:// or https:// scheme" if not parts.scheme else f"scheme {parts.scheme!r}"
        elif not parts.hostname:
            problem = "no host"
        else:
            try:  # what requests itself refuses (a space in the host, an empty label, ...)
                requests.PreparedRequest().prepare_url(url, None)
            except (requests.RequestException, ValueError) as exc:
                problem = _first_line(exc)
    if problem is not None:
        raise ValueError(f"gateway must be an absolute http(s) URL with a host, such as {PRODUCTION_GATEWAY}; "
                         f"got {url!r} ({problem})")
    return url


@dataclass(frozen=True)
class TopResponse:
    method: str
    data: dict[str, Any]          # inner object of `<api>_response` (or the root with simplify=true)
    body: bytes = field(repr=False)  # exactly as received
    request_id: str | None
    latency_s: float


class TopClient:
    """A signed, retrying, rate-budgeted TOP caller. Thread-safe for concurrent ``call``s."""

    def __init__(self, *, gateway: str = PRODUCTION_GATEWAY, app_key: str, app_secret: str,
                 sign_method: str = "hmac-sha256", timeout: float | tuple[float, float] = 30.0,
                 retry: RetryPolicy | None = None, rate_budget: RateBudget | None = None,
                 recorder: CallRecorder | None = None, simplify: bool = False,
                 partner_id: str | None = None, pool_size: int = 16,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        if sign_method not in SIGN_METHODS:
            raise ValueError(f"sign_method must be one of {', '.join(SIGN_METHODS)}")
        self.gateway = check_gateway_url(gateway)
        self.app_key = app_key
        self.__secret = app_secret
        self.sign_method: SignMethod = sign_method  # type: ignore[assignment]
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.rate_budget = rate_budget
        self.recorder: CallRecorder = recorder or NullRecorder()
        self.simplify = simplify
        self.partner_id = partner_id
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._http = requests.Session()
        self._http.trust_env = False
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self._http.mount("http://", adapter)
        self._http.mount("https://", adapter)
        self._http.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "gzip"})

    def __repr__(self) -> str:
        return (f"TopClient(gateway={self.gateway!r}, app_key={self.app_key!r}, "
                f"sign_method={self.sign_method!r})")

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def __enter__(self) -> TopClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calling ---------------------------------------------------------------------------------

    def call(self, method: str, params: Mapping[str, Any], *, session: str | None = None,
             shop_id: str | None = None) -> TopResponse:
        """Call ``method`` with business ``params`` (``session``: the seller's key; None for app-level
        APIs). Retries per the policy; raises a ``TopError`` subclass when it gives up."""
        attempt = 0
        while True:
            attempt += 1
            self._wait_for_budget(method, shop_id)
            try:
                return self._attempt(method, params, session=session, shop_id=shop_id, attempt=attempt)
            except TopError as err:
                err.attempts = attempt
                if isinstance(err, RateLimitedError) and self.rate_budget is not None:
                    # Every process on this app key pauses, not just this one.
                    self.rate_budget.ban(self.app_key, float((err.ban_seconds or 0) + 1))
                decision = decide(err, attempt, self.retry)
                log.warning("TOP %s attempt %d failed: %s%s", method, attempt, err,
                            f"; retrying in {decision.delay_s:.1f}s" if decision.retry else "")
                if not decision.retry:
                    raise
                self._sleep(apply_jitter(decision.delay_s, self._rng, fraction=self.retry.jitter_fraction))

    def _wait_for_budget(self, method: str, shop_id: str | None) -> None:
        if self.rate_budget is None:
            return
        banned = self.rate_budget.ban_remaining(self.app_key)
        if banned > self.retry.ban_ceiling_s:
            # Waiting hours inside a run helps nobody: fail now, the scheduler retries later.
            raise RateLimitedError(
                "App Call Limited (ban recorded by an earlier call)", method=method, code=7,
                sub_msg=f"This ban will last for {int(banned)} more seconds", shop_id=shop_id)
        self.rate_budget.acquire(self.app_key)
        self.rate_budget.acquire(method_key(self.app_key, method))

    def _attempt(self, method: str, params: Mapping[str, Any], *, session: str | None,
                 shop_id: str | None, attempt: int) -> TopResponse:
        started_at = utc_now()
        t0 = time.monotonic()
        body = b""
        try:
            form = build_request(method=method, params=params, app_key=self.app_key,
                                 secret=self.__secret, sign_method=self.sign_method,
                                 timestamp=started_at, session=session, simplify=self.simplify,
                                 partner_id=self.partner_id)
            body = self._post(method, form, shop_id)
            data = parse_body(body, method, simplify=self.simplify, shop_id=shop_id)
        except TopError as err:
            self._record(started_at, method, shop_id, attempt, time.monotonic() - t0, err,
                         _request_id_of(body))
            raise
        latency = time.monotonic() - t0
        request_id = data.get("request_id")
        request_id = str(request_id) if request_id is not None else None
        self._record(started_at, method, shop_id, attempt, latency, None, request_id)
        return TopResponse(method=method, data=data, body=body, request_id=request_id, latency_s=latency)

    def _post(self, method: str, form: dict[str, str], shop_id: str | None) -> bytes:
        try:
            resp = self._http.post(self.gateway, data=form, timeout=self.timeout)
            body = resp.content
        except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
                requests.exceptions.InvalidURL, LocationValueError) as exc:
            # The URL itself is refused before anything is sent: permanent, unlike a transport failure.
            raise GatewayURLError(f"gateway URL {self.gateway!r} cannot be requested: {_first_line(exc)}; "
                                  "fix `gateway` in the configuration", method=method, shop_id=shop_id) from None
        except requests.RequestException as exc:
            # The exception text names only the gateway URL (no credentials are in it); keep the
            # class name, which says whether it was a timeout or a refused connection.
            raise TransportError(f"{type(exc).__name__} calling {self.gateway}: {_first_line(exc)}",
                                 method=method, shop_id=shop_id) from None
        if resp.status_code != 200:
            if resp.status_code < 500 and b"error_response" in body:
                return body  # a TOP error envelope behind a 4xx still says what went wrong
            raise TransportError(f"HTTP {resp.status_code} from {self.gateway}", method=method,
                                 status=resp.status_code, shop_id=shop_id)
        return body

    def _record(self, started_at: datetime, method: str, shop_id: str | None, attempt: int,
                latency: float, err: TopError | None, request_id: str | None) -> None:
        record = CallRecord(
            started_at=started_at, method=method, shop_id=shop_id,
            outcome="ok" if err is None else "error",
            code=None if err is None else err.code, sub_code=None if err is None else err.sub_code,
            latency_s=latency, request_id=err.request_id if err is not None and err.request_id
            else request_id, attempt=attempt, error_kind=None if err is None else type(err).__name__)
        try:
            self.recorder.record(record)
        except Exception:  # a broken ledger must not fail the sync
            log.exception("call recorder failed")

    # -- helpers ---------------------------------------------------------------------------------

    def time_get(self) -> datetime:
        """The platform's clock (``taobao.time.get``; needs no session) as an aware datetime."""
        resp = self.call("taobao.time.get", {})
        text = resp.data.get("time")
        if not isinstance(text, str):
            raise MalformedResponseError("time_get_response has no time", method="taobao.time.get")
        return parse_top_time(text)

    def refresh_session(self, refresh_token: str) -> dict[str, Any]:
        """Refresh a seller's session with ``taobao.top.auth.token.refresh``.

        Only apps sold through the service market (服务市场订购类) may refresh; for other app types the
        platform issues fixed-length tokens and the seller must re-authorise. Returns the parsed
        ``token_result`` (``access_token`` is the new session key, plus ``refresh_token``,
        ``expires_in``, ...). The result holds secrets: do not log it.
        """
        method = "taobao.top.auth.token.refresh"
        resp = self.call(method, {"refresh_token": refresh_token})
        raw = resp.data.get("token_result")
        try:
            token = loads(raw.encode("utf-8")) if isinstance(raw, str) else raw
        except ValueError:
            token = None
        if not isinstance(token, dict):
            raise MalformedResponseError("token_result is not a JSON object", method=method,
                                         request_id=resp.request_id)
        return token


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


def _request_id_of(body: bytes) -> str | None:
    """Best-effort request_id from an error body, for the ledger."""
    if not body:
        return None
    try:
        doc = loads(body)
    except ValueError:
        return None
    if isinstance(doc, dict):
        for inner in doc.values():
            if isinstance(inner, dict) and inner.get("request_id") is not None:
                return str(inner["request_id"])
    return None
