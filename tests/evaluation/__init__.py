"""The labeled evaluation set for identification, and the scoring that runs it.

`sources.csv` holds one row per (policy domain, source IP) with the expected service and
verdict; `tests/dnslab/zones/evaluation.zone` holds the DNS records those rows rely on.
`hard_cases.csv` (same columns, DNS in `hard.zone`) adds the hard kinds of issue 12: another
tenant, a free ESP account, the domain's own relay and web server, branded setups, shared
infrastructure, forwarders that keep DKIM, subdomains, claims DNS does not back. The rows
are written out as aggregate report XML and go through the product's own path: `read_reports`,
`rollup_rows`, `activities_from_rollups`, `analyse_activities`. Run it with
`python -m tests.evaluation` (starts the knot test server) or `--offline` (report evidence only).

`sources.csv` columns (lines starting with `#` are comments):

- `domain`, `ip`, `messages`, `header_from`, `envelope_from`: the report row.
- `spf`: `domain/scope=result` per SPF result; `dkim`: `d/selector=result` per signature (both
  space-separated, the rollup's own format); `dkim_aligned`, `spf_aligned`: the receiver's
  `policy_evaluated` results (`pass`/`fail`); `disposition`; `reasons`: `type` or
  `type:comment`, separated by `;` (comments may contain spaces).
- `expected_service`: a catalog key, or `unknown`; `expected_verdict`: one of `VERDICTS`.
- `evidence`: what names the source: `dns` (IP in a service's SPF networks, FCrDNS, DKIM
  selector CNAME), `report` (DKIM `d=`, return-path), `both`, or `none`.
- `note`: why the row is labeled so.

Labeling rules (docs/identification.md, reference/sender-facts.md 3.1):

- The product is named from report evidence (DKIM `d=`, selector CNAME, return-path) and the
  platform from infrastructure (IP, reverse DNS): "M365, through Mimecast" is `microsoft365`.
- Forwarded mail (a mailbox provider or forwarder relays it, SPF does not align) is named after
  the provider that relayed it, whatever the original sender was; `microsoft365-forwarding` and
  `microsoft365` count as the same name (the catalog makes the first a forwarder on the second's
  platform). Gmail users' forwarding is `google-forwarding`; a Google Group is `google-groups`.
- `impostor`: fails SPF and DKIM, and no catalog service sends from there (expected service
  `unknown`), or it comes from another tenant of a service at which the domain's own account
  is established by its DNS (selector CNAMEs) or its aligned mail (expected service: the
  vendor). A source that passes aligned SPF or DKIM is never an impostor; one that passes but
  is no catalog service is `unknown`/`unknown`.
- Only catalog facts are relied on; where a service has no usable fact for a case, the row uses
  another service. DNS names and ranges in evaluation.zone are realistic test data, not facts.
- A source whose only evidence is low-confidence facts is labeled `unknown` (issue 12: low
  evidence must not name a sender); its note says which service it probably is. A vendor that
  signs or bounces only with its shared identity (a free ESP account) while the domain's own
  account there signs aligned, or another tenant when the domain has no account of its own
  there, is labeled with the vendor and verdict `unknown`: the network proves the vendor, not
  the account, and the evidence cannot tell a phisher from a second account of the domain's.
- Every catalog fact is exercised by at least one row (`coverage.py`, tests/test_catalog.py).
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from analysis import AggregateReport, read_reports
from analysis.catalog import Catalog, load_catalog
from analysis.dnsevidence import DnsEvidence
from analysis.identify import UNKNOWN, VERDICTS, SourceActivity, activities_from_rollups
from analysis.rollup import RollupKey, report_days, rollup_rows
from analysis.senders import analyse_activities
from analysis.verdicts import (
    APPROVABLE,
    ServiceVerdict,
    SourceVerdict,
    line_key,
    member_of,
)

SOURCES = Path(__file__).resolve().parent / "sources.csv"
HARD_CASES = Path(__file__).resolve().parent / "hard_cases.csv"
#: Targets from the product issues (12: at least 97 % named right).
NAMING_TARGET = 0.97
#: Verdicts of a sender that legitimately sends for the domain (directly or passed on).
LEGITIMATE = ("compliant", "needs-dkim", "needs-spf", "forwarded")
MIN_SOURCES = 200
MIN_SERVICES = 40
EVIDENCE_KINDS = ("dns", "report", "both", "none")
_BEGIN = 1764288000  # 2025-11-28T00:00:00Z: every report covers that one day


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    """One labeled row of `sources.csv`."""

    line: int
    domain: str
    ip: str
    messages: int
    header_from: str
    envelope_from: str
    spf: tuple[tuple[str, str, str], ...]  # (domain, scope, result)
    dkim: tuple[tuple[str, str, str], ...]  # (d=, selector, result)
    dkim_aligned: bool
    spf_aligned: bool
    disposition: str
    reasons: tuple[tuple[str, str | None], ...]  # (type, comment)
    expected_service: str
    expected_verdict: str
    evidence: str
    note: str
    origin: str = "sources.csv"  # the file the row is in (`line` counts in that file)

    @property
    def legitimate(self) -> bool:
        """Labeled as a real sender of the domain's, or as unnamed mail that passes aligned."""
        return (self.expected_verdict in LEGITIMATE
                or (self.expected_verdict == "unknown" and self.expected_service == UNKNOWN
                    and (self.dkim_aligned or self.spf_aligned)))

    @property
    def another_account(self) -> bool:
        """Labeled with a vendor but not as the domain's own account of it."""
        return (self.expected_service != UNKNOWN
                and self.expected_verdict in ("impostor", "unknown"))


def _triples(text: str, what: str, line: int) -> tuple[tuple[str, str, str], ...]:
    out = []
    for item in text.split():
        left, sep, result = item.rpartition("=")
        domain, slash, middle = left.partition("/")
        if not (sep and slash and domain and result):
            raise ValueError(f"sources.csv line {line}: {what} item {item!r} is not d/x=result")
        out.append((domain, middle, result))
    return tuple(out)


def load_sources(path: Path | None = None, catalog: Catalog | None = None) -> list[Source]:
    """Read and check the labeled rows (unknown service keys or verdicts fail loudly): of
    `path`, or of `sources.csv` and `hard_cases.csv` together."""
    catalog = catalog or load_catalog()
    if path is None:
        sources = [*_load(SOURCES, catalog), *_load(HARD_CASES, catalog)]
    else:
        sources = _load(path, catalog)
    seen = Counter((s.domain, s.ip) for s in sources)
    twice = [key for key, n in seen.items() if n > 1]
    if twice:
        raise ValueError(f"evaluation rows: (domain, ip) listed twice: {twice}")
    return sources


def _load(path: Path, catalog: Catalog) -> list[Source]:
    keys = {s.key for s in catalog.services} | {UNKNOWN}
    with path.open(newline="", encoding="utf-8") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    sources = []
    for number, row in enumerate(csv.DictReader(lines), start=2):
        reasons = []
        for reason in filter(None, (r.strip() for r in row["reasons"].split(";"))):
            kind, _, comment = reason.partition(":")
            reasons.append((kind, comment or None))
        source = Source(
            line=number, domain=row["domain"], ip=row["ip"], messages=int(row["messages"]),
            header_from=row["header_from"], envelope_from=row["envelope_from"],
            spf=_triples(row["spf"], "spf", number), dkim=_triples(row["dkim"], "dkim", number),
            dkim_aligned=row["dkim_aligned"] == "pass", spf_aligned=row["spf_aligned"] == "pass",
            disposition=row["disposition"], reasons=tuple(reasons),
            expected_service=row["expected_service"], expected_verdict=row["expected_verdict"],
            evidence=row["evidence"], note=row["note"], origin=path.name)
        problems = [
            f"service {source.expected_service!r} is not a catalog key"
            if source.expected_service not in keys else "",
            f"verdict {source.expected_verdict!r}"
            if source.expected_verdict not in VERDICTS else "",
            f"evidence {source.evidence!r}" if source.evidence not in EVIDENCE_KINDS else "",
            "no SPF result" if not source.spf else "",
            f"aligned flag {row['dkim_aligned']!r}/{row['spf_aligned']!r}"
            if {row["dkim_aligned"], row["spf_aligned"]} - {"pass", "fail"} else "",
        ]
        if any(problems):
            raise ValueError(f"{path.name} line {number}: " + "; ".join(p for p in problems if p))
        sources.append(source)
    return sources


# -- the reports -------------------------------------------------------------------------------


def _record_xml(s: Source) -> str:
    reasons = "".join(
        f"<reason><type>{escape(kind)}</type>"
        + (f"<comment>{escape(comment)}</comment>" if comment else "") + "</reason>"
        for kind, comment in s.reasons)
    envelope = (f"<envelope_from>{escape(s.envelope_from)}</envelope_from>"
                if s.envelope_from else "")
    dkim = "".join(
        f"<dkim><domain>{escape(d)}</domain>"
        + (f"<selector>{escape(sel)}</selector>" if sel else "")
        + f"<result>{escape(result)}</result></dkim>" for d, sel, result in s.dkim)
    spf = "".join(
        f"<spf><domain>{escape(d)}</domain><scope>{escape(scope or 'mfrom')}</scope>"
        f"<result>{escape(result)}</result></spf>" for d, scope, result in s.spf)
    return (
        f"<record><row><source_ip>{s.ip}</source_ip><count>{s.messages}</count>"
        f"<policy_evaluated><disposition>{s.disposition}</disposition>"
        f"<dkim>{'pass' if s.dkim_aligned else 'fail'}</dkim>"
        f"<spf>{'pass' if s.spf_aligned else 'fail'}</spf>{reasons}</policy_evaluated></row>"
        f"<identifiers>{envelope}<header_from>{escape(s.header_from)}</header_from>"
        f"</identifiers><auth_results>{dkim}{spf}</auth_results></record>")


def reports_xml(sources: Sequence[Source]) -> list[bytes]:
    """One aggregate report (RFC 7489 Appendix C shape) per policy domain."""
    by_domain: dict[str, list[Source]] = defaultdict(list)
    for s in sources:
        by_domain[s.domain].append(s)
    out = []
    for domain, members in sorted(by_domain.items()):
        records = "".join(_record_xml(s) for s in members)
        out.append((
            '<?xml version="1.0" encoding="UTF-8"?>\n<feedback><version>1.0</version>'
            "<report_metadata><org_name>Evaluation Receiver</org_name>"
            "<email>dmarc-reports@receiver.test</email>"
            f"<report_id>evaluation-{escape(domain)}</report_id><date_range>"
            f"<begin>{_BEGIN}</begin><end>{_BEGIN + 86400}</end></date_range></report_metadata>"
            f"<policy_published><domain>{escape(domain)}</domain><adkim>r</adkim><aspf>r</aspf>"
            "<p>none</p><sp>none</sp><pct>100</pct></policy_published>"
            f"{records}</feedback>\n").encode())
    return out


def activities_for(sources: Sequence[Source]) -> list[SourceActivity]:
    """The rows through the product's reading and rollup path, folded into activities."""
    rows: list[tuple[RollupKey, int]] = []
    for data in reports_xml(sources):
        for report in read_reports(data, name="evaluation.xml"):
            assert isinstance(report, AggregateReport)
            days = report_days(report.begin, report.end)
            for record in report.records:
                rows.extend(rollup_rows(report, record, days))
    return activities_from_rollups(rows)


# -- scoring -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    source: Source
    verdict: SourceVerdict
    line: ServiceVerdict  # the line it shows on (`senders`, cards and digest)

    @property
    def approved_line(self) -> bool:
        """It shows on a line its owner approves, or on one called compliant."""
        return self.line.needs_decision or self.line.verdict == "compliant"

    @property
    def got_service(self) -> str:
        return self.verdict.identification.service_key

    @property
    def got_verdict(self) -> str:
        return self.verdict.verdict


@dataclasses.dataclass(frozen=True, slots=True)
class Evaluation:
    outcomes: tuple[Outcome, ...]
    catalog: Catalog
    offline: bool
    temporary: tuple[str, ...]  # DNS lookups that failed for now (should be none)

    def same_service(self, expected: str, got: str) -> bool:
        """Exact key, or a forwarder and the platform it runs on (microsoft365-forwarding is
        Microsoft 365's own forwarding: the catalog says so with `platform`)."""
        return _family(self.catalog, expected) == _family(self.catalog, got)

    def named(self, o: Outcome) -> bool:
        return self.same_service(o.source.expected_service, o.got_service)

    @property
    def naming_accuracy(self) -> float:
        return sum(self.named(o) for o in self.outcomes) / len(self.outcomes)

    @property
    def verdict_accuracy(self) -> float:
        return (sum(o.source.expected_verdict == o.got_verdict for o in self.outcomes)
                / len(self.outcomes))

    def impostor_failures(self) -> list[Outcome]:
        """Impostors called compliant, or shown in a compliant or approved line (target: 0)."""
        return [o for o in self.outcomes if o.source.expected_verdict == "impostor"
                and (o.got_verdict == "compliant" or o.approved_line)]

    def false_alarms(self) -> list[Outcome]:
        """Legitimate senders (and passing unnamed mail) called impostor (target: 0)."""
        return [o for o in self.outcomes
                if o.source.legitimate and o.got_verdict == "impostor"]

    def forwarders_as_senders(self) -> list[Outcome]:
        """Forwarded mail judged a sender to approve, or shown on such a line (target: 0)."""
        return [o for o in self.outcomes if o.source.expected_verdict == "forwarded"
                and (o.got_verdict in APPROVABLE or o.line.needs_decision)]

    def other_accounts_approved(self) -> list[Outcome]:
        """Rows labeled as another account of a vendor that show on its approved line."""
        return [o for o in self.outcomes if o.source.another_account and o.approved_line]

    def per_verdict(self) -> list[tuple[str, int, int, int, float, float]]:
        """(verdict, expected, predicted, correct, precision, recall) per verdict."""
        out = []
        for verdict in VERDICTS:
            expected = sum(o.source.expected_verdict == verdict for o in self.outcomes)
            predicted = sum(o.got_verdict == verdict for o in self.outcomes)
            correct = sum(o.source.expected_verdict == verdict == o.got_verdict
                          for o in self.outcomes)
            out.append((verdict, expected, predicted, correct,
                        correct / predicted if predicted else float("nan"),
                        correct / expected if expected else float("nan")))
        return out

    def mislabeled(self) -> list[Outcome]:
        return [o for o in self.outcomes
                if not self.named(o) or o.source.expected_verdict != o.got_verdict]

    def targets_met(self) -> bool:
        return (self.naming_accuracy >= NAMING_TARGET and not self.impostor_failures()
                and not self.false_alarms() and not self.forwarders_as_senders())


def _family(catalog: Catalog, key: str) -> str:
    if key == UNKNOWN:
        return key
    service = catalog.get(key)
    return service.platform if service.forwarder and service.platform else key


async def evaluate(dns: DnsEvidence | None, sources: Sequence[Source] | None = None,
                   catalog: Catalog | None = None) -> Evaluation:
    """Run the labeled set through the product; `dns=None` is the offline (report-only) run."""
    catalog = catalog or load_catalog()
    sources = list(sources) if sources is not None else load_sources(catalog=catalog)
    activities = activities_for(sources)
    verdicts, lines, bundle = await analyse_activities(activities, catalog, dns)
    by_key = {(v.identification.activity.domain, v.identification.activity.ip): v
              for v in verdicts}
    by_line = {line.line_key: line for line in lines}
    line_of = {key: by_line[line_key(member_of(v))] for key, v in by_key.items()}
    missing = [(s.domain, s.ip) for s in sources if (s.domain, s.ip) not in by_key]
    if missing or len(by_key) != len(sources):
        raise AssertionError(f"reports and rows disagree: missing {missing}, "
                             f"{len(by_key)} activities for {len(sources)} rows")
    outcomes = tuple(Outcome(s, by_key[s.domain, s.ip], line_of[s.domain, s.ip])
                     for s in sources)
    return Evaluation(outcomes, catalog, dns is None, bundle.temporary)


def evaluate_sync(dns_factory: object = None, **kwargs: object) -> Evaluation:
    """`evaluate` from synchronous code; `dns_factory()` builds the DnsEvidence inside the loop."""

    async def run() -> Evaluation:
        dns = dns_factory() if callable(dns_factory) else None
        return await evaluate(dns, **kwargs)  # type: ignore[arg-type]

    return asyncio.run(run())


# -- composition and the printed report --------------------------------------------------------


def composition(sources: Iterable[Source]) -> dict[str, Counter[str]]:
    sources = list(sources)
    return {
        "services": Counter(s.expected_service for s in sources),
        "verdicts": Counter(s.expected_verdict for s in sources),
        "evidence": Counter(s.evidence for s in sources),
        "domains": Counter(s.domain for s in sources),
    }


def render(ev: Evaluation) -> str:
    """The human report: accuracy, per-verdict table, confusion list, impostor check."""
    sources = [o.source for o in ev.outcomes]
    comp = composition(sources)
    named_services = {k for k in comp["services"] if k != UNKNOWN}
    mode = "OFFLINE (report evidence only, dns=None)" if ev.offline else "with DNS evidence"
    lines = [
        f"dmarcbot identification evaluation, {mode}",
        f"set: {len(sources)} sources, {len(named_services)} services, "
        f"{len(comp['domains'])} policy domains; evidence "
        + ", ".join(f"{k} {comp['evidence'][k]}" for k in EVIDENCE_KINDS),
        "expected verdicts: " + ", ".join(f"{v} {comp['verdicts'][v]}" for v in VERDICTS),
        "",
    ]
    named = sum(ev.named(o) for o in ev.outcomes)
    target = "" if ev.offline else (
        f"  (target >= {NAMING_TARGET:.0%}: "
        f"{'met' if ev.naming_accuracy >= NAMING_TARGET else 'MISSED'})")
    lines.append(f"naming accuracy: {named}/{len(sources)} = {ev.naming_accuracy:.1%}{target}")
    lines.append(f"verdict accuracy: {ev.verdict_accuracy:.1%}")
    per_kind = []
    for kind in EVIDENCE_KINDS:
        group = [o for o in ev.outcomes if o.source.evidence == kind]
        if group:
            per_kind.append(f"{kind} {sum(ev.named(o) for o in group)}/{len(group)}")
    lines.append("named correctly by the evidence the row relies on: " + ", ".join(per_kind))
    if ev.temporary:
        lines.append(f"WARNING: {len(ev.temporary)} DNS lookups failed for now: "
                     + ", ".join(ev.temporary[:5]))
    lines += ["", f"{'verdict':<12}{'expected':>9}{'got':>6}{'right':>7}{'precision':>11}"
              f"{'recall':>8}"]
    for verdict, expected, predicted, correct, precision, recall in ev.per_verdict():
        p = f"{precision:.0%}" if predicted else "-"
        r = f"{recall:.0%}" if expected else "-"
        lines.append(f"{verdict:<12}{expected:>9}{predicted:>6}{correct:>7}{p:>11}{r:>8}")
    wrong = ev.mislabeled()
    lines += ["", f"confusion list ({len(wrong)} sources with a wrong name or verdict):"]
    for o in wrong:
        s, ident = o.source, o.verdict.identification
        name_mark = "ok" if ev.named(o) else "WRONG"
        verdict_mark = "ok" if s.expected_verdict == o.got_verdict else "WRONG"
        lines.append(f"- {s.origin} line {s.line}: {s.domain} {s.ip} ({s.messages} msgs) -- "
                     f"{s.note}")
        lines.append(f"    service  expected {s.expected_service:<24} got {o.got_service} "
                     f"(confidence {ident.confidence}, platform {ident.platform_key}) "
                     f"[{name_mark}]")
        lines.append(f"    verdict  expected {s.expected_verdict:<24} got {o.got_verdict} "
                     f"[{verdict_mark}]")
        if o.verdict.diagnosis:
            lines.append(f"    diagnosis: {o.verdict.diagnosis}")
        lines.append(f"    report: spf {' '.join(f'{d}={r}' for d, _, r in s.spf) or '-'}; "
                     f"dkim {' '.join(f'{d}/{sel}={r}' for d, sel, r in s.dkim) or '-'}; "
                     f"aligned dkim={'pass' if s.dkim_aligned else 'fail'} "
                     f"spf={'pass' if s.spf_aligned else 'fail'}"
                     + (f"; reasons {'; '.join(k + (':' + c if c else '') for k, c in s.reasons)}"
                        if s.reasons else ""))
        lines.append(f"    evidence: {'; '.join(ident.evidence) or '(none)'}"
                     + (f"; ptr {ident.ptr}" if ident.ptr else ""))
        lines.append(f"    line: {o.line.line_name} ({o.line.verdict}); {o.verdict.advice}")
    impostors = sum(s.expected_verdict == "impostor" for s in sources)
    legitimate = sum(s.legitimate for s in sources)
    forwarded = sum(s.expected_verdict == "forwarded" for s in sources)
    others = sum(s.another_account for s in sources)
    checks = [
        ("impostors in a compliant or approved line", ev.impostor_failures(), impostors, True),
        ("legitimate senders called impostor", ev.false_alarms(), legitimate, True),
        ("forwarders counted as senders to approve", ev.forwarders_as_senders(), forwarded,
         True),
        ("other accounts of a vendor in its approved line", ev.other_accounts_approved(),
         others, False),
    ]
    lines.append("")
    for what, failed, of, target in checks:
        verdict = "" if ev.offline or not target else (
            f"  (target 0: {'met' if not failed else 'MISSED'})")
        lines.append(f"{what}: {len(failed)} of {of}{verdict}")
        for o in failed:
            lines.append(f"  ! {o.source.origin} line {o.source.line} {o.source.domain} "
                         f"{o.source.ip}: {o.got_service}, {o.got_verdict}, on the line "
                         f"{o.line.line_name!r} ({o.line.verdict})")
    return "\n".join(lines)
