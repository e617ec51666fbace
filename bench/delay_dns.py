"""A loopback DNS proxy that adds a fixed delay to every answer (UDP and TCP), for benchmarks.

Each query is forwarded to an upstream server on loopback (the bench's knot) and its answer is
sent back `delay` seconds after it arrived, on its own timer: queries are delayed independently,
so a client with 64 queries in flight waits ~20 ms for all of them, not 64 x 20 ms. This models
a recursive resolver that is 20 ms away without touching the network.

Only loopback addresses are accepted, for listening and upstream. Run as a program it prints one
JSON line `{"port": N}` on stdout once it listens; then each `stats` line on stdin is answered
with a JSON line of counters, and `quit` or EOF on stdin (the parent went away) stops it, as
does `--max-seconds`:

    .venv/bin/python bench/delay_dns.py --upstream 127.0.0.1:5300 --delay-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import socket
import struct
import sys
import time

_ID = struct.Struct("!H")
_LEN = struct.Struct("!H")


def _loopback(host: str) -> str:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address: the delay proxy only uses loopback")
    return host


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return _loopback(host.strip("[]")), int(port)


class DelayProxy:
    """UDP + TCP on `host:port` (0 = a free port, the same for both), answers delayed."""

    def __init__(self, upstream: tuple[str, int], delay: float, *, host: str = "127.0.0.1",
                 port: int = 0, upstream_timeout: float = 5.0, max_tcp_clients: int = 256,
                 lifetime: float = 3600.0) -> None:
        self.upstream = (_loopback(upstream[0]), upstream[1])
        self.delay = delay
        self.host = _loopback(host)
        self.port = port
        self.upstream_timeout = upstream_timeout
        self.lifetime = lifetime  # bounds the housekeeping loop; `serve` stops the proxy by then
        self.stats = {"udp_queries": 0, "udp_answers": 0, "tcp_queries": 0, "tcp_answers": 0,
                      "dropped": 0, "upstream_timeouts": 0}
        self._tcp_slots = asyncio.Semaphore(max_tcp_clients)
        self._pending: dict[int, tuple[bytes, tuple[str, int], float]] = {}
        self._next_id = 0
        self._client: asyncio.DatagramTransport | None = None
        self._up: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> DelayProxy:
        loop = asyncio.get_running_loop()
        for _attempt in range(20):  # UDP first on a kernel-chosen port, then TCP on the same one
            udp = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                                socket.SOCK_DGRAM)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            udp.bind((self.host, self.port))
            port = udp.getsockname()[1]
            try:
                self._server = await asyncio.start_server(self._tcp_client, self.host, port,
                                                          backlog=512)
            except OSError:
                udp.close()
                if self.port:
                    raise
                continue
            self.port = port
            self._client, _ = await loop.create_datagram_endpoint(
                lambda: _ClientSide(self), sock=udp)
            self._up, _ = await loop.create_datagram_endpoint(
                lambda: _UpstreamSide(self), remote_addr=self.upstream)
            self._spawn(self._sweep())
            return self
        raise OSError(f"no free port on {self.host} for both UDP and TCP")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for timer in list(self._timers):
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for transport in (self._client, self._up):
            if transport is not None:
                transport.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _later(self, callback: object, *args: object) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            callback(*args)  # type: ignore[operator]

        handle = asyncio.get_running_loop().call_later(self.delay, fire)
        self._timers.add(handle)

    # -- UDP: one shared upstream socket, query IDs rewritten so answers find their client -----

    def on_client_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or self._up is None:
            return
        self.stats["udp_queries"] += 1
        if len(self._pending) >= 60000:
            self.stats["dropped"] += 1
            return
        new_id = self._next_id
        for _ in range(0x10000):  # fewer than 60000 pending: a free ID is always found
            if new_id not in self._pending:
                break
            new_id = (new_id + 1) & 0xFFFF
        self._next_id = (new_id + 1) & 0xFFFF
        self._pending[new_id] = (data[:2], addr, time.monotonic())
        self._up.sendto(_ID.pack(new_id) + data[2:])

    def on_upstream_datagram(self, data: bytes) -> None:
        if len(data) < 12:
            return
        entry = self._pending.pop(_ID.unpack_from(data)[0], None)
        if entry is None:  # late answer to a query already given up
            return
        original_id, addr, _ = entry
        self._later(self._send_udp, original_id + data[2:], addr)

    def _send_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._client is not None and not self._client.is_closing():
            self._client.sendto(data, addr)
            self.stats["udp_answers"] += 1

    async def _sweep(self) -> None:
        for _ in range(int(self.lifetime / 0.5) + 1):
            await asyncio.sleep(0.5)
            limit = time.monotonic() - self.upstream_timeout
            stale = [key for key, (_, _, sent) in self._pending.items() if sent < limit]
            for key in stale:
                del self._pending[key]
            self.stats["upstream_timeouts"] += len(stale)

    # -- TCP: each query on its own upstream connection, answers written as they come ----------

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        if self._tcp_slots.locked():
            writer.close()
            self.stats["dropped"] += 1
            return
        async with self._tcp_slots:
            lock = asyncio.Lock()
            try:
                for _ in range(10_000):  # bounded per connection
                    header = await asyncio.wait_for(reader.readexactly(2), 10.0)
                    query = await asyncio.wait_for(reader.readexactly(_LEN.unpack(header)[0]),
                                                   5.0)
                    self.stats["tcp_queries"] += 1
                    self._spawn(self._tcp_answer(query, writer, lock))
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                pass
            finally:
                await asyncio.sleep(self.delay + 0.05)  # let answers in flight go out
                writer.close()

    async def _tcp_answer(self, query: bytes, writer: asyncio.StreamWriter,
                          lock: asyncio.Lock) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), self.upstream_timeout)
            try:
                up_writer.write(_LEN.pack(len(query)) + query)
                size = _LEN.unpack(await asyncio.wait_for(up_reader.readexactly(2),
                                                          self.upstream_timeout))[0]
                answer = await asyncio.wait_for(up_reader.readexactly(size),
                                                self.upstream_timeout)
            finally:
                up_writer.close()
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            self.stats["upstream_timeouts"] += 1
            return
        await asyncio.sleep(self.delay)
        async with lock:
            if not writer.is_closing():
                writer.write(_LEN.pack(len(answer)) + answer)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                self.stats["tcp_answers"] += 1


class _ClientSide(asyncio.DatagramProtocol):
    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.proxy.on_client_datagram(data, addr)


class _UpstreamSide(asyncio.DatagramProtocol):
    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.proxy.on_upstream_datagram(data)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        self.proxy.stats["dropped"] += 1


async def serve(upstream: tuple[str, int], delay: float, max_seconds: float,
                port: int = 0) -> None:
    """Run until `quit`/EOF on stdin or `max_seconds`; answer `stats` lines on stdout."""
    proxy = await DelayProxy(upstream, delay, port=port, lifetime=max_seconds).start()
    print(json.dumps({"port": proxy.port}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    deadline = loop.time() + max_seconds
    try:
        for _ in range(1_000_000):  # bounded: one iteration per command line
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                line = await asyncio.wait_for(reader.readline(), remaining)
            except TimeoutError:
                break
            command = line.decode(errors="replace").strip()
            if not line or command == "quit":
                break
            if command == "stats":
                print(json.dumps({**proxy.stats, "pending": len(proxy._pending)}), flush=True)
    finally:
        await proxy.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="loopback IP:PORT of the real server")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=0, help="listen port (0: a free one)")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="stop after this long whatever happens")
    args = parser.parse_args(argv)
    asyncio.run(serve(_host_port(args.upstream), args.delay_ms / 1000, args.max_seconds,
                      args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
