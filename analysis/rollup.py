"""What a report adds to the store: its ledger key and its per-day rollup rows.

Pure functions, so the SQLite and Table Storage stores apply the same rules: two copies of a report
share one key whatever their wrapping, and a report spanning several days is split per UTC day in
proportion to the time it covers there, with exact integer totals.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable, Iterator
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
    #: (domain, selector, result) per DKIM signature, in report order ("" for no selector).
    #: Structured, never joined into one text: a domain holding a space must not split into two
    #: signatures when read back (issue 13).
    dkim: tuple[tuple[str, str, str], ...]
    spf: tuple[tuple[str, str, str], ...]  # (domain, scope, result) per SPF result
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


Results = tuple[tuple[str, str, str], ...]


@functools.lru_cache(maxsize=4096)
def results_json(results: Results) -> str:
    """How both stores write DKIM or SPF results: one JSON list of [domain, selector or scope,
    result] (cached: a report repeats the same few)."""
    return json.dumps(results)


@functools.lru_cache(maxsize=4096)
def results_from_json(text: str) -> Results:
    return tuple((str(d), str(m), str(r)) for d, m, r in json.loads(text))


def legacy_results(text: str) -> Results:
    """Results as stores wrote them before they were structured: `domain/middle=result` items
    joined by spaces. Ambiguous when a domain held a space, `/` or `=`; kept only to convert
    old rows (the SQLite migration, old Table Storage entities)."""
    out = []
    for item in text.split():
        left, _, result = item.rpartition("=")
        domain, _, middle = left.partition("/")
        out.append((domain, middle, result))
    return tuple(out)


def _results(record: Record) -> tuple[Results, Results, str]:
    dkim = tuple([(d.domain, d.selector or "", d.result) for d in record.auth_dkim])
    spf = tuple([(s.domain or "", s.scope or "", s.result) for s in record.auth_spf])
    reasons = json.dumps([f"{r.type}:{' '.join(r.comment.split())}" if r.comment else r.type
                          for r in record.reasons]) if record.reasons else ""
    return dkim, spf, reasons


def stored_order(key: RollupKey) -> tuple[object, ...]:
    """A rollup key as stores keep it, in the order SQLite's primary key sorts rows."""
    return (key.policy_domain, key.day, key.source_ip, key.header_from, key.envelope_from,
            results_json(key.dkim), results_json(key.spf), key.dkim_aligned, key.spf_aligned,
            key.disposition, key.reasons)


class ContentDigest:
    """A digest of what a store keeps of one report: its ledger key and, in report order, each
    record's rollup dimensions and count (or a TLS or failure report's fields).

    Two reports with one ledger key are the same report (a duplicate) only when what is kept of
    them is the same; otherwise both are kept and flagged (issue 13: a forged copy of a report's
    key must neither pre-empt the genuine report nor be believed beside it). A re-sent or
    re-serialised copy (other wrapping, whitespace, `<id@host>` for `id`) has the same digest;
    one with its records in another order does not, so stores compare rows when digests differ.
    """

    def __init__(self, key: LedgerKey) -> None:
        self._hash = hashlib.sha256(json.dumps(dataclasses.astuple(key)).encode())

    def add_record(self, record: Record) -> None:
        dkim, spf, reasons = _results(record)
        self._hash.update(json.dumps([
            record.source_ip, record.header_from, record.envelope_from or "", dkim, spf,
            record.dkim, record.spf, record.disposition, reasons, record.count]).encode() + b"\n")

    def add_text(self, text: str) -> None:
        self._hash.update(text.encode("utf-8", "surrogatepass") + b"\n")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:32]


def content_digest(report: TlsReport | FailureReport, key: LedgerKey) -> str:
    """The `ContentDigest` of a TLS or failure report: everything it holds but where it was
    read from and the problems met reading it."""
    digest = ContentDigest(key)
    digest.add_text(repr(dataclasses.replace(report, source="", errors=[])))
    return digest.hexdigest()


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


# -- across days: what naming reads ---------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SourceRollup:
    """A rollup row's dimensions across all its days: one (domain, source, header_from,
    envelope_from, results, alignment, disposition, reasons) and its messages since `key.day`
    (its first day) up to `last_day`. Stores keep these up to date at ingest, so naming reads
    a domain's distinct sending patterns, not every day of its history (issue 14)."""

    key: RollupKey  # day: the first day
    last_day: str
    messages: int


def fold_days(rows: Iterable[tuple[RollupKey, int]]) -> dict[RollupKey, tuple[int, str, str]]:
    """Daily rows summed across days: key (its day "") -> (messages, first day, last day).
    What a report adds to a store's source rollups, and what they are rebuilt from."""
    out: dict[RollupKey, tuple[int, str, str]] = {}
    for key, messages in rows:
        undated = dataclasses.replace(key, day="")
        found = out.get(undated)
        out[undated] = ((messages, key.day, key.day) if found is None else
                        (found[0] + messages, min(found[1], key.day), max(found[2], key.day)))
    return out
