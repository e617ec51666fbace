"""What an answer says, read straight from its wire bytes for the shapes identification asks for.

A cold run asks ~17,000 questions; dnspython builds a full `Message` (names, rdatasets, enums)
for each, ~110 µs of CPU, more than a run's own work. `parse` reads the few record types the
evidence uses (A, AAAA, PTR, CNAME, TXT, SPF, MX, and SOA for negative answers) and returns the
same `Reply` that `from_message` makes from dnspython's message; for any other shape (EDNS,
other types or classes, names it would have to escape) it returns None and dnspython reads the
answer. tests/test_dnswire.py holds the two to the same result on generated and mutated wire.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
from typing import cast

import dns.exception
import dns.ipv6
import dns.message
import dns.rdata
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rdtypes.mxbase

#: CNAMEs followed inside one answer, and the negative TTL of an answer without an SOA: the
#: values of dnspython's `resolve_chaining`.
MAX_CHAIN = dns.message.MAX_CHAIN
_NO_SOA_TTL = dns.message.NEGATIVE_TTL_WITHOUT_SOA
_MAX_TTL = 2**31 - 1  # dnspython's dns.ttl.MAX_TTL

_A, _NS, _CNAME, _SOA, _PTR, _MX, _TXT, _AAAA, _SPF = 1, 2, 5, 6, 12, 15, 16, 28, 99
_NXDOMAIN = 3
#: Types `parse` renders; it also steps over NS records (their text is never asked for).
_KNOWN = frozenset({_A, _NS, _CNAME, _SOA, _PTR, _MX, _TXT, _AAAA, _SPF})
_RR = struct.Struct("!HHIH")
_PLAIN = frozenset(range(0x21, 0x7F)) - frozenset(b'"().;\\@$')


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """One answer, as `DnsEvidence` uses it."""

    rcode: int
    truncated: bool
    canonical: str  # the question's name after the answer's CNAMEs (lower case)
    records: tuple[str, ...] | None  # the records of the asked type there; None: no such set
    ttl: int  # the smallest TTL along the chain (and the SOA's, when there is no answer)
    negative_ttl: int | None  # the first SOA in the authority section: min(its TTL, minimum)
    broken: bool = False  # a CNAME chain longer than MAX_CHAIN


def from_message(message: dns.message.Message) -> Reply:
    """The `Reply` of a message dnspython parsed (TCP answers, and whatever `parse` declines)."""
    negative = None
    for rrset in message.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            soa = cast(dns.rdtypes.ANY.SOA.SOA, rrset[0])
            negative = min(rrset.ttl, soa.minimum)
            break
    rcode = message.rcode()
    truncated = bool(message.flags & 0x0200)
    question = message.question[0]
    try:
        # from_wire builds a QueryMessage for an answer with the QUERY opcode
        chain = cast(dns.message.QueryMessage, message).resolve_chaining()
    except dns.exception.DNSException:  # a CNAME loop or an over-long chain in the answer
        name = question.name.to_text(omit_final_dot=True).lower()
        return Reply(rcode, truncated, name, None, 0, negative, broken=True)
    records = None if chain.answer is None else tuple(text(r) for r in chain.answer)
    return Reply(rcode, truncated, chain.canonical_name.to_text(omit_final_dot=True).lower(),
                 records, chain.minimum_ttl, negative)


def text(rdata: dns.rdata.Rdata) -> str:
    """A record as the evidence reads it: TXT strings joined, names without the final dot."""
    strings = getattr(rdata, "strings", None)
    if strings is not None:  # TXT: the strings of one record are one value
        return b"".join(strings).decode("utf-8", "replace")
    if rdata.rdtype == dns.rdatatype.MX:
        mx = cast(dns.rdtypes.mxbase.MXBase, rdata)
        return f"{mx.preference} {mx.exchange.to_text(omit_final_dot=True)}"
    return rdata.to_text().rstrip(".")


class _Decline(Exception):
    """A shape `parse` leaves to dnspython (which may accept it, or refuse it as malformed)."""


def parse(wire: bytes, question_end: int) -> Reply | None:
    """The `Reply` in `wire`, whose question (already checked to be ours) ends at
    `question_end`; None when dnspython must read it."""
    try:
        return _parse(wire, question_end)
    except (_Decline, IndexError, struct.error, UnicodeDecodeError):
        return None


def _name(wire: bytes, at: int) -> tuple[bytes, int]:
    """(lower-case dotted name, where the name's bytes end), following compression pointers
    only backwards as dnspython does; labels it would escape in text are declined."""
    labels: list[bytes] = []
    end = -1
    limit = at  # each pointer must point before the last one (and before the name)
    size = 1
    while True:
        count = wire[at]
        if count == 0:
            break
        if count < 64:
            label = wire[at + 1:at + 1 + count]
            if len(label) != count or not _PLAIN.issuperset(label):
                raise _Decline
            labels.append(label)
            size += count + 1
            at += count + 1
        elif count >= 192:
            pointer = (count & 0x3F) << 8 | wire[at + 1]
            if end < 0:
                end = at + 2
            if pointer >= limit:
                raise _Decline
            limit = at = pointer
        else:
            raise _Decline
    if size > 255:
        raise _Decline
    return b".".join(labels).lower(), (at + 1 if end < 0 else end)


def _parse(wire: bytes, question_end: int) -> Reply:
    flags = wire[2] << 8 | wire[3]
    counts = struct.unpack_from("!HHH", wire, 6)
    answers: list[tuple[bytes, int, int, int, int]] = []  # owner, type, TTL, rdata at, length
    soas: dict[bytes, tuple[int, int]] = {}  # authority SOAs: owner -> (least TTL, minimum)
    at = question_end
    for section, count in enumerate(counts):
        for _ in range(count):
            owner, at = _name(wire, at)
            rdtype, rdclass, ttl, length = _RR.unpack_from(wire, at)
            at += _RR.size
            if rdclass != 1 or rdtype not in _KNOWN or at + length > len(wire):
                raise _Decline
            _check(wire, rdtype, at, length)
            if ttl > _MAX_TTL:
                ttl = 0  # as dnspython reads a TTL with the high bit set (RFC 2181 §8)
            if section == 0:
                answers.append((owner, rdtype, ttl, at, length))
            elif section == 1 and rdtype == _SOA:
                minimum = struct.unpack_from("!I", wire, at + length - 4)[0]
                old = soas.get(owner)  # a singleton type: the last record stands
                soas[owner] = (ttl, minimum) if old is None else (min(old[0], ttl), minimum)
            at += length
    qname, _ = _name(wire, 12)
    qtype = struct.unpack_from("!H", wire, question_end - 4)[0]
    first = next(iter(soas.values()), None)
    negative = None if first is None else min(first)
    return _chain(wire, flags & 0x000F, bool(flags & 0x0200), qname, qtype, answers, negative,
                  soas)


def _check(wire: bytes, rdtype: int, at: int, length: int) -> None:
    """Decline rdata that dnspython would refuse (or read otherwise)."""
    end = at + length
    if (rdtype == _A and length != 4) or (rdtype == _AAAA and length != 16):
        raise _Decline
    if rdtype in (_NS, _CNAME, _PTR, _MX):
        if _name(wire, at + 2 * (rdtype == _MX))[1] != end:
            raise _Decline
    elif rdtype == _SOA:
        if _name(wire, _name(wire, at)[1])[1] + 20 != end:
            raise _Decline
    elif rdtype in (_TXT, _SPF):
        if length == 0:
            raise _Decline
        while at < end:
            at += 1 + wire[at]
        if at != end:
            raise _Decline


def _chain(wire: bytes, rcode: int, truncated: bool, qname: bytes, qtype: int,
           answers: list[tuple[bytes, int, int, int, int]], negative: int | None,
           soas: dict[bytes, tuple[int, int]]) -> Reply:
    """dnspython's `resolve_chaining`: the answer at the end of the question's CNAMEs."""
    name = qname
    ttl = _MAX_TTL
    records: tuple[str, ...] | None = None
    for _ in range(MAX_CHAIN):
        found = [(t, a, n) for owner, rdtype, t, a, n in answers
                 if owner == name and rdtype == qtype]
        if found:
            ttl = min(ttl, *(t for t, _, _ in found))
            records = _rendered(wire, qtype, found[-1:] if qtype == _CNAME else found)
            break
        if qtype == _CNAME:
            break
        cnames = [(t, a) for owner, rdtype, t, a, _ in answers
                  if owner == name and rdtype == _CNAME]
        if not cnames:
            break
        ttl = min(ttl, *(t for t, _ in cnames))
        name = _name(wire, cnames[-1][1])[0]  # a singleton type: the last record stands
    else:
        return Reply(rcode, truncated, _text(qname), None, 0, negative, broken=True)
    if records is not None and rcode == _NXDOMAIN:
        return Reply(rcode, truncated, _text(qname), None, 0, negative, broken=True)
    if records is None:  # a negative answer: the SOA of a superdomain lowers the TTL further
        labels = name.split(b".") if name else []
        for i in range(len(labels) + 1):  # up to the root
            soa = soas.get(b".".join(labels[i:]))
            if soa is not None:
                ttl = min(ttl, *soa)
                break
        else:
            ttl = min(ttl, _NO_SOA_TTL)
    return Reply(rcode, truncated, _text(name), records, ttl, negative)


def _rendered(wire: bytes, rdtype: int, found: list[tuple[int, int, int]]) -> tuple[str, ...]:
    """The records' text, duplicates dropped (names compared without case, as dnspython does)."""
    if rdtype in (_NS, _SOA):
        raise _Decline  # never asked for by identification
    seen: set[bytes] = set()
    out: list[str] = []
    for _, at, length in found:
        rdata = wire[at:at + length]
        if rdtype == _A:
            key, value = rdata, socket.inet_ntoa(rdata)
        elif rdtype == _AAAA:
            key, value = rdata, dns.ipv6.inet_ntoa(rdata)
        elif rdtype in (_PTR, _CNAME):
            key, value = _name(wire, at)[0], _original_case(wire, at)
        elif rdtype == _MX:
            key = rdata[:2] + _name(wire, at + 2)[0]
            value = f"{rdata[0] << 8 | rdata[1]} {_original_case(wire, at + 2)}"
        else:  # TXT, SPF: the character-strings of one record are one value
            strings, i = [], 0
            while i < length:
                strings.append(rdata[i + 1:i + 1 + rdata[i]])
                i += 1 + rdata[i]
            key, value = rdata, b"".join(strings).decode("utf-8", "replace")
        if key not in seen:
            seen.add(key)
            out.append(value)
    return tuple(out)


def _text(name: bytes) -> str:
    return name.decode() or "."  # dnspython's text of the root without its final dot


def _original_case(wire: bytes, at: int) -> str:
    """A name in the case it was sent in (dnspython's text keeps it)."""
    labels: list[str] = []
    limit = at
    while True:
        count = wire[at]
        if count == 0:
            return ".".join(labels)
        if count >= 192:
            pointer = (count & 0x3F) << 8 | wire[at + 1]
            if pointer >= limit:
                raise _Decline
            limit = at = pointer
            continue
        labels.append(wire[at + 1:at + 1 + count].decode("ascii"))
        at += count + 1


__all__ = ["MAX_CHAIN", "Reply", "from_message", "parse", "text"]
