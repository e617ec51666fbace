"""The UDP client takes only a real answer to its own question, whatever else arrives first."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import pytest

from analysis.dnsclient import UdpClient
from analysis.dnswire import Reply
from tests.dnslab.blackhole import BlackHole


def test_an_answer_with_another_opcode_is_not_taken_for_ours() -> None:
    """A spoofed datagram with our id and question but opcode STATUS would reach dnspython as
    a message without resolve_chaining(): the lookup must wait for the real answer instead."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        data, peer = server.recvfrom(4096)
        query = dns.message.from_wire(data)
        wrong = dns.message.make_response(query)
        wrong.set_opcode(dns.opcode.STATUS)
        server.sendto(wrong.to_wire(), peer)  # first: same id and question, opcode 2
        right = dns.message.make_response(query)
        right.set_rcode(dns.rcode.NXDOMAIN)
        server.sendto(right.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    try:
        answer = _ask(port, "example.com")
    finally:
        thread.join(timeout=5)
        server.close()
    assert answer.rcode == dns.rcode.NXDOMAIN  # the second datagram's, not the first's


def test_query_ids_are_unpredictable_and_never_run_out() -> None:
    """Answers are matched on the id: ids come from the system's randomness, refilled as they
    are used (more are drawn here than one refill holds)."""
    client = UdpClient("127.0.0.1", 53)
    ids = [client._new_id() for _ in range(5000)]
    assert all(0 <= i < 65536 for i in ids)
    assert len(set(ids)) > 4700  # about 4,820 distinct expected of 5,000 uniform draws
    steps = {(b - a) % 65536 for a, b in itertools.pairwise(ids)}
    assert len(steps) > 4700  # no counter, no fixed stride


class _Truncating:
    """Answers every UDP question truncated (TC), and over TCP as `tcp` says: "answer" sends an
    answer to another query id first and then the real one, "close" hangs up without a word."""

    def __init__(self, tcp: str) -> None:
        self.tcp = tcp
        self.asked: int | None = None  # the id of the question asked over TCP
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._udp, self._tcp)]
        for thread in self.threads:
            thread.start()

    def _udp(self) -> None:
        data, peer = self.udp.recvfrom(4096)
        response = dns.message.make_response(dns.message.from_wire(data))
        response.flags |= dns.flags.TC
        self.udp.sendto(response.to_wire(), peer)

    def _tcp(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            if self.tcp == "close":
                return
            size = int.from_bytes(conn.recv(2), "big")
            query = dns.message.from_wire(conn.recv(size))
            self.asked = query.id
            for qid in ((query.id + 1) % 65536, query.id):
                response = dns.message.make_response(query)
                response.id = qid
                response.answer.append(dns.rrset.from_text(
                    query.question[0].name, 300, "IN", "TXT", f'"v=spf1 -all" "id {qid}"'))
                wire = response.to_wire()
                conn.sendall(len(wire).to_bytes(2, "big") + wire)

    def close(self) -> None:
        for thread in self.threads:
            thread.join(timeout=5)
        self.udp.close()
        self.listener.close()


def _ask(port: int, name: str = "big.example.com") -> Reply:
    """One TXT question on a client of its own, closed after."""
    async def ask() -> Reply:
        client = UdpClient("127.0.0.1", port)
        try:
            return await client.query(name, "TXT", 5.0)
        finally:
            client.close()

    return asyncio.run(ask())


def test_a_truncated_answer_is_asked_again_over_tcp_and_only_its_answer_taken() -> None:
    server = _Truncating("answer")
    try:
        answer = _ask(server.port)
    finally:
        server.close()
    assert not answer.truncated and answer.records is not None
    assert answer.records == (f"v=spf1 -allid {server.asked}",)  # not the other id's answer


def test_a_tcp_server_that_hangs_up_is_a_failure_not_an_answer() -> None:
    server = _Truncating("close")
    try:
        with pytest.raises(ConnectionError, match="closed the TCP connection"):
            _ask(server.port)
    finally:
        server.close()


def test_a_silent_tcp_server_times_out_as_dns_does(dns_blackhole: BlackHole) -> None:
    async def ask() -> None:
        client = UdpClient(dns_blackhole.host, dns_blackhole.port)
        try:
            await client._over_tcp(b"\x07example\x03com\x00\x00\x10\x00\x01", 0.3)
        finally:
            client.close()

    with pytest.raises(dns.exception.Timeout):
        asyncio.run(ask())
    assert dns_blackhole.tcp_connections >= 1
