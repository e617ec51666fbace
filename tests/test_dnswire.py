"""`analysis.dnswire` reads an answer as dnspython does, or not at all.

dnspython is the oracle: on every answer `parse` reads, its `Reply` equals the one
`from_message` makes from dnspython's own parse; where dnspython refuses the bytes, `parse`
must decline them too. Checked on answers generated with dnspython (names in any case,
compression, duplicates, CNAME chains and loops, SOAs for negative answers, types it leaves to
dnspython), on the same answers with bytes changed, and on what knot really sends for every
name of the test zones.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.dnsclient import question_wire
from analysis.dnswire import Reply, from_message, parse
from tests.dnslab.server import KnotServer

ZONES = Path(__file__).parent / "dnslab" / "zones"
NAMES = ["example.com.", "a.example.com.", "B.Example.COM.", "mail.example.net.", "net.", ".",
         "o1.email.sendgrid.net.", "x-y.example.", "we\\032ird.example.", "dot\\.ted.example."]
FAST = ("A", "AAAA", "PTR", "CNAME", "TXT", "SPF", "MX")


def oracle(wire: bytes) -> Reply | str:
    """What the client gets through dnspython: a Reply, or "refused" (the datagram is dropped)."""
    try:
        return from_message(dns.message.from_wire(wire, ignore_trailing=True))
    except dns.exception.DNSException:
        return "refused"


def question_end(message: dns.message.Message) -> int:
    return 12 + len(message.question[0].name.to_wire() or b"") + 4


def agrees(wire: bytes, end: int) -> Reply | None:
    fast = parse(wire, end)
    slow = oracle(wire)
    assert fast is None or fast == slow, (wire.hex(), fast, slow)
    return fast


# -- generated answers ----------------------------------------------------------------------------

names = st.sampled_from(NAMES)
ttls = st.one_of(st.integers(0, 86_400), st.integers(0, 2**32 - 1))


def rdata(rdtype: str) -> st.SearchStrategy[str]:
    if rdtype == "A":
        return st.ip_addresses(v=4).map(str)
    if rdtype == "AAAA":
        return st.one_of(st.ip_addresses(v=6).map(str), st.sampled_from(
            ["::ffff:192.0.2.1", "2001:db8::1", "2001:db8:0:0:1::1", "::", "::1"]))
    if rdtype in ("PTR", "CNAME", "NS"):
        return names
    if rdtype == "MX":
        return st.tuples(st.integers(0, 65535), names).map(lambda t: f"{t[0]} {t[1]}")
    if rdtype in ("TXT", "SPF"):
        return st.lists(st.binary(max_size=12), min_size=1, max_size=3).map(
            lambda parts: " ".join('"' + "".join(f"\\{b:03d}" for b in p) + '"' for p in parts))
    if rdtype == "SOA":
        return st.tuples(names, names, st.integers(0, 2**32 - 1)).map(
            lambda t: f"{t[0]} {t[1]} 1 3600 600 86400 {t[2]}")
    return st.just("10 5 25 mx.example.")  # SRV: a type left to dnspython


records = st.sampled_from([*FAST, "NS", "SOA", "SRV"]).flatmap(
    lambda t: st.tuples(names, st.just(t), ttls, rdata(t),
                        st.sampled_from(["IN"] * 9 + ["CH"])))


@st.composite
def answers(draw: st.DrawFn) -> tuple[bytes, int]:
    query = dns.message.make_query(draw(names), draw(st.sampled_from(FAST)))
    response = dns.message.make_response(query)
    response.set_rcode(draw(st.sampled_from([dns.rcode.NOERROR, dns.rcode.NXDOMAIN,
                                             dns.rcode.SERVFAIL])))
    if draw(st.booleans()):
        response.flags |= dns.flags.TC
    for section in (response.answer, response.authority, response.additional):
        for owner, rdtype, ttl, text, rdclass in draw(st.lists(records, max_size=5)):
            rd = dns.rdata.from_text("IN", rdtype, text)
            if rdclass != "IN":  # the same bytes in another class: dnspython keeps them generic
                rd = dns.rdata.GenericRdata(dns.rdataclass.from_text(rdclass), rd.rdtype,
                                            rd.to_digestable())
            section.append(dns.rrset.from_rdata(owner, ttl, rd))  # unmerged: duplicates stay
    return response.to_wire(), question_end(query)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers())
def test_a_generated_answer_reads_as_dnspython_reads_it(answer: tuple[bytes, int]) -> None:
    agrees(*answer)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers(), st.data())
def test_changed_bytes_are_read_as_dnspython_reads_them_or_left_to_it(
        answer: tuple[bytes, int], data: st.DataObject) -> None:
    """The client checks the header's first bytes and the echoed question itself; everything
    after them may be anything a network delivers."""
    wire, end = answer
    changeable = [i for i in range(6, len(wire)) if not 12 <= i < end]
    changed = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 4))):
        if changeable:
            changed[data.draw(st.sampled_from(changeable))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(end, len(changed)))
    agrees(bytes(changed[:cut]), end)


# -- the shapes identification asks for are read here, not left to dnspython ----------------------


def reply_to(qname: str, qtype: str, rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
             answer: tuple[str, ...] = (), authority: tuple[str, ...] = ()) -> tuple[bytes, int]:
    query = dns.message.make_query(qname, qtype)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    for section, lines in ((response.answer, answer), (response.authority, authority)):
        for line in lines:
            owner, ttl, rdtype, text = line.split(" ", 3)
            section.append(dns.rrset.from_text(owner, int(ttl), "IN", rdtype, text))
    return response.to_wire(), question_end(query)


@pytest.mark.parametrize("shape", [
    reply_to("25.100.51.198.in-addr.arpa.", "PTR",
             answer=("25.100.51.198.in-addr.arpa. 300 PTR o1.Email.SendGrid.net.",
                     "25.100.51.198.in-addr.arpa. 60 PTR mail.northwind.example.")),
    reply_to("o1.email.sendgrid.net.", "A", answer=("o1.email.sendgrid.net. 300 A 192.0.2.1",
                                                    "o1.email.sendgrid.net. 300 A 192.0.2.1")),
    reply_to("mx.example.", "AAAA", answer=("mx.example. 300 AAAA ::ffff:192.0.2.1",)),
    reply_to("s1._domainkey.contoso.com.", "TXT",
             answer=("s1._domainkey.contoso.com. 3600 CNAME s1.domainkey.u1.wl.sendgrid.net.",
                     "s1.domainkey.u1.wl.sendgrid.net. 300 TXT \"v=DKIM1; k=rsa; \" \"p=MIGf\"")),
    reply_to("contoso.com.", "MX", answer=("contoso.com. 300 MX 0 contoso-com.mail.protection."
                                           "outlook.com.",)),
    reply_to("nothing.example.", "TXT", dns.rcode.NXDOMAIN,
             authority=(". 300 SOA ns.test. hostmaster.test. 1 3600 600 86400 60",)),
    reply_to("contoso.com.", "AAAA",
             authority=("contoso.com. 900 SOA ns.contoso.com. h.contoso.com. 1 2 3 4 120",)),
    reply_to("loop.example.", "TXT", answer=("loop.example. 60 CNAME loop.example.",)),
])
def test_the_usual_answers_are_read_without_dnspython(shape: tuple[bytes, int]) -> None:
    assert agrees(*shape) is not None


def test_what_each_reply_says() -> None:
    cname = agrees(*reply_to("s1._domainkey.contoso.com.", "TXT", answer=(
        "s1._domainkey.contoso.com. 3600 CNAME S1.domainkey.u1.wl.sendgrid.net.",
        "s1.domainkey.u1.wl.sendgrid.net. 300 TXT \"v=DKIM1; \" \"p=MIGf\"")))
    assert cname == Reply(0, False, "s1.domainkey.u1.wl.sendgrid.net", ("v=DKIM1; p=MIGf",),
                          300, None)
    ptr = agrees(*reply_to("1.2.0.192.in-addr.arpa.", "PTR", answer=(
        "1.2.0.192.in-addr.arpa. 300 PTR Mail.Example.com.",
        "1.2.0.192.in-addr.arpa. 300 PTR mail.example.COM.")))
    assert ptr is not None and ptr.records == ("Mail.Example.com",)  # case kept, one of two
    loop = agrees(*reply_to("a.example.", "A", answer=("a.example. 60 CNAME b.example.",
                                                        "b.example. 60 CNAME a.example.")))
    assert loop is not None and loop.broken
    negative = agrees(*reply_to("x.contoso.com.", "A", dns.rcode.NXDOMAIN, authority=(
        "contoso.com. 900 SOA ns.contoso.com. h.contoso.com. 1 2 3 4 120",)))
    assert negative is not None and negative.negative_ttl == 120 and negative.records is None


def test_edns_and_other_types_are_left_to_dnspython() -> None:
    query = dns.message.make_query("example.com.", "A", use_edns=0)
    response = dns.message.make_response(query)
    assert parse(response.to_wire(), question_end(query)) is None
    srv = reply_to("_sip._tcp.example.", "SRV", answer=("_sip._tcp.example. 60 SRV 1 1 5060 "
                                                       "sip.example.",))
    assert parse(*srv) is None and isinstance(oracle(srv[0]), Reply)


# -- what a real server sends ---------------------------------------------------------------------


def _questions() -> list[tuple[str, str]]:
    asked: set[tuple[str, str]] = set()
    for path in ZONES.glob("*.zone"):
        zone = dns.zone.from_text("$TTL 300\n" + path.read_text(), origin=dns.name.root,
                                  relativize=False, check_origin=False)
        for name, node in zone.nodes.items():
            owner = name.to_text()
            for rdataset in node.rdatasets:
                asked.add((owner, dns.rdatatype.to_text(rdataset.rdtype)))
            for rdtype in ("A", "TXT", "PTR"):  # no data, or through a CNAME
                asked.add((owner, rdtype))
            asked.add(("nx-" + owner.lstrip("*."), "A"))
    return sorted(asked)


def test_what_knot_sends_for_every_name_of_the_test_zones(dns_server: KnotServer) -> None:
    questions = _questions()
    read = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for qid, (name, rdtype) in enumerate(questions):
            try:
                question = question_wire(name, rdtype)
            except dns.exception.DNSException:
                continue
            sock.sendto(struct.pack("!HHHHHH", qid % 65536, 0x0100, 1, 0, 0, 0) + question,
                        (dns_server.host, dns_server.port))
            while True:
                wire = sock.recv(65535)
                if int.from_bytes(wire[:2], "big") == qid % 65536:
                    break
            if wire[2] & 0x02:
                continue  # truncated: asked again over TCP, through dnspython
            fast = agrees(wire, 12 + len(question))
            if fast is not None:
                read += 1
            elif rdtype in FAST and "\\" not in name:
                pytest.fail(f"{name} {rdtype}: a usual answer was left to dnspython")
    assert read > 0.9 * len(questions), f"only {read} of {len(questions)} answers read"
