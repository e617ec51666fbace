"""A threaded HTTP(S) server on 127.0.0.1 that hands each request to a plain function.

Real clients (requests under msal, httpx under kiota) talk to it over real sockets, so header
casing, keep-alive, TLS verification and URL encoding are exercised as in production.
"""

from __future__ import annotations

import json
import ssl
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socket import socket
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Request:
    """One parsed request. ``headers`` is case-insensitive (an email.message.Message)."""

    method: str
    target: str  # raw request target: path?query, still percent-encoded
    headers: Message
    body: bytes

    @property
    def raw_path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> list[tuple[str, str]]:
        """Decoded query pairs, '+' read as space as Graph and Entra do."""
        return parse_qsl(urlsplit(self.target).query, keep_blank_values=True)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None,
             content_type: str = "application/json; charset=utf-8") -> Response:
        return cls(status, json.dumps(payload).encode(),
                   {"Content-Type": content_type, **(headers or {})})


App = Callable[[Request], Response]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services
    timeout = 15  # idle keep-alive connections give their thread back
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(self.command, self.path, self.headers, body)
        try:
            response = self.server.app(request)
        except Exception:  # a bug in the fake: answer 500 and keep it for the test to see
            self.server.errors.append(traceback.format_exc())
            response = Response.json(500, {"error": {"code": "FakeServerError",
                                                     "message": "fake raised; see .errors"}})
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: App, ssl_context: ssl.SSLContext | None, errors: list[str]) -> None:
        self.app = app
        self.ssl_context = ssl_context
        self.errors = errors
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the per-connection thread, not in the accept loop.
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        try:
            tls: socket = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            self.shutdown_request(tls)


class LoopbackServer:
    """Runs ``app`` on 127.0.0.1:<free port> in a thread; ``with`` starts and stops it."""

    def __init__(self, app: App, ssl_context: ssl.SSLContext | None = None) -> None:
        self._app = app
        self._ssl_context = ssl_context
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []  # tracebacks of app exceptions (each answered with a 500)

    @property
    def scheme(self) -> str:
        return "https" if self._ssl_context is not None else "http"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self._server is not None:
            return
        self._server = _Server(self._app, self._ssl_context, self.errors)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"fake-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


class Served:
    """Start, stop and `with` for a fake whose HTTP side is `self._server`."""

    _server: LoopbackServer

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def errors(self) -> list[str]:
        """Tracebacks of bugs in the fake itself (each answered 500)."""
        return self._server.errors
