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
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from analysis import AggregateReport, Limits, RejectedInput, iter_files, read_reports
from analysis.serialize import (
    AGGREGATE_CSV_FIELDS,
    aggregate_header,
    other_report_dict,
    record_csv_row,
    record_dict,
)
from analysis.summary import DomainSummary, summarise
from function_app import settings
from function_app.pipeline import Outcome, ingest_paths
from store import SqliteStore, StoreError


class UsageError(Exception):
    """Bad arguments or settings: shown as one line, exit status 2."""


_JSON = json.JSONEncoder(ensure_ascii=False)


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
    writer = csv.writer(out, lineterminator="\n") if args.format == "csv" else None
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
    return summarise(store.rollups(domain=domain, since=since), reports)


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


# -- demo --------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, limits: Limits) -> int:
    from function_app.demo_reports import write_demo_reports

    folder = Path(tempfile.mkdtemp(prefix="dmarcbot-demo-"))
    reports = folder / "reports"
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    files = write_demo_reports(reports, last_day=yesterday)
    if args.db is None:
        args.db = str(folder / "demo.sqlite3")
    counts = {"stored": 0, "duplicate": 0, "rejected": 0}
    with _open_store(args) as store:
        for outcome in ingest_paths([reports], store, limits):
            counts[outcome.status] += 1
            if outcome.status == "rejected":
                _say(_outcome_line(outcome))
        summaries = _summaries(store, None, None)
    print(f"Wrote {len(files)} sample report files to {reports}")
    print(f"Ingested them into {args.db}: {counts['stored']} reports stored, "
          f"{counts['duplicate']} duplicates, {counts['rejected']} rejected")
    _print_summary(summaries, sys.stdout)
    print(f"\nExplore further: dmarcbot --db {args.db} summary --domain contoso.com")
    return 1 if counts["rejected"] else 0


# -- plumbing ----------------------------------------------------------------------------------


def _open_store(args: argparse.Namespace) -> SqliteStore:
    path = Path(args.db) if args.db else settings.default_db_path()
    return SqliteStore(path)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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

    p = sub.add_parser("demo", help="generate a week of sample reports, ingest and summarise them")
    p.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8", errors="replace")
    try:
        limits = Limits.from_env()
        return args.handler(args, limits)
    except (UsageError, ValueError) as exc:
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
