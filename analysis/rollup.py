"""What a report adds to the store: its ledger key and its per-day rollup rows.

Pure functions, so the SQLite and Table Storage stores apply the same rules: two copies of a report
share one key whatever their wrapping, and a report spanning several days is split per UTC day in
proportion to the time it covers there, with exact integer totals.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime

from analysis.model import AggregateReport, FailureReport, Record, Report, TlsReport

DAY = 86400
#: Reports covering at most a day (plus a second: Microsoft ends at begin + 86400) go to the UTC
#: day they begin on, so a 00:00-to-00:00 report is not split across two days.
_ONE_DAY_SPAN = DAY + 1


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerKey:
    """Identity of a report: a re-sent or re-wrapped copy has the same key."""

    kind: str
    reporter: str
    report_id: str
    policy_domain: str
    begin: int
    end: int


@dataclasses.dataclass(frozen=True, slots=True)
class RollupKey:
    """The dimensions of a daily rollup row (DESIGN.md, "Data")."""

    policy_domain: str
    day: str  # YYYY-MM-DD, UTC
    source_ip: str
    header_from: str
    envelope_from: str  # "" when the report gave none
    dkim: str  # "domain/selector=result" per signature, space-separated, in report order
    spf: str  # "domain/scope=result" per SPF result
    dkim_aligned: bool
    spf_aligned: bool
    disposition: str
    reasons: str  # JSON list of "type" or "type:comment" ("" when none): comments hold spaces


def _epoch(when: datetime) -> int:
    return int(when.timestamp())


def ledger_key(report: Report) -> LedgerKey:
    if isinstance(report, AggregateReport):
        reporter = (report.reporter.email or report.reporter.org_name).strip().lower()
        return LedgerKey("aggregate", reporter, report.report_id, report.policy.domain,
                         _epoch(report.begin), _epoch(report.end))
    if isinstance(report, TlsReport):
        domains = sorted({p.policy_domain for p in report.policies})
        return LedgerKey("tls", report.organization_name.strip().lower(), report.report_id,
                         " ".join(domains), _epoch(report.start_datetime),
                         _epoch(report.end_datetime))
    return _failure_key(report)


def _failure_key(report: FailureReport) -> LedgerKey:
    # Failure reports carry no id: the sample's identity and the failure's facts stand in for one.
    when = _epoch(report.arrival_date) if report.arrival_date else 0
    facts = "\n".join([
        report.sample_headers.get("message_id", ""), report.sample_headers.get("date", ""),
        report.sample_headers.get("subject", ""), report.source_ip or "",
        report.reported_domain or "", report.original_envelope_id or "", str(when),
    ])
    digest = hashlib.sha256(facts.encode("utf-8", "replace")).hexdigest()[:32]
    return LedgerKey("failure", report.reporter or "", digest, report.reported_domain or "",
                     when, when)


def report_days(begin: datetime, end: datetime) -> list[tuple[date, int]]:
    """The UTC days a report covers, each with its weight (seconds covered)."""
    start, stop = _epoch(begin), _epoch(end)
    if stop - start <= _ONE_DAY_SPAN:
        return [(begin.astimezone(UTC).date(), 1)]
    if stop % DAY == DAY - 1:  # inclusive end (23:59:59): the last second counts
        stop += 1
    days = []
    cursor = start
    while cursor < stop:
        day_end = (cursor // DAY + 1) * DAY
        covered = min(day_end, stop) - cursor
        days.append((datetime.fromtimestamp(cursor, UTC).date(), covered))
        cursor = day_end
    return days


def split_count(count: int, weights: list[int]) -> list[int]:
    """Share `count` by `weights` in whole numbers that add up exactly (largest remainder)."""
    total = sum(weights)
    if len(weights) == 1 or total == 0:
        return [count] + [0] * (len(weights) - 1)
    shares = [count * w // total for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(count * weights[i] % total), i))
    for i in remainders[: count - sum(shares)]:
        shares[i] += 1
    return shares


def _results(record: Record) -> tuple[str, str, str]:
    dkim = " ".join(f"{d.domain}/{d.selector or ''}={d.result}" for d in record.auth_dkim)
    spf = " ".join(f"{s.domain or ''}/{s.scope or ''}={s.result}" for s in record.auth_spf)
    reasons = json.dumps([f"{r.type}:{' '.join(r.comment.split())}" if r.comment else r.type
                          for r in record.reasons]) if record.reasons else ""
    return dkim, spf, reasons


def rollup_rows(report: AggregateReport, record: Record,
                days: list[tuple[date, int]]) -> Iterator[tuple[RollupKey, int]]:
    """The (key, messages) rows one record adds; `days` from `report_days(report...)`."""
    dkim, spf, reasons = _results(record)
    counts = split_count(record.count, [w for _, w in days])
    for (day, _), messages in zip(days, counts, strict=True):
        if messages or len(days) == 1:
            yield RollupKey(
                report.policy.domain, day.isoformat(), record.source_ip, record.header_from,
                record.envelope_from or "", dkim, spf, record.dkim == "pass",
                record.spf == "pass", record.disposition, reasons,
            ), messages
