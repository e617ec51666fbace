"""What to do about each sender: a verdict per source, then lines per service and account.

Each source (a policy domain and a source IP) is judged on its own evidence: what authenticated,
for which identity, aligned or not, and whose account (`analysis.accounts`). Only then are
sources grouped for display, into lines per (domain, service, account, verdict): the domain's
own account of a service is one line and one decision, and whatever else came through the same
service (another tenant, mail signed for nobody, forwarded mail) is a line of its own, so a
minority is never outvoted by the majority of a row.

`compliant` passes with aligned DKIM; `needs-dkim` passes only through SPF (or not at all) and a
DKIM record would fix it; `needs-spf` sends with the domain as return-path but is not in its SPF
record; `forwarded` is indirect mail (forwarders, mailing lists, Microsoft 365 forwarding), not a
sender to approve; `impostor` fails both and is not the domain's (nothing names it, or it came
from another account of a service the domain has its own account at); `unknown` is what the
evidence cannot settle, with the question to ask. A source that passes aligned SPF or aligned
DKIM is never an impostor.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from analysis.accounts import (
    OTHER,
    OWN,
    Account,
    Claim,
    DomainAccounts,
    Memo,
    account_claim,
    account_of,
    accounts_from_claims,
    tenants_from_dns,
)
from analysis.catalog import Catalog, PublishStep, Service
from analysis.identify import (
    COMPLIANT_SHARE,
    DNS_LOOKED_UP,
    UNKNOWN,
    Identification,
    NetworkIndex,
    dkim_survives,
    foreign_envelope,
    looks_forwarded,
    own,
    receiver_says_forwarded,
    signed_by_owner,
)

MICROSOFT_365 = "microsoft365"
_MICROSOFT_KEYS = (MICROSOFT_365, "microsoft365-forwarding")
#: Verdicts of a sender its owner approves or rejects (the others are not senders to approve).
APPROVABLE = ("compliant", "needs-dkim", "needs-spf")
UNIDENTIFIED = "Unidentified sources"
FORWARDED = "forwarded"  # the account label of forwarded mail under a mailbox provider's name
#: The largest sources a line carries in full (`ServiceVerdict.sources`); the rest are counted.
SHOWN_SOURCES = 10


@dataclasses.dataclass(frozen=True, slots=True)
class SourceVerdict:
    identification: Identification
    verdict: str
    diagnosis: str | None  # a specific finding (Microsoft 365 cases), else None
    advice: str  # one sentence for the domain owner: what to do, or the question to ask
    #: What sets it apart from the domain's own account of its service ("another tenant (x)",
    #: "not signed for example.com", "forwarded"); "" for that account itself. For sources no
    #: service names, what kind of unknown it is. It names the line the source shows on.
    account: str = ""
    #: what it proves of the domain's own account at its service (analysis.accounts), if it
    #: sent directly and aligned
    claim: Claim | None = None


class Member(NamedTuple):
    """What a line needs of one judged source: its sums, its verdict and the little the line
    shows of every member. A domain keeps one per source (analysis.remembered), so a naming
    builds every line again without decoding and judging each source again; only the few a
    line shows in full (`detail`) are."""

    domain: str
    ip: str
    service_key: str
    account: str
    verdict: str
    messages: int
    dmarc_pass: int
    dkim_aligned_pass: int
    spf_aligned_pass: int
    confidence: float
    first_day: str
    last_day: str
    platform_key: str | None
    dns: str
    evidence: tuple[str, ...]
    #: (selector, d=) of its DKIM results under the domain's own names, for the posture
    selectors: tuple[tuple[str, str], ...]
    #: what it proves of the domain's own account at its service (analysis.accounts)
    claim: Claim | None


def member_of(verdict: SourceVerdict) -> Member:
    i = verdict.identification
    a = i.activity
    suffix = "." + a.domain
    selectors = tuple(sorted({(s, d) for (d, s, _), _ in a.dkim
                              if s and (d == a.domain or d.endswith(suffix))}))
    return Member(a.domain, a.ip, i.service_key, verdict.account, verdict.verdict, a.messages,
                  a.dmarc_pass, a.dkim_aligned_pass, a.spf_aligned_pass, i.confidence,
                  a.first_day, a.last_day, i.platform_key, i.dns, i.evidence, selectors,
                  verdict.claim)


@dataclasses.dataclass(frozen=True, slots=True)
class LinePart:
    """The members of a line with one verdict, summed (a line of the domain's own account
    mixes compliant sources with some that need DKIM or SPF)."""

    verdict: str
    sources: int
    messages: int
    dmarc_pass: int
    dkim_aligned_pass: int
    advice: str  # its largest source's


@dataclasses.dataclass(frozen=True, slots=True)
class SetAside:
    """Another line of the same (domain, service): not part of what its owner approves."""

    name: str
    verdict: str
    sources: int
    messages: int


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceVerdict:
    """One line: the sources of one service and account sending as one domain, summed."""

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
    #: its largest sources (at most SHOWN_SOURCES), largest first; `source_count` counts all
    sources: tuple[SourceVerdict, ...]
    evidence: tuple[str, ...]
    records: tuple[PublishStep, ...]  # what the domain owner would publish for it
    first_day: str
    last_day: str
    account: str = ""  # "" for the domain's own account of the service (SourceVerdict.account)
    #: on the line its owner decides on: the other lines of the same service, kept out of it
    set_aside: tuple[SetAside, ...] = ()
    source_count: int = 0
    parts: tuple[LinePart, ...] = ()  # per verdict of its members, in verdict order
    #: sources per reverse DNS status other than looked up ("not looked up (budget)": 3)
    dns_statuses: tuple[tuple[str, int], ...] = ()
    #: (selector, d=) of the DKIM results of its members under the domain's own names
    selectors: tuple[tuple[str, str], ...] = ()

    @property
    def line_name(self) -> str:
        """The service, and the account when it is not the domain's own."""
        return f"{self.service_name} \u2014 {self.account}" if self.account else self.service_name

    @property
    def line_key(self) -> tuple[str, str, str, str]:
        """Which members it has (`line_key`): ("" for the verdict of a decision line)."""
        return (self.domain, self.service_key, self.account,
                "" if self.needs_decision else self.verdict)

    @property
    def needs_decision(self) -> bool:
        """The domain's own account of a named service, which its owner approves or rejects
        (never forwarders, impostors, other accounts or what the evidence cannot settle)."""
        return (self.service_key != UNKNOWN and not self.account
                and self.verdict in APPROVABLE)


# -- one source ---------------------------------------------------------------------------------


def _verdict(identification: Identification, verdict: str, advice: str, *,
             account: str = "", diagnosis: str | None = None) -> SourceVerdict:
    return SourceVerdict(identification, verdict, diagnosis, advice, account)


def _relayed_by_microsoft(identification: Identification, m365_networks: NetworkIndex | None
                          ) -> str | None:
    """Microsoft 365 forwarding (its relay pool, or SRS by another tenant): the diagnosis."""
    a = identification.activity
    microsoft_ptr = (identification.ptr_confirmed
                     and (identification.ptr or "").endswith(".outbound.protection.outlook.com"))
    if (m365_networks is not None and not m365_networks.services(a.ip) and microsoft_ptr
            and identification.platform_key in (None, *_MICROSOFT_KEYS)):
        return ("Microsoft 365 relay pool: forwarded or relayed mail leaves from Microsoft IPs "
                "outside the published SPF ranges; not a sender to approve")
    if foreign_envelope(a) and signed_by_owner(a):
        return ("forwarded by another Microsoft 365 tenant (SRS rewrote the return-path to the "
                "forwarder's domain)")
    return None


def forwarded_verdict(identification: Identification, catalog: Catalog,
                      m365_networks: NetworkIndex | None = None,
                      accounts: DomainAccounts | None = None) -> SourceVerdict | None:
    """The verdict of indirect mail (forwarders, lists, relays), or None for direct mail.
    `accounts`: the domain's own accounts, whose tenant signature marks the domain's mail."""
    a = identification.activity
    if identification.service_key == UNKNOWN:
        return _unnamed_forwarded(identification, catalog)
    service = catalog.get(identification.service_key)
    if service.key in _MICROSOFT_KEYS:
        diagnosis = _relayed_by_microsoft(identification, m365_networks)
        if diagnosis is not None:
            return _verdict(identification, "forwarded", diagnosis, diagnosis=diagnosis,
                            account="" if service.forwarder else FORWARDED)
    if service.forwarder:
        return _verdict(identification, "forwarded",
                        f"indirect mail through {service.name}; nothing to approve")
    if receiver_says_forwarded(a) or (service.category == "mailbox" and looks_forwarded(a)):
        return _through(identification, service)
    return _relayed_own(identification, service, accounts)


def _through(identification: Identification, service: Service) -> SourceVerdict:
    return _verdict(identification, "forwarded", f"forwarded through {service.name}: only "
                    "aligned DKIM survives forwarding; nothing to approve", account=FORWARDED)


def _relayed_own(identification: Identification, service: Service,
                 accounts: DomainAccounts | None) -> SourceVerdict | None:
    """A mailbox provider passed on mail signed by the domain's own account elsewhere (its
    Microsoft 365 tenant, say) without aligned SPF: forwarded, even with that signature
    unaligned (DKIM not enabled for the domain)."""
    a = identification.activity
    if (accounts is not None and service.category == "mailbox" and not a.spf_aligned_pass
            and accounts.signed_by_own_account(a, service.key)):
        return _through(identification, service)
    return None


def _unnamed_forwarded(identification: Identification, catalog: Catalog
                       ) -> SourceVerdict | None:
    a = identification.activity
    says = bool(a.reasons) and receiver_says_forwarded(a)
    owner_signed = bool(a.dkim) and signed_by_owner(a)
    if not (says or owner_signed or identification.forwarded_from):
        return None  # no reason, no signature of the domain's: sent directly
    if identification.delegated is not None and not says:
        return None  # the domain's key and the envelope are one service's: it sent directly
    via = identification.ptr or a.ip
    if identification.forwarded_from is not None:
        sender = catalog.get(identification.forwarded_from).name
        return _verdict(identification, "forwarded", (
            f"{sender} mail of {a.domain}, passed on by {via} (a forwarder, an alias or a "
            "list): its DKIM signature survived, so it passes; nothing to approve"),
            account=FORWARDED)
    if says or (owner_signed and foreign_envelope(a)):
        return _verdict(identification, "forwarded", (
            f"forwarded by {via}: the receiver says so, or {a.domain}'s signature arrives with "
            "the forwarder's envelope; nothing to approve"), account=FORWARDED)
    if dkim_survives(a):
        return _verdict(identification, "forwarded", (
            f"{a.domain}'s DKIM signature survives but SPF fails: forwarded by {via}, or a "
            f"server of {a.domain}'s own that its SPF record lacks"), account=FORWARDED)
    return None


def source_verdict(identification: Identification, catalog: Catalog,
                   m365_networks: NetworkIndex | None = None,
                   accounts: DomainAccounts | None = None) -> SourceVerdict:
    """The verdict for one source. `m365_networks`: Microsoft 365's own SPF networks, if known;
    `accounts`: the domain's own accounts (`judge_sources` works them out for a whole run)."""
    forwarded = forwarded_verdict(identification, catalog, m365_networks, accounts)
    if forwarded is not None:
        return forwarded
    if identification.service_key == UNKNOWN:
        return _unnamed(identification, catalog)
    return _direct(identification, catalog, accounts)


def _direct(identification: Identification, catalog: Catalog,
            accounts: DomainAccounts | None) -> SourceVerdict:
    """A named source that sent directly: its account, then what to do about it."""
    service = catalog.get(identification.service_key)
    a = identification.activity
    account = account_of(identification, catalog, accounts)
    mailbox = service.category == "mailbox"
    proven = accounts is not None and service.key in accounts.proven
    if account.kind == OTHER and a.dmarc_pass:
        return _verdict(identification, "unknown", (
            f"{account.proof}. Ask: is {account.identity} an account of yours? If not, only "
            f"DKIM for {a.domain} (and an SPF record without {service.name}'s shared servers) "
            "keeps it out"), account=_other(service, account))
    if account.kind == OTHER and proven and not a.dmarc_pass:
        return _verdict(identification, "impostor", (
            f"{a.domain} has its own {service.name} account, and this is another one "
            f"({account.proof}): someone else's {service.name} sends as {a.domain}; "
            "enforcement will block it"), account=_other(service, account))
    if account.kind != OWN and proven:
        # The vendor's shared identity or its servers alone: the vendor, not the account.
        return _verdict(identification, "unknown", (
            f"not from {a.domain}'s own {service.name} account, which signs for {a.domain} "
            f"({account.proof}). Ask: does another team of yours send through a second "
            f"{service.name} account? If so, set up DKIM for {a.domain} in it; if not, it is "
            "someone else's account and enforcement will block it"),
            account=f"not signed for {a.domain}")
    if mailbox and account.kind != OWN and foreign_envelope(a) and not signed_by_owner(a):
        return _verdict(identification, "unknown", (
            f"sent through {service.name} by an account that is not {a.domain}'s own (the "
            "envelope is another domain's, and no signature of the domain's): if nobody here "
            "uses it, enforcement will block it"),
            account=_other(service, account) if account.identity else "another account")
    if (service.key == MICROSOFT_365 and account.kind == OWN and a.spf_aligned_pass
            and a.dkim_aligned_pass * 2 < a.messages):
        tenant = next((d for (d, _, r), _ in a.dkim
                       if r == "pass" and d.endswith(".onmicrosoft.com")), None)
        if tenant is not None:
            diagnosis = (f"DKIM is not enabled for {a.domain} in Microsoft 365: mail is signed "
                         f"only as {tenant}")
            return _verdict(identification, "needs-dkim", diagnosis, diagnosis=diagnosis)
    if a.dkim_aligned_pass >= COMPLIANT_SHARE * a.messages:
        return _verdict(identification, "compliant",
                        "passes DMARC with aligned DKIM; ready for enforcement")
    return _fix(identification, service)


def _other(service: Service, account: Account) -> str:
    kind = "tenant" if service.category == "mailbox" else "account"
    return f"another {kind} ({account.identity})" if account.identity else f"another {kind}"


def _unnamed(identification: Identification, catalog: Catalog) -> SourceVerdict:
    """A source no service names: an impostor only when it fails everything and nothing in
    the evidence hints at a sender; otherwise the question to ask."""
    a = identification.activity
    where = a.ip + (f" ({identification.ptr})" if identification.ptr else "")
    if identification.spf_disputed is not None:
        disputed = identification.spf_disputed
        return _verdict(identification, "unknown", (
            f"the report says SPF passed for {disputed} from {where}, but {disputed}'s SPF "
            "record does not hold that address. Ask: did the SPF record change, or is the "
            "reporter mistaken?"), account="SPF pass not backed by DNS")
    if a.dmarc_pass:
        if identification.in_domain_spf:
            return _verdict(identification, "unknown", (
                f"{where} is listed in {a.domain}'s own SPF record and passes. Ask: is it your "
                "own server (a relay, a web or application server)? If so, sign its mail with "
                "DKIM"), account=f"listed in {a.domain}'s SPF")
        how = "aligned DKIM" if a.dkim_aligned_pass >= a.spf_aligned_pass else "aligned SPF"
        return _verdict(identification, "unknown", (
            f"passes with {how} but no known service sends from {where}. Ask: whose server is "
            "it? Approve it by adding it to the catalog or your own records"),
            account=f"passes {how}")
    if identification.candidate is not None:
        name = catalog.get(identification.candidate).name
        return _verdict(identification, "unknown", (
            f"fails SPF and DKIM; the only clue is weak (the evidence below). Ask: does anyone "
            f"here send through {name}? If so, set it up for {a.domain}; if not, enforcement "
            "will block it"), account=f"maybe {name}")
    return _verdict(identification, "impostor", "fails SPF and DKIM and no known service sends "
                    "from here: enforcement will block it", account="fails SPF and DKIM")


def _fix(identification: Identification, service: Service) -> SourceVerdict:
    a = identification.activity
    dkim_steps = [p for p in service.publish if p.kind in ("dkim_cname", "dkim_txt")]
    include = next((p.value for p in service.publish if p.kind == "spf_include"), None)
    own_return_path = any(own(a.domain, d) for (d, _, _), _ in a.spf if d)
    if a.spf_aligned_pass == 0 and own_return_path and include and not dkim_steps:
        return _verdict(identification, "needs-spf",
                        f"add include:{include} to the SPF record of {a.domain}")
    if dkim_steps:
        names = ", ".join(sorted({p.name for p in dkim_steps}))
        advice = f"set up DKIM for {a.domain} in {service.name} and publish {names}"
    else:
        advice = f"set up DKIM signing for {a.domain} in {service.name} ({service.doc})"
    if a.spf_aligned_pass == 0 and own_return_path and include:
        advice += f"; meanwhile add include:{include} to the SPF record"
    return _verdict(identification, "needs-dkim", advice)


# -- a whole run --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Judging:
    """A run's verdicts, in order, and its domains' own accounts they were judged against."""

    verdicts: list[SourceVerdict]
    accounts: dict[str, DomainAccounts]


def judge_sources(identifications: Sequence[Identification], catalog: Catalog,
                  m365_networks: NetworkIndex | None = None,
                  targets: Mapping[tuple[str, str], str] | None = None) -> list[SourceVerdict]:
    """Every source's verdict, in order (`judge`)."""
    return judge(identifications, catalog, m365_networks, targets).verdicts


def judge(identifications: Sequence[Identification], catalog: Catalog,
          m365_networks: NetworkIndex | None = None,
          targets: Mapping[tuple[str, str], str] | None = None, *,
          kept_claims: Mapping[str, Sequence[Claim]] | None = None) -> Judging:
    """Every source's verdict, in order. The domain's own accounts come first from its DNS
    (`targets`: its DKIM selectors' CNAME targets) and from its direct, aligned sources: these,
    and per domain `kept_claims`, the claims of its sources judged before and not among these
    (analysis.remembered)."""
    targets = targets or {}
    memo: Memo = {}  # catalog lookups, shared by the run's domains
    pinned: dict[str, dict[str, set[str]]] = {}
    claimed: dict[str, list[Claim]] = defaultdict(list)
    indirect: list[SourceVerdict | None] = []
    claims: list[Claim | None] = []
    for ident in identifications:
        domain = ident.activity.domain
        found = (forwarded_verdict(ident, catalog, m365_networks)
                 if ident.service_key != UNKNOWN else None)
        indirect.append(found)
        claim = None
        if ident.service_key != UNKNOWN and found is None:
            if domain not in pinned:
                pinned[domain] = tenants_from_dns(domain, targets, catalog)
            claim = account_claim(ident, catalog, pinned[domain], memo)
            if claim is not None:
                claimed[domain].append(claim)
        claims.append(claim)
    accounts = {}
    for domain in {i.activity.domain for i in identifications} | set(kept_claims or {}):
        own_dns = pinned.get(domain)
        if own_dns is None:
            own_dns = tenants_from_dns(domain, targets, catalog)
        accounts[domain] = accounts_from_claims(
            domain, own_dns, [*(kept_claims or {}).get(domain, ()), *claimed[domain]], memo)
    out = []
    for ident, found, claim in zip(identifications, indirect, claims, strict=True):
        judged = _judged(ident, found, catalog, m365_networks, accounts[ident.activity.domain])
        out.append(judged if claim is None else dataclasses.replace(judged, claim=claim))
    return Judging(out, accounts)


def _judged(ident: Identification, found: SourceVerdict | None, catalog: Catalog,
            m365_networks: NetworkIndex | None, accounts: DomainAccounts) -> SourceVerdict:
    if found is None and ident.service_key != UNKNOWN:
        # direct so far: only the domain's own accounts can show it relayed after all
        service = catalog.get(ident.service_key)
        found = _relayed_own(ident, service, accounts) or _direct(ident, catalog, accounts)
    return found or source_verdict(ident, catalog, m365_networks, accounts)


def judge_again(identification: Identification, catalog: Catalog,
                m365_networks: NetworkIndex | None, targets: Mapping[tuple[str, str], str],
                accounts: DomainAccounts) -> SourceVerdict:
    """One source's verdict in full, as `judge` gave it among all its domain's sources, when
    these are the accounts they showed: a kept source a line shows (analysis.remembered)."""
    ident = identification
    if ident.service_key == UNKNOWN:
        return source_verdict(ident, catalog, m365_networks, accounts)
    found = forwarded_verdict(ident, catalog, m365_networks)
    judged = _judged(ident, found, catalog, m365_networks, accounts)
    if found is not None:
        return judged
    claim = account_claim(ident, catalog, tenants_from_dns(ident.activity.domain, targets,
                                                            catalog), accounts.memo)
    return judged if claim is None else dataclasses.replace(judged, claim=claim)


# -- lines --------------------------------------------------------------------------------------


def service_verdicts(verdicts: Iterable[SourceVerdict], catalog: Catalog) -> list[ServiceVerdict]:
    """Group judged sources into lines (`lines`)."""
    judged = list(verdicts)
    by_source = {(v.identification.activity.domain, v.identification.activity.ip): v
                 for v in judged}
    return lines([member_of(v) for v in judged], catalog,
                 lambda m: by_source[m.domain, m.ip])


def line_key(member: Member) -> tuple[str, str, str, str]:
    """The line a judged source shows on: (domain, service, account, verdict), the verdict ""
    on the domain's own account of a named service, whose owner decides for all its sources."""
    m = member
    decision = m.service_key != UNKNOWN and not m.account and m.verdict in APPROVABLE
    return m.domain, m.service_key, m.account, "" if decision else m.verdict


def lines(members: Iterable[Member], catalog: Catalog,
          detail: Callable[[Member], SourceVerdict]) -> list[ServiceVerdict]:
    """Group judged sources into lines: per (domain, service), the domain's own account is one
    line (its owner's decision) and every other account or verdict a line of its own; the
    decision line comes first within its service and lists the others as set aside.

    A line sums all its members; `detail` gives a member's verdict in full, asked only for
    those a line shows (its largest sources, and the first of each verdict for its advice)."""
    groups: dict[tuple[str, str, str, str], list[Member]] = defaultdict(list)
    for m in members:
        groups[line_key(m)].append(m)
    by_service: dict[tuple[str, str], list[ServiceVerdict]] = defaultdict(list)
    for (domain, key, account, verdict), group in groups.items():
        by_service[domain, key].append(_line(domain, key, account, verdict, group, catalog,
                                             detail))
    out: list[ServiceVerdict] = []
    for _, found in sorted(by_service.items()):
        found.sort(key=lambda s: (not s.needs_decision, -s.messages, s.account, s.verdict))
        first = found[0]
        if first.needs_decision and len(found) > 1:
            found[0] = dataclasses.replace(first, set_aside=tuple(
                SetAside(s.line_name, s.verdict, s.source_count, s.messages)
                for s in found[1:]))
        out.extend(found)
    return out


def _line(domain: str, key: str, account: str, verdict: str, members: list[Member],
          catalog: Catalog, detail: Callable[[Member], SourceVerdict]) -> ServiceVerdict:
    members.sort(key=lambda m: (-m.messages, m.ip))
    # one pass over the members: the unnamed line of a year-old domain holds thousands, and a
    # naming sums every one (analysis.remembered), so the loop does no more than it must
    messages = dmarc = dkim = spf = 0
    confidence = members[0].confidence
    first_day = last_day = members[0].first_day
    platforms: Counter[str] = Counter()
    evidence: dict[str, None] = {}  # the first twelve, in the members' order
    parts: dict[str, list[Any]] = {}  # verdict -> [sources, messages, DMARC, DKIM, first]
    statuses: Counter[str] = Counter()
    selectors: set[tuple[str, str]] = set()
    for m in members:
        messages += m.messages
        dmarc += m.dmarc_pass
        dkim += m.dkim_aligned_pass
        spf += m.spf_aligned_pass
        if m.confidence < confidence:
            confidence = m.confidence
        if m.first_day < first_day:
            first_day = m.first_day
        if m.last_day > last_day:
            last_day = m.last_day
        if m.platform_key:
            platforms[m.platform_key] += 1
        if m.evidence and len(evidence) < 12:
            evidence.update(dict.fromkeys(m.evidence))
        part = parts.get(m.verdict)
        if part is None:
            parts[m.verdict] = [1, m.messages, m.dmarc_pass, m.dkim_aligned_pass, m]
        else:
            part[0] += 1
            part[1] += m.messages
            part[2] += m.dmarc_pass
            part[3] += m.dkim_aligned_pass
        if m.dns != DNS_LOOKED_UP:
            statuses[m.dns] += 1
        if m.selectors:
            selectors.update(m.selectors)
    if not verdict:  # the domain's own account: compliant only when nearly all of it is
        # else the verdict with the most messages, the first met on a tie
        verdict = ("compliant" if dkim >= COMPLIANT_SHARE * messages else
                   max(((v, p[1]) for v, p in parts.items() if v != "compliant"),
                       key=lambda vp: vp[1])[0])
    lead = detail(next((m for m in members if m.verdict == verdict), members[0]))
    service = catalog.get(key) if key != UNKNOWN else None
    return ServiceVerdict(
        domain=domain, service_key=key,
        service_name=service.name if service else UNIDENTIFIED,
        category=service.category if service else UNKNOWN,
        platform_key=platforms.most_common(1)[0][0] if platforms else None,
        messages=messages, dmarc_pass=dmarc, dkim_aligned_pass=dkim, spf_aligned_pass=spf,
        verdict=verdict, diagnosis=lead.diagnosis, advice=lead.advice,
        confidence=confidence,
        sources=tuple(detail(m) for m in members[:SHOWN_SOURCES]),
        evidence=tuple(evidence)[:12],
        records=service.publish if service and not account else (),
        first_day=first_day, last_day=last_day, account=account,
        source_count=len(members),
        parts=tuple(LinePart(v, n, sent, passed, signed, detail(first).advice)
                    for v, (n, sent, passed, signed, first) in sorted(parts.items())),
        dns_statuses=tuple(sorted(statuses.items())), selectors=tuple(sorted(selectors)),
    )
