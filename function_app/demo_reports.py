"""Deterministic sample DMARC aggregate reports for ``dmarcbot demo``.

Real reporters disagree on nearly every optional detail (namespace, element order, end
timestamp, identifiers, transport), so the demo imitates several of them on purpose: a pipeline
that reads this folder has met the variation it will see in a real mailbox. Only the standard
library is used so the demo runs on a bare install, and every random choice comes from a
``random.Random`` keyed by (seed, reporter, domain, day) so files are byte-identical across runs
and a report for a given day does not change when the week window moves.

All addresses and domains below are sample data written into files; nothing is contacted.
"""

from __future__ import annotations

import gzip
import io
import itertools
import random
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

DAYS = 7
#: The demo mailbox's receiving server, as its Authentication-Results headers name it.
DEMO_AUTHSERV_ID = "mx.contoso.com"

# An XML element as (tag, text) or (tag, children); rendering is separate so each reporter's
# element order and indentation stay data rather than code.
Node = tuple[str, "str | list[Node]"]


@dataclass(frozen=True, slots=True)
class Policy:
    """The DMARC record a policy domain publishes, as reporters echo it back."""

    domain: str
    p: str
    sp: str
    np: str
    rua: str
    adkim: str = "r"
    aspf: str = "r"
    pct: str = "100"
    fo: str = "0"
    testing: str = "n"
    discovery_method: str = "treewalk"


@dataclass(frozen=True, slots=True)
class Dkim:
    """One DKIM signature result: the d= domain, s= selector and verification result."""

    domain: str
    selector: str
    result: str


@dataclass(frozen=True, slots=True)
class Sender:
    """A source of mail using a policy domain in From, and how often each reporter sees it."""

    name: str
    policy_domain: str
    header_from: str
    ips: tuple[str, ...]
    spf: tuple[tuple[str, str], ...]  # choices of (MAIL FROM domain, SPF result)
    dkim: tuple[tuple[Dkim, ...], ...]  # choices of signature sets; () means unsigned
    volume: tuple[tuple[str, int], ...]  # (reporter key, typical messages per day)
    weekdays: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 0.3, 0.2)  # Monday first
    chance: float = 1.0  # probability the source shows up at all on a given day
    max_ips: int = 3  # distinct source IPs one report shows for it per day
    reason: tuple[str, str] | None = None  # (type, comment) the receiver's override


@dataclass(frozen=True, slots=True)
class Reporter:
    """How one receiver writes and delivers its reports (its real-world quirks as data)."""

    key: str
    org_name: str
    email: str
    submitter: str  # receiver part of the file name and the Submitter: of the subject
    delivery: str  # "eml+zip", "eml+gzip", "xml.gz" or "xml"
    report_id: str  # "decimal", "hex32", "epoch-micro", "submitter-epoch" or "uuid"
    domains: tuple[str, ...]
    starts: tuple[int, ...] = tuple(range(DAYS))  # day offsets in the week a report begins
    span_days: int = 1
    end_inclusive: bool = True  # end is the last second (True) or the next midnight (False)
    declaration: str = '<?xml version="1.0"?>'
    root_attrs: str = ""
    version: str | None = "1.0"
    extra_contact_info: str | None = None
    generator: str | None = None
    policy_fields: tuple[str, ...] = ("adkim", "aspf", "p", "sp", "pct")
    identifier_fields: tuple[str, ...] = ("header_from",)
    dkim_fields: tuple[str, ...] = ("domain", "selector", "result")
    spf_fields: tuple[str, ...] = ("domain", "result")
    pass_disposition: str = "none"
    envelope_to: tuple[str, ...] = ()
    indent: str = "  "
    send_delay_hours: tuple[int, int] = (1, 9)
    # E-mail delivery only; templates are filled by _mail_fields().
    mail_from: str = ""
    subject: str = ""
    message_id: str = ""
    boundary: str = ""
    body: str | None = None
    date_utc_offset_hours: int = 0


POLICIES: tuple[Policy, ...] = (
    Policy("contoso.com", p="none", sp="none", np="none", rua="dmarc-reports@contoso.com"),
    Policy(
        "fabrikam.com", p="quarantine", sp="quarantine", np="quarantine", rua="dmarc@fabrikam.com"
    ),
)

_M365_NAM = (
    "40.107.236.49",
    "40.107.93.112",
    "40.107.101.74",
    "52.101.62.17",
    "52.101.193.40",
    "52.100.155.203",
    "2a01:111:f403:2613::727",
)
_M365_EUR = (
    "40.107.20.83",
    "40.107.22.57",
    "40.107.212.61",
    "52.103.34.88",
    "2a01:111:f403:c200::1",
    "2a01:111:f403:c201::5",
)
_GOOGLE_FORWARDING = (
    "209.85.220.41",
    "209.85.220.69",
    "209.85.128.43",
    "209.85.208.171",
    "209.85.166.52",
)
_CONTOSO_DKIM = (Dkim("contoso.com", "selector1", "pass"),)
_FABRIKAM_TENANT_DKIM = (Dkim("fabrikam.onmicrosoft.com", "selector1", "pass"),)

SENDERS: tuple[Sender, ...] = (
    Sender(
        name="Microsoft 365 (contoso.com)",
        policy_domain="contoso.com",
        header_from="contoso.com",
        ips=_M365_NAM,
        spf=(("contoso.com", "pass"),),
        dkim=(_CONTOSO_DKIM,),
        volume=(("google", 35), ("microsoft", 120), ("yahoo", 6), ("tailspin", 4)),
        weekdays=(1.0, 1.1, 1.0, 1.05, 0.9, 0.2, 0.15),
        max_ips=4,
    ),
    Sender(
        name="SendGrid (contoso.com transactional)",
        policy_domain="contoso.com",
        header_from="contoso.com",
        ips=(
            "167.89.101.2",
            "167.89.55.34",
            "167.89.115.19",
            "149.72.154.232",
            "149.72.120.130",
            "149.72.44.16",
        ),
        spf=(("em1234.contoso.com", "pass"),),
        dkim=((Dkim("contoso.com", "s1", "pass"), Dkim("sendgrid.net", "smtpapi", "pass")),),
        volume=(("google", 60), ("microsoft", 25), ("yahoo", 12), ("tailspin", 2)),
        weekdays=(1.0, 1.0, 1.0, 1.0, 1.0, 0.7, 0.6),
    ),
    Sender(
        name="Mailchimp newsletter (news.contoso.com, not aligned)",
        policy_domain="contoso.com",
        header_from="news.contoso.com",
        ips=(
            "198.2.139.98",
            "198.2.145.27",
            "198.2.176.13",
            "198.2.180.41",
            "198.2.186.8",
        ),
        spf=(("mail123.mcsv.net", "pass"),),
        dkim=((Dkim("mcsv.net", "k1", "pass"),),),
        volume=(("google", 450), ("microsoft", 150), ("yahoo", 120), ("tailspin", 4)),
        weekdays=(0.02, 1.0, 0.05, 1.0, 0.03, 0.0, 0.0),  # goes out Tuesdays and Thursdays
        max_ips=5,
    ),
    Sender(
        name="Forwarded through Google (contoso.com)",
        policy_domain="contoso.com",
        header_from="contoso.com",
        ips=_GOOGLE_FORWARDING,
        spf=(("contoso.com", "softfail"), ("gmail.com", "pass")),
        dkim=(_CONTOSO_DKIM,),
        volume=(("microsoft", 4), ("yahoo", 2)),
        weekdays=(1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5),
        max_ips=2,
    ),
    Sender(
        name="Forwarded inside Google, signature broken, ARC trusted (contoso.com)",
        policy_domain="contoso.com",
        header_from="contoso.com",
        ips=_GOOGLE_FORWARDING,
        spf=(("contoso.com", "softfail"),),
        dkim=((Dkim("contoso.com", "selector1", "fail"),),),
        volume=(("google", 3),),
        chance=0.8,
        max_ips=2,
        reason=("local_policy", "arc=pass"),
    ),
    Sender(
        name="Mailing list (contoso.com)",
        policy_domain="contoso.com",
        header_from="contoso.com",
        ips=("88.99.172.40",),
        spf=(("lists.adventure-works.com", "pass"),),
        dkim=((Dkim("contoso.com", "selector1", "fail"),),),
        volume=(("yahoo", 2),),
        chance=0.7,
        max_ips=1,
        reason=("mailing_list", ""),
    ),
    Sender(
        name="Impostors (contoso.com)",
        policy_domain="contoso.com",
        header_from="contoso.com",
        ips=(
            "203.0.113.7",
            "203.0.113.58",
            "203.0.113.142",
            "198.51.100.23",
            "198.51.100.77",
            "2001:db8:4f2a::25",
        ),
        spf=(
            ("contoso.com", "softfail"),
            ("invoice-center.example", "fail"),
            ("secure-docs.example", "softfail"),
            ("mailer-7f3k.example", "fail"),
        ),
        dkim=((), (Dkim("contoso.com", "selector1", "fail"),)),
        volume=(("google", 8), ("microsoft", 5), ("yahoo", 4), ("tailspin", 2)),
        weekdays=(1.0,) * DAYS,
        chance=0.7,
    ),
    Sender(
        name="Microsoft 365 (fabrikam.com, DKIM only for the onmicrosoft.com domain)",
        policy_domain="fabrikam.com",
        header_from="fabrikam.com",
        ips=_M365_EUR,
        spf=(("fabrikam.com", "pass"),),
        dkim=(_FABRIKAM_TENANT_DKIM,),
        volume=(("google", 18), ("microsoft", 70), ("yahoo", 3), ("gmx", 5)),
        weekdays=(1.0, 1.0, 1.1, 1.0, 0.85, 0.15, 0.1),
        max_ips=4,
    ),
    Sender(
        name="Forwarded through Google (fabrikam.com)",
        policy_domain="fabrikam.com",
        header_from="fabrikam.com",
        ips=_GOOGLE_FORWARDING,
        spf=(("fabrikam.com", "fail"), ("gmail.com", "pass")),
        dkim=(_FABRIKAM_TENANT_DKIM,),
        volume=(("microsoft", 3), ("yahoo", 1), ("gmx", 1)),
        chance=0.8,
        max_ips=2,
    ),
    Sender(
        name="Forwarded inside Google, ARC trusted (fabrikam.com)",
        policy_domain="fabrikam.com",
        header_from="fabrikam.com",
        ips=_GOOGLE_FORWARDING,
        spf=(("fabrikam.com", "fail"),),
        dkim=(_FABRIKAM_TENANT_DKIM,),
        volume=(("google", 2),),
        chance=0.8,
        max_ips=2,
        reason=("local_policy", "arc=pass"),
    ),
    Sender(
        name="Impostors (fabrikam.com)",
        policy_domain="fabrikam.com",
        header_from="fabrikam.com",
        ips=(
            "203.0.113.58",
            "203.0.113.201",
            "203.0.113.233",
            "198.51.100.199",
            "198.51.100.214",
        ),
        spf=(
            ("fabrikam.com", "fail"),
            ("account-alerts.example", "softfail"),
            ("invoice-center.example", "fail"),
        ),
        dkim=((), (Dkim("fabrikam.com", "selector1", "fail"),)),
        volume=(("google", 6), ("microsoft", 4), ("yahoo", 3), ("gmx", 3)),
        weekdays=(1.0,) * DAYS,
        chance=0.7,
    ),
)

REPORTERS: tuple[Reporter, ...] = (
    Reporter(
        key="google",
        org_name="google.com",
        email="noreply-dmarc-support@google.com",
        submitter="google.com",
        delivery="eml+zip",
        report_id="decimal",
        domains=("contoso.com", "fabrikam.com"),
        declaration='<?xml version="1.0" encoding="UTF-8" ?>',
        version=None,
        extra_contact_info="https://support.google.com/a/answer/2466580",
        policy_fields=("adkim", "aspf", "p", "sp", "pct", "np"),
        dkim_fields=("domain", "result", "selector"),
        send_delay_hours=(8, 16),
        mail_from="noreply-dmarc-support@google.com",
        subject="Report domain: {domain} Submitter: {submitter} Report-ID: {report_id}",
        message_id="<{report_id}@google.com>",
        boundary="000000000000{token}",
        date_utc_offset_hours=-8,
    ),
    Reporter(
        key="microsoft",
        org_name="Enterprise Outlook",
        email="dmarcreport@microsoft.com",
        submitter="enterprise.protection.outlook.com",
        delivery="eml+gzip",
        report_id="hex32",
        domains=("contoso.com", "fabrikam.com"),
        end_inclusive=False,
        root_attrs=(
            ' xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
            ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        ),
        policy_fields=("adkim", "aspf", "p", "sp", "pct", "fo"),
        identifier_fields=("envelope_to", "envelope_from", "header_from"),
        spf_fields=("domain", "scope", "result"),
        envelope_to=("northwindtraders.com", "adatum.com", "wingtiptoys.com", "woodgrovebank.com"),
        mail_from="DMARC Aggregate Report <dmarcreport@microsoft.com>",
        subject="Report Domain: {domain} Submitter: {submitter} Report-ID: {report_id}",
        message_id="<{token}@{submitter}>",
        boundary="_000_{token}_",
        body=(
            "This is a DMARC aggregate report from Microsoft Corporation.\n"
            "For Emails received between {begin_text} UTC\nto {end_text} UTC.\n"
        ),
    ),
    Reporter(
        key="yahoo",
        org_name="Yahoo",
        email="dmarchelp@yahooinc.com",
        submitter="yahoo.com",
        delivery="xml.gz",
        report_id="epoch-micro",
        domains=("contoso.com", "fabrikam.com"),
        indent="",
    ),
    Reporter(
        key="gmx",
        org_name="GMX",
        email="dmarc-reports@gmx.net",
        submitter="gmx.net",
        delivery="xml",
        report_id="uuid",
        domains=("fabrikam.com",),
        starts=(DAYS - 2,),
        declaration='<?xml version="1.0" encoding="UTF-8"?>',
        root_attrs=' xmlns="urn:ietf:params:xml:ns:dmarc-2.0"',
        generator="GMX DMARC Reporter 2.0",
        policy_fields=("discovery_method", "p", "sp", "np", "adkim", "aspf", "testing"),
        identifier_fields=("envelope_from", "header_from"),
        spf_fields=("domain", "scope", "result"),
        pass_disposition="pass",
    ),
    Reporter(
        key="tailspin",
        org_name="tailspintoys.com",
        email="postmaster@tailspintoys.com",
        submitter="tailspintoys.com",
        delivery="xml",
        report_id="submitter-epoch",
        domains=("contoso.com",),
        starts=(0,),
        span_days=3,
        declaration='<?xml version="1.0" encoding="UTF-8" ?>',
        version=None,
        dkim_fields=("domain", "result"),
        indent="\t",
    ),
)

# CRLF like mail on the wire, but long header lines kept whole (RFC 5322 allows 998) so the
# "!"-separated attachment names stay quoted strings instead of RFC 2231 continuations.
_WIRE = SMTP.clone(max_line_length=998)

# One Microsoft e-mail a week (Thursday's, for fabrikam.com) labels its .xml.gz as a generic
# binary, as some real ones do; keyed by weekday so it does not move with the window.
_OCTET_STREAM_REPORT = ("microsoft", "fabrikam.com", 3)


@dataclass(frozen=True, slots=True)
class _Row:
    """Everything that keeps two messages in separate <record>s (the grouping key)."""

    source_ip: str
    envelope_to: str
    envelope_from: str
    header_from: str
    dkim: tuple[Dkim, ...]
    spf_domain: str
    spf_result: str
    reason: tuple[str, str] | None


def write_demo_reports(folder: Path, *, last_day: date, seed: int = 1) -> list[Path]:
    """Write a week of sample reports for two domains into `folder`; return the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    last = date(last_day.year, last_day.month, last_day.day)
    first = last - timedelta(days=DAYS - 1)
    policies = {policy.domain: policy for policy in POLICIES}
    written: list[Path] = []
    for reporter in REPORTERS:
        for domain in reporter.domains:
            for start in reporter.starts:
                built = _build(reporter, policies[domain], first + timedelta(days=start), seed)
                if built is None:
                    continue
                name, data = built
                path = folder / name
                path.write_bytes(data)
                written.append(path)
    return sorted(written)


def _build(reporter: Reporter, policy: Policy, day: date, seed: int) -> tuple[str, bytes] | None:
    """One report file (name, bytes), or None when the reporter saw no mail, as real ones do."""
    rng = random.Random(f"dmarcbot-demo/{seed}/{reporter.key}/{policy.domain}/{day.isoformat()}")
    begin = _epoch(day)
    end = begin + reporter.span_days * 86400 - (1 if reporter.end_inclusive else 0)
    sent = datetime.fromtimestamp(end, UTC) + timedelta(
        hours=rng.randint(*reporter.send_delay_hours),
        minutes=rng.randrange(60),
        seconds=rng.randrange(60),
    )
    report_id = _report_id(reporter, sent, rng)
    token = f"{rng.getrandbits(64):016x}"
    days = [day + timedelta(days=n) for n in range(reporter.span_days)]
    rows = _collect(reporter, policy, days, rng)
    if not rows:
        return None
    xml = _feedback_xml(reporter, policy, report_id, begin, end, rows)
    stem = f"{reporter.submitter}!{policy.domain}!{begin}!{end}"
    if reporter.delivery == "xml":
        return f"{stem}.xml", xml
    if reporter.delivery == "xml.gz":
        return f"{stem}.xml.gz", _gzip(f"{stem}.xml", xml)
    if reporter.delivery == "eml+zip":
        name, payload, ctype = f"{stem}.zip", _zip(f"{stem}.xml", xml, sent), "application/zip"
    else:
        name, payload, ctype = f"{stem}.xml.gz", _gzip(f"{stem}.xml", xml), "application/gzip"
        if (reporter.key, policy.domain, day.weekday()) == _OCTET_STREAM_REPORT:
            ctype = "application/octet-stream"
    fields = {
        "domain": policy.domain,
        "submitter": reporter.submitter,
        "report_id": report_id,
        "token": token,
        "begin_text": datetime.fromtimestamp(begin, UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "end_text": datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M:%S"),
    }
    mail = _email(reporter, policy, fields, sent, name, payload, ctype)
    return f"{day.isoformat()}_{reporter.submitter}_{policy.domain}.eml", mail


def _epoch(day: date) -> int:
    """Seconds since the epoch at 00:00:00 UTC of `day` (reports use UTC day boundaries)."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def _report_id(reporter: Reporter, sent: datetime, rng: random.Random) -> str:
    """A report id in the shape this reporter really uses (parsers must not assume one)."""
    kind = reporter.report_id
    if kind == "decimal":
        return str(rng.randrange(10**18, 2**64))
    if kind == "hex32":
        return f"{rng.getrandbits(128):032x}"
    if kind == "epoch-micro":
        return f"{int(sent.timestamp())}.{rng.randrange(10**6):06d}"
    if kind == "submitter-epoch":
        return f"{reporter.submitter}:{int(sent.timestamp())}"
    if kind == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"unknown report id kind {kind!r}")


def _collect(
    reporter: Reporter, policy: Policy, days: list[date], rng: random.Random
) -> dict[_Row, int]:
    """Message counts per grouping key for the days a report covers."""
    rows: dict[_Row, int] = {}
    for day in days:
        for sender in SENDERS:
            base = dict(sender.volume).get(reporter.key, 0)
            if sender.policy_domain != policy.domain or not base:
                continue
            if rng.random() >= sender.chance:
                continue
            expected = base * sender.weekdays[day.weekday()]
            total = int(expected * rng.uniform(0.7, 1.3) + rng.random())
            if total <= 0:
                continue
            n_ips = rng.randint(1, min(sender.max_ips, len(sender.ips), total))
            for ip, part in zip(
                rng.sample(sender.ips, n_ips), _split(total, n_ips, rng), strict=True
            ):
                spf_domain, spf_result = rng.choice(sender.spf)
                dkim = rng.choice(sender.dkim)
                for rcpt, share in _recipients(part, reporter.envelope_to, rng):
                    row = _Row(
                        source_ip=ip,
                        envelope_to=rcpt,
                        envelope_from=spf_domain,
                        header_from=sender.header_from,
                        dkim=dkim,
                        spf_domain=spf_domain,
                        spf_result=spf_result,
                        reason=sender.reason,
                    )
                    rows[row] = rows.get(row, 0) + share
    return rows


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """`total` as `parts` positive integers, so traffic spreads unevenly over IPs."""
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    bounds = [0, *cuts, total]
    return [b - a for a, b in itertools.pairwise(bounds)]


def _recipients(count: int, domains: tuple[str, ...], rng: random.Random) -> list[tuple[str, int]]:
    """Spread `count` over one or two recipient domains for reporters that show envelope_to."""
    if not domains:
        return [("", count)]
    chosen = rng.sample(domains, rng.randint(1, min(2, count, len(domains))))
    return list(zip(chosen, _split(count, len(chosen), rng), strict=True))


def _org_domain(name: str) -> str:
    """Last two labels; enough for the demo's .com/.net/.example names, no PSL needed."""
    return ".".join(name.lower().rstrip(".").split(".")[-2:])


def _aligned(identifier: str, header_from: str, mode: str) -> bool:
    """DMARC identifier alignment, strict or relaxed."""
    if mode == "s":
        return identifier.lower() == header_from.lower()
    return _org_domain(identifier) == _org_domain(header_from)


def _record(row: _Row, count: int, reporter: Reporter, policy: Policy) -> Node:
    """One <record>, with policy_evaluated derived from the raw results, as a receiver would."""
    dkim_ok = any(
        sig.result == "pass" and _aligned(sig.domain, row.header_from, policy.adkim)
        for sig in row.dkim
    )
    spf_ok = row.spf_result == "pass" and _aligned(row.spf_domain, row.header_from, policy.aspf)
    if dkim_ok or spf_ok:
        disposition = reporter.pass_disposition
    elif row.reason is not None:
        disposition = "none"
    else:
        disposition = policy.p if row.header_from == policy.domain else policy.sp
    evaluated: list[Node] = [
        ("disposition", disposition),
        ("dkim", "pass" if dkim_ok else "fail"),
        ("spf", "pass" if spf_ok else "fail"),
    ]
    if row.reason is not None:
        kind, comment = row.reason
        reason: list[Node] = [("type", kind)]
        if comment:
            reason.append(("comment", comment))
        evaluated.append(("reason", reason))
    identifiers = {
        "envelope_to": row.envelope_to,
        "envelope_from": row.envelope_from,
        "header_from": row.header_from,
    }
    spf = {"domain": row.spf_domain, "scope": "mfrom", "result": row.spf_result}
    auth: list[Node] = [
        ("dkim", [(name, getattr(sig, name)) for name in reporter.dkim_fields]) for sig in row.dkim
    ]
    auth.append(("spf", [(name, spf[name]) for name in reporter.spf_fields]))
    return (
        "record",
        [
            (
                "row",
                [
                    ("source_ip", row.source_ip),
                    ("count", str(count)),
                    ("policy_evaluated", evaluated),
                ],
            ),
            ("identifiers", [(name, identifiers[name]) for name in reporter.identifier_fields]),
            ("auth_results", auth),
        ],
    )


def _feedback_xml(
    reporter: Reporter,
    policy: Policy,
    report_id: str,
    begin: int,
    end: int,
    rows: dict[_Row, int],
) -> bytes:
    """The whole <feedback> document in this reporter's dialect."""
    metadata: list[Node] = [("org_name", reporter.org_name), ("email", reporter.email)]
    if reporter.extra_contact_info:
        metadata.append(("extra_contact_info", reporter.extra_contact_info))
    metadata.append(("report_id", report_id))
    metadata.append(("date_range", [("begin", str(begin)), ("end", str(end))]))
    if reporter.generator:
        metadata.append(("generator", reporter.generator))
    published: list[Node] = [("domain", policy.domain)]
    published += [(name, getattr(policy, name)) for name in reporter.policy_fields]
    children: list[Node] = []
    if reporter.version:
        children.append(("version", reporter.version))
    children.append(("report_metadata", metadata))
    children.append(("policy_published", published))
    children += [_record(row, count, reporter, policy) for row, count in rows.items()]
    lines = [reporter.declaration, f"<feedback{reporter.root_attrs}>"]
    for child in children:
        _render(child, 1, reporter.indent, lines)
    lines.append("</feedback>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _render(node: Node, depth: int, indent: str, lines: list[str]) -> None:
    """Append `node` as indented lines, escaping text so any value stays well-formed XML."""
    tag, content = node
    pad = indent * depth
    if isinstance(content, str):
        lines.append(f"{pad}<{tag}>{escape(content)}</{tag}>")
        return
    lines.append(f"{pad}<{tag}>")
    for child in content:
        _render(child, depth + 1, indent, lines)
    lines.append(f"{pad}</{tag}>")


def _gzip(member: str, data: bytes) -> bytes:
    """Gzip with mtime 0 so the bytes depend on the content only."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename=member, mode="wb", fileobj=buffer, mtime=0) as stream:
        stream.write(data)
    return buffer.getvalue()


def _zip(member: str, data: bytes, when: datetime) -> bytes:
    """Single-member ZIP with a fixed timestamp and host system, for byte-identical output."""
    info = zipfile.ZipInfo(member, date_time=when.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 0  # the default depends on the platform running the demo
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, data)
    return buffer.getvalue()


def _email(
    reporter: Reporter,
    policy: Policy,
    fields: dict[str, str],
    sent: datetime,
    filename: str,
    payload: bytes,
    content_type: str,
) -> bytes:
    """The report as the receiver mails it, and as the demo's receiving server stamps it on
    arrival (an RFC 8601 Authentication-Results from `DEMO_AUTHSERV_ID`, which `dmarcbot demo`
    trusts: the mail passed DMARC for the reporter, so its report is believed); headers and
    boundary are fixed for determinism."""
    message = EmailMessage()
    domain = reporter.mail_from.rstrip(">").rpartition("@")[2]
    message["Authentication-Results"] = (
        f"{DEMO_AUTHSERV_ID}; spf=pass (sender IP is 192.0.2.25) smtp.mailfrom={domain}; "
        f"dkim=pass header.d={domain}; dmarc=pass (p=REJECT) header.from={domain}")
    message["From"] = reporter.mail_from
    message["To"] = policy.rua
    message["Subject"] = reporter.subject.format(**fields)
    zone = timezone(timedelta(hours=reporter.date_utc_offset_hours))
    message["Date"] = format_datetime(sent.astimezone(zone))
    message["Message-ID"] = reporter.message_id.format(**fields)
    message["MIME-Version"] = "1.0"
    if reporter.body is not None:
        message.set_content(reporter.body.format(**fields))
    maintype, subtype = content_type.split("/")
    message.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    for part in message.iter_parts():
        del part["MIME-Version"]  # EmailMessage repeats it on every part; mailers do not
        if part.is_attachment():
            part.replace_header("Content-Type", f'{content_type}; name="{filename}"')
    message.set_boundary(reporter.boundary.format(**fields))
    return message.as_bytes(policy=_WIRE)
