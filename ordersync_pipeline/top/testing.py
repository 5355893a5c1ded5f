"""A canned TOP gateway on real loopback HTTP, for tests of code that uses ``TopClient``.

Not a simulator (that is ``ordersync_pipeline.simulator``): each request's merged query + form
parameters go to a handler that returns ``(status, body)``. Requests are kept in ``requests`` so a
test can assert what was sent (signature included) without mocking the transport.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["CannedGateway", "Handler", "replay"]

Handler = Callable[[dict[str, str]], tuple[int, bytes]]


class CannedGateway:
    """``with CannedGateway(handler) as gw:`` serves ``gw.url`` until the block ends."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: with Nagle on, each reply waited ~40 ms for an ACK.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8")
                params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
                params.update(parse_qsl(raw, keep_blank_values=True))
                with outer._lock:
                    outer.requests.append(params)
                status, body = outer.handler(params)
                self.send_response(status)
                self.send_header("Content-Type", "text/javascript;charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    # The client gave up first (a timeout test does this on purpose).
                    self.close_connection = True

            do_GET = do_POST  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/router/rest"

    def __enter__(self) -> CannedGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def replay(responses: Iterable[tuple[int, bytes]]) -> Handler:
    """A handler answering each request with the next canned response (the last one repeats)."""
    items = list(responses)
    lock = threading.Lock()
    state = {"i": 0}

    def handler(params: dict[str, str]) -> tuple[int, bytes]:
        with lock:
            i = min(state["i"], len(items) - 1)
            state["i"] += 1
        return items[i]

    return handler
