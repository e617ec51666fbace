"""A small DNS client: one UDP socket per server, many questions in flight on it.

The socket closes itself when no question is left in flight, so nothing outlives the event loop.

dnspython's query functions open a socket and an asyncio transport per question; with thousands
of lookups in flight that set-up costs more CPU than the round trip. Here each server gets one
socket; answers are matched to questions by ID and must echo the question exactly, and only the
server's own address is listened to. Questions are encoded here (a few bytes) rather than as
dnspython messages; answers are read by `analysis.dnswire` (dnspython for the shapes it leaves).
A truncated answer is asked again over TCP, here too: dnspython's TCP query module pulls in
DNS-over-HTTPS on first use, a tenth of a second with every other answer held behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import struct
from collections.abc import Iterator
from typing import cast

import dns.exception
import dns.message
import dns.name
import dns.rdatatype

from analysis.dnswire import Reply, from_message, parse

_HEADER = struct.Struct("!HHHHHH")
_FIRST_RETRY = 0.4  # seconds before a question is sent again
_MAX_PENDING = 4096  # questions in flight on one socket at most (IDs are 16 bits)
_RECEIVE_BUFFER = 1 << 20  # room for a burst of answers while the loop is busy
_RD = 0x0100  # recursion desired
_QUESTION_TAIL = struct.Struct("!HH")


@functools.lru_cache(maxsize=1024)  # each question is encoded to check it, then to send it
def question_wire(name: str, rdtype: str) -> bytes:
    """The question section for `name`/`rdtype`, class IN; dnspython encodes unusual names."""
    labels = name.rstrip(".").split(".")
    if name.isascii() and all(0 < len(label) < 64 for label in labels) and len(name) < 254:
        qname = b"".join(bytes((len(label),)) + label.encode() for label in labels) + b"\0"
    else:
        # raises for names DNS cannot carry; without a compression table it returns the bytes
        qname = cast(bytes, dns.name.from_text(name).to_wire())
    return qname + _QUESTION_TAIL.pack(dns.rdatatype.from_text(rdtype), 1)


def _answer(data: bytes, qid: bytes, question: bytes) -> Reply | None:
    """What `data` answers, if it is the answer to query `qid` asking `question`.

    It is only if it is a response (QR) to a standard query (opcode 0: any other makes
    dnspython build a message without resolve_chaining) echoing the question."""
    if len(data) < 12 or data[:2] != qid or not data[2] & 0x80 or data[2] & 0x78 or \
            data[4:6] != b"\x00\x01" or data[12:12 + len(question)].lower() != question.lower():
        return None
    response = parse(data, 12 + len(question))
    if response is None:
        try:
            response = from_message(dns.message.from_wire(data, ignore_trailing=True))
        except dns.exception.DNSException:
            return None
    return response


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: UdpClient) -> None:
        self.client = client
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.client._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error (maybe forged) is a lost answer: retransmission and timeouts decide

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._failed(self.transport, exc or ConnectionError("socket closed"))


class UdpClient:
    """Questions to one server over one UDP socket, bound to the running event loop."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._transport: asyncio.DatagramTransport | None = None
        self._opening: asyncio.Lock | None = None
        self._pending: dict[int, tuple[bytes, asyncio.Future[Reply]]] = {}
        self._ids: Iterator[int] = iter(())

    def _new_id(self) -> int:
        """An unpredictable query id (answers are matched on it: a guessable one helps a
        spoofer), drawn from the system's randomness a thousand at a time, not a call each."""
        qid = next(self._ids, None)
        if qid is None:
            self._ids = iter(memoryview(os.urandom(2048)).cast("H").tolist())
            qid = next(self._ids)
        return qid

    async def _open(self) -> asyncio.DatagramTransport:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            return transport  # the usual case: no lock for each of thousands of questions
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._transport is None or self._transport.is_closing():
                loop = asyncio.get_running_loop()
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self), remote_addr=(self.host, self.port))
                sock = transport.get_extra_info("socket")
                with contextlib.suppress(OSError):  # best effort: the kernel may cap it
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
                self._transport = transport
            return self._transport

    async def query(self, name: str, rdtype: str, timeout: float) -> Reply:
        """Ask for `rdtype` records of `name`; TCP when the UDP answer is truncated."""
        question = question_wire(name, rdtype)
        transport = await self._open()
        if len(self._pending) >= _MAX_PENDING:
            raise dns.exception.Timeout(timeout=0)  # callers bound concurrency far below this
        while True:
            qid = self._new_id()
            if qid not in self._pending:
                break
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._pending[qid] = (question, future)
        packet = _HEADER.pack(qid, _RD, 1, 0, 0, 0) + question
        deadline = loop.time() + timeout
        wait = min(_FIRST_RETRY, timeout)
        timer: list[asyncio.TimerHandle] = []  # the one pending

        def again() -> None:  # UDP loses packets: ask again, waiting twice as long each time
            nonlocal wait
            if future.done():
                return
            if loop.time() >= deadline:
                future.set_exception(dns.exception.Timeout(timeout=timeout))
                return
            transport.sendto(packet)
            wait *= 2
            timer[0] = loop.call_later(max(0.0, min(wait, deadline - loop.time())), again)

        transport.sendto(packet)
        timer.append(loop.call_later(wait, again))  # a timer, not wait_for: no task per question
        try:
            response = await future
        finally:
            timer[0].cancel()
            self._pending.pop(qid, None)
            if not self._pending:  # idle: close unless another question arrives right away
                loop.call_soon(self._close_if_idle)
        if response.truncated:
            return await self._over_tcp(question, timeout)
        return response

    async def _over_tcp(self, question: bytes, timeout: float) -> Reply:
        """The question again over TCP (RFC 7766 §5), one connection for the one answer."""
        packet = _HEADER.pack(self._new_id(), _RD, 1, 0, 0, 0) + question
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                try:
                    writer.write(len(packet).to_bytes(2, "big") + packet)
                    while True:  # anything but the answer to this question is skipped
                        size = int.from_bytes(await reader.readexactly(2), "big")
                        data = await reader.readexactly(size)
                        response = _answer(data, packet[:2], question)
                        if response is not None:
                            return response
                finally:
                    writer.close()
        except TimeoutError:
            raise dns.exception.Timeout(timeout=timeout) from None
        except asyncio.IncompleteReadError:
            raise ConnectionError("the server closed the TCP connection before "
                                  "answering") from None

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or addr[1] != self.port:
            return
        entry = self._pending.get(int.from_bytes(data[:2], "big"))
        if entry is None or entry[1].done():
            return
        question, future = entry
        response = _answer(data, data[:2], question)
        if response is not None:  # else garbage with a matching ID: wait for the real answer
            future.set_result(response)

    def _failed(self, transport: asyncio.BaseTransport | None, exc: Exception) -> None:
        if transport is not self._transport:  # an earlier socket, closed when it was idle
            return
        self._transport = None
        if transport is not None:
            transport.close()
        for _, future in list(self._pending.values()):
            if not future.done():
                future.set_exception(OSError(f"DNS socket failed: {exc}"))

    def _close_if_idle(self) -> None:
        if not self._pending:
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
