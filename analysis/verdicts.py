"""What to do about each sender: a verdict per source and per (domain, service), in plain words.

`compliant` passes with aligned DKIM; `needs-dkim` passes only through SPF (or not at all) and a
DKIM record would fix it; `needs-spf` sends with the domain as return-path but is not in its SPF
record; `forwarded` is indirect mail (forwarders, mailing lists, Microsoft 365 forwarding), not a
sender to approve; `impostor` fails both and nothing names it; `unknown` is everything else.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable

from analysis.catalog import Catalog, PublishStep, Service
from analysis.identify import (
    COMPLIANT_SHARE,
    UNKNOWN,
    Identification,
    NetworkIndex,
    foreign_envelope,
    looks_forwarded,
    own,
    receiver_says_forwarded,
    signed_by_owner,
)

MICROSOFT_365 = "microsoft365"
_MICROSOFT_KEYS = (MICROSOFT_365, "microsoft365-forwarding")


@dataclasses.dataclass(frozen=True, slots=True)
class SourceVerdict:
    identification: Identification
    verdict: str
    diagnosis: str | None  # a specific finding (Microsoft 365 cases), else None
    advice: str  # one sentence for the domain owner


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceVerdict:
    """All sources of one service sending as one domain, summed."""

    domain: str
    service_key: str
    service_name: str
    category: str
    platform_key: str | None
    messages: int
    dmarc_pass: int
    dkim_aligned_pass: int
    spf_aligned_pass: int
    verdict: str
    diagnosis: str | None
    advice: str
    confidence: float
    sources: tuple[SourceVerdict, ...]
    evidence: tuple[str, ...]
    records: tuple[PublishStep, ...]  # what the domain owner would publish for it
    first_day: str
    last_day: str

    @property
    def needs_decision(self) -> bool:
        """A named sender its owner should approve or reject (not forwarders or impostors)."""
        return self.service_key != UNKNOWN and self.verdict not in ("forwarded", "impostor")


def _microsoft(identification: Identification, m365_networks: NetworkIndex | None,
               ) -> tuple[str, str] | None:
    """Microsoft 365's own diagnoses: (verdict, diagnosis) or None."""
    a = identification.activity
    signed_tenant = [d for (d, _, result), _ in a.dkim
                     if result == "pass" and d.endswith(".onmicrosoft.com")]
    microsoft_ptr = (identification.ptr_confirmed
                     and (identification.ptr or "").endswith(".outbound.protection.outlook.com"))
    if (m365_networks is not None and not m365_networks.services(a.ip) and microsoft_ptr
            and identification.platform_key in (None, *_MICROSOFT_KEYS)):
        return ("forwarded", "Microsoft 365 relay pool: forwarded or relayed mail leaves from "
                "Microsoft IPs outside the published SPF ranges; not a sender to approve")
    if foreign_envelope(a) and signed_by_owner(a):
        return ("forwarded", "forwarded by another Microsoft 365 tenant (SRS rewrote the "
                "return-path to the forwarder's domain)")
    if (identification.service_key == MICROSOFT_365 and signed_tenant and a.spf_aligned_pass
            and a.dkim_aligned_pass * 2 < a.messages):
        return ("needs-dkim", f"DKIM is not enabled for {a.domain} in Microsoft 365: mail is "
                f"signed only as {signed_tenant[0]}")
    return None


def source_verdict(identification: Identification, catalog: Catalog,
                   m365_networks: NetworkIndex | None = None) -> SourceVerdict:
    """The verdict for one source (`m365_networks`: Microsoft 365's own SPF networks, if known)."""
    a = identification.activity
    service = (catalog.get(identification.service_key)
               if identification.service_key != UNKNOWN else None)
    if service is not None and service.key in _MICROSOFT_KEYS:
        found = _microsoft(identification, m365_networks)
        if found is not None:
            verdict, diagnosis = found
            return SourceVerdict(identification, verdict, diagnosis, diagnosis)
    if service is not None and service.forwarder:
        return SourceVerdict(identification, "forwarded", None,
                             f"indirect mail through {service.name}; nothing to approve")
    mailbox = service is not None and service.category == "mailbox"
    if service is not None and mailbox and foreign_envelope(a) and not signed_by_owner(a):
        return SourceVerdict(identification, "unknown", None, (
            f"sent through {service.name} by an account that is not the domain's own (the "
            "envelope is another domain's, and no signature of the domain's): if nobody here "
            "uses it, enforcement will block it"))
    if receiver_says_forwarded(a) or (mailbox and looks_forwarded(a)):
        via = service.name if service else "an intermediary"
        return SourceVerdict(identification, "forwarded", None,
                             f"forwarded through {via}: only aligned DKIM survives "
                             "forwarding; nothing to approve")
    if a.dkim_aligned_pass >= COMPLIANT_SHARE * a.messages and service is not None:
        return SourceVerdict(identification, "compliant", None,
                             "passes DMARC with aligned DKIM; ready for enforcement")
    if service is None:
        if a.dmarc_pass == 0:
            return SourceVerdict(identification, "impostor", None,
                                 "fails SPF and DKIM and no known service sends from here: "
                                 "enforcement will block it")
        return SourceVerdict(identification, "unknown", None,
                             "cannot be named; look at its reverse DNS and evidence")
    return _fix(identification, service)


def _fix(identification: Identification, service: Service) -> SourceVerdict:
    a = identification.activity
    dkim_steps = [p for p in service.publish if p.kind in ("dkim_cname", "dkim_txt")]
    include = next((p.value for p in service.publish if p.kind == "spf_include"), None)
    own_return_path = any(own(a.domain, d) for (d, _, _), _ in a.spf if d)
    if a.spf_aligned_pass == 0 and own_return_path and include and not dkim_steps:
        return SourceVerdict(identification, "needs-spf", None,
                             f"add include:{include} to the SPF record of {a.domain}")
    if dkim_steps:
        names = ", ".join(sorted({p.name for p in dkim_steps}))
        advice = f"set up DKIM for {a.domain} in {service.name} and publish {names}"
    else:
        advice = f"set up DKIM signing for {a.domain} in {service.name} ({service.doc})"
    if a.spf_aligned_pass == 0 and own_return_path and include:
        advice += f"; meanwhile add include:{include} to the SPF record"
    return SourceVerdict(identification, "needs-dkim", None, advice)


def service_verdicts(verdicts: Iterable[SourceVerdict], catalog: Catalog) -> list[ServiceVerdict]:
    """Sum sources per (domain, service); the verdict is the one most of the messages got."""
    groups: dict[tuple[str, str], list[SourceVerdict]] = defaultdict(list)
    for v in verdicts:
        groups[v.identification.activity.domain, v.identification.service_key].append(v)
    out = []
    for (domain, key), members in sorted(groups.items()):
        by_verdict: Counter[str] = Counter()
        for m in members:
            by_verdict[m.verdict] += m.identification.activity.messages
        verdict = by_verdict.most_common(1)[0][0]
        lead = max((m for m in members if m.verdict == verdict),
                   key=lambda m: m.identification.activity.messages)
        service = catalog.get(key) if key != UNKNOWN else None
        platforms = Counter(m.identification.platform_key for m in members
                            if m.identification.platform_key)
        evidence = tuple(dict.fromkeys(e for m in members for e in m.identification.evidence))
        out.append(ServiceVerdict(
            domain=domain, service_key=key,
            service_name=service.name if service else "Unidentified sources",
            category=service.category if service else UNKNOWN,
            platform_key=platforms.most_common(1)[0][0] if platforms else None,
            messages=sum(m.identification.activity.messages for m in members),
            dmarc_pass=sum(m.identification.activity.dmarc_pass for m in members),
            dkim_aligned_pass=sum(m.identification.activity.dkim_aligned_pass for m in members),
            spf_aligned_pass=sum(m.identification.activity.spf_aligned_pass for m in members),
            verdict=verdict, diagnosis=lead.diagnosis, advice=lead.advice,
            confidence=min(m.identification.confidence for m in members),
            sources=tuple(sorted(members, key=lambda m: -m.identification.activity.messages)),
            evidence=evidence[:12],
            records=service.publish if service else (),
            first_day=min(m.identification.activity.first_day for m in members),
            last_day=max(m.identification.activity.last_day for m in members),
        ))
    return out
