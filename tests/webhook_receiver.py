"""A real HTTP receiver on loopback for the alert tests: records every POST and answers from a script."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """``answers``: (status, body) per request in turn; the last one repeats."""

    url: str
    answers: list[tuple[int, bytes]]
    requests: list[Received] = field(default_factory=list)

    def bodies(self) -> list[Any]:
        return [r.json() for r in self.requests]


@contextmanager
def receiver(answers: list[tuple[int, bytes]] | None = None,
             path: str = "/robot/send?access_token=tok-SECRET-123456") -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 at a free port, answering ``answers`` (default: 200 ``{"errcode":0}``)."""
    state = Receiver(url="", answers=list(answers or [(200, b'{"errcode":0,"errmsg":"ok"}')]))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.requests.append(Received(self.path, dict(self.headers), body))
                index = min(len(state.requests) - 1, len(state.answers) - 1)
                status, answer = state.answers[index]
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def refused_url() -> str:
    """A loopback URL where nothing listens (connection refused): a port bound, then released."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/hook?key=down-SECRET-999999"
