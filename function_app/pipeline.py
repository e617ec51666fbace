"""The steps the command line and the functions share: read inputs, store what they hold."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from collections.abc import AsyncIterator, Collection, Iterable, Iterator
from typing import Literal

from analysis import Limits, RejectedInput, iter_files, read_reports
from analysis.catalog import Catalog
from analysis.dnsevidence import DnsBudget, DnsEvidence, heap_frozen
from analysis.identify import (
    EvidenceBundle,
    SourceActivity,
    activities_from_rollups,
    activities_from_sources,
)
from analysis.mailauth import judge, reporter_domain
from analysis.model import AggregateReport, MailEvidence
from analysis.posture import Posture, assess
from analysis.records.mtasts import PolicyFetcher
from analysis.remembered import (
    Kept,
    KeptUnreadable,
    decode,
    decode_kept,
    encode,
    naming_context,
    needs_lookup,
    same_setup,
)
from analysis.rollup import ledger_key
from analysis.senders import analyse_activities
from analysis.verdicts import ServiceVerdict, SourceVerdict
from analysis.volume import VolumeCheck
from function_app.settings import (
    approval_settings,
    retention_months,
    trusted_authserv_ids,
    trusted_reporters,
)
from store import Store

log = logging.getLogger("dmarcbot.ingest")


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one report (or of an input that was refused)."""

    source: str
    status: Literal["stored", "duplicate", "rejected"]
    kind: str | None = None
    reason: str | None = None  # the one-line rejection, for `rejected`
    rule: str | None = None  # which rule refused it (analysis.errors), for `rejected`
    domain: str | None = None  # the report's policy domain
    errors: int = 0  # problems recovered from while reading (skipped records, XML repairs)
    #: Stored, but another report has its ledger key and other content: both are kept, flagged
    #: and left out of what is believed (store.AddResult `conflict`).
    conflict: bool = False
    #: Stored, but the e-mail that delivered it did not prove its reporter: why (kept, not
    #: believed until the reporter is trusted).
    unverified: str | None = None


def ingest_input(source: str | os.PathLike[str] | bytes, store: Store, limits: Limits, *,
                 name: str | None = None, mail: MailEvidence | None = None,
                 authserv_ids: Collection[str] | None = None) -> Iterator[Outcome]:
    """Store every report of one input; a refused input ends with one `rejected` outcome.

    `mail`: the message in the Exchange Online mailbox that delivered the input (Graph); an
    e-mail file carries its own headers instead. Their Authentication-Results decide whether an
    aggregate report is believed; `authserv_ids` are the receiving servers trusted besides
    (default: DMARCBOT_TRUSTED_AUTHSERV_IDS).
    Reports stored before a later part of the same input is refused stay stored (each is whole);
    running the same input again only adds what is missing.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if authserv_ids is None:
        authserv_ids = trusted_authserv_ids()
    trusted = trusted_reporters()
    try:
        for report in read_reports(source, limits, name=name):
            unverified, volume = None, None
            if isinstance(report, AggregateReport):
                delivery = mail or report.mail
                verdict = judge(delivery, report.reporter.email, authserv_ids,
                                exchange_mailbox=mail is not None)
                unverified = None if verdict.verified else verdict.reason
                # A report from mail is measured against its reporter's history, unless the
                # admin trusts the reporter; a bare file is the admin's own.
                if delivery is not None and reporter_domain(report.reporter.email) not in trusted:
                    volume = VolumeCheck(limits)
            added = store.add_report(report, unverified=unverified, volume=volume)
            unverified = unverified or (volume.held if volume else None)
            log.info("%s report %s from %s%s", added, report.kind, report.source,
                     " (unverified)" if unverified else "")
            yield Outcome(report.source, "stored" if added == "conflict" else added, report.kind,
                          errors=len(report.errors), domain=ledger_key(report).policy_domain,
                          conflict=added == "conflict", unverified=unverified)
    except RejectedInput as exc:
        log.warning("rejected input (%s)", exc.rule)
        yield Outcome(exc.source or label, "rejected", reason=str(exc), rule=exc.rule)
    except Exception as exc:  # a bug must not stop the rest of the batch (or the mail queue)
        log.error("internal error reading an input: %s", type(exc).__name__,
                  exc_info=log.isEnabledFor(logging.DEBUG))
        yield Outcome(label, "rejected",
                      reason=f"{label}: internal error ({type(exc).__name__}); please report it",
                      rule="internal")


def ingest_paths(paths: Iterable[str | os.PathLike[str]], store: Store, limits: Limits, *,
                 authserv_ids: Collection[str] | None = None) -> Iterator[Outcome]:
    """Each file under `paths` is one input; one refused file does not stop the others."""
    for path in iter_files(paths):
        yield from ingest_input(path, store, limits, authserv_ids=authserv_ids)


async def find_senders(store: Store, catalog: Catalog, dns: DnsEvidence | None, *,
                       domain: str | None = None, since: str | None = None
                       ) -> tuple[list[ServiceVerdict], dict[tuple[str, str], str]]:
    """Name the senders of one domain (of each, if None) and record them in the inventory.

    Returns the service verdicts and the status of each (domain, service) that needs an owner's
    decision; a sender seen for the first time starts `Pending`. Over all domains this holds
    every domain's verdicts at once: `senders_by_domain` streams them.
    """
    services: list[ServiceVerdict] = []
    statuses: dict[tuple[str, str], str] = {}
    async for found, noted in senders_by_domain(store, catalog, dns,
                                                None if domain is None else [domain],
                                                since=since):
        services.extend(found)
        statuses.update(noted)
    return services, statuses


def believed_activities(store: Store, domain: str, since: str | None = None
                        ) -> list[SourceActivity]:
    """A domain's believed sources, for naming: its whole history from the source rollups
    (flat as history grows, issue 14), or the daily rows from `since` on."""
    trusted = trusted_reporters()
    if since is None:
        return activities_from_sources(store.sources(domain, trusted_reporters=trusted))
    return activities_from_rollups(store.rollups(domain=domain, since=since,
                                                 trusted_reporters=trusted))


async def name_domain(store: Store, catalog: Catalog, dns: DnsEvidence | None, domain: str,
                      since: str | None = None
                      ) -> tuple[list[ServiceVerdict], EvidenceBundle]:
    """Name and judge one domain's sources (over its whole history unless `since`).

    Over the whole history only the sources whose reports changed since the last naming are
    named and judged again, when the store kept the others and the context they were made in
    still holds (analysis.remembered); otherwise every source is, and the store keeps them all
    for next time. Either way the lines are the ones naming them all would give.
    """
    domain = domain.lower()  # as stored (`senders --domain Contoso.com`)
    trusted = trusted_reporters()
    if since is not None:
        _, services, bundle = await analyse_activities(
            believed_activities(store, domain, since), catalog, dns)
        return services, bundle
    recalled = store.recall_naming(domain, trusted_reporters=trusted)
    if recalled.context is not None and same_setup(recalled.context, catalog, trusted,
                                                   offline=dns is None):
        try:
            kept: list[Kept] = []
            again: list[Kept] = []  # their reverse DNS was not looked up: named again
            with heap_frozen():  # thousands of kept sources: no full collections meanwhile
                for text in recalled.kept.values():
                    k = decode_kept(domain, text)
                    (again if needs_lookup(k) else kept).append(k)
            changed = activities_from_sources(recalled.changed) + [
                decode(domain, k).activity for k in again]
            sources, services, bundle = await analyse_activities(changed, catalog, dns,
                                                                 kept=kept)
        except KeptUnreadable as exc:
            log.warning("%s; naming the whole history of %s again", exc, domain)
        else:
            claims = [*(k.member.claim for k in kept), *(s.claim for s in sources)]
            context = naming_context(catalog, bundle, trusted, domain,
                                     [c for c in claims if c is not None])
            if context == recalled.context:
                _remember(store, domain, context, sources, whole=False)
                return services, bundle
    activities = activities_from_sources(store.sources(domain, trusted_reporters=trusted))
    sources, services, bundle = await analyse_activities(activities, catalog, dns)
    context = naming_context(catalog, bundle, trusted, domain,
                             [s.claim for s in sources if s.claim is not None])
    _remember(store, domain, context, sources, whole=True)
    return services, bundle


def _remember(store: Store, domain: str, context: str, sources: Iterable[SourceVerdict], *,
              whole: bool) -> None:
    store.remember_naming(domain, context, ((s.identification.activity.ip, encode(s))
                                            for s in sources), whole=whole)


async def senders_by_domain(store: Store, catalog: Catalog, dns: DnsEvidence | None,
                            domains: Iterable[str] | None = None, *, since: str | None = None
                            ) -> AsyncIterator[tuple[list[ServiceVerdict],
                                                     dict[tuple[str, str], str]]]:
    """`find_senders`, one domain at a time (every domain in the store when None), so memory is
    bounded by the largest domain, not by the tenant. Each domain gets its share of the DNS
    budget's time; one with nothing believed leaves its share to the rest."""
    chosen = store.domains() if domains is None else list(domains)
    if dns is not None and dns.budget is not None:
        dns.budget.plan(len(chosen))
    for domain in chosen:
        left = dns.budget.domains_left if dns is not None and dns.budget else 0
        services, bundle = await name_domain(store, catalog, dns, domain, since)
        if dns is not None and dns.budget and dns.budget.domains_left == left:
            dns.budget.next_share()  # nothing believed to look up: its share goes to the rest
        if bundle.temporary:
            log.warning("%s: %d DNS lookups failed for now (timeouts or SERVFAIL); evidence may "
                        "be incomplete", domain, len(bundle.temporary))
        if bundle.not_looked_up:
            log.warning("%s: %d sources not looked up in DNS (budget or a silent resolver); they "
                        "are judged on the reports' own evidence", domain,
                        len(bundle.not_looked_up))
        statuses = {}
        for s in services:
            if s.needs_decision:
                item = store.note_seen(s.domain, s.service_key, s.first_day, s.last_day,
                                       s.messages, s.dmarc_pass, whole_history=since is None)
                statuses[s.domain, s.service_key] = item.status
        yield services, statuses
    if dns is not None:
        dns.cache.flush()  # the answers a remote store kept back, in one batch per partition


async def domain_posture(store: Store, catalog: Catalog, dns: DnsEvidence, domain: str,
                         *, since: str | None = None,
                         sts_fetcher: PolicyFetcher | None = None) -> Posture:
    """Senders, then the domain's DNS posture and the next step towards enforcement
    (`sts_fetcher`: the MTA-STS policy file over HTTPS; without it only its TXT record)."""
    services, statuses = await find_senders(store, catalog, dns, domain=domain, since=since)
    by_service = {key: status for (d, key), status in statuses.items() if d == domain}
    return await assess(domain, dns, services, by_service, catalog, sts_fetcher=sts_fetcher)


def domains_stored_since(store: Store, stamp: str) -> set[str]:
    """Policy domains with an aggregate report stored at or after `stamp` (ISO 8601, UTC)."""
    return set(store.domains(stored_since=stamp))


def expire_history(store: Store, today: dt.date, months: int | None) -> int:
    """Retention (DMARCBOT_RETENTION_MONTHS): reports that ended before the first day of the
    month `months` months before this one leave the ledger and their daily rows become monthly
    rollups; what naming reads keeps them. None keeps everything. Returns the reports expired."""
    if months is None:
        return 0
    month = today.year * 12 + today.month - 1 - months
    gone = store.expire(dt.date(month // 12, month % 12 + 1, 1))
    if gone:
        log.info("retention: %d reports older than %d months expired", gone, months)
    return gone


async def identify_domains(store: Store, catalog: Catalog, dns: DnsEvidence | None,
                           domains: Iterable[str], *, limits: Limits | None = None
                           ) -> list[ServiceVerdict]:
    """Name the senders of each domain that has new reports, so a new sender reaches the
    inventory (and from there its owner) without a person running anything.

    Each domain is looked at over its whole history (its source rollups: the cost of its
    distinct senders, not of its days), so inventory volumes stay whole. The DNS spent is
    bounded per run (`limits`, else the DMARCBOT_* settings, unless the caller gave `dns` a
    budget already) and each domain gets a fair share of its time. Retention
    (DMARCBOT_RETENTION_MONTHS) runs first: this is the step every schedule takes.
    """
    expire_history(store, dt.datetime.now(dt.UTC).date(), retention_months())
    # The domains someone owns (DMARCBOT_OWNERS) first: reports naming invented domains must
    # not spend the time the real ones need.
    owned = set(approval_settings().default_owners)
    chosen = sorted(set(domains), key=lambda d: (d not in owned, d))
    if dns is not None and dns.budget is None:
        limits = limits or Limits.from_env()
        dns.budget = DnsBudget(max_sources=limits.max_dns_sources,
                               seconds=limits.dns_budget_seconds)
    verdicts: list[ServiceVerdict] = []
    async for services, _ in senders_by_domain(store, catalog, dns, chosen):
        verdicts.extend(services)
    return verdicts
