"""The SQLite store: whole-or-nothing reports, duplicates stored once, exact per-day totals."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis import LimitExceeded, Limits, read_reports
from analysis.rollup import report_days, split_count
from function_app.demo_reports import write_demo_reports
from function_app.pipeline import ingest_paths
from store import SqliteStore, StoreError
from tests.builders import aggregate_xml, gzipped, record_xml, report_email

DAY = 86400
BEGIN = 1764288000  # 2025-11-28T00:00:00Z


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    with SqliteStore(tmp_path / "s.sqlite3") as s:
        yield s  # type: ignore[misc]


def add_all(store: SqliteStore, data: bytes | Path, limits: Limits | None = None) -> list[str]:
    return [store.add_report(r) for r in read_reports(data, limits)]


def day_totals(store: SqliteStore) -> dict[str, int]:
    out: Counter[str] = Counter()
    for key, messages in store.rollups():
        out[key.day] += messages
    return dict(out)


def test_report_is_stored_once_whatever_its_wrapping(store: SqliteStore, tmp_path: Path) -> None:
    report = aggregate_xml(record_xml("192.0.2.1", 5) + record_xml("192.0.2.2", 3))
    assert add_all(store, report) == ["stored"]
    assert add_all(store, report) == ["duplicate"]
    assert add_all(store, gzipped(report)) == ["duplicate"]
    assert add_all(store, report_email(gzipped(report))) == ["duplicate"]
    resent = report.replace(b">r-1</report_id>", b">&lt;r-1@rcv&gt;</report_id>")
    assert add_all(store, resent) == ["duplicate"]
    assert day_totals(store) == {"2025-11-28": 8}
    (entry,) = list(store.reports())
    assert (entry.records, entry.messages, entry.key.report_id) == (2, 8, "r-1")


def test_identical_rows_in_one_report_add_up(store: SqliteStore) -> None:
    add_all(store, aggregate_xml(record_xml("192.0.2.1", 5) + record_xml("192.0.2.1", 4)))
    ((key, messages),) = list(store.rollups())
    assert messages == 9 and key.source_ip == "192.0.2.1"
    assert key.dkim == "example.com/s1=pass" and key.spf == "example.com/mfrom=pass"
    assert key.dkim_aligned and key.spf_aligned


def test_multi_day_report_is_split_per_utc_day_exactly(store: SqliteStore) -> None:
    # 2025-11-28 00:00 to 2025-11-30 23:59:59: three whole days.
    records = record_xml("192.0.2.1", 10) + record_xml("192.0.2.2", 1) + record_xml(
        "192.0.2.3", 0)
    add_all(store, aggregate_xml(records, begin=BEGIN, end=BEGIN + 3 * DAY - 1))
    per_ip: Counter[tuple[str, str]] = Counter()
    for key, messages in store.rollups():
        per_ip[key.source_ip, key.day] += messages
    assert per_ip["192.0.2.1", "2025-11-28"] == 4  # 10 over 3 days: 4, 3, 3
    assert per_ip["192.0.2.1", "2025-11-29"] == 3
    assert per_ip["192.0.2.1", "2025-11-30"] == 3
    assert sum(per_ip.values()) == 11


def test_reports_of_one_day_go_to_the_day_they_begin() -> None:
    begin = dt.datetime.fromtimestamp(BEGIN, dt.UTC)
    google = report_days(begin, begin + dt.timedelta(seconds=DAY - 1))
    microsoft = report_days(begin, begin + dt.timedelta(seconds=DAY))
    noon = report_days(begin + dt.timedelta(hours=12), begin + dt.timedelta(hours=36))
    assert google == microsoft == [(dt.date(2025, 11, 28), 1)]
    assert noon == [(dt.date(2025, 11, 28), 1)]
    half = report_days(begin + dt.timedelta(hours=12), begin + dt.timedelta(hours=60))
    assert half == [(dt.date(2025, 11, 28), 43200), (dt.date(2025, 11, 29), 86400),
                    (dt.date(2025, 11, 30), 43200)]


@given(st.integers(0, 10**9), st.lists(st.integers(0, 10**6), min_size=1, max_size=40))
def test_split_count_is_exact_and_proportional(count: int, weights: list[int]) -> None:
    shares = split_count(count, weights)
    assert sum(shares) == count and len(shares) == len(weights)
    total = sum(weights)
    if total:
        for share, weight in zip(shares, weights, strict=True):
            assert abs(share - count * weight / total) < 1


def test_a_failing_report_leaves_nothing_behind(store: SqliteStore) -> None:
    big = aggregate_xml("".join(record_xml(f"192.0.2.{i % 250}", 1) for i in range(4000)),
                        report_id="big")
    small_limits = Limits(max_decompressed_bytes=len(big) // 2)
    with pytest.raises(LimitExceeded):
        add_all(store, big, small_limits)  # the limit strikes after many records were added
    assert list(store.reports()) == [] and list(store.rollups()) == []
    assert add_all(store, big) == ["stored"]
    assert sum(m for _, m in store.rollups()) == 4000


def test_tls_and_failure_reports_are_stored_once(store: SqliteStore, samples: Path) -> None:
    for folder in ("tls", "failure"):
        assert set(add_all(store, samples / folder)) == {"stored"}
        assert set(add_all(store, samples / folder)) == {"duplicate"}
    kinds = Counter(e.key.kind for e in store.reports())
    assert kinds == {"tls": 2, "failure": 2}


def test_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite3"
    with SqliteStore(path) as s:
        assert s.schema_version == 2
        add_all(s, aggregate_xml())
    with SqliteStore(path) as s:  # reopening migrates nothing and keeps the data
        assert s.schema_version == 2 and len(list(s.reports())) == 1
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        SqliteStore(path)


def test_a_version_1_database_is_migrated_keeping_its_data(tmp_path: Path) -> None:
    from store.sqlite import _migrations, _statements

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    for statement in _statements(_migrations()[0]):
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO reports (kind, reporter, report_id, policy_domain, begin_ts, end_ts,"
               " org_name, source, stored_at) VALUES ('aggregate', 'r', 'id', 'example.com', 0,"
               " 1, 'R', 'x.xml', '2026-01-01T00:00:00Z')")
    db.commit()
    db.close()
    with SqliteStore(path) as s:
        assert s.schema_version == 2
        assert [e.key.report_id for e in s.reports()] == ["id"]
        assert s.inventory() == {}


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the database"):
        SqliteStore(path)


def _corpus(tmp_path: Path, samples: Path) -> list[Path]:
    demo = tmp_path / "demo"
    write_demo_reports(demo, last_day=dt.date(2026, 11, 27))
    return sorted(p for p in [*demo.iterdir(), *samples.rglob("*")] if p.is_file())


def _ingest(paths: list[Path], db: Path) -> tuple[Counter[object], int, Counter[str]]:
    with SqliteStore(db) as s:
        statuses = Counter(o.status for o in ingest_paths(paths, s, Limits()))
        rollups: Counter[object] = Counter()
        for key, messages in s.rollups():
            rollups[key] += messages
        return rollups, len(list(s.reports())), statuses


def test_corpus_twice_and_shuffled_gives_identical_totals(tmp_path: Path, samples: Path) -> None:
    paths = _corpus(tmp_path, samples)
    once, reports, statuses = _ingest(paths, tmp_path / "a.sqlite3")
    assert statuses["rejected"] == 0 and reports > 50
    twice, reports_twice, statuses_twice = _ingest(paths + paths, tmp_path / "b.sqlite3")
    assert statuses_twice["stored"] == statuses["stored"]
    shuffled = paths + paths
    random.Random(7).shuffle(shuffled)
    mixed, reports_mixed, _ = _ingest(shuffled, tmp_path / "c.sqlite3")
    assert once == twice == mixed
    assert reports == reports_twice == reports_mixed
    # nice-input arrives three times (xml, gz, zip) and is stored once
    assert statuses["duplicate"] >= 2
