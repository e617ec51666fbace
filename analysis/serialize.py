"""Reports as plain JSON-ready dicts: the contract of `dmarcbot parse` (docs/report-json.md).

Aggregate reports are split into a header and per-record dicts so a writer can stream a report of
any size without holding its records.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from analysis.model import AggregateReport, FailureReport, Record, TlsReport

AGGREGATE_CSV_FIELDS = (
    "source", "schema", "org_name", "report_id", "begin", "end", "policy_domain", "p", "sp",
    "source_ip", "count", "disposition", "dkim", "spf", "reasons", "header_from",
    "envelope_from", "envelope_to", "dkim_domains", "dkim_selectors", "dkim_results",
    "spf_domains", "spf_scopes", "spf_results",
)


#: How a cell starts when a spreadsheet would read it as a formula (OWASP, "CSV Injection"):
#: `=`, `+`, `-`, `@`, tab and carriage return; the page's later revision adds line feed and the
#: full-width forms that some locales (Japanese) also take as formulas.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def spreadsheet_safe(value: Any) -> Any:
    """`value` as a CSV cell a spreadsheet shows and never runs: a text that starts like a
    formula gets a leading `'`, as OWASP advises. Every report field is the sender's to choose,
    so every text cell is checked. Numbers are left as numbers: a number is no formula (and the
    only number here, a count, is never negative)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def iso(when: datetime | None) -> str | None:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else None


def aggregate_header(report: AggregateReport) -> dict[str, Any]:
    """Every field but `records` and `errors` (errors are only complete after the records)."""
    policy = dataclasses.asdict(report.policy)
    policy["defaulted"] = list(report.policy.defaulted)
    return {
        "kind": "aggregate", "schema": report.schema, "source": report.source,
        "reporter": dataclasses.asdict(report.reporter), "report_id": report.report_id,
        "begin": iso(report.begin), "end": iso(report.end), "generator": report.generator,
        "policy": policy,
    }


def record_dict(record: Record) -> dict[str, Any]:
    return {
        "source_ip": record.source_ip, "count": record.count,
        "disposition": record.disposition, "dkim": record.dkim, "spf": record.spf,
        "reasons": [{"type": r.type, "comment": r.comment} for r in record.reasons],
        "header_from": record.header_from, "envelope_from": record.envelope_from,
        "envelope_to": record.envelope_to,
        "auth_dkim": [
            {"domain": d.domain, "selector": d.selector, "result": d.result,
             "human_result": d.human_result}
            for d in record.auth_dkim
        ],
        "auth_spf": [
            {"domain": s.domain, "scope": s.scope, "result": s.result,
             "human_result": s.human_result, "scope_defaulted": s.scope_defaulted}
            for s in record.auth_spf
        ],
        "defaulted": list(record.defaulted),
    }


def record_csv_row(report: AggregateReport, record: Record) -> list[Any]:
    """One CSV row; list-valued fields are joined with spaces, reasons as `type:comment`.

    Every text cell goes through `spreadsheet_safe`; the writer must quote every text cell too
    (`csv.QUOTE_NONNUMERIC`), so that a `;` or tab inside one cannot start a new cell in a
    spreadsheet that splits on it.
    """
    return [spreadsheet_safe(cell) for cell in (
        report.source, report.schema, report.reporter.org_name, report.report_id,
        iso(report.begin), iso(report.end), report.policy.domain, report.policy.p,
        report.policy.sp, record.source_ip, record.count, record.disposition, record.dkim,
        record.spf,
        " ".join(f"{r.type}:{r.comment}" if r.comment else r.type for r in record.reasons),
        record.header_from, record.envelope_from or "", record.envelope_to or "",
        " ".join(d.domain for d in record.auth_dkim),
        " ".join(d.selector or "-" for d in record.auth_dkim),
        " ".join(d.result for d in record.auth_dkim),
        " ".join(s.domain or "-" for s in record.auth_spf),
        " ".join(s.scope or "-" for s in record.auth_spf),
        " ".join(s.result for s in record.auth_spf),
    )]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def other_report_dict(report: FailureReport | TlsReport) -> dict[str, Any]:
    """Failure and TLS reports are small: the whole report at once, `kind` first."""
    fields = {f.name: _plain(getattr(report, f.name)) for f in dataclasses.fields(report)}
    if isinstance(report, TlsReport):
        fields["policies"] = [
            _plain(dataclasses.asdict(p)) for p in report.policies
        ]
    return {"kind": fields.pop("kind"), **fields}
