"""What one naming of a domain leaves for the next: each source's identification, and the context
it was made in, so that only the sources whose reports changed are named again (issue 14).

A source's identification depends on its own reports and reverse DNS, and on what holds for the
whole run: the code, the catalog, which reporters are trusted, and the DNS facts gathered for the
domain (the catalog's SPF networks, the domain's own SPF networks, its DKIM selectors' targets).
`naming_context` digests the second part; identifications are kept only while it is unchanged.
Verdicts are not kept: judging is cheap and depends on all of a domain's sources at once (its
own accounts), so every naming judges every source again from the kept identifications.

A kept source whose reverse DNS was not looked up last time (budget, timeout, resolver down) is
named again, so it gets its lookup. One whose reports did not change keeps the reverse DNS it had
when it last sent: what it is judged on describes the mail it sent then.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from analysis.catalog import Catalog
from analysis.identify import (
    DNS_LOOKED_UP,
    DNS_OFFLINE,
    EvidenceBundle,
    Identification,
    SourceActivity,
)

__all__ = ["decode", "encode", "naming_context", "needs_lookup", "same_setup", "setup_digest"]

#: Statuses of a kept identification whose reverse DNS is complete (DNS_OFFLINE: the naming
#: was offline, and so is the context it is kept for).
_SETTLED = frozenset({DNS_LOOKED_UP, DNS_OFFLINE})


def needs_lookup(identification: Identification) -> bool:
    """Its reverse DNS was not (wholly) looked up: name it again rather than keep it."""
    return identification.dns not in _SETTLED


def naming_context(catalog: Catalog, bundle: EvidenceBundle,
                   trusted_reporters: Collection[str]) -> str:
    """A digest of everything besides a source's own evidence that its identification depends
    on. Equal digests: a kept identification is what naming the source again would give.

    Its first half is `setup_digest`, which is known before any DNS is gathered."""
    facts = [
        _networks(bundle.service_networks),
        _networks(bundle.domain_networks),
        sorted([*key, target] for key, target in bundle.dkim_targets.items()),
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


def encode(identification: Identification) -> str:
    """One source's identification as JSON (its domain is the store's key, not repeated)."""
    a, i = identification.activity, identification
    return json.dumps([
        a.ip, a.messages, a.dmarc_pass, a.dkim_aligned_pass, a.spf_aligned_pass,
        [[*key, n] for key, n in a.dkim], [[*key, n] for key, n in a.spf],
        [[reason, n] for reason, n in a.reasons], list(a.header_from), a.first_day, a.last_day,
        i.service_key, i.platform_key, i.confidence, list(i.evidence), i.ptr, i.ptr_confirmed,
        i.dns, i.dns_note, i.candidate, i.forwarded_from, i.spf_disputed, i.in_domain_spf,
        i.delegated,
    ], separators=(",", ":"))


def decode(domain: str, text: str) -> Identification:
    """`encode`'s inverse; ValueError when the text is not one (then the domain is named whole
    again: nothing kept is trusted blindly). Types are compared a row at a time, and each list
    is checked while it is built: a domain keeps thousands of these and reads them all on every
    naming."""
    try:
        row, end = _JSON.raw_decode(text)
        if end != len(text) or type(row) is not list or tuple(map(type, row)) not in _ROWS:
            raise TypeError("not the fields of an identification")
        (ip, messages, dmarc_pass, dkim_pass, spf_pass, dkim, spf, reasons, header_from, first,
         last, key, platform, confidence, evidence, ptr, confirmed, dns, note, candidate,
         forwarded, disputed, in_spf, delegated) = row
        if min(messages, dmarc_pass, dkim_pass, spf_pass) < 0:
            raise TypeError("a negative count")
        activity = SourceActivity(
            domain, ip, messages, dmarc_pass, dkim_pass, spf_pass, _results(dkim),
            _results(spf), _reasons(reasons), _texts(header_from), first, last)
        return Identification(activity, key, platform, float(confidence), _texts(evidence), ptr,
                              confirmed, dns, note, candidate, forwarded, disputed, in_spf,
                              delegated)
    except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"a kept identification of {domain} is not readable: {exc}") from None


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
