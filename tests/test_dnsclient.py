"""The UDP client takes only a real answer to its own question, whatever else arrives first."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading

import dns.message
import dns.opcode
import dns.rcode

from analysis.dnsclient import UdpClient
from analysis.dnswire import Reply


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

    async def ask() -> Reply:
        client = UdpClient("127.0.0.1", port)
        try:
            return await client.query("example.com", "TXT", 5.0)
        finally:
            client.close()

    try:
        answer = asyncio.run(ask())
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
