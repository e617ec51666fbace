"""A loopback DNS "black hole": reads UDP datagrams and TCP queries and never answers.

Resolvers pointed at it end in ``dns.resolver.LifetimeTimeout``. One daemon thread serves a
UDP socket and a TCP listener on the same 127.0.0.1 port; ``stop()`` closes everything and
joins the thread (bounded).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from types import TracebackType

import dns.asyncresolver
import dns.resolver

from tests.dnslab.server import LOOPBACK_V4, make_async_resolver, make_sync_resolver


class BlackHole:
    def __init__(self, host: str = LOOPBACK_V4) -> None:
        self.host = host
        self.port = 0
        self.udp_datagrams = 0
        self.tcp_connections = 0
        self.tcp_bytes = 0
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def resolver(self, lifetime: float = 0.5) -> dns.asyncresolver.Resolver:
        return make_async_resolver(self.host, self.port, lifetime)

    def sync_resolver(self, lifetime: float = 0.5) -> dns.resolver.Resolver:
        return make_sync_resolver(self.host, self.port, lifetime)

    def start(self) -> BlackHole:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(50):
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.bind((self.host, 0))
            port = int(tcp.getsockname()[1])
            udp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                udp.bind((self.host, port))
            except OSError:
                tcp.close()
                udp.close()
                continue
            tcp.listen(16)
            self._tcp, self._udp, self.port = tcp, udp, port
            break
        else:
            raise RuntimeError(f"no free UDP+TCP port on {self.host}")
        self._thread = threading.Thread(target=self._serve, name="dns-blackhole", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None
        sel = selectors.DefaultSelector()
        sel.register(self._udp, selectors.EVENT_READ, "udp")
        sel.register(self._tcp, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        clients: list[socket.socket] = []
        try:
            while not self._stopping.is_set():
                for key, _ in sel.select(timeout=1.0):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if key.data == "wake":
                        return
                    if key.data == "udp":
                        with contextlib.suppress(OSError):
                            sock.recvfrom(65535)
                            self.udp_datagrams += 1
                    elif key.data == "listen":
                        with contextlib.suppress(OSError):
                            conn, _addr = sock.accept()
                            conn.setblocking(False)
                            clients.append(conn)
                            sel.register(conn, selectors.EVENT_READ, "client")
                            self.tcp_connections += 1
                    else:  # a client: read and discard; keep it open until it hangs up
                        data = b""
                        with contextlib.suppress(OSError):
                            data = sock.recv(65535)
                        self.tcp_bytes += len(data)
                        if not data:
                            sel.unregister(sock)
                            clients.remove(sock)
                            sock.close()
        finally:
            for conn in clients:
                conn.close()
            sel.close()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = None

    def __enter__(self) -> BlackHole:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
