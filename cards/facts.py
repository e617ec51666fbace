"""What the cards show, as plain values: the cards package needs neither Graph nor the store.

`approval_facts_from` and `digest_facts_from` build these from the analysis results (analysis
is pure too); the function app adds the ids that only it knows (SharePoint item, request id,
Teams user ids).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analysis.catalog import PublishStep
    from analysis.posture import Posture
    from analysis.verdicts import ServiceVerdict

#: A DNS record to publish: (type, name, value), e.g. ("CNAME", "s1._domainkey.example.com", …).
Record = tuple[str, str, str]
Day = date | str  # a date, or "YYYY-MM-DD"

#: What the owner can answer; also the Action.Execute verbs.
APPROVE, REJECT, NOT_MINE = "approve", "reject", "notmine"
VERBS = (APPROVE, REJECT, NOT_MINE)
#: The refresh verb (Universal Actions: the card asks the bot for its current version).
REFRESH = "refresh"
#: Inventory statuses, as the store and the SharePoint list spell them.
STATUSES = ("Approved", "Pending", "Rejected")
#: Teams refreshes a card automatically for at most this many user ids.
MAX_REFRESH_USERS = 60


@dataclasses.dataclass(frozen=True, slots=True)
class SourceLine:
    """One sending IP of a service."""

    ip: str
    rdns: str | None
    messages: int
    dmarc_pass: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ApprovalFacts:
    """Everything the approval card (and the cards that replace it) shows about one sender.

    `item_id` is the SharePoint list item id and `request_id` an opaque id of this approval
    request; both travel back in every Action.Execute, with `domain` and `service_key`.
    `sources` and `evidence` may be long: the card shows the first few (largest first).
    `records` are what the domain owner publishes once the service is approved.
    """

    domain: str
    service_key: str
    service_name: str
    category: str
    messages: int
    dmarc_pass: int
    first_seen: Day
    last_seen: Day
    verdict: str
    item_id: str
    request_id: str
    sources: tuple[SourceLine, ...] = ()
    evidence: tuple[str, ...] = ()
    records: tuple[Record, ...] = ()
    owner: str | None = None  # display name of the person asked to decide
    advice: str | None = None  # one technical sentence for the mail team
    refresh_user_ids: tuple[str, ...] = ()  # Teams user ids (29:…) refreshed automatically
    period_start: Day | None = None  # the reporting window; defaults to first/last seen
    period_end: Day | None = None
    #: which account of the service the request is about (an owner approves their account,
    #: never the vendor): one sentence, e.g. "the SendGrid account that signs as contoso.com"
    account: str | None = None
    #: other lines of the same service that this request does NOT cover (another tenant, mail
    #: signed for nobody, forwarded mail), each one short line
    set_aside: tuple[str, ...] = ()
    #: every source of the sender (`sources` may hold only the largest); 0: as many as `sources`
    source_count: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """An owner's answer: `outcome` is one of VERBS; `handed_to` names the new owner (notmine)."""

    outcome: str
    by: str
    at: datetime | date | str
    handed_to: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in VERBS:
            raise ValueError(f"unknown decision outcome {self.outcome!r}; expected one of "
                             f"{', '.join(VERBS)}")


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceLine:
    """One sender of a domain in the digest."""

    name: str
    status: str  # one of STATUSES
    messages: int
    dmarc_pass: int
    owner: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class OtherLine:
    """A line of the digest that is not a sender to approve: fake mail, or one to look at."""

    name: str  # e.g. "Microsoft 365 — another tenant (evilcorp7.onmicrosoft.com)"
    messages: int
    sources: int
    note: str | None = None  # the question to ask, for lines to look at


@dataclasses.dataclass(frozen=True, slots=True)
class DigestFacts:
    """One domain's week: volume, pass rate, senders by status, impostors and the next step."""

    domain: str
    period_start: Day
    period_end: Day
    messages: int
    dmarc_pass: int
    services: tuple[ServiceLine, ...]
    impostor_messages: int
    next_step: str
    policy: str | None = None  # the p= in force; None: no DMARC record
    next_policy: str | None = None
    records: tuple[Record, ...] = ()
    forwarded_messages: int = 0
    unidentified_messages: int = 0
    blockers: tuple[str, ...] = ()
    list_url: str | None = None  # e.g. the SharePoint list of senders
    top: int = 5  # services shown per status group
    #: impostor lines, largest first: another tenant, a spoofer nothing names
    fake: tuple[OtherLine, ...] = ()
    #: lines no one decides on yet that may be fake or may be the domain's: another account of a
    #: service, a sender with only a weak clue, the domain's own unnamed servers
    to_check: tuple[OtherLine, ...] = ()


# -- adapters from analysis results ------------------------------------------------------------

_DNS_TYPE = {"dkim_cname": "CNAME", "return_path_cname": "CNAME", "dkim_txt": "TXT",
             "spf_include": "TXT"}


def publish_records(domain: str, steps: Iterable[PublishStep]) -> tuple[Record, ...]:
    """A service's publish steps as (type, name, value) for `domain`.

    `{domain}` and `{domain-dashes}` are filled in; other placeholders (a tenant, a key) stay for
    the mail team to take from the service's admin console. An SPF include is shown as the term to
    add to the domain's SPF record.
    """
    dashes = domain.replace(".", "-")
    out: list[Record] = []
    for step in steps:
        name = domain if step.name in ("@", "") else f"{step.name}.{domain}"
        value = step.value.replace("{domain-dashes}", dashes).replace("{domain}", domain)
        if step.kind == "spf_include":
            value = f"add include:{value} to the SPF record"
        record = (_DNS_TYPE.get(step.kind, "TXT"), name, value)
        if record not in out:
            out.append(record)
    return tuple(out)


_SET_ASIDE_WORDS = {"impostor": "fake mail", "unknown": "not proven to be yours",
                    "forwarded": "forwarded mail", "compliant": "another account",
                    "needs-dkim": "another account", "needs-spf": "another account"}


def account_sentence(verdict: ServiceVerdict) -> str:
    """Which account of the service the line is: what ties its mail to the domain."""
    service, domain = verdict.service_name, verdict.domain
    if verdict.messages and verdict.dkim_aligned_pass * 2 >= verdict.messages:
        return f"the {service} account that signs mail as {domain} (aligned DKIM)"
    if verdict.messages and verdict.spf_aligned_pass * 2 >= verdict.messages:
        return f"the {service} account that sends with {domain} as its return path (aligned SPF)"
    return (f"the {service} account this mail came from; nothing ties it to {domain} yet, so "
            f"approve it only if it is yours")


def approval_facts_from(verdict: ServiceVerdict, *, item_id: str, request_id: str,
                        owner: str | None = None, refresh_user_ids: Sequence[str] = (),
                        records: Sequence[Record] | None = None,
                        period: tuple[Day, Day] | None = None) -> ApprovalFacts:
    """The approval card's facts for the domain's own account of a service (its decision
    line); the service's other lines are listed as not covered by it.

    `records` defaults to the service's publish steps from the catalog; pass the posture's
    changes for this service instead when they are known.
    """
    sources = tuple(
        SourceLine(ip=s.identification.activity.ip, rdns=s.identification.ptr,
                   messages=s.identification.activity.messages,
                   dmarc_pass=s.identification.activity.dmarc_pass)
        for s in verdict.sources)
    return ApprovalFacts(
        domain=verdict.domain, service_key=verdict.service_key,
        service_name=verdict.service_name, category=verdict.category,
        messages=verdict.messages, dmarc_pass=verdict.dmarc_pass,
        first_seen=verdict.first_day, last_seen=verdict.last_day, verdict=verdict.verdict,
        item_id=item_id, request_id=request_id, sources=sources, evidence=verdict.evidence,
        records=tuple(records) if records is not None else publish_records(
            verdict.domain, verdict.records),
        owner=owner, advice=verdict.diagnosis or verdict.advice,
        refresh_user_ids=tuple(refresh_user_ids),
        period_start=period[0] if period else None, period_end=period[1] if period else None,
        account=account_sentence(verdict), source_count=verdict.source_count,
        set_aside=tuple(f"{a.name}: {_SET_ASIDE_WORDS.get(a.verdict, a.verdict)}, "
                        f"{a.messages:,} messages" for a in verdict.set_aside))


def digest_facts_from(posture: Posture, verdicts: Sequence[ServiceVerdict],
                      statuses: Mapping[str, str], *, period: tuple[Day, Day],
                      owners: Mapping[str, str] | None = None,
                      list_url: str | None = None, top: int = 5) -> DigestFacts:
    """The digest of one domain from its posture, its lines and the inventory.

    `statuses` and `owners` map service keys to the inventory's status and owner. The domain's
    own accounts of services are grouped by status (unknown statuses count as Pending); fake
    mail (another tenant, spoofers) and the lines to look at (another account of a service,
    weak clues, the domain's own unnamed servers) are listed apart, largest first; forwarded
    mail and what could not be named are totals.
    """
    mine = [v for v in verdicts if v.domain == posture.domain]
    lines = []
    fake: list[OtherLine] = []
    to_check: list[OtherLine] = []
    impostors = forwarded = unidentified = 0
    for v in mine:
        if v.needs_decision:
            status = statuses.get(v.service_key, "Pending")
            lines.append(ServiceLine(v.service_name, status if status in STATUSES else "Pending",
                                     v.messages, v.dmarc_pass, (owners or {}).get(v.service_key)))
            continue
        if v.verdict == "impostor":
            fake.append(OtherLine(v.line_name, v.messages, v.source_count))
        elif v.verdict != "forwarded":
            to_check.append(OtherLine(v.line_name, v.messages, v.source_count, v.advice))
        for part in v.parts:  # counted per source, as each source was judged
            if part.verdict == "impostor":
                impostors += part.messages
            elif part.verdict == "forwarded":
                forwarded += part.messages
            else:
                unidentified += part.messages
    return DigestFacts(
        domain=posture.domain, period_start=period[0], period_end=period[1],
        messages=sum(v.messages for v in mine), dmarc_pass=sum(v.dmarc_pass for v in mine),
        services=tuple(lines), impostor_messages=impostors, next_step=posture.next_step,
        policy=posture.policy, next_policy=posture.next_policy,
        records=tuple((c.type, c.name, c.value) for c in posture.changes),
        forwarded_messages=forwarded, unidentified_messages=unidentified,
        blockers=posture.blockers, list_url=list_url, top=top,
        fake=tuple(sorted(fake, key=lambda x: (-x.messages, x.name))),
        to_check=tuple(sorted(to_check, key=lambda x: (-x.messages, x.name))))
