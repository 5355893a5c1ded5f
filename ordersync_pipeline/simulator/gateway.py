"""The TOP gateway over HTTP: /router/rest with TOP's platform rules, /admin/* for ground truth.

Validation order follows top-api.md section 8: method (21/22), app_key (28/29), timestamp (30/31),
version, format (23), sign (24/25), session (26/27), rate limit (7), a failing API's window or an
injected fault (15 + isp.*), then the API's own argument rules (40/41) and business errors (15 + isv.*).
Errors are HTTP 200 with an ``error_response`` body, as every SDK expects.

``format=xml`` (TOP's default when ``format`` is omitted) gets a minimal XML rendering of the same
envelope; JSON is the primary contract. The request ``timestamp`` is checked against the host clock,
not the world clock, because clients sign with their own wall time even when a test runs the world
on a stepped or accelerated clock.
"""

from __future__ import annotations

import socket
import sys
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ordersync_pipeline.simulator import envelope as env
from ordersync_pipeline.simulator.apis import Apis, Call, TopError
from ordersync_pipeline.simulator.faults import ApiFailures, FaultInjector, RateLimiter, malform, truncate
from ordersync_pipeline.timeutil import GMT8, TOP_TIME_FORMAT
from ordersync_pipeline.top.signing import verify

if TYPE_CHECKING:
    from ordersync_pipeline.simulator.server import Simulator

MAX_SKEW_S = 600
JSON_TYPE = "application/json;charset=UTF-8"
XML_TYPE = "text/xml;charset=UTF-8"


def parse_timestamp(raw: str) -> float | None:
    """TOP accepts GMT+8 ``yyyy-MM-dd HH:mm:ss`` and epoch milliseconds (the official Python SDK)."""
    raw = raw.strip()
    if raw.isdigit():
        return int(raw) / 1000.0
    try:
        return datetime.strptime(raw, TOP_TIME_FORMAT).replace(tzinfo=GMT8).timestamp()
    except ValueError:
        return None


class Gateway:
    def __init__(self, sim: Simulator, apis: Apis) -> None:
        self.sim = sim
        self.apis = apis
        s = sim.settings
        self.faults = FaultInjector(s.fault_rate, s.seed)
        self.failures = ApiFailures(s.api_failures, s.seed)
        self.limiter = RateLimiter(s.rate_limit_per_min)
        self.calls = 0

    def handle(self, params: dict[str, str]) -> tuple[int, str, bytes, float]:
        """(http status, content type, body, seconds to sleep before answering)."""
        self.calls += 1
        rid = env.request_id()
        xml = params.get("format", "xml") == "xml"
        try:
            body, delay, status = self._call(params, rid)
        except TopError as err:
            body, delay, status = env.error(err.code, err.msg, rid, err.sub_code, err.sub_msg), 0.0, 200
        if xml and status == 200 and body[:1] == b"{":
            return status, XML_TYPE, env.to_xml(body), delay
        return status, JSON_TYPE, body, delay

    def _call(self, params: dict[str, str], rid: str) -> tuple[bytes, float, int]:
        method = params.get("method", "")
        if not method:
            raise TopError(21, "Missing method")
        entry = self.apis.table.get(method)
        if entry is None:
            raise TopError(22, "Invalid method")
        handler, needs_session = entry
        self._check_platform(params)
        shop = None
        if needs_session:
            session = params.get("session") or params.get("access_token") or ""
            if not session:
                raise TopError(26, "Missing session")
            shop = self.sim.world.by_session.get(session)
            if shop is None or not shop.valid_session:
                raise TopError(27, "Invalid session", "invalid-sessionkey",
                               "非法或过期的SessionKey参数，请使用有效的SessionKey参数")
        ban = self.limiter.check(params["app_key"])
        if ban:
            raise TopError(7, "App Call Limited", "accesscontrol.limited-by-app-access-count",
                           f"This ban will last for {ban} more seconds")
        now = self.sim.clock.now_ts()
        # A failing API's window (world time) first; the background fault rate otherwise.
        fault = (self.failures.draw(method, shop.shop.shop_id if shop is not None else None, now)
                 or self.faults.draw())
        if fault is not None and fault.kind == "isp":
            raise TopError(15, "Remote service error", fault.sub_code, fault.sub_msg)
        self.sim.world.ensure_horizon(now)
        call = Call(method, params, shop, now, rid, params.get("simplify", "").lower() == "true")
        body = handler(call)
        if fault is None:
            return body, self.sim.settings.reply_delay_s, 200
        if fault.kind == "slow":
            return body, self.sim.settings.fault_slow_s, 200
        if fault.kind == "timeout":
            return body, self.sim.settings.fault_timeout_s, 200
        if fault.kind == "truncated":
            return truncate(body), 0.0, 200
        if fault.kind == "http502":
            return b"<html><body>502 Bad Gateway</body></html>", 0.0, 502
        return malform(body), 0.0, 200

    def _check_platform(self, params: dict[str, str]) -> None:
        app_key = params.get("app_key", "")
        if not app_key:
            raise TopError(28, "Missing app key")
        if app_key != self.sim.app_key:
            raise TopError(29, "Invalid app key")
        raw_ts = params.get("timestamp", "")
        if not raw_ts:
            raise TopError(30, "Missing timestamp")
        ts = parse_timestamp(raw_ts)
        if ts is None or abs(ts - time.time()) > MAX_SKEW_S:
            raise TopError(31, "Invalid timestamp")
        if params.get("v", "2.0") != "2.0":
            raise TopError(33, "Invalid version")
        if params.get("format", "xml") not in ("json", "xml"):
            raise TopError(23, "Invalid format")
        if not params.get("sign"):
            raise TopError(24, "Missing signature")
        if not verify(params, self.sim.app_secret):
            raise TopError(25, "Invalid signature")


_unquoted: dict[str, str] = {}


def _unquote_plus(text: str) -> str:
    """``unquote_plus``, memoised for long values: a sweep repeats the same percent-encoded
    ``fields`` and ``type`` lists (~1 KB) with every page, and decoding them was ~4% of a cold page."""
    if "%" not in text and "+" not in text:
        return text
    if len(text) < 64:
        return unquote(text.replace("+", " "))
    out = _unquoted.get(text)
    if out is None:
        if len(_unquoted) > 1024:
            _unquoted.clear()
        out = _unquoted[text] = unquote(text.replace("+", " "))
    return out


def parse_form(qs: str) -> dict[str, str]:
    """``dict(parse_qsl(qs, keep_blank_values=True))`` (same rules: ``&`` only, a pair without ``=``
    is a blank value, the last duplicate wins)."""
    out: dict[str, str] = {}
    for pair in qs.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        out[_unquote_plus(name)] = _unquote_plus(value)
    return out


def send_all(sock: socket.socket, head: bytes, body: bytes) -> None:
    """Headers and body in one ``sendmsg`` (one segment for small replies, Nagle never waits) without
    copying the body behind the headers: a list page is ~170 KB, and a page-sized temporary costs
    ~50 us of fresh pages here."""
    sent = sock.sendmsg((head, body))
    if sent < len(head):
        sock.sendall(head[sent:])
        sent = len(head)
    if sent - len(head) < len(body):
        sock.sendall(memoryview(body)[sent - len(head):])


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive; one write per response (headers + body) so Nagle never delays a reply."""

    protocol_version = "HTTP/1.1"
    server_version = "ordersync-sim"
    sys_version = ""
    sim: Simulator  # set on the subclass made per server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        return  # access logs would dominate the profile and may contain session keys

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def _other(self) -> None:
        path = self.path.partition("?")[0]
        self._read_body()
        if path == "/router/rest":
            body = env.error(9, "Http Action Not Allowed", env.request_id())
            self._send(200, JSON_TYPE, body)
        else:
            self._send(405, "text/plain", b"method not allowed")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other  # noqa: N815

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        raw = self._read_body()
        params = parse_form(query)
        ctype = self.headers.get("Content-Type", "")
        if raw and "multipart/form-data" not in ctype:
            params.update(parse_form(raw.decode("utf-8", "replace")))
        if path == "/router/rest":
            status, content_type, body, delay = self.sim.gateway.handle(params)
            if delay:
                time.sleep(delay)
            self._send(status, content_type, body)
        elif path.startswith("/admin/"):
            status, body = self.sim.admin.handle(self.command, path, params)
            self._send(status, JSON_TYPE, body)
        else:
            self._send(404, "text/plain", b"not found: use /router/rest or /admin/*")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        reason = self.responses.get(status, ("",))[0]
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nServer: ordersync-sim\r\n")
        if self.close_connection:
            head += "Connection: close\r\n"
        try:
            send_all(self.connection, (head + "\r\n").encode("latin-1"), body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its timeout fired)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-reply (its timeout fired, a fault was injected) is routine
        here; socketserver would print a traceback to stderr for each one."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)
