"""What one naming of a domain leaves for the next: each source's identification and verdict, and
the context they were made in, so that only the sources whose reports changed are named again
and only those a line shows are read in full (issue 14).

A source's identification depends on its own reports and reverse DNS, and on what holds for the
whole run: the code, the catalog, which reporters are trusted, and the DNS facts gathered for the
domain (the catalog's SPF networks, the domain's own SPF networks, its DKIM selectors' targets).
`naming_context` digests the second part, and the domain's own accounts its sources showed (what
a verdict depends on besides the source itself); what is kept is kept only while it is unchanged.

A kept source is two lines of text (`encode`): first its member, what the domain's lines sum and
what its own DNS facts are gathered for (`analysis.verdicts.Member`, `analysis.identify.Signed`),
then its identification. A naming reads every member (`decode_kept`) and decodes the
identification only of the few sources a line shows in full (`decode`), judging them again.

A kept source whose reverse DNS was not looked up last time (budget, timeout, resolver down) is
named again, so it gets its lookup. One whose reports did not change keeps the reverse DNS it had
when it last sent: what it is judged on describes the mail it sent then.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from analysis.accounts import Claim, accounts_from_claims, tenants_from_dns
from analysis.catalog import Catalog
from analysis.identify import (
    DNS_LOOKED_UP,
    DNS_OFFLINE,
    EvidenceBundle,
    Identification,
    Signed,
    SourceActivity,
    signed,
)
from analysis.verdicts import Member, SourceVerdict, member_of

__all__ = ["Kept", "KeptUnreadable", "decode", "decode_kept", "encode", "naming_context",
           "needs_lookup", "same_setup", "setup_digest"]

#: Statuses of a kept identification whose reverse DNS is complete (DNS_OFFLINE: the naming
#: was offline, and so is the context it is kept for).
_SETTLED = frozenset({DNS_LOOKED_UP, DNS_OFFLINE})


class KeptUnreadable(ValueError):
    """A kept source that does not read back as ours: the domain is named whole again."""


class Kept(NamedTuple):
    """One source as the last naming left it (`decode_kept`)."""

    member: Member
    signed: Signed
    identification: str  # its JSON, for `decode`


def needs_lookup(kept: Kept) -> bool:
    """Its reverse DNS was not (wholly) looked up: name it again rather than keep it."""
    return kept.member.dns not in _SETTLED


def naming_context(catalog: Catalog, bundle: EvidenceBundle,
                   trusted_reporters: Collection[str], domain: str,
                   claims: Iterable[Claim]) -> str:
    """A digest of everything besides a source's own evidence that its identification and its
    verdict depend on: the setup, the DNS facts gathered for the domain, and the domain's own
    accounts (`claims`: every source's, analysis.accounts). Equal digests: a kept source is
    what naming and judging it again would give.

    Its first half is `setup_digest`, which is known before any DNS is gathered."""
    accounts = accounts_from_claims(domain, tenants_from_dns(domain, bundle.dkim_targets,
                                                             catalog), claims)
    facts = [
        _networks(bundle.service_networks),
        _networks(bundle.domain_networks),
        sorted([*key, target] for key, target in bundle.dkim_targets.items()),
        sorted(accounts.proven),
        sorted([key, *sorted(names)] for key, names in accounts.identities.items()),
    ]
    evidence = hashlib.sha256(json.dumps(facts, separators=(",", ":")).encode()).hexdigest()
    return (f"{setup_digest(catalog, trusted_reporters, offline=bundle.is_offline)}"
            f"-{evidence[:32]}")


def same_setup(context: str, catalog: Catalog, trusted_reporters: Collection[str], *,
               offline: bool) -> bool:
    """Whether a kept context was made with this setup: if not, it is stale before anything
    is looked up."""
    return context.startswith(setup_digest(catalog, trusted_reporters, offline=offline) + "-")


def setup_digest(catalog: Catalog, trusted_reporters: Collection[str], *, offline: bool) -> str:
    """What a naming context holds besides the DNS facts: the code, the catalog, the trusted
    reporters and whether DNS is used. A kept context that does not start with it is stale
    before anything is looked up."""
    facts = [_code_digest(), catalog.digest, sorted(t.lower() for t in trusted_reporters),
             offline]
    return hashlib.sha256(json.dumps(facts, separators=(",", ":")).encode()).hexdigest()[:32]


def encode(verdict: SourceVerdict) -> str:
    """One judged source as kept: its member and what it signed for the domain's own names,
    then, on a line of its own, its identification (its domain is the store's key)."""
    m = member_of(verdict)
    signs = signed(verdict.identification.activity)
    head = json.dumps([
        m.ip, m.service_key, m.account, m.verdict, m.messages, m.dmarc_pass,
        m.dkim_aligned_pass, m.spf_aligned_pass, m.confidence, m.first_day, m.last_day,
        m.platform_key, m.dns, list(m.evidence), [list(s) for s in m.selectors],
        None if m.claim is None else [m.claim[0], list(m.claim[1])],
        [list(d) for d in signs.dkim], [list(n) for n in signs.spf],
    ], separators=(",", ":"))
    return f"{head}\n{_identification(verdict.identification)}"


def decode_kept(domain: str, text: str) -> Kept:
    """A kept source's member, leaving its identification undecoded; KeptUnreadable when the
    text is not one of ours (then the domain is named whole again: nothing kept is trusted blindly).
    Every naming reads one per source of the domain: only the first line is parsed."""
    try:
        head, newline, identification = text.partition("\n")
        row, end = _JSON.raw_decode(head)
        if (not newline or end != len(head) or type(row) is not list
                or tuple(map(type, row)) not in _MEMBERS):
            raise TypeError("not the fields of a kept source")
        (ip, key, account, verdict, messages, dmarc_pass, dkim_pass, spf_pass, confidence,
         first, last, platform, dns, evidence, selectors, claim, dkim, spf) = row
        if min(messages, dmarc_pass, dkim_pass, spf_pass) < 0:
            raise TypeError("a negative count")
        # most are empty (an impostor's): nothing to check or build
        member = Member(domain, ip, key, account, verdict, messages, dmarc_pass, dkim_pass,
                        spf_pass, float(confidence), first, last, platform, dns,
                        _texts(evidence) if evidence else (),
                        _rows(selectors, str, str) if selectors else (),
                        _claim(claim) if claim is not None else None)
        return Kept(member, Signed(domain, _rows(dkim, str, str, int) if dkim else (),
                                   _rows(spf, str, int) if spf else ()), identification)
    except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise KeptUnreadable(f"a kept source of {domain} is not readable: {exc}") from None


def _identification(identification: Identification) -> str:
    a, i = identification.activity, identification
    return json.dumps([
        a.ip, a.messages, a.dmarc_pass, a.dkim_aligned_pass, a.spf_aligned_pass,
        [[*key, n] for key, n in a.dkim], [[*key, n] for key, n in a.spf],
        [[reason, n] for reason, n in a.reasons], list(a.header_from), a.first_day, a.last_day,
        i.service_key, i.platform_key, i.confidence, list(i.evidence), i.ptr, i.ptr_confirmed,
        i.dns, i.dns_note, i.candidate, i.forwarded_from, i.spf_disputed, i.in_domain_spf,
        i.delegated,
    ], separators=(",", ":"))


def decode(domain: str, kept: Kept) -> Identification:
    """A kept source's identification; KeptUnreadable when the text is not one. Types are
    compared a row at a time, and each list is checked while it is built."""
    text = kept.identification
    try:
        row, end = _JSON.raw_decode(text)
        if end != len(text) or type(row) is not list or tuple(map(type, row)) not in _ROWS:
            raise TypeError("not the fields of an identification")
        (ip, messages, dmarc_pass, dkim_pass, spf_pass, dkim, spf, reasons, header_from, first,
         last, key, platform, confidence, evidence, ptr, confirmed, dns, note, candidate,
         forwarded, disputed, in_spf, delegated) = row
        if min(messages, dmarc_pass, dkim_pass, spf_pass) < 0:
            raise TypeError("a negative count")
        if ip != kept.member.ip:
            raise TypeError("an identification of another source")
        activity = SourceActivity(
            domain, ip, messages, dmarc_pass, dkim_pass, spf_pass, _results(dkim),
            _results(spf), _reasons(reasons), _texts(header_from), first, last)
        return Identification(activity, key, platform, float(confidence), _texts(evidence), ptr,
                              confirmed, dns, note, candidate, forwarded, disputed, in_spf,
                              delegated)
    except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise KeptUnreadable(f"a kept identification of {domain} is not readable: {exc}"
                             ) from None


def _claim(row: list[Any]) -> Claim:
    key, names = row
    if type(key) is not str or type(names) is not list:
        raise TypeError("a claim of the wrong type")
    return key, _texts(names)


def _rows(rows: list[Any], *types: type) -> tuple[Any, ...]:
    """Rows of these field types, as tuples (a row of another length or type raises)."""
    out = []
    for row in rows:
        if (type(row) is not list or len(row) != len(types)
                or any(type(v) is not t for v, t in zip(row, types, strict=True))):
            raise TypeError("a row of the wrong type")
        out.append(tuple(row))
    return tuple(out)


def _results(rows: list[Any]) -> tuple[tuple[tuple[str, str, str], int], ...]:
    """DKIM or SPF results with their messages: [d, selector or scope, result, messages]."""
    out = []
    for d, s, r, n in rows:  # a row of another length raises ValueError
        if type(d) is not str or type(s) is not str or type(r) is not str or type(n) is not int:
            raise TypeError("a result of the wrong type")
        out.append(((d, s, r), n))
    return tuple(out)


def _reasons(rows: list[Any]) -> tuple[tuple[str, int], ...]:
    out = []
    for reason, n in rows:
        if type(reason) is not str or type(n) is not int:
            raise TypeError("a reason of the wrong type")
        out.append((reason, n))
    return tuple(out)


def _texts(values: list[Any]) -> tuple[str, ...]:
    if any(type(v) is not str for v in values):
        raise TypeError("a field of the wrong type")
    return tuple(values)


_JSON = json.JSONDecoder()
#: The types of an encoded identification's fields (a name that may be missing is null or
#: text; the confidence may have been written as an integer).
_MAYBE = (type(None), str)
#: The types of a kept source's member fields (`encode`).
_MEMBERS = frozenset(itertools.product(
    [str], [str], [str], [str], [int], [int], [int], [int], [int, float], [str], [str], _MAYBE,
    [str], [list], [list], [type(None), list], [list], [list]))
_ROWS = frozenset(itertools.product(
    [str], [int], [int], [int], [int], [list], [list], [list], [list], [str], [str], [str],
    _MAYBE, [int, float], [list], _MAYBE, [bool], [str], [str], _MAYBE, _MAYBE, _MAYBE, [bool],
    _MAYBE))


def _networks(by_name: Mapping[str, tuple[Any, ...]]) -> list[list[str]]:
    return sorted([name, *sorted(str(n) for n in networks)]
                  for name, networks in by_name.items())


@functools.cache
def _code_digest() -> str:
    """The analysis package's source: a new version of the naming rules names every source
    again once, without anyone having to remember to bump a number."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
