"""Which evaluation rows exercise which catalog facts.

A catalog fact no case exercises can be wrong for years unnoticed. This maps every fact to the
labeled rows whose own evidence reaches it, read the way the product reads evidence
(reference/sender-facts.md 3.1):

- `dkim_domain`: a DKIM `d=` that passed;
- `dkim_cname_suffix`: the CNAME target of a passing selector of the policy domain itself;
- `return_path_domain`: an SPF domain that passed;
- `rdns_suffix`: a forward-confirmed PTR name of the row's address;
- `spf_include`: the row's address inside the networks that include's SPF record expands to.

The evidence must reach the fact itself (the longest-suffix match the catalog returns), and the
row's label must be about the fact: the fact's service, a service on its platform (or the one
it runs on), or any claimant of a shared fact. A low-confidence fact is also exercised by a row
labeled `unknown`: such a row checks that the fact alone does not name a sender (issue 12: low
evidence yields "unknown", not a name). DNS is asked of the resolver handed in.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Sequence

from analysis.catalog import Catalog, Fact, Service
from analysis.dnsevidence import DnsEvidence
from analysis.identify import UNKNOWN
from tests.evaluation import Source

FactId = tuple[str, str, str]  # (service key, kind, value)


@dataclasses.dataclass(frozen=True, slots=True)
class Coverage:
    """Fact -> the `sources.csv` lines that use it; `unused` lists the facts none uses."""

    used: dict[FactId, tuple[int, ...]]
    unused: tuple[FactId, ...]
    problems: tuple[str, ...]  # DNS lookups that failed: the answer is then incomplete


def _about(catalog: Catalog, label: str, service: Service) -> bool:
    """The row's label is the fact's service, or one of the two runs on the other."""
    if label == service.key or service.platform == label:
        return True
    return label != UNKNOWN and catalog.get(label).platform == service.key


def _uses(catalog: Catalog, label: str, matches: Sequence[tuple[Service, Fact]],
          service: Service, fact: Fact) -> bool:
    if _about(catalog, label, service):
        return True
    if fact.shared and any(f.shared and _about(catalog, label, s) for s, f in matches):
        return True
    return fact.confidence == "low" and label == UNKNOWN


async def fact_coverage(sources: Sequence[Source], catalog: Catalog,
                        dns: DnsEvidence) -> Coverage:
    """Every catalog fact with the rows that use it (the module docstring says what "use" is)."""
    used: dict[FactId, set[int]] = defaultdict(set)

    def claim(kind: str, name: str, source: Source) -> None:
        matches = catalog.match_suffix(kind, name)
        for service, fact in matches:
            if _uses(catalog, source.expected_service, matches, service, fact):
                used[service.key, fact.kind, fact.value].add(source.line)

    def own(source: Source, d: str) -> bool:
        d = d.lower()
        return d == source.domain or d.endswith("." + source.domain)

    selectors = sorted({(sel, d.lower()) for s in sources for d, sel, result in s.dkim
                        if sel and result == "pass" and own(s, d)})
    includes = sorted({f.value for svc in catalog.services for f in svc.facts("spf_include")})
    keys, reverses, trees = await asyncio.gather(
        asyncio.gather(*(dns.dkim_key(sel, d) for sel, d in selectors)),
        asyncio.gather(*(dns.reverse(ip) for ip in sorted({s.ip for s in sources}))),
        asyncio.gather(*(dns.spf_tree(include) for include in includes)))
    targets = {(k.selector, k.domain): k.target for k in keys}
    confirmed = {r.ip: r.confirmed for r in reverses}
    problems = ([f"DKIM {k.selector}._domainkey.{k.domain}" for k in keys if k.temporary]
                + [f"reverse DNS of {r.ip}: {r.errors}" for r in reverses if r.errors]
                + [f"SPF of {t.domain}: {t.errors}" for t in trees if t.temporary])

    for s in sources:
        for d, sel, result in s.dkim:
            if result != "pass":
                continue
            claim("dkim_domain", d, s)
            target = targets.get((sel, d.lower())) if own(s, d) else None
            if target:
                claim("dkim_cname_suffix", target, s)
        for d, _, result in s.spf:
            if result == "pass" and d:
                claim("return_path_domain", d, s)
        for name in confirmed.get(s.ip, ()):
            claim("rdns_suffix", name, s)
    for include, tree in zip(includes, trees, strict=True):
        for service in catalog.by_spf_include(include):
            fact = next(f for f in service.facts("spf_include") if f.value == include)
            for s in sources:
                if tree.contains(s.ip) and _uses(catalog, s.expected_service, (), service, fact):
                    used[service.key, fact.kind, fact.value].add(s.line)

    every = [(svc.key, f.kind, f.value) for svc in catalog.services for f in svc.evidence]
    return Coverage(used={k: tuple(sorted(v)) for k, v in used.items()},
                    unused=tuple(k for k in every if k not in used), problems=tuple(problems))
