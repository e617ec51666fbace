"""Per-domain totals for `dmarcbot summary`, computed from daily rollups and the ledger."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable

from analysis.rollup import RollupKey


@dataclasses.dataclass(frozen=True, slots=True)
class SourceTotal:
    ip: str
    messages: int
    dmarc_pass: int


@dataclasses.dataclass(frozen=True, slots=True)
class DomainSummary:
    domain: str
    first_day: str
    last_day: str
    messages: int
    dmarc_pass: int
    spf_aligned_pass: int
    dkim_aligned_pass: int
    reporters: dict[str, int]  # reporter org name -> reports
    top_sources: tuple[SourceTotal, ...]

    @staticmethod
    def percent(part: int, whole: int) -> float:
        return round(100.0 * part / whole, 1) if whole else 0.0


@dataclasses.dataclass
class _Totals:
    first_day: str = "9999-12-31"
    last_day: str = "0000-01-01"
    messages: int = 0
    dmarc_pass: int = 0
    spf: int = 0
    dkim: int = 0
    sources: Counter[str] = dataclasses.field(default_factory=Counter)
    source_pass: Counter[str] = dataclasses.field(default_factory=Counter)


def summarise(rollups: Iterable[tuple[RollupKey, int]],
              reports: Iterable[tuple[str, str]], top: int = 5) -> list[DomainSummary]:
    """`reports` is (policy domain, reporter org name) per stored report; domains sorted by name."""
    totals: dict[str, _Totals] = defaultdict(_Totals)
    for key, messages in rollups:
        t = totals[key.policy_domain]
        t.first_day = min(t.first_day, key.day)
        t.last_day = max(t.last_day, key.day)
        t.messages += messages
        passed = key.dkim_aligned or key.spf_aligned
        t.dmarc_pass += messages if passed else 0
        t.spf += messages if key.spf_aligned else 0
        t.dkim += messages if key.dkim_aligned else 0
        t.sources[key.source_ip] += messages
        if passed:
            t.source_pass[key.source_ip] += messages
    reporters: dict[str, Counter[str]] = defaultdict(Counter)
    for domain, org in reports:
        reporters[domain][org] += 1
    out = []
    for domain in sorted(totals):
        t = totals[domain]
        ranked = sorted(t.sources.items(), key=lambda item: (-item[1], item[0]))[:top]
        out.append(DomainSummary(
            domain=domain, first_day=t.first_day, last_day=t.last_day, messages=t.messages,
            dmarc_pass=t.dmarc_pass, spf_aligned_pass=t.spf, dkim_aligned_pass=t.dkim,
            reporters=dict(sorted(reporters[domain].items(), key=lambda i: (-i[1], i[0]))),
            top_sources=tuple(SourceTotal(ip, n, t.source_pass[ip]) for ip, n in ranked),
        ))
    return out
