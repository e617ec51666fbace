"""A domain's DNS posture and the road to enforcement, written as the records to publish.

The checks follow RFC 9989 (DMARC: removed `pct`/`rf`/`ri`, new `np`/`t`/`psd`, authorised
external report destinations) and RFC 7208 (SPF: one record, at most 10 lookups and 2 void
lookups, no `+all`). Readiness is the share of mail from approved or compliant services that
passes with aligned DKIM, because only DKIM survives forwarding (RFC 9989 requires it for
`p=reject`). The next step moves one level at a time, `p=none` → `quarantine` → `reject`, using
`t=y` (test mode: receivers apply one level less) when the domain is nearly but not quite ready.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence

from analysis.catalog import Catalog
from analysis.dnsevidence import DkimKey, DmarcRecord, DnsEvidence, SpfTree
from analysis.spf import MAX_LOOKUPS, MAX_VOID_LOOKUPS
from analysis.verdicts import ServiceVerdict

#: Readiness at or above which the next policy is proposed outright; between TEST and READY it
#: is proposed with t=y; below TEST the domain stays where it is and fixes its blockers first.
READY = 0.98
TEST = 0.95
#: A pending or failing service below this share of the domain's mail does not block.
BLOCKER_SHARE = 0.005
_NEXT = {None: "quarantine", "none": "quarantine", "quarantine": "reject", "reject": "reject"}
_REMOVED_TAGS = {"pct": "pct is removed in RFC 9989 and ignored by its receivers; use t=y for "
                        "a softer step", "rf": "rf is removed in RFC 9989", "ri": "ri is removed "
                        "in RFC 9989 (receivers choose the interval)"}


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    level: str  # "error" (breaks something), "warning" (should change), "info"
    topic: str  # "dmarc", "spf", "dkim", "reports", "forwarding"
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class DnsChange:
    """One record to publish (or replace): name, type, value, and why."""

    name: str
    type: str
    value: str
    why: str


@dataclasses.dataclass(frozen=True, slots=True)
class Posture:
    domain: str
    dmarc: DmarcRecord
    spf: SpfTree
    findings: tuple[Finding, ...]
    readiness: float  # share of considered mail passing with aligned DKIM (0..1)
    considered_messages: int
    ready_messages: int
    blockers: tuple[str, ...]
    policy: str | None  # the p= in force (None: no record)
    next_policy: str
    next_step: str
    changes: tuple[DnsChange, ...]


# -- pure checks ---------------------------------------------------------------------------


def dmarc_findings(domain: str, record: DmarcRecord) -> list[Finding]:
    if record.temporary:
        return [Finding("warning", "dmarc", "the DMARC record could not be looked up now "
                        "(timeout or SERVFAIL); try again")]
    out = [Finding("error", "dmarc", e) for e in record.errors]
    if record.record is None:
        out.append(Finding("error", "dmarc", f"no DMARC record applies to {domain}: receivers "
                           "apply no policy and send no reports"))
        return out
    tags = record.tags
    if record.found_at != domain:
        out.append(Finding("info", "dmarc", f"the record of {record.found_at} applies "
                           f"(no _dmarc.{domain} record; found by the RFC 9989 tree walk)"))
    p = tags.get("p", "").lower()
    if not p:
        out.append(Finding("warning", "dmarc", "no p= tag: treated as p=none; say it explicitly"))
    elif p not in ("none", "quarantine", "reject"):
        out.append(Finding("error", "dmarc", f"p={p} is not none, quarantine or reject"))
    for tag, text in _REMOVED_TAGS.items():
        if tag in tags:
            out.append(Finding("warning" if tag == "pct" else "info", "dmarc", text))
    if tags.get("t", "n").lower() == "y":
        out.append(Finding("info", "dmarc", "t=y (test mode): receivers apply one level less "
                           "than p= and report policy_test_mode"))
    psd = tags.get("psd", "").lower()
    if psd == "y":
        out.append(Finding("warning", "dmarc", "psd=y declares a public suffix domain; only "
                           "registries should publish it"))
    if not tags.get("rua"):
        out.append(Finding("warning", "reports", "no rua= tag: no aggregate reports are sent"))
    return out


def spf_findings(tree: SpfTree) -> list[Finding]:
    if tree.temporary:
        return [Finding("warning", "spf", "part of the SPF tree could not be looked up now "
                        "(timeout or SERVFAIL); try again")]
    out = []
    if tree.record is None:
        out.append(Finding("error", "spf", f"{tree.domain} has no SPF record: publish one, "
                           "ending in -all"))
    for error in tree.errors:
        out.append(Finding("error", "spf", error))
    if tree.record is not None:
        if tree.all_qualifier == "+":
            out.append(Finding("error", "spf", "+all authorises every server on the Internet"))
        elif tree.all_qualifier == "?":
            out.append(Finding("warning", "spf", "?all is neutral: it authorises nothing and "
                               "rejects nothing; end with -all"))
        elif tree.all_qualifier is None and "redirect=" not in tree.record:
            out.append(Finding("warning", "spf", "no 'all' at the end: unlisted servers get a "
                               "neutral result; end with -all"))
        if tree.lookups <= MAX_LOOKUPS and tree.lookups >= MAX_LOOKUPS - 1:
            out.append(Finding("warning", "spf", f"{tree.lookups} of {MAX_LOOKUPS} DNS lookups "
                               "used: one more include breaks SPF for every message"))
        if 0 < tree.void_lookups <= MAX_VOID_LOOKUPS:
            out.append(Finding("warning", "spf", f"{tree.void_lookups} void lookup(s): an "
                               "include or a/mx name that has no record"))
    return out


def dkim_findings(keys: Sequence[DkimKey]) -> list[Finding]:
    out = []
    for key in keys:
        name = f"{key.selector}._domainkey.{key.domain}"
        if key.temporary:
            out.append(Finding("warning", "dkim", f"{name} could not be looked up now"))
        elif key.record is None:
            where = f" (its CNAME target {key.target} does not exist)" if key.target else ""
            out.append(Finding("error", "dkim", f"{name} has no DKIM key{where}, but mail is "
                               "signed with it"))
        elif "p=;" in key.record.replace(" ", "") or key.record.replace(" ", "").endswith("p="):
            out.append(Finding("warning", "dkim", f"{name} is revoked (empty p=)"))
    return out


def readiness(services: Sequence[ServiceVerdict], statuses: Mapping[str, str]
              ) -> tuple[int, int, list[str]]:
    """(considered, passing with aligned DKIM, blockers) for one domain's services.

    Considered: named services that are Approved, or compliant and not Rejected. Forwarded mail,
    impostors and unidentified sources are left out: enforcement is meant to stop the latter.
    """
    total = sum(s.messages for s in services) or 1
    considered = ready = 0
    blockers = []
    for s in services:
        status = statuses.get(s.service_key)
        if s.verdict in ("forwarded", "impostor", "unknown") or status == "Rejected":
            continue
        if status == "Approved" or s.verdict == "compliant":
            considered += s.messages
            ready += s.dkim_aligned_pass
        share = s.messages / total
        if s.verdict != "compliant" and share >= BLOCKER_SHARE:
            if status == "Approved":
                blockers.append(f"{s.service_name}: {s.messages:,} messages, "
                                f"{_pct(s.dkim_aligned_pass, s.messages)} with aligned DKIM; "
                                f"{s.advice}")
            else:
                blockers.append(f"{s.service_name}: {s.messages:,} messages, not approved yet "
                                f"({s.verdict}); its owner must approve or reject it")
    return considered, ready, blockers


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.0f} %" if whole else "0 %"


def proposed_dmarc(domain: str, record: DmarcRecord, policy: str, test: bool) -> DnsChange:
    """The DMARC record with `p` moved on: reporting and alignment tags kept, removed ones gone."""
    tags = dict(record.tags) if record.record else {}
    keep = {k: v for k, v in tags.items()
            if k not in ("v", "p", "t", "pct", "rf", "ri", "psd")}
    if "sp" in keep and keep["sp"].lower() == "none" and policy != "none":
        keep["sp"] = policy
    parts = ["v=DMARC1", f"p={policy}"] + (["t=y"] if test else [])
    parts += [f"{k}={v}" for k, v in keep.items()]
    if "rua" not in keep:
        parts.append(f"rua=mailto:dmarc-reports@{domain}")
    why = f"move to p={policy}" + (" in test mode (receivers apply one level less)"
                                     if test else "")
    return DnsChange(f"_dmarc.{domain}", "TXT", "; ".join(parts), why)


def plan(domain: str, record: DmarcRecord, considered: int, ready: int,
         blockers: Sequence[str], forwarded_lists: int) -> tuple[str, str, list[DnsChange]]:
    """(next policy, next step in words, DMARC change) from readiness and the current policy."""
    policy = record.tags.get("p", "none").lower() if record.record else None
    testing = record.tags.get("t", "n").lower() == "y"
    share = ready / considered if considered else 0.0
    if record.record is None:
        change = proposed_dmarc(domain, record, "none", test=False)
        return "none", "publish a DMARC record with p=none and read the reports", [change]
    if policy == "reject" and not testing:
        return "reject", "at enforcement: keep watching the reports for new senders", []
    target = _NEXT.get(policy, "quarantine")  # reject + t=y: drop t=y when ready
    if not considered:
        return policy or "none", (f"stay at p={policy}: no sender is approved or passes with "
                                  "aligned DKIM yet; resolve the blockers first"), []
    if blockers:
        return policy or "none", (f"stay at p={policy} until the {len(blockers)} blocker(s) are "
                                  f"resolved ({_pct(ready, considered)} of approved mail passes "
                                  "with aligned DKIM)"), []
    if share < TEST:
        return policy or "none", (f"stay at p={policy}: only {_pct(ready, considered)} of "
                                  f"approved mail passes with aligned DKIM (needs "
                                  f"{TEST:.0%})"), []
    if target == "reject" and forwarded_lists:
        note = (f"; {forwarded_lists:,} messages go through mailing lists, which p=reject "
                "breaks: stay at quarantine for at least a month first (RFC 9989)")
    else:
        note = ""
    test = share < READY or (testing and policy != target)
    change = proposed_dmarc(domain, record, target, test=test)
    step = (f"move to p={target}" + (" with t=y" if test else "") +
            f": {_pct(ready, considered)} of approved mail passes with aligned DKIM{note}")
    return target, step, [change]


def spf_changes(domain: str, tree: SpfTree, services: Sequence[ServiceVerdict],
                statuses: Mapping[str, str], catalog: Catalog) -> tuple[list[Finding],
                                                                        list[DnsChange]]:
    """Includes that approved services still need, without breaking the 10-lookup limit."""
    findings: list[Finding] = []
    changes: list[DnsChange] = []
    if tree.record is None:
        return findings, changes
    needed = []
    for s in services:
        if s.verdict != "needs-spf" or statuses.get(s.service_key) == "Rejected":
            continue
        service = catalog.get(s.service_key)
        include = next((p.value for p in service.publish if p.kind == "spf_include"), None)
        if include and include not in tree.includes:
            needed.append((service.name, include))
    if not needed:
        return findings, changes
    # Each include costs at least one lookup (more when it includes others).
    if tree.lookups + len(needed) > MAX_LOOKUPS:
        names = ", ".join(name for name, _ in needed)
        findings.append(Finding("warning", "spf", (
            f"adding the includes for {names} would take SPF to at least "
            f"{tree.lookups + len(needed)} lookups (limit {MAX_LOOKUPS}): send them from a "
            f"subdomain (e.g. mail.{domain}) with its own SPF record, or rely on DKIM alone for "
            "them (their DMARC pass then comes from aligned DKIM)")))
        return findings, changes
    terms = tree.record.split()
    insert_at = next((i for i, t in enumerate(terms) if t.lstrip("+-~?").lower() == "all"),
                     len(terms))
    terms[insert_at:insert_at] = [f"include:{include}" for _, include in needed]
    changes.append(DnsChange(domain, "TXT", " ".join(terms),
                             "authorise " + ", ".join(name for name, _ in needed)))
    return findings, changes


def dkim_changes(services: Sequence[ServiceVerdict], statuses: Mapping[str, str],
                 catalog: Catalog) -> list[DnsChange]:
    """The DKIM records of approved (or pending) services that still fail DKIM alignment."""
    changes = []
    for s in services:
        if s.verdict != "needs-dkim" or statuses.get(s.service_key) == "Rejected":
            continue
        for step in catalog.get(s.service_key).publish:
            if step.kind in ("dkim_cname", "dkim_txt"):
                kind = "CNAME" if step.kind == "dkim_cname" else "TXT"
                name = f"{step.name}.{s.domain}" if step.name != "@" else s.domain
                why = f"DKIM for {s.service_name}" + (f" ({step.note})" if step.note else "")
                changes.append(DnsChange(name, kind, step.value, why))
    return changes


# -- the shell around the checks -------------------------------------------------------------


async def assess(domain: str, dns: DnsEvidence, services: Sequence[ServiceVerdict],
                 statuses: Mapping[str, str], catalog: Catalog) -> Posture:
    """Look up the domain's records and put everything together."""
    domain = domain.lower().rstrip(".")
    selectors = sorted({(sel, d) for s in services for src in s.sources
                        for (d, sel, _), _ in src.identification.activity.dkim
                        if sel and (d == domain or d.endswith("." + domain))})
    record, tree, keys = await asyncio.gather(
        dns.dmarc(domain), dns.spf_tree(domain),
        asyncio.gather(*(dns.dkim_key(sel, d) for sel, d in selectors)))
    findings = dmarc_findings(domain, record) + spf_findings(tree) + dkim_findings(keys)
    for uri in record.tags.get("rua", "").split(","):
        destination = uri.strip().removeprefix("mailto:").partition("@")[2].partition("!")[0]
        destination = destination.lower()
        if destination and not (destination == domain or destination.endswith("." + domain)):
            authorised = await dns.report_authorised(domain, destination)
            if authorised is False:
                findings.append(Finding("error", "reports", (
                    f"{destination} has not authorised reports for {domain}: its owner must "
                    f"publish {domain}._report._dmarc.{destination} TXT \"v=DMARC1\"")))
    considered, ready, blockers = readiness(services, statuses)
    lists = sum(s.messages for s in services
                if s.verdict == "forwarded" and s.category == "list-server")
    if lists:
        findings.append(Finding("info", "forwarding", f"{lists:,} messages reach receivers "
                                "through mailing lists; p=reject will bounce some of them"))
    next_policy, step, dmarc_change = plan(domain, record, considered, ready, blockers, lists)
    spf_notes, spf_change = spf_changes(domain, tree, services, statuses, catalog)
    findings.extend(spf_notes)
    changes = dmarc_change + spf_change + dkim_changes(services, statuses, catalog)
    policy = record.tags.get("p", "none").lower() if record.record else None
    return Posture(domain, record, tree, tuple(findings),
                   ready / considered if considered else 0.0, considered, ready,
                   tuple(blockers), policy, next_policy, step, tuple(changes))

