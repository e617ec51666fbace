"""A domain's DNS posture and the road to enforcement, written as the records to publish.

The checks follow RFC 9989 (DMARC: removed `pct`/`rf`/`ri`, new `np`/`t`/`psd`, authorised
external report destinations) and RFC 7208 (SPF: one record, at most 10 lookups and 2 void
lookups, no `+all`). Readiness is the share of the domain's own mail (its own accounts' lines,
approved or compliant) that passes with aligned DKIM, because only DKIM survives forwarding (RFC
9989 requires it for `p=reject`); `analysis.readiness` judges it line by line. The next step
moves one level at a time, `p=none` → `quarantine` → `reject`, using `t=y` (test mode: receivers
apply one level less) when the domain is nearly but not quite ready.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence

from analysis import spfadvice
from analysis.catalog import Catalog
from analysis.dnsevidence import (
    DkimKey,
    DmarcRecord,
    DnsEvidence,
    DnsTemporaryError,
    ReportDestination,
    SpfTree,
)
from analysis.readiness import BLOCKER_SHARE as BLOCKER_SHARE
from analysis.readiness import PostureLine, judge_lines
from analysis.readiness import pct as _pct
from analysis.records import dmarc as dmarc_rules
from analysis.records.bimi import parse_bimi
from analysis.records.dkim import parse_dkim_key
from analysis.records.dmarc import (
    POLICIES,
    Intent,
    asks,
    intent_of,
    is_dmarc,
    near_dmarc,
    parse_dmarc,
    render,
)
from analysis.records.findings import DnsChange as DnsChange
from analysis.records.findings import Finding as Finding
from analysis.records.mtasts import (
    PolicyFetcher,
    PolicyResponse,
    announced,
    policy_findings,
    policy_host,
    policy_url,
    sts_record_findings,
)
from analysis.records.tlsrpt import tlsrpt_findings
from analysis.spf import MAX_LOOKUPS
from analysis.verdicts import ServiceVerdict

#: Readiness at or above which the next policy is proposed outright; between TEST and READY it
#: is proposed with t=y; below TEST the domain stays where it is and fixes its blockers first.
READY = 0.98
TEST = 0.95
_NEXT = {None: "quarantine", "none": "quarantine", "quarantine": "reject", "reject": "reject"}


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
    #: every line as the next policy would meet it (blocker, stopped by enforcement, question)
    lines: tuple[PostureLine, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Readiness:
    """The mail behind the next step (see `readiness`): what a stricter policy would meet."""

    considered: int
    ready: int
    blockers: tuple[str, ...]


# -- pure checks ---------------------------------------------------------------------------


def dmarc_findings(domain: str, record: DmarcRecord,
                   destinations: Mapping[str, ReportDestination] | None = None,
                   ready: Readiness | None = None) -> list[Finding]:
    """What is wrong with the DMARC records that apply to `domain`, each with its fix.

    `destinations` (host -> what DNS says, from `DnsEvidence.report_destination`) adds the
    checks of `rua`/`ruf` hosts; without it only the published text is judged. `ready` lets
    records that disagree say what the stricter one would do to the domain's mail.
    """
    if record.temporary:
        return [Finding("warning", "dmarc", "the DMARC record could not be looked up now "
                        "(timeout or SERVFAIL); try again", code="dmarc.temporary")]
    out = [Finding("error", "dmarc", e, dmarc_rules.S_DISCOVERY, code="dmarc.multiple")
           for e in record.errors]
    out += _own_name_findings(domain, record, ready)
    if record.record is None:  # its fix, if the records at _dmarc.<domain> carry none
        fix = None if _own_records(domain, record) else _first_record(domain, record)
        out.append(Finding("error", "dmarc", f"no DMARC record applies to {domain}: receivers "
                           "apply no policy and send no reports", "RFC 9989 §4.10.1", fix,
                           code="dmarc.none"))
        return out
    at = record.found_at or domain
    if at != domain:
        out.append(Finding("info", "dmarc", f"the record of {at} applies (no _dmarc.{domain} "
                           "record; found by the RFC 9989 tree walk)", "RFC 9989 §4.10.1",
                           code="dmarc.inherited"))
    policy = parse_dmarc(record.record)
    repair = _repair(at, (record.record,))
    resolved = {f.code for f in parse_dmarc(repair.value).findings}
    effect, effect_tag = _duplicate_effect(policy, ready)
    for finding in policy.findings:
        if effect and finding.code == "dmarc.duplicate-tag" and finding.text.startswith(
                f"the tag {effect_tag} appears"):
            finding = dataclasses.replace(finding, text=finding.text + effect)
        if finding.code == "dmarc.psd" and at != domain:
            org = ".".join(domain.split(".")[-len(at.split(".")) - 1:])
            out.append(Finding("warning", "dmarc", f"{org} publishes no DMARC record, so the "
                               f"public suffix's record at {at} (psd=y) applies to {domain}: "
                               f"publish your own at _dmarc.{org}", "RFC 9989 §4.10.2",
                               code="dmarc.psd-record-applies"))
            continue
        fixed = finding.code not in resolved and finding.level != "info"
        out.append(dataclasses.replace(finding, fix=repair) if fixed else finding)
    if at == domain or policy.choice("psd") != "y":  # a registry's destinations are its own
        out += _destination_findings(domain, at, policy, destinations or {})
    return out


def _own_records(domain: str, record: DmarcRecord) -> tuple[str, ...]:
    """The TXT strings at `_dmarc.<domain>` that are, or were meant as, DMARC records."""
    own = record.own or ((record.record,) if record.found_at == domain and record.record else ())
    return tuple(r for r in own if is_dmarc(r) or near_dmarc(r))


def _own_name_findings(domain: str, record: DmarcRecord,
                       ready: Readiness | None = None) -> list[Finding]:
    """Two records, near-misses and stray TXT at `_dmarc.<domain>`, and records at the apex."""
    out = []
    name = f"_dmarc.{domain}"
    valid = [r for r in record.own if is_dmarc(r)]
    near = [r for r in record.own if near_dmarc(r)]
    if len(valid) > 1:
        texts = (*valid, *near)
        intents = [intent_of(parse_dmarc(t, lenient=True)) for t in texts]
        fix = _repair(domain, texts)
        if dmarc_rules.disagree(intents):
            said = ", ".join(f"record {n} {'asks ' if n == 1 else ''}for {asks(i)}"
                             for n, i in enumerate(intents, 1))
            strict = max(intents, key=lambda i: i.strength())
            text = (f"{name} has {len(texts)} DMARC records that disagree ({said}): receivers "
                    "discard them all, so today they apply no policy and send no reports; all "
                    "of them must go, replaced by the one record below, which keeps the weakest "
                    f"({asks(intent_of(parse_dmarc(fix.value)))}) and every report address"
                    + _strict_effect(strict, intent_of(parse_dmarc(fix.value)), ready))
        else:
            text = (f"{name} has {len(valid)} DMARC records: receivers discard them all; all of "
                    "them must go, replaced by the one record below")
        out.append(Finding("error", "dmarc", text, "RFC 9989 §4.10", fix, code="dmarc.multiple"))
    for text in near:
        finding = parse_dmarc(text).findings[0]
        if valid:  # a record applies; this one only confuses whoever reads the zone
            out.append(dataclasses.replace(finding, level="warning", text=finding.text + "; "
                       "remove it", fix=DnsChange(name, "TXT", "", "remove the record "
                                                  "receivers ignore", (text,))))
        else:
            out.append(dataclasses.replace(finding, fix=_repair(domain, (text,))))
    for text in record.own:
        if not is_dmarc(text) and not near_dmarc(text):
            out.append(Finding("info", "dmarc", f"{name} also holds a TXT record that is not "
                               f"DMARC ({_short(text)}); receivers ignore it", "RFC 9989 §4.10",
                               code="dmarc.unrelated"))
    for text in record.apex:
        out.append(Finding("warning", "dmarc", f"{domain} itself holds a DMARC record "
                           f"({_short(text)}): receivers only read {name}, so it does nothing",
                           "RFC 9989 §4.5", DnsChange(domain, "TXT", "", "remove the DMARC "
                                                      "record receivers never read", (text,)),
                           code="dmarc.apex"))
    return out


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _strict_effect(strict: Intent, weak: Intent, ready: Readiness | None) -> str:
    """What publishing the stricter of two versions that disagree would do to the domain's mail
    (receivers apply neither today); "" when it asks no more of the domain's own mail."""
    level = strict.strength()[0]
    if level <= weak.strength()[0]:
        return ""
    verb = "reject" if level == 2 else "quarantine"
    head = f"; publishing the stricter ({asks(strict)}) instead would {verb} "
    if ready is None:
        return head + "every message that fails DMARC: move up only as the plan says"
    if ready.blockers:
        names = ", ".join(b.split(":", 1)[0] for b in ready.blockers)
        return head + (f"the failing mail of {_the_blockers(len(ready.blockers))} ({names}), "
                       "mail that receivers deliver today")
    if not ready.considered:
        return head + ("any of the domain's mail that fails DMARC: no sender is approved or "
                       "passes with aligned DKIM yet")
    failing = ready.considered - ready.ready
    if failing:
        return head + (f"those of the {failing:,} approved messages without aligned DKIM that "
                       "fail SPF alignment too")
    return head + "no approved mail (all of it passes with aligned DKIM): the plan moves one step"


def _the_blockers(count: int) -> str:
    return "the blocker" if count == 1 else f"the {count} blockers"


def _duplicate_effect(policy: dmarc_rules.DmarcPolicy, ready: Readiness | None
                      ) -> tuple[str, str]:
    """(effect, tag) for a record whose duplicated p or t disagree (`p=reject; p=none`): what
    its strictest reading would do, for the finding about that tag."""
    differ = dmarc_rules.conflicts(policy)
    tag = "p" if "p" in differ else "t" if "t" in differ else ""
    if not tag:
        return "", ""
    weak = intent_of(policy)
    ps = [p for p in POLICIES if p in differ.get("p", (weak.p,))]
    strict = dataclasses.replace(weak, p=ps[-1], t="n" if "t" in differ else weak.t)
    return _strict_effect(strict, weak, ready), tag


def _repair(at: str, texts: Sequence[str]) -> DnsChange:
    """One clean record that asks for what `texts` (published at `_dmarc.<at>`) ask for."""
    intent = dmarc_rules.merge([intent_of(parse_dmarc(t, lenient=True)) for t in texts])
    why = ("replace the records with one" if len(texts) > 1
           else "the same policy, written so receivers can read it")
    return DnsChange(f"_dmarc.{at}", "TXT", render(intent), why, tuple(texts))


def _first_record(domain: str, record: DmarcRecord) -> DnsChange:
    """The record to publish where none applies (a misplaced apex record's policy, if any)."""
    base = _base_intent(domain, record)
    if base is None:
        return DnsChange(f"_dmarc.{domain}", "TXT",
                         f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}",
                         "publish a DMARC record with p=none and read the reports")
    return DnsChange(f"_dmarc.{domain}", "TXT", render(base), "publish the policy where "
                     "receivers look for it", _own_records(domain, record))


def _destination_findings(domain: str, at: str, policy: dmarc_rules.DmarcPolicy,
                          destinations: Mapping[str, ReportDestination]) -> list[Finding]:
    out = []
    for tag in ("rua", "ruf"):
        for uri in policy.uris(tag):
            found = destinations.get(uri.host or "")
            if found is None:
                continue
            host = found.host
            if found.exists is False:
                out.append(Finding("error", "reports", f"{tag}: {host} does not exist, so "
                                   f"{'aggregate' if tag == 'rua' else 'failure'} reports never "
                                   "arrive", "RFC 5321 §5.1", code="reports.no-domain"))
            elif found.mx is False:
                out.append(Finding("warning", "reports", f"{tag}: {host} has no MX record: "
                                   "reports only arrive if its address accepts mail",
                                   "RFC 5321 §5.1", code="reports.no-mx"))
            if found.external is None:
                out.append(Finding("warning", "reports", f"{tag}: could not tell now whether "
                                   f"{host} is outside {at}'s organisation (DNS did not answer)",
                                   "RFC 9990 §3", code="reports.unknown"))
            elif found.external and found.authorised is None:
                out.append(Finding("warning", "reports", f"{tag}: could not look up whether "
                                   f"{host} accepts reports for {at}", "RFC 9990 §3",
                                   code="reports.unknown"))
            elif found.external and not found.authorised:
                out.append(Finding("error", "reports", (
                    f"{host} has not authorised {tag} reports for {at}: receivers drop them; "
                    f"its owner must publish {at}._report._dmarc.{host} TXT \"v=DMARC1\""),
                    "RFC 9990 §3", DnsChange(f"{at}._report._dmarc.{host}", "TXT", "v=DMARC1",
                                             f"{host} accepts reports about {at}"),
                    code="reports.unauthorised"))
    return out


def spf_findings(tree: SpfTree) -> list[Finding]:
    """RFC 7208 findings for the domain's SPF tree, each with its fix (`analysis.spfadvice`)."""
    return spfadvice.findings(tree)


def dkim_findings(keys: Sequence[DkimKey]) -> list[Finding]:
    """Each selector seen signing must have a usable key (RFC 6376 §3.6.1, RFC 8301, RFC 8463)."""
    out = []
    for key in keys:
        name = f"{key.selector}._domainkey.{key.domain}"
        if key.temporary:
            out.append(Finding("warning", "dkim", f"{name} could not be looked up now",
                               code="dkim.temporary"))
        elif key.record is None:
            where = f" (its CNAME target {key.target} does not exist)" if key.target else ""
            out.append(Finding("error", "dkim", f"{name} has no DKIM key{where}, but mail is "
                               "signed with it", "RFC 6376 §6.1.2", code="dkim.missing"))
        else:
            out.extend(parse_dkim_key(key.record, name).findings)
    return out


def _base_intent(domain: str, record: DmarcRecord) -> Intent | None:
    """What the domain's DMARC asks for now, the floor every proposal must cover.

    Its own records (broken ones read for their intent; two merged into one, the weakest where
    they disagree, as receivers apply neither); else the record it inherits, with the parent's
    subdomain policy (`sp`) as its `p`; else a misplaced apex record. One valid record is what
    receivers apply: near-misses beside it, which they ignore, neither raise nor lower it.
    """
    own = _own_records(domain, record)
    if own:
        valid = [t for t in own if is_dmarc(t)]
        chosen = valid if len(valid) == 1 else own
        return dmarc_rules.merge([intent_of(parse_dmarc(t, lenient=True)) for t in chosen])
    if record.record is not None:
        parent = intent_of(parse_dmarc(record.record))
        psd = parse_dmarc(record.record).choice("psd") == "y"
        sub = parent.sp or parent.p
        return Intent(p=sub, t=parent.t, np=parent.np if parent.np != sub else None,
                      adkim=parent.adkim, aspf=parent.aspf,
                      rua=() if psd else parent.rua, ruf=() if psd else parent.ruf,
                      fo=None if psd else parent.fo)
    if record.apex:
        return dmarc_rules.merge([intent_of(parse_dmarc(t, lenient=True)) for t in record.apex])
    return None


def _needs_repair(domain: str, record: DmarcRecord) -> bool:
    """The domain's own DMARC record is broken in a way receivers notice (an error finding)."""
    own = _own_records(domain, record)
    if len(own) != 1 or not is_dmarc(own[0]):
        return bool(own)
    repaired = render(intent_of(parse_dmarc(own[0])))
    return repaired != own[0] and any(f.level == "error" for f in parse_dmarc(own[0]).findings)


def proposed_dmarc(domain: str, record: DmarcRecord, policy: str, test: bool) -> DnsChange:
    """The domain's DMARC record with `p` moved on: reporting and alignment tags kept, removed
    ones gone, replacing whatever `_dmarc.<domain>` holds now."""
    return _proposal(domain, record, _base_intent(domain, record) or Intent(), policy, test)[0]


def _proposal(domain: str, record: DmarcRecord, base: Intent, policy: str,
              test: bool, *, moving: bool = True) -> tuple[DnsChange, Intent]:
    """The record for `policy` (with t=y when `test`), and what it asks for; one that moves on
    (`moving`) asks for reports when the published one does not.

    Never weaker than `base`: t=y is dropped where it would soften an sp or np in force, and
    should anything else come out weaker the base itself is proposed.
    """
    sp = policy if base.sp == "none" and policy != "none" else base.sp
    rua = base.rua or ((f"mailto:dmarc-reports@{domain}",) if moving else ())
    intent = dataclasses.replace(base, p=policy, t="y" if test else "n", sp=sp, rua=rua)
    if not intent.covers(base):
        intent = dataclasses.replace(intent, t="n")
    if not intent.covers(base):
        intent = dataclasses.replace(base, rua=rua)
    why = (f"move to p={intent.p}" + (" in test mode (receivers apply one level less)"
                                        if intent.t == "y" else "") if moving
           else "the policy published now, in one record receivers can read")
    change = DnsChange(f"_dmarc.{domain}", "TXT", render(intent), why,
                       _own_records(domain, record))
    return change, intent


def plan(domain: str, record: DmarcRecord, considered: int, ready: int,
         blockers: Sequence[str], forwarded_lists: int) -> tuple[str, str, list[DnsChange]]:
    """(next policy, next step in words, DMARC change) from readiness and the current policy.

    Advice only moves forward: the record proposed never asks for less than the published one
    (`Intent.covers`), keeps every report destination, and replaces what `_dmarc.<domain>`
    holds instead of adding a second record. A broken record is repaired with its intent.
    Records (or duplicated tags) that disagree start from the weakest of them, since receivers
    apply none today: going further is a step like any other, taken only when readiness allows.
    """
    base = _base_intent(domain, record)
    share = ready / considered if considered else 0.0
    if base is None:
        change = proposed_dmarc(domain, record, "none", test=False)
        return "none", "publish a DMARC record with p=none and read the reports", [change]
    policy, testing = base.p, base.t == "y"
    repair = _needs_repair(domain, record) or record.record is None
    fix = [_proposal(domain, record, base, policy, testing, moving=False)[0]] if repair else []
    mend = "repair the DMARC record (see the findings), then " if repair else ""
    if policy == "reject" and not testing:
        if repair:
            return "reject", ("repair the DMARC record (see the findings): until then receivers "
                              "may not apply p=reject"), fix
        return "reject", "at enforcement: keep watching the reports for new senders", []
    target = _NEXT[policy]  # reject + t=y: drop t=y when ready
    if not considered:
        return policy, (f"{mend}stay at p={policy}: no sender is approved or passes with "
                        "aligned DKIM yet; resolve the blockers first"), fix
    if blockers:
        are = "is" if len(blockers) == 1 else "are"
        return policy, (f"{mend}stay at p={policy} until {_the_blockers(len(blockers))} {are} "
                        f"resolved ({_pct(ready, considered)} of approved mail passes with "
                        "aligned DKIM)"), fix
    if share < TEST:
        return policy, (f"{mend}stay at p={policy}: only {_pct(ready, considered)} of approved "
                        f"mail passes with aligned DKIM (needs {TEST:.0%})"), fix
    if target == "reject" and forwarded_lists:
        note = (f"; {forwarded_lists:,} messages go through mailing lists, which p=reject "
                "breaks: stay at quarantine for at least a month first (RFC 9989)")
    else:
        note = ""
    test = share < READY or (testing and policy != target)
    change, asked = _proposal(domain, record, base, target, test)
    if test and asked.t != "y" and share < READY:
        # t=y would soften an sp or np already in force; without it the step is too big for a
        # domain that is not fully ready, so it stays (repaired if it must be)
        return policy, (f"{mend}stay at p={policy}: t=y would soften the subdomain policy in "
                        f"force, and {_pct(ready, considered)} is not yet {READY:.0%}"), fix
    if change.replaces == (change.value,):
        return policy, (f"stay: the record already asks for this ({_pct(ready, considered)} of "
                        "approved mail passes with aligned DKIM)"), []
    step = (f"{mend}move to p={asked.p}" + (" with t=y" if asked.t == "y" else "") +
            f": {_pct(ready, considered)} of approved mail passes with aligned DKIM{note}")
    return asked.p, step, [change]


def spf_includes_needed(tree: SpfTree, services: Sequence[ServiceVerdict],
                        statuses: Mapping[str, str], catalog: Catalog) -> list[tuple[str, str]]:
    """(service name, include) for services that need an SPF include the record lacks."""
    needed = []
    for s in services:
        if s.verdict != "needs-spf" or statuses.get(s.service_key) == "Rejected":
            continue
        service = catalog.get(s.service_key)
        include = next((p.value for p in service.publish if p.kind == "spf_include"), None)
        if include and include not in tree.includes and (service.name, include) not in needed:
            needed.append((service.name, include))
    return needed


async def spf_include_costs(dns: DnsEvidence, includes: Sequence[str]) -> dict[str, int]:
    """Lookups each include costs (itself plus its tree); broken or unreachable ones are left
    out, so they are never proposed."""
    trees = await asyncio.gather(*(dns.spf_tree(include) for include in includes))
    return {include: 1 + tree.lookups for include, tree in zip(includes, trees, strict=True)
            if not tree.temporary and not tree.errors}


def spf_changes(domain: str, tree: SpfTree, services: Sequence[ServiceVerdict],
                statuses: Mapping[str, str], catalog: Catalog,
                include_costs: Mapping[str, int] | None = None
                ) -> tuple[list[Finding], list[DnsChange]]:
    """Includes that approved services still need, never beyond the 10-lookup limit.

    Built on the repaired record when the record has fixable problems. `include_costs` are the
    lookups each include costs (`spf_include_costs`); without them each counts 1, the least an
    include can cost.
    """
    findings: list[Finding] = []
    changes: list[DnsChange] = []
    if tree.record is None or tree.temporary:
        return findings, changes
    needed = spf_includes_needed(tree, services, statuses, catalog)
    if not needed:
        return findings, changes
    fixed = spfadvice.repair(tree)
    broken = [p for p in tree.problems if p.permerror
              and not (fixed and spfadvice.own(tree, p.domain) and p.code in fixed.fixed)]
    if broken or (tree.errors and not tree.problems):
        names = ", ".join(name for name, _ in needed)
        findings.append(Finding("warning", "spf", f"{names} need(s) an SPF include, but the "
                                "record fails for every message now: fix it first (see the "
                                "SPF errors)", "RFC 7208 §2.6.7", code="spf.include-blocked"))
        return findings, changes
    base, lookups = (fixed.record, fixed.lookups) if fixed else (tree.record, tree.lookups)
    costs = {include: (include_costs or {}).get(include, 1 if include_costs is None else 0)
             for _, include in needed}
    unknown = [include for include, cost in costs.items() if not cost]
    if unknown:
        findings.append(Finding("warning", "spf", f"the SPF record of {', '.join(unknown)} "
                                "could not be checked now (or is broken): it is not proposed",
                                "RFC 7208 §4.6.4", code="spf.include-unchecked"))
        needed = [(name, include) for name, include in needed if include not in unknown]
        if not needed:
            return findings, changes
    total = lookups + sum(costs[include] for _, include in needed)
    if total > MAX_LOOKUPS:
        names = ", ".join(name for name, _ in needed)
        findings.append(Finding("warning", "spf", (
            f"adding the includes for {names} would take SPF to {total} lookups (limit "
            f"{MAX_LOOKUPS}): send them from a subdomain (e.g. mail.{domain}) with its own SPF "
            "record, or rely on DKIM alone for them (their DMARC pass then comes from aligned "
            "DKIM)"), "RFC 7208 §4.6.4", code="spf.include-over-limit"))
        return findings, changes
    terms = base.split()
    insert_at = next((i for i, t in enumerate(terms) if t.lstrip("+-~?").lower() == "all"),
                     len(terms))
    terms[insert_at:insert_at] = [f"include:{include}" for _, include in needed]
    why = "authorise " + ", ".join(name for name, _ in needed)
    if fixed:
        why += "; " + "; ".join(fixed.done)
    changes.append(DnsChange(domain, "TXT", " ".join(terms), why, (tree.record,)))
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
                 statuses: Mapping[str, str], catalog: Catalog, *,
                 sts_fetcher: PolicyFetcher | None = None) -> Posture:
    """Look up the domain's records and put everything together.

    `sts_fetcher` fetches the MTA-STS policy file over HTTPS (`graph.mta_sts`); without it only
    the `_mta-sts` TXT record is judged, as `analysis/` itself does no HTTP.
    """
    domain = domain.lower().rstrip(".")
    selectors = sorted({(sel, d) for s in services if s.domain == domain
                        for sel, d in s.selectors})
    record, tree, keys = await asyncio.gather(
        dns.dmarc(domain), dns.spf_tree(domain, full=True),
        asyncio.gather(*(dns.dkim_key(sel, d) for sel, d in selectors)))
    destinations = await report_destinations(dns, record)
    judged = judge_lines(services, statuses)
    considered, ready, blockers = judged.considered, judged.ready, list(judged.blockers)
    findings = (dmarc_findings(domain, record, destinations,
                               Readiness(considered, ready, tuple(blockers)))
                + spf_findings(tree) + dkim_findings(keys)
                + await transport_findings(dns, domain, sts_fetcher))
    lists = sum(s.messages for s in services
                if s.verdict == "forwarded" and s.category == "list-server")
    if lists:
        findings.append(Finding("info", "forwarding", f"{lists:,} messages reach receivers "
                                "through mailing lists; p=reject will bounce some of them",
                                "RFC 9989 §7.4", code="forwarding.lists"))
    next_policy, step, dmarc_change = plan(domain, record, considered, ready, blockers, lists)
    needed = spf_includes_needed(tree, services, statuses, catalog)
    costs = await spf_include_costs(dns, [include for _, include in needed])
    spf_notes, spf_change = spf_changes(domain, tree, services, statuses, catalog, costs)
    findings.extend(spf_notes)
    changes = dmarc_change + spf_change + dkim_changes(services, statuses, catalog)
    parsed = record.parsed
    policy = parsed.policy if parsed is not None else None
    return Posture(domain, record, tree, tuple(findings),
                   ready / considered if considered else 0.0, considered, ready,
                   tuple(blockers), policy, next_policy, step, tuple(changes), judged.lines)


async def report_destinations(dns: DnsEvidence, record: DmarcRecord
                              ) -> dict[str, ReportDestination]:
    """What DNS says about every `rua`/`ruf` host of the record that applies (RFC 9990 §3)."""
    policy = record.parsed
    if policy is None or record.found_at is None:
        return {}
    hosts = sorted({u.host for tag in ("rua", "ruf") for u in policy.uris(tag)
                    if u.host and u.scheme == "mailto"})
    found = await asyncio.gather(*(dns.report_destination(record.found_at, h) for h in hosts))
    return {d.host: d for d in found}


async def transport_findings(dns: DnsEvidence, domain: str,
                             sts_fetcher: PolicyFetcher | None = None) -> list[Finding]:
    """MTA-STS (`_mta-sts`), TLS-RPT (`_smtp._tls`) and BIMI (`default._bimi`) TXT records:
    optional, so only what is published is judged. With `sts_fetcher`, a valid `_mta-sts`
    record also gets its policy file fetched and judged (`sts_policy_findings`)."""
    names = (f"_mta-sts.{domain}", f"_smtp._tls.{domain}", f"default._bimi.{domain}")
    try:
        sts, tls, bimi = await asyncio.gather(*(dns.lookup(n, "TXT") for n in names))
    except DnsTemporaryError:
        return [Finding("warning", "mta-sts", "the MTA-STS, TLS-RPT and BIMI records could not "
                        "be looked up now", code="transport.temporary")]
    out = sts_record_findings(domain, sts.records)
    if sts_fetcher is not None and announced(sts.records):
        out += await sts_policy_findings(dns, domain, sts_fetcher)
    out += tlsrpt_findings(domain, tls.records)
    bimi_records = [t for t in bimi.records if t.lower().lstrip().startswith("v=bimi")]
    if len(bimi_records) > 1:
        out.append(Finding("error", "bimi", f"default._bimi.{domain} has {len(bimi_records)} "
                           "BIMI records: mailbox providers use none", "BIMI draft",
                           code="bimi.multiple"))
    elif bimi_records:
        out.extend(parse_bimi(bimi_records[0]).findings)
    return out


async def sts_policy_findings(dns: DnsEvidence, domain: str, fetcher: PolicyFetcher
                              ) -> list[Finding]:
    """The policy file a valid `_mta-sts` record announces (RFC 8461 §3.3): fetched by `fetcher`
    from the addresses DNS gives `mta-sts.<domain>`, judged by `analysis.records.mtasts`, its
    `mx:` lines held against the domain's MX hosts (§4.1)."""
    host = policy_host(domain)
    try:
        a, aaaa = await asyncio.gather(dns.lookup(host, "A"), dns.lookup(host, "AAAA"))
    except DnsTemporaryError:
        return [Finding("warning", "mta-sts", f"the addresses of {host} could not be looked up "
                        "now: the MTA-STS policy file was not fetched", code="transport.temporary")]
    addresses = (*a.records, *aaaa.records)

    async def fetched() -> PolicyResponse:
        if addresses:
            return await fetcher.fetch(host, addresses)
        return PolicyResponse(policy_url(host), "no-address", f"{host} has no A or AAAA record")

    async def mx_hosts() -> list[str] | None:  # None: not known now
        try:
            mx = await dns.lookup(domain, "MX")
        except DnsTemporaryError:
            return None
        return [h for h in (r.split()[-1].rstrip(".").lower() for r in mx.records) if h]

    response, hosts = await asyncio.gather(fetched(), mx_hosts())
    return policy_findings(domain, response, hosts)
