"""Schema 8 (issue 14): daily rows name their pattern by id, and a report's rows are staged and
written by one statement for its days and one for its sources. A version 7 store is migrated
keeping every read; large reports, one-day and multi-day, read back as their records say."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from collections import Counter
from pathlib import Path

from analysis import AggregateReport, read_reports
from analysis.rollup import RollupKey, fold_days, report_days, rollup_rows
from store import SqliteStore
from store.sqlite import _migrations, _statements, latest_schema_version
from tests.builders import aggregate_xml, record_xml
from tests.test_source_aggregates import (
    BEGIN,
    DAY,
    DOMAINS,
    TRUSTS,
    Delivery,
    add,
    by_days,
    by_sources,
    generated,
)

#: Version 7's daily rows: the pattern's columns in every row.
_V7_DAILY = ("policy_domain, day, source_ip, header_from, envelope_from, dkim, spf,"
             " dkim_aligned, spf_aligned, disposition, reasons, report, messages")
_COPIED = ("reports", "source_rollups", "monthly_rollups", "expired", "tls_results",
           "failure_reports", "dns_cache", "inventory")


def reads(store: SqliteStore) -> list[object]:
    """What the store's reads return (sources in a fixed order: theirs follows pattern ids;
    the ledger without the moment each report was stored)."""
    out: list[object] = [[dataclasses.replace(e, stored_at="") for e in store.reports()],
                         store.domains()]
    for trusted in TRUSTS:
        out.append(list(store.rollups(trusted_reporters=trusted)))
        out.append(list(store.rollups(domain="a.example", since="2025-12-10",
                                      trusted_reporters=trusted)))
        out.extend(sorted(store.sources(d, trusted_reporters=trusted), key=repr)
                   for d in DOMAINS)
    out.append(list(store.rollups(conflicting=True)))
    return out


def as_version_7(latest: Path, old: Path) -> None:
    """The rows of a store of this version written as version 7 kept them: patterns only for
    the rows that source and monthly rollups count (version 7 made no others at ingest)."""
    db = sqlite3.connect(old, isolation_level=None)
    db.create_function("dmarcbot_legacy_results", 1, lambda text: text)
    for number, script in enumerate(_migrations()[:7], start=1):
        for statement in _statements(script):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")
    db.execute("ATTACH DATABASE ? AS new", (str(latest),))
    db.execute("BEGIN")
    for table in _COPIED:  # version 7's columns (later versions add some)
        columns = ", ".join(row[1] for row in db.execute(f"PRAGMA main.table_info({table})"))
        db.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM new.{table}")
    db.execute("INSERT INTO patterns SELECT * FROM new.patterns WHERE id IN"
               " (SELECT pattern FROM new.source_rollups"
               " UNION SELECT pattern FROM new.monthly_rollups)")
    db.execute(f"INSERT INTO daily_rollups ({_V7_DAILY}) SELECT d.policy_domain, d.day,"
               " d.source_ip, p.header_from, p.envelope_from, p.dkim, p.spf, p.dkim_aligned,"
               " p.spf_aligned, p.disposition, p.reasons, d.report, d.messages"
               " FROM new.daily_rollups d JOIN new.patterns p ON p.id = d.pattern")
    db.execute("COMMIT")
    db.execute("DETACH DATABASE new")
    db.close()


def test_a_version_7_store_is_migrated_keeping_every_read(tmp_path: Path) -> None:
    history, later = generated(21, 120), generated(22, 40)  # later: copies and conflicts too
    latest_path, old_path = tmp_path / "latest.sqlite3", tmp_path / "v7.sqlite3"
    with SqliteStore(latest_path) as latest:
        add(latest, history)
        assert latest.expire(dt.date(2025, 12, 10)) > 0  # monthly rows too
        expected = reads(latest)
    as_version_7(latest_path, old_path)
    with sqlite3.connect(old_path) as db:  # the patterns of reports in conflict went missing
        (missing,) = db.execute(
            "SELECT count(*) FROM (SELECT DISTINCT header_from, envelope_from, dkim, spf,"
            " dkim_aligned, spf_aligned, disposition, reasons FROM daily_rollups"
            " EXCEPT SELECT header_from, envelope_from, dkim, spf, dkim_aligned, spf_aligned,"
            " disposition, reasons FROM patterns)").fetchone()
    assert missing > 0

    with SqliteStore(latest_path) as latest, SqliteStore(old_path) as migrated:
        assert migrated.schema_version == latest_schema_version() == 10
        assert reads(migrated) == expected
        (rows,) = migrated._db.execute("SELECT count(*) FROM daily_rollups").fetchone()
        assert rows == latest._db.execute("SELECT count(*) FROM daily_rollups").fetchone()[0]
        # both go on alike: new reports, copies, conflicts with the migrated ones
        assert add(migrated, later) == add(latest, later)
        assert reads(migrated) == reads(latest)


def test_large_reports_are_staged_whole(tmp_path: Path) -> None:
    """Reports of more rows than one staging statement takes, one-day and multi-day (their
    sources are grouped across days), read back as their records say."""
    records = "".join(
        record_xml(f"10.0.{n // 200}.{n % 200}", n % 7,
                   header_from=("a.example", "b.example")[n % 2],
                   dkim=("pass", "fail")[n % 3 == 0])
        for n in range(700))
    records += record_xml("10.0.0.0", 5, header_from="a.example", dkim="fail")  # n = 0's key
    xmls = [aggregate_xml(records, report_id="one-day", begin=BEGIN, end=BEGIN + DAY - 1,
                          domain="a.example"),
            aggregate_xml(records, report_id="three-days", begin=BEGIN + 2 * DAY + 3600,
                          end=BEGIN + 5 * DAY, domain="a.example")]
    expected: Counter[RollupKey] = Counter()
    for xml in xmls:
        reader = read_reports(xml)
        report = next(reader)
        assert isinstance(report, AggregateReport)
        days = report_days(report.begin, report.end)
        for record in report.records:
            expected.update(dict(rollup_rows(report, record, days)))
        assert list(reader) == []
    assert len({k.day for k in expected}) == 4
    assert expected[next(k for k in expected if k.source_ip == "10.0.0.0")] == 5
    with SqliteStore(tmp_path / "s.sqlite3") as store:
        assert add(store, [Delivery(xml, None) for xml in xmls]) == ["stored", "stored"]
        assert dict(store.rollups()) == dict(expected)
        sources = {dataclasses.replace(s.key, day=""): (s.messages, s.key.day, s.last_day)
                   for s in store.sources("a.example")}
        assert sources == fold_days(expected.items())
        assert by_sources(store, "a.example", ()) == by_days(store, "a.example", ())
