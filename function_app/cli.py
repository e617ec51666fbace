"""`dmarcbot`: the command line. Same pipeline as the functions, with local adapters."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TextIO

import dns.exception

from analysis import AggregateReport, Limits, RejectedInput, iter_files, read_reports
from analysis.catalog import load_catalog
from analysis.dnsevidence import DnsBudget, DnsEvidence, answers_from_zone, make_resolver
from analysis.posture import DnsChange, Posture
from analysis.readiness import sources
from analysis.senders import analyse_activities
from analysis.serialize import (
    AGGREGATE_CSV_FIELDS,
    aggregate_header,
    other_report_dict,
    record_csv_row,
    record_dict,
)
from analysis.summary import DomainSummary, summarise
from analysis.verdicts import ServiceVerdict
from function_app import aio, settings, setup_cli
from function_app.approvals import (
    ApprovalSettings,
    Refused,
    StoreRecords,
    Verb,
    take_decision,
)
from function_app.pipeline import (
    Outcome,
    believed_activities,
    domain_posture,
    find_senders,
    ingest_paths,
    senders_by_domain,
)
from store import SqliteStore, StoreError


class UsageError(Exception):
    """Bad arguments or settings: shown as one line, exit status 2."""


_JSON = json.JSONEncoder(ensure_ascii=False)

# The cards (and the Teams card models under them) are imported by the commands that write them:
# they take a quarter of a second to load, which `parse`, `ingest` and `summary` need not pay.


# -- parse -------------------------------------------------------------------------------------


def _write_aggregate_json(report: AggregateReport, out: TextIO) -> RejectedInput | None:
    """Stream one report as a JSON line; records are written as they are read."""
    header = _JSON.encode(aggregate_header(report))
    out.write(header[:-1] + ', "records": [')
    failure = None
    try:
        first = True
        for record in report.records:
            out.write(("" if first else ", ") + _JSON.encode(record_dict(record)))
            first = False
    except RejectedInput as exc:
        report.errors.append(f"reading stopped: {exc.detail}")
        failure = exc
    out.write('], "errors": ' + _JSON.encode(report.errors) + "}\n")
    return failure


def cmd_parse(args: argparse.Namespace, limits: Limits) -> int:
    out = sys.stdout
    # Every text cell quoted, so a `;` or tab in one cannot open a new cell in a spreadsheet
    # that splits on it; cells that start like a formula are defused by record_csv_row.
    writer = (csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
              if args.format == "csv" else None)
    if writer is not None:
        writer.writerow(AGGREGATE_CSV_FIELDS)
    status = 0
    for path in iter_files(args.paths):
        try:
            for report in read_reports(path, limits):
                failure = None
                if isinstance(report, AggregateReport):
                    if writer is None:
                        failure = _write_aggregate_json(report, out)
                    else:
                        for record in report.records:
                            writer.writerow(record_csv_row(report, record))
                elif writer is None:
                    out.write(_JSON.encode(other_report_dict(report)) + "\n")
                else:
                    _say(f"{report.source}: {report.kind} report skipped (CSV holds aggregate "
                         "records only)")
                if failure is not None:
                    raise failure
        except RejectedInput as exc:
            _say(f"rejected: {exc}")
            status = 1
    return status


# -- ingest ------------------------------------------------------------------------------------


def _outcome_line(outcome: Outcome) -> str:
    if outcome.status == "rejected":
        return f"rejected: {outcome.reason}"
    note = f" ({outcome.errors} problems recovered, see `dmarcbot parse`)" if outcome.errors else ""
    if outcome.conflict:
        note = (" (conflicts with another report of the same id: a copy counts only when no"
                " other believed copy disagrees)" + note)
    if outcome.unverified:
        note = (f" (unverified: {outcome.unverified}; kept, not believed until its reporter is"
                " in DMARCBOT_TRUSTED_REPORTERS)" + note)
    return f"{outcome.source}: {outcome.status}{note}"


def cmd_ingest(args: argparse.Namespace, limits: Limits) -> int:
    status = 0
    with _open_store(args) as store:
        for outcome in ingest_paths(args.paths, store, limits):
            print(_outcome_line(outcome), flush=True)
            if outcome.status == "rejected":
                status = 1
    return status


# -- summary -----------------------------------------------------------------------------------


def _day(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise UsageError(f"--since {text!r} is not a date (YYYY-MM-DD)") from None


def _summaries(store: SqliteStore, domain: str | None, since: str | None) -> list[DomainSummary]:
    reports = ((e.key.policy_domain, e.org_name)
               for e in store.reports(domain=domain, since=since, kind="aggregate"))
    believed = store.rollups(domain=domain, since=since,
                             trusted_reporters=settings.trusted_reporters())
    return summarise(believed, reports)


def _summary_json(s: DomainSummary) -> dict[str, object]:
    return {
        "domain": s.domain, "first_day": s.first_day, "last_day": s.last_day,
        "messages": s.messages, "dmarc_pass": s.dmarc_pass,
        "spf_aligned_pass": s.spf_aligned_pass, "dkim_aligned_pass": s.dkim_aligned_pass,
        "dmarc_pass_pct": s.percent(s.dmarc_pass, s.messages),
        "spf_aligned_pct": s.percent(s.spf_aligned_pass, s.messages),
        "dkim_aligned_pct": s.percent(s.dkim_aligned_pass, s.messages),
        "reporters": s.reporters,
        "top_sources": [{"ip": t.ip, "messages": t.messages, "dmarc_pass": t.dmarc_pass}
                        for t in s.top_sources],
    }


def _print_summary(summaries: list[DomainSummary], out: TextIO) -> None:
    if not summaries:
        out.write("No aggregate reports stored for this selection.\n")
    for s in summaries:
        pct = s.percent
        out.write(f"\n{s.domain}   {s.first_day} to {s.last_day}\n")
        out.write(f"  messages       {s.messages:>12,}\n")
        out.write(f"  DMARC pass     {pct(s.dmarc_pass, s.messages):>11.1f}%\n")
        out.write(f"  aligned SPF    {pct(s.spf_aligned_pass, s.messages):>11.1f}%\n")
        out.write(f"  aligned DKIM   {pct(s.dkim_aligned_pass, s.messages):>11.1f}%\n")
        reporters = ", ".join(f"{org} ({n})" for org, n in s.reporters.items())
        out.write(f"  reporters      {reporters}\n")
        out.write(f"  {'top sources':<39}   {'messages':>10}  {'DMARC pass':>10}\n")
        for t in s.top_sources:
            share = pct(t.dmarc_pass, t.messages)
            out.write(f"    {t.ip:<39} {t.messages:>10,}  {share:>9.1f}%\n")


def cmd_summary(args: argparse.Namespace, limits: Limits) -> int:
    since = _day(args.since) if args.since else None
    with _open_store(args) as store:
        summaries = _summaries(store, args.domain, since)
    if args.json:
        for s in summaries:
            print(_JSON.encode(_summary_json(s)))
    else:
        _print_summary(summaries, sys.stdout)
    return 0


# -- senders and posture -----------------------------------------------------------------------


def _evidence(args: argparse.Namespace, store: SqliteStore) -> DnsEvidence | None:
    if args.offline:
        if args.nameserver:
            raise UsageError("--offline and --nameserver exclude each other")
        return None
    try:
        resolver = make_resolver(args.nameserver or (), timeout=args.dns_timeout)
    except ValueError as exc:  # a --nameserver that is not IP[:PORT]
        raise UsageError(str(exc)) from None
    except dns.exception.DNSException:  # dnspython's NoResolverConfiguration
        raise UsageError("no system DNS resolver is configured: give --nameserver IP[:PORT] "
                         "or use --offline") from None
    limits = Limits.from_env()  # main() has read it once already: it is valid
    budget = DnsBudget(max_sources=args.max_dns_sources or limits.max_dns_sources,
                       seconds=args.dns_budget or limits.dns_budget_seconds)
    return DnsEvidence(resolver, cache=store, concurrency=args.dns_concurrency, budget=budget)


def _sender_json(s: ServiceVerdict, status: str | None) -> dict[str, object]:
    """One line of `senders --json`: the fields it always had, the line's account, and each
    source's own verdict. `status` belongs to the domain's own account line only."""
    return {
        "domain": s.domain, "service_key": s.service_key, "service_name": s.service_name,
        "category": s.category, "messages": s.messages, "dmarc_pass": s.dmarc_pass,
        "dkim_aligned_pass": s.dkim_aligned_pass, "spf_aligned_pass": s.spf_aligned_pass,
        "verdict": s.verdict, "status": status if s.needs_decision else None,
        "confidence": round(s.confidence, 3),
        "sources": [{"ip": v.identification.activity.ip,
                     "messages": v.identification.activity.messages,
                     "ptr": v.identification.ptr, "dns": v.identification.dns,
                     "dns_note": v.identification.dns_note,
                     "verdict": v.verdict, "account": v.account, "advice": v.advice,
                     "diagnosis": v.diagnosis,
                     "dmarc_pass": v.identification.activity.dmarc_pass,
                     "candidate": v.identification.candidate,
                     "evidence": list(v.identification.evidence)} for v in s.sources],
        "source_count": s.source_count,
        "parts": [{"verdict": p.verdict, "sources": p.sources, "messages": p.messages,
                   "dmarc_pass": p.dmarc_pass, "dkim_aligned_pass": p.dkim_aligned_pass}
                  for p in s.parts],
        "dns_not_looked_up": sum(n for status, n in s.dns_statuses
                                 if status.startswith("not looked up")),
        "evidence": list(s.evidence),
        "platform_key": s.platform_key, "diagnosis": s.diagnosis, "advice": s.advice,
        "first_seen": s.first_day, "last_seen": s.last_day,
        "line_name": s.line_name, "account": s.account, "needs_decision": s.needs_decision,
        "set_aside": [{"line_name": a.name, "verdict": a.verdict, "sources": a.sources,
                       "messages": a.messages} for a in s.set_aside],
    }


def _print_senders(services: list[ServiceVerdict], statuses: dict[tuple[str, str], str],
                   evidence: bool, out: TextIO) -> None:
    if not services:
        out.write("No aggregate reports stored for this selection.\n")
    domain = None
    for s in services:
        if s.domain != domain:
            domain = s.domain
            out.write(f"\n{domain}\n  {'service':<40} {'messages':>9} {'DMARC':>6} {'DKIM':>6}"
                      f" {'SPF':>6}  {'verdict':<11} status\n")
        pct = DomainSummary.percent
        name = s.line_name + (f" (via {s.platform_key})" if s.platform_key else "")
        status = statuses.get((s.domain, s.service_key), "-") if s.needs_decision else "-"
        out.write(f"  {name[:40]:<40} {s.messages:>9,} {pct(s.dmarc_pass, s.messages):>5.0f}%"
                  f" {pct(s.dkim_aligned_pass, s.messages):>5.0f}%"
                  f" {pct(s.spf_aligned_pass, s.messages):>5.0f}%  {s.verdict:<11} {status}\n")
        if len(name) > 40:
            out.write(f"      ({name})\n")
        out.write(f"      {s.advice}\n")
        for part in s.parts:
            if part.verdict != s.verdict:
                out.write(f"      of which {part.verdict}: {sources(part.sources)}, "
                          f"{part.messages:,} messages\n")
        for aside in s.set_aside:
            out.write(f"      not part of this account: {aside.name} ({aside.verdict}, "
                      f"{sources(aside.sources)}, {aside.messages:,} messages)\n")
        if evidence:
            for line in s.evidence:
                out.write(f"      - {line}\n")
            for status, n in s.dns_statuses:
                out.write(f"      - {n:,} of {sources(s.source_count)}: reverse DNS {status}"
                          + ("; judged on the reports' own evidence"
                             if status.startswith("not looked up") else "") + "\n")
            for v in s.sources[:5]:
                a, i = v.identification.activity, v.identification
                dns_note = "" if i.dns == "looked up" else f" [dns: {i.dns}]"
                out.write(f"      source {a.ip} ({a.messages:,} messages)"
                          f"{' ptr ' + i.ptr if i.ptr else ''}{dns_note}\n")


def cmd_senders(args: argparse.Namespace, limits: Limits) -> int:
    since = _day(args.since) if args.since else None

    async def show(store: SqliteStore) -> bool:
        # One domain at a time, written as it is named: memory holds one domain (issue 14).
        shown = False
        async for services, statuses in senders_by_domain(
                store, load_catalog(), _evidence(args, store),
                None if args.domain is None else [args.domain], since=since):
            if args.json:
                for s in services:
                    print(_JSON.encode(_sender_json(s, statuses.get((s.domain, s.service_key)))))
            elif services:
                _print_senders(services, statuses, args.evidence, sys.stdout)
            shown = shown or bool(services)
        return shown

    with _open_store(args) as store:
        if not aio.run(show(store)) and not args.json:
            _print_senders([], {}, args.evidence, sys.stdout)
    return 0


#: `posture --json` schema (docs/posture.md); raised when a field changes meaning or goes away.
POSTURE_SCHEMA = 1


def _change_json(c: DnsChange) -> dict[str, object]:
    return {"name": c.name, "type": c.type, "value": c.value, "replaces": list(c.replaces),
            "why": c.why}


def _posture_json(p: Posture) -> dict[str, object]:
    return {
        "schema": POSTURE_SCHEMA,
        "domain": p.domain, "policy": p.policy, "dmarc_record": p.dmarc.record,
        "dmarc_found_at": p.dmarc.found_at, "spf_record": p.spf.record,
        "spf_lookups": p.spf.lookups, "spf_void_lookups": p.spf.void_lookups,
        "findings": [{"code": f.code, "severity": f.level, "topic": f.topic, "text": f.text,
                      "rfc": f.rfc, "fix": _change_json(f.fix) if f.fix else None}
                     for f in p.findings],
        "readiness": round(p.readiness, 4), "considered_messages": p.considered_messages,
        "ready_messages": p.ready_messages, "blockers": list(p.blockers),
        "next_policy": p.next_policy, "next_step": p.next_step,
        "publish": [_change_json(c) for c in p.changes],
        "lines": [{"line_name": ln.line_name, "service_key": ln.service_key,
                   "account": ln.account, "verdict": ln.verdict, "status": ln.status,
                   "messages": ln.messages, "sources": ln.sources, "dmarc_pass": ln.dmarc_pass,
                   "dkim_aligned_pass": ln.dkim_aligned_pass, "considered": ln.considered,
                   "blocker": ln.blocker, "stopped_by_enforcement": ln.stopped_by_enforcement,
                   "question": ln.question, "part_of": ln.part_of} for ln in p.lines],
    }


def _print_posture(p: Posture, out: TextIO) -> None:
    out.write(f"{p.domain}\n")
    where = f"_dmarc.{p.dmarc.found_at}" if p.dmarc.found_at else "(none)"
    out.write(f"  DMARC   {where}: {p.dmarc.record or '-'}\n")
    out.write(f"  SPF     {p.spf.record or '-'}  ({p.spf.lookups} lookups)\n")
    for f in p.findings:
        rule = f"  [{f.rfc}]" if f.rfc else ""
        out.write(f"  {f.level:<7} {f.topic:<7} {f.text}{rule}\n")
        if f.fix is not None:
            _print_change(f.fix, out, indent="            fix: ")
    out.write(f"\n  readiness  {100 * p.readiness:.1f}% of {p.domain}'s own approved or compliant "
              f"mail passes with aligned DKIM ({p.ready_messages:,} of "
              f"{p.considered_messages:,} messages)\n")
    for b in p.blockers:
        out.write(f"  blocker    {b}\n")
    stopped = [ln for ln in p.lines if ln.stopped_by_enforcement]
    if stopped:
        now = p.policy in ("quarantine", "reject")
        out.write(f"  p={p.policy} stops now" if now else "  enforcement stops (p=quarantine or "
                  "p=reject)")
        out.write(" these lines, failing and not yours:\n")
        for ln in stopped:
            out.write(f"    {ln.line_name}: {sources(ln.sources)}, {ln.messages:,} messages\n")
    asked = [ln for ln in p.lines if ln.question and not ln.blocker]
    if asked:
        out.write("  to answer (the answer decides whether enforcement stops them or breaks "
                  "them):\n")
        for ln in asked:
            out.write(f"    {ln.line_name}: {sources(ln.sources)}, {ln.messages:,} messages. "
                      f"{ln.question}\n")
    forwarded = [ln for ln in p.lines if ln.verdict == "forwarded"]
    if forwarded:
        lines = f"{len(forwarded):,} line" + ("s" if len(forwarded) > 1 else "")
        out.write(f"  forwarded  {sum(ln.messages for ln in forwarded):,} messages ({lines}) "
                  f"reach receivers through forwarders and lists: not {p.domain}'s to fix, so "
                  f"never a blocker (mail {p.domain} signs with aligned DKIM survives them)\n")
    out.write(f"  next step  {p.next_step}\n")
    if p.changes:
        out.write("\n  publish:\n")
        for c in p.changes:
            _print_change(c, out, indent="    ")


def _print_change(c: DnsChange, out: TextIO, indent: str) -> None:
    pad = " " * len(indent)
    for old in c.replaces:
        out.write(f"{indent}remove {c.name}  {c.type}  \"{old}\"\n")
        indent = pad
    if c.value:
        out.write(f"{indent}{c.name}  {c.type}  \"{c.value}\"\n")
    out.write(f"{pad}  ({c.why})\n")


def cmd_posture(args: argparse.Namespace, limits: Limits) -> int:
    since = _day(args.since) if args.since else None
    with _open_store(args) as store:
        evidence = _evidence(args, store)
        if evidence is None:
            raise UsageError("posture reads the domain's DNS records: it cannot run --offline")
        from graph.mta_sts import HttpsPolicyFetcher  # httpx only for this command

        posture = aio.run(domain_posture(store, load_catalog(), evidence,
                                         args.domain.lower(), since=since,
                                         sts_fetcher=HttpsPolicyFetcher()))
    if args.json:
        print(_JSON.encode(_posture_json(posture)))
    else:
        _print_posture(posture, sys.stdout)
    return 0


# -- demo --------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, limits: Limits) -> int:
    from cards.digest import digest_card
    from cards.facts import digest_facts_from
    from function_app.demo_reports import DEMO_AUTHSERV_ID, write_demo_reports
    from function_app.notify import Asking, notify
    from function_app.outbox import Outbox

    folder = Path(tempfile.mkdtemp(prefix="dmarcbot-demo-"))
    reports = folder / "reports"
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    files = write_demo_reports(reports, last_day=yesterday)
    if args.db is None:
        args.db = str(folder / "demo.sqlite3")
    counts = {"stored": 0, "duplicate": 0, "rejected": 0}
    catalog = load_catalog()
    with _open_store(args) as store:
        for outcome in ingest_paths([reports], store, limits,
                                    authserv_ids=[DEMO_AUTHSERV_ID]):
            counts[outcome.status] += 1
            if outcome.status == "rejected":
                _say(_outcome_line(outcome))
        summaries = _summaries(store, None, None)
        # The demo's world has no network: its DNS comes from a zone shipped for it.
        zone = resources.files("function_app").joinpath("demo.zone").read_text("utf-8")
        for answer in answers_from_zone(zone, expires=time.time() + 365 * 86400):
            store.put_answer(answer)
        evidence = DnsEvidence(None, cache=store)
        services, statuses = aio.run(find_senders(store, catalog, evidence))
        postures = [aio.run(domain_posture(store, catalog, evidence, s.domain))
                    for s in summaries]
        outbox = Outbox(Path(args.outbox) if args.outbox else folder / "outbox")
        owners = ApprovalSettings(default_owners={s.domain: f"it@{s.domain}" for s in summaries})
        sent = aio.run(notify(Asking(StoreRecords(store), outbox, owners), services,
                              dt.datetime.now(dt.UTC)))
        period = (yesterday - dt.timedelta(days=6), yesterday)
        for posture in postures:
            statuses_here = {k: v for (d, k), v in statuses.items() if d == posture.domain}
            digest = digest_card(digest_facts_from(posture, services, statuses_here,
                                                   period=period))
            aio.run(outbox.send(f"it@{posture.domain}", digest, kind="digest",
                                domain=posture.domain))
    print(f"Wrote {len(files)} sample report files to {reports}")
    print(f"Ingested them into {args.db}: {counts['stored']} reports stored, "
          f"{counts['duplicate']} duplicates, {counts['rejected']} rejected")
    _print_summary(summaries, sys.stdout)
    print("\nWho sends as these domains:")
    _print_senders(services, statuses, False, sys.stdout)
    print("\nThe road to enforcement:")
    for posture in postures:
        print(f"  {posture.domain}: {posture.next_step}")
    print(f"\n{len(sent)} approval cards and {len(postures)} weekly digests are in the outbox:"
          f" {outbox.index}")
    print(f"\nExplore further: dmarcbot --db {args.db} summary --domain contoso.com")
    return 1 if counts["rejected"] else 0


# -- run ---------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, limits: Limits) -> int:
    """The scheduled job, once: bring new reports in, then the step the Functions timer takes
    (`schedule.name_and_notify`), with the store's inventory and the outbox."""
    from function_app.notify import Asking
    from function_app.outbox import Outbox
    from function_app.schedule import name_and_notify

    approvals = _approval_settings()  # a bad setting stops the run before any work
    with _open_store(args) as store:
        evidence = _evidence(args, store)
        if args.source == "graph":
            status, outcomes = aio.run(_run_graph(store, limits))
        else:
            outcomes = []
            for outcome in ingest_paths([args.source], store, limits):
                print(_outcome_line(outcome), flush=True)
                outcomes.append(outcome)
            status = 1 if any(o.status == "rejected" for o in outcomes) else 0
        new = {o.domain for o in outcomes
               if o.status == "stored" and o.kind == "aggregate" and o.domain}
        outbox = Outbox(Path(args.outbox) if args.outbox else settings.default_outbox())
        named = aio.run(name_and_notify(
            store, load_catalog(), evidence, stored=new, now=dt.datetime.now(dt.UTC),
            asking=Asking(StoreRecords(store), outbox, approvals)))
        verdicts, sent = named.verdicts, named.sent
        inventory = store.inventory()
        pending = [v for v in verdicts if v.needs_decision
                   and inventory[v.domain, v.service_key].status == "Pending"]
        if pending:
            print(f"\n{len(pending)} senders wait for their owner's decision:")
            for v in pending:
                owner = inventory[v.domain, v.service_key].owner or "no owner yet"
                print(f"  {v.domain}: {v.service_name} ({v.messages:,} messages, {v.verdict};"
                      f" {owner})")
        if sent:
            print(f"\n{len(sent)} cards written to the outbox: {outbox.index}")
    return status


async def _run_graph(store: SqliteStore, limits: Limits) -> tuple[int, list[Outcome]]:
    from function_app.mailjob import open_mailbox, run_mailbox
    from function_app.settings import SettingsError, mailbox_settings
    from graph.errors import GraphError

    try:
        config = mailbox_settings()
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    try:
        async with open_mailbox(config) as mailbox:
            results = await run_mailbox(mailbox, store, limits)
    except GraphError as exc:
        _say(f"dmarcbot: error: {config.address}: {exc}")
        return 1, []
    for result in results:
        reports = sum(o.status in ("stored", "duplicate") for o in result.outcomes)
        detail = f": {result.reason}" if result.reason else f": {reports} reports"
        print(f"{result.status} {result.message}{detail}", flush=True)
    status = 1 if any(r.status in ("failed", "retry") for r in results) else 0
    return status, [o for r in results for o in r.outcomes]


# -- decide ------------------------------------------------------------------------------------


def cmd_decide(args: argparse.Namespace, limits: Limits) -> int:
    """An owner's decision from the command line, through the same code as the Teams bot."""
    from function_app.notify import Asking, decided_card, notify
    from function_app.outbox import Outbox

    verb: Verb = "approve" if args.approve else "reject" if args.reject else "notmine"
    approvals = _approval_settings()
    now = dt.datetime.now(dt.UTC)
    with _open_store(args) as store:
        try:
            outcome = aio.run(take_decision(StoreRecords(store), args.domain, args.service,
                                            verb, args.as_, now, approvals,
                                            new_owner=args.not_mine))
        except Refused as exc:
            _say(f"dmarcbot: {exc}")
            return 2 if exc.code in ("unknown-sender", "no-owner") else 1
        item = outcome.item
        evidence = DnsEvidence(None, cache=store)  # what the cache knows; no lookups here
        _, services, _ = aio.run(analyse_activities(
            believed_activities(store, item.policy_domain), load_catalog(), evidence))
        verdict = next((v for v in services if v.service_key == item.service_key), None)
        outbox = Outbox(Path(args.outbox) if args.outbox else settings.default_outbox())
        if verdict is not None and outcome.changed:
            aio.run(outbox.send(args.as_, decided_card(verdict, item), kind="decision",
                                domain=item.policy_domain, service=item.service_key))
            if verb == "notmine":  # the new owner is asked now, not at the next run
                aio.run(notify(Asking(StoreRecords(store), outbox, approvals), [verdict],
                               now))
    if not outcome.changed:
        wanted = {"approve": "Approved", "reject": "Rejected"}.get(verb)
        line = (f"{item.policy_domain} {item.service_key}: {item.status} already, decided by "
                f"{item.decided_by or 'nobody'}; nothing changed")
        if wanted == item.status:
            print(line)
            return 0
        _say(f"dmarcbot: {line}")  # a different decision stands: worth a failing status
        return 1
    said = {"approve": "approved", "reject": "rejected"}.get(verb, f"handed to {item.owner}")
    print(f"{item.policy_domain} {item.service_key}: {said} by {args.as_}")
    if verdict is not None:
        print(f"Its card: {outbox.index}")
    return 0


def _approval_settings() -> ApprovalSettings:
    try:
        return settings.approval_settings()
    except settings.SettingsError as exc:
        raise UsageError(str(exc)) from None


# -- plumbing ----------------------------------------------------------------------------------


def _open_store(args: argparse.Namespace) -> SqliteStore:
    path = Path(args.db) if args.db else settings.default_db_path()
    return SqliteStore(path)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _positive(kind: type[int] | type[float], most: float = float("inf")
              ) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 < value <= most:
            raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 and at most {most}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmarcbot",
        description="Read DMARC reports, store them, and show who sends as your domains.",
    )
    parser.add_argument("--db", metavar="PATH",
                        help=f"SQLite store (default: ${settings.DB_ENV} or the user data folder)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress and show details of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("parse", help="print each report as one JSON object per line")
    p.add_argument("paths", nargs="+", metavar="PATH", help="report files, e-mails, mbox, folders")
    p.add_argument("--format", choices=("json", "csv"), default="json",
                   help="json (default): one report per line; csv: one aggregate record per row")
    p.set_defaults(handler=cmd_parse)

    p = sub.add_parser("ingest", help="store reports; one line per report or rejected input")
    p.add_argument("paths", nargs="+", metavar="PATH", help="report files, e-mails, mbox, folders")
    p.set_defaults(handler=cmd_ingest)

    p = sub.add_parser("summary", help="per policy domain: volume, pass rates, reporters, sources")
    p.add_argument("--domain", type=str.lower, help="only this policy domain")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="only days from this UTC date on")
    p.add_argument("--json", action="store_true", help="one JSON object per domain per line")
    p.set_defaults(handler=cmd_summary)

    resolving = argparse.ArgumentParser(add_help=False)
    resolving.add_argument("--nameserver", action="append", metavar="IP[:PORT]",
                           help="DNS server to ask (repeatable; default: the system's)")
    resolving.add_argument("--offline", action="store_true",
                           help="no DNS: use only the evidence inside the reports")
    resolving.add_argument("--dns-timeout", type=_positive(float), default=2.0,
                           metavar="SECONDS", help="per-query timeout (default 2)")
    resolving.add_argument("--dns-concurrency", type=_positive(int, 1024), default=64,
                           metavar="N", help="queries in flight at most (default 64, 1024 max)")
    resolving.add_argument("--max-dns-sources", type=_positive(int), metavar="N",
                           help="sources per domain whose reverse DNS is looked up, most mail "
                                "first (default $DMARCBOT_MAX_DNS_SOURCES or 2000)")
    resolving.add_argument("--dns-budget", type=_positive(float), metavar="SECONDS",
                           help="time for DNS evidence in all, shared among the domains "
                                "(default $DMARCBOT_DNS_BUDGET_SECONDS or 240)")

    p = sub.add_parser("senders", parents=[resolving],
                       help="per domain: the named services, their pass rates and verdicts")
    p.add_argument("--domain", type=str.lower, help="only this policy domain")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="only days from this UTC date on")
    p.add_argument("--json", action="store_true", help="one JSON object per (domain, service)")
    p.add_argument("--evidence", action="store_true", help="show why each service was named")
    p.set_defaults(handler=cmd_senders)

    p = sub.add_parser("posture", parents=[resolving],
                       help="a domain's DMARC/SPF/DKIM posture and the records to publish next")
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="only days from this UTC date on")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(handler=cmd_posture)

    p = sub.add_parser("run", parents=[resolving],
                       help="the scheduled job once: ingest new reports, then name their senders")
    p.add_argument("--source", required=True, metavar="graph|PATH",
                   help="graph: the shared mailbox in the DMARCBOT_* settings; or a folder, "
                        "mbox or file")
    p.add_argument("--outbox", metavar="DIR",
                   help="where cards go (default: $DMARCBOT_OUTBOX or the data folder's outbox)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("decide", help="an owner's decision on a sender: approve, reject, not mine")
    p.add_argument("service", metavar="SERVICE", help="the service key, as `senders --json` shows")
    p.add_argument("--domain", required=True, type=str.lower, help="the policy domain")
    choice = p.add_mutually_exclusive_group(required=True)
    choice.add_argument("--approve", action="store_true", help="an authorized sender")
    choice.add_argument("--reject", action="store_true", help="not allowed to send as the domain")
    choice.add_argument("--not-mine", metavar="OWNER", help="hand it to its real owner (UPN)")
    p.add_argument("--as", dest="as_", required=True, metavar="UPN",
                   help="who decides: the sender's owner or an admin ($DMARCBOT_ADMINS)")
    p.add_argument("--outbox", metavar="DIR",
                   help="where cards go (default: $DMARCBOT_OUTBOX or the data folder's outbox)")
    p.set_defaults(handler=cmd_decide)

    p = sub.add_parser("demo", help="generate a week of sample reports, ingest and summarise them")
    p.add_argument("--outbox", metavar="DIR", help="where the demo's cards go (default: beside"
                   " its reports)")
    p.set_defaults(handler=cmd_demo)

    setup_cli.add_commands(sub)  # teams-app, sharepoint, doctor
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8", errors="replace")
    try:
        try:
            limits = Limits.from_env()
        except ValueError as exc:  # a DMARCBOT_* limit that is not a whole number
            raise UsageError(str(exc)) from None
        return args.handler(args, limits)
    except UsageError as exc:
        _say(f"dmarcbot: error: {exc}")
        return 2
    except StoreError as exc:
        _say(f"dmarcbot: error: {exc}")
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        _say("dmarcbot: interrupted")
        return 130
    except Exception as exc:  # a bug: one line unless asked for more
        if args.verbose:
            traceback.print_exc()
        _say(f"dmarcbot: internal error: {type(exc).__name__}: {exc}"
             + ("" if args.verbose else " (run with --verbose for details)"))
        return 3


if __name__ == "__main__":
    sys.exit(main())
