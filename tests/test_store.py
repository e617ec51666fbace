"""The stores: whole-or-nothing reports, duplicates stored once, exact per-day totals.

Every test of store semantics runs on SQLite and on Azure Table Storage (Azurite); the schema
tests are SQLite's, and the crash, race and connection tests are Table Storage's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken, AzureNamedKeyCredential
from azure.data.tables import TableServiceClient
from hypothesis import given
from hypothesis import strategies as st

from analysis import LimitExceeded, Limits, read_reports
from analysis.dnsevidence import Answer
from analysis.rollup import report_days, split_count
from function_app.demo_reports import write_demo_reports
from function_app.pipeline import ingest_paths
from store import SqliteStore, Store, StoreError
from store.sqlite import latest_schema_version
from store.tables import TableStore, table_store_from_settings
from tests.azurite import ACCOUNT, KEY, Azurite, bearer_token, unique_prefix
from tests.builders import aggregate_xml, gzipped, record_xml, report_email
from tests.conftest import REFUSED_SAMPLES

DAY = 86400
BEGIN = 1764288000  # 2025-11-28T00:00:00Z

AnyStore = SqliteStore | TableStore
Opener = Callable[..., AnyStore]


@pytest.fixture(params=["sqlite", "tables"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores of the backend under test; the same `name` opens the same data again."""
    opened: list[AnyStore] = []
    azurite: Azurite | None = (request.getfixturevalue("azurite")
                               if request.param == "tables" else None)

    def open_(name: str | None = None) -> AnyStore:
        name = name or unique_prefix()
        if azurite is None:
            store: AnyStore = SqliteStore(tmp_path / f"{name}.sqlite3")
        else:
            store = TableStore.from_connection_string(azurite.connection_string, prefix=name)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Opener) -> AnyStore:
    return open_store()


def add_all(store: Store, data: bytes | Path, limits: Limits | None = None) -> list[str]:
    return [store.add_report(r) for r in read_reports(data, limits)]


def day_totals(store: Store) -> dict[str, int]:
    out: Counter[str] = Counter()
    for key, messages in store.rollups():
        out[key.day] += messages
    return dict(out)


def snapshot(store: Store) -> tuple[list[object], list[object]]:
    """Everything a store shows, in its order (`stored_at` aside: it is the clock's)."""
    return ([dataclasses.replace(e, stored_at="") for e in store.reports()],
            list(store.rollups()))


def test_report_is_stored_once_whatever_its_wrapping(store: AnyStore, tmp_path: Path) -> None:
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


def test_identical_rows_in_one_report_add_up(store: AnyStore) -> None:
    add_all(store, aggregate_xml(record_xml("192.0.2.1", 5) + record_xml("192.0.2.1", 4)))
    ((key, messages),) = list(store.rollups())
    assert messages == 9 and key.source_ip == "192.0.2.1"
    assert key.dkim == (("example.com", "s1", "pass"),)
    assert key.spf == (("example.com", "mfrom", "pass"),)
    assert key.dkim_aligned and key.spf_aligned


def test_multi_day_report_is_split_per_utc_day_exactly(store: AnyStore) -> None:
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


def test_a_failing_report_leaves_nothing_behind(store: AnyStore) -> None:
    big = aggregate_xml("".join(record_xml(f"192.0.2.{i % 250}", 1) for i in range(4000)),
                        report_id="big")
    small_limits = Limits(max_decompressed_bytes=len(big) // 2)
    with pytest.raises(LimitExceeded):
        add_all(store, big, small_limits)  # the limit strikes after many records were added
    assert list(store.reports()) == [] and list(store.rollups()) == []
    assert add_all(store, big) == ["stored"]
    assert sum(m for _, m in store.rollups()) == 4000


def test_tls_and_failure_reports_are_stored_once(store: AnyStore, samples: Path) -> None:
    for folder in ("tls", "failure"):
        assert set(add_all(store, samples / folder)) == {"stored"}
        assert set(add_all(store, samples / folder)) == {"duplicate"}
    kinds = Counter(e.key.kind for e in store.reports())
    assert kinds == {"tls": 2, "failure": 2}


def test_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite3"
    with SqliteStore(path) as s:
        assert s.schema_version == latest_schema_version()
        add_all(s, aggregate_xml())
    with SqliteStore(path) as s:  # reopening migrates nothing and keeps the data
        assert s.schema_version == latest_schema_version() and len(list(s.reports())) == 1
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
        assert s.schema_version == latest_schema_version()
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
    kept = [p for p in samples.rglob("*")
            if p.relative_to(samples).as_posix() not in REFUSED_SAMPLES]
    return sorted(p for p in [*demo.iterdir(), *kept] if p.is_file())


def _ingest(paths: list[Path], store: Store) -> tuple[Counter[object], int, Counter[str]]:
    statuses = Counter(o.status for o in ingest_paths(paths, store, Limits()))
    rollups: Counter[object] = Counter()
    for key, messages in store.rollups():
        rollups[key] += messages
    return rollups, len(list(store.reports())), statuses


def test_corpus_twice_and_shuffled_gives_identical_totals(tmp_path: Path, samples: Path) -> None:
    paths = _corpus(tmp_path, samples)
    with SqliteStore(tmp_path / "a.sqlite3") as s:
        once, reports, statuses = _ingest(paths, s)
    assert statuses["rejected"] == 0 and reports > 50
    with SqliteStore(tmp_path / "b.sqlite3") as s:
        twice, reports_twice, statuses_twice = _ingest(paths + paths, s)
    assert statuses_twice["stored"] == statuses["stored"]
    shuffled = paths + paths
    random.Random(7).shuffle(shuffled)
    with SqliteStore(tmp_path / "c.sqlite3") as s:
        mixed, reports_mixed, _ = _ingest(shuffled, s)
    assert once == twice == mixed
    assert reports == reports_twice == reports_mixed
    # nice-input arrives three times (xml, gz, zip) and is stored once
    assert statuses["duplicate"] >= 2


def test_table_storage_shows_what_sqlite_shows_for_the_corpus(
        azurite: Azurite, tmp_path: Path, samples: Path) -> None:
    # All but the 2,286-row sample, which would take Azurite ~3 s (batching has its own test).
    paths = [p for p in _corpus(tmp_path, samples) if "large-example" not in p.name]

    def ledger(store: Store) -> list[object]:  # which copy came first depends on the order
        return sorted((dataclasses.replace(e, source="") for e in snapshot(store)[0]), key=repr)

    with SqliteStore(tmp_path / "reference.sqlite3") as reference:
        statuses = Counter(o.status for o in ingest_paths(paths, reference, Limits()))
        expected_ledger, expected_rollups = ledger(reference), list(reference.rollups())
    shuffled = paths + paths
    random.Random(7).shuffle(shuffled)
    with tables(azurite, unique_prefix()) as store:
        mixed = Counter(o.status for o in ingest_paths(shuffled, store, Limits()))
        assert ledger(store) == expected_ledger
        assert list(store.rollups()) == expected_rollups  # the same rows in the same order
    assert statuses["rejected"] == 0 and len(expected_ledger) > 50
    assert mixed["stored"] == statuses["stored"]
    assert mixed["duplicate"] == statuses["stored"] + 2 * statuses["duplicate"]


# -- both stores: filters, volumes, the DNS cache and the inventory ----------------------------


def test_reports_and_rollups_filter_by_domain_day_and_kind(store: AnyStore,
                                                           samples: Path) -> None:
    add_all(store, aggregate_xml(record_xml("192.0.2.1", 2), report_id="a"))
    add_all(store, aggregate_xml(record_xml("192.0.2.2", 3), report_id="b", domain="example.org",
                                 begin=BEGIN + 2 * DAY, end=BEGIN + 3 * DAY - 1))
    add_all(store, samples / "tls")
    assert [e.key.report_id for e in store.reports(domain="EXAMPLE.org")] == ["b"]
    assert [e.key.report_id for e in store.reports(since="2025-11-29", kind="aggregate")] == ["b"]
    assert {e.key.kind for e in store.reports(kind="tls")} == {"tls"}
    assert [k.policy_domain for k, _ in store.rollups()] == ["example.com", "example.org"]
    assert [(k.day, m) for k, m in store.rollups(domain="example.com")] == [("2025-11-28", 2)]
    assert [(k.day, m) for k, m in store.rollups(since="2025-11-29")] == [("2025-11-30", 3)]
    assert list(store.rollups(domain="example.net")) == []


def test_counts_and_times_past_2_to_the_31_round_trip(store: AnyStore) -> None:
    # A record counts at most 10**9 messages (aggregate.MAX_COUNT); identical rows add up.
    begin, most = 2_200_000_000, 10**9  # 2039-09-18, past a signed 32-bit time
    add_all(store, aggregate_xml(record_xml("192.0.2.1", most) * 10 + record_xml("192.0.2.2", 7),
                                 begin=begin, end=begin + 3 * DAY),
            Limits(max_future_hours=20 * 365 * 24))  # a date that far ahead is refused otherwise
    (entry,) = store.reports(since="2039-09-18")
    assert (entry.key.begin, entry.key.end, entry.messages) == (begin, begin + 3 * DAY,
                                                                10 * most + 7)
    assert list(store.reports(since="2039-09-22")) == []
    per_ip: Counter[str] = Counter()
    for key, messages in store.rollups():
        per_ip[key.source_ip] += messages
    assert per_ip == {"192.0.2.1": 10 * most, "192.0.2.2": 7}
    assert max(m for _, m in store.rollups()) > 2**31


def test_many_rows_in_one_day_and_over_several_days(store: AnyStore) -> None:
    # 260 distinct rows on one day: more than one Table Storage transaction holds.
    one_day = "".join(record_xml(f"192.0.2.{i}", i) for i in range(1, 131))
    one_day += "".join(record_xml(f"198.51.100.{i}", 1, dkim="fail") for i in range(130))
    add_all(store, aggregate_xml(one_day, report_id="one-day"))
    week = "".join(record_xml(f"203.0.113.{i}", 7 * i) for i in range(20))
    add_all(store, aggregate_xml(week, report_id="week", begin=BEGIN + DAY,
                                 end=BEGIN + 8 * DAY - 1))
    totals = day_totals(store)
    assert totals["2025-11-28"] == sum(range(1, 131)) + 130
    assert [totals[(dt.date(2025, 11, 29) + dt.timedelta(days=d)).isoformat()]
            for d in range(7)] == [sum(range(20))] * 7
    assert len(list(store.rollups())) == 260 + 19 * 7  # the count-0 row spreads over no day


def test_long_values_round_trip(store: AnyStore) -> None:
    # 40,000 characters: longer than one Table Storage property holds (64 KiB in UTF-16).
    header_from = "é" * 20_000 + "\U0001f600" * 20_000
    add_all(store, aggregate_xml(record_xml("192.0.2.1", 3, header_from=header_from)))
    ((key, messages),) = store.rollups()
    assert (key.header_from, messages) == (header_from, 3)


ODD = ["example.com", "_dmarc.example.com", "a/b", "a#b", "what?", "ünïcødé.example", "",
       "x" * 300, "a\\b"]


def test_dns_cache_round_trips_and_expires(store: AnyStore) -> None:
    now = time.time()
    for i, name in enumerate(ODD):
        store.put_answer(Answer(name, "TXT", (f"v=spf1 -all {i}", "x" * 20_000), name, False,
                                now + 60))
        store.put_answer(Answer(name, "PTR", (), name, True, now + 30.25))
    for i, name in enumerate(ODD):
        assert store.get_answer(name, "TXT", now) == Answer(
            name, "TXT", (f"v=spf1 -all {i}", "x" * 20_000), name, False, now + 60)
        negative = store.get_answer(name, "PTR", now)
        assert negative is not None and negative.nxdomain and negative.negative
        assert negative.expires == now + 30.25
        assert store.get_answer(name, "PTR", now + 30.25) is None  # expired
        assert store.get_answer(name, "A", now) is None
    store.put_answer(Answer("a/b", "TXT", ("new",), "c.example", False, now + 5))
    assert store.get_answer("a/b", "TXT", now) == Answer("a/b", "TXT", ("new",), "c.example",
                                                         False, now + 5)


def test_dns_answers_read_in_bulk_are_those_read_one_by_one(store: AnyStore) -> None:
    """`get_answers` (a warm run's 17,000 reads at once) gives what `get_answer` gives, over
    more names than one of SQLite's statements takes."""
    now = time.time()
    names = [f"{i}.2.0.192.in-addr.arpa" for i in range(5200)] + list(ODD)
    for i, name in enumerate(names):
        store.put_answer(Answer(name, "PTR", (f"host{i}.example",), name, False,
                                now + (10 if i % 7 else -1)))  # one in seven has expired
        if i % 3 == 0:
            store.put_answer(Answer(f"host{i}.example", "A", (), f"host{i}.example", True,
                                    now + 60))
    store.flush()
    keys = {(n, t) for n in names for t in ("PTR", "A")} | {
        (f"host{i}.example", t) for i in range(0, len(names), 3) for t in ("A", "AAAA")}
    expected = {k: a for k in keys if (a := store.get_answer(*k, now)) is not None}
    assert len(expected) > 6000
    assert store.get_answers(keys, now) == expected
    assert store.get_answers([], now) == {}


def test_long_dns_answers_read_back_whole_from_a_partition(azurite: Azurite) -> None:
    """A TXT answer can hold more text than one string property: read back by a new store, in
    partitions it reads whole, every answer is as it was written."""
    now, prefix = time.time(), unique_prefix()
    answers = [Answer(f"t{i}.example", "TXT", (f"v=spf1 -all {i}", "x" * (i * 500)),
                      f"t{i}.example", False, now + 600) for i in range(120)]
    with tables(azurite, prefix) as writer:
        for answer in answers:
            writer.put_answer(answer)
    with tables(azurite, prefix) as reader:
        got = reader.get_answers([(a.name, a.rdtype) for a in answers], now)
        assert reader._dns  # partitions were read whole, not only point reads
    assert got == {(a.name, a.rdtype): a for a in answers}
    assert max(len(a.records[1]) for a in answers) > 3 * 16_000


def test_table_storage_reads_the_dns_cache_by_partition(azurite: Azurite) -> None:
    """Issue 14: a run asks tens of thousands of cached names; one point read each would cost as
    many requests. From the second name in a partition on, the partition is read whole."""
    now, prefix = time.time(), unique_prefix()
    answers = [Answer(f"{i}.2.0.192.in-addr.arpa", "PTR", (f"host{i}.example",),
                      f"{i}.2.0.192.in-addr.arpa", False, now + 600) for i in range(800)]
    with tables(azurite, prefix) as writer:
        for answer in answers:
            writer.put_answer(answer)
        writer.put_answer(dataclasses.replace(answers[0], name="gone.example", expires=now - 1))
    with tables(azurite, prefix) as reader:
        point, whole = Counter[str](), Counter[str]()
        get, query = reader._get, reader._query

        def counted_get(table: str, *args: Any) -> Any:
            point[table] += 1
            return get(table, *args)

        def counted_query(table: str, *args: Any, **kwargs: Any) -> Any:
            whole[table] += 1
            return query(table, *args, **kwargs)

        reader._get = counted_get  # type: ignore[method-assign]
        reader._query = counted_query  # type: ignore[method-assign]
        assert [reader.get_answer(a.name, "PTR", now) for a in answers] == answers
        assert reader.get_answer("gone.example", "PTR", now) is None  # expired
        assert reader.get_answer("nowhere.example", "TXT", now) is None
    assert point["dnscache"] + whole["dnscache"] <= 2 * 256
    assert whole["dnscache"] >= 150  # most partitions read whole, each once


def test_table_storage_writes_dns_answers_a_partition_at_a_time(azurite: Azurite) -> None:
    """Issue 14: a cold run puts ~17,000 answers for 10,000 sources; a request each held the
    DNS lookups' event loop up for as long. They are kept back (and read from memory) until
    `flush`, or `close`, writes each partition's in one transaction."""
    now, prefix = time.time(), unique_prefix()
    answers = [Answer(f"{i}.51.198.in-addr.arpa", "PTR", (f"mta{i}.example",),
                      f"{i}.51.198.in-addr.arpa", False, now + 600) for i in range(3000)]
    with tables(azurite, prefix) as writer:
        writes = Counter[str]()
        submit = writer._submit

        def counted(table: str, operations: list[Any]) -> Any:
            writes[table] += 1
            return submit(table, operations)

        writer._submit = counted  # type: ignore[method-assign]
        for answer in answers:
            writer.put_answer(answer)
        assert writer.get_answer(answers[7].name, "PTR", now) == answers[7]  # not written yet
        writer.flush()
        assert 0 < writes["dnscache"] <= 256 + len(answers) // 100
        writer.put_answer(dataclasses.replace(answers[0], records=("moved.example",)))
    with tables(azurite, prefix) as reader:  # the last one written by `close`
        assert [reader.get_answer(a.name, "PTR", now) for a in answers] == [
            dataclasses.replace(answers[0], records=("moved.example",)), *answers[1:]]


def test_inventory_round_trips(store: AnyStore) -> None:
    first = store.note_seen("example.com", "google", "2025-11-28", "2025-11-29", 10, 8)
    assert (first.status, first.owner, first.messages, first.dmarc_pass) == ("Pending", None,
                                                                             10, 8)
    narrow = store.note_seen("example.com", "google", "2025-11-27", "2025-11-28", 3, 3,
                             whole_history=False)
    assert (narrow.first_seen, narrow.last_seen, narrow.messages) == ("2025-11-27",
                                                                      "2025-11-29", 10)
    whole = store.note_seen("example.com", "google", "2025-11-28", "2025-12-01", 40, 30)
    assert (whole.first_seen, whole.last_seen, whole.messages, whole.dmarc_pass) == (
        "2025-11-27", "2025-12-01", 40, 30)
    for domain in ODD[1:]:
        store.note_seen(domain, "svc/ü#?", "2025-11-28", "2025-11-28", 2**40, 1)
    everything = store.inventory()
    assert list(everything) == sorted(everything)
    assert everything["example.com", "google"] == whole
    assert everything["a#b", "svc/ü#?"].messages == 2**40
    assert set(store.inventory("EXAMPLE.com")) == {("example.com", "google")}
    assert set(store.inventory("a/b")) == {("a/b", "svc/ü#?")}


def test_a_decision_is_written_once_and_only_over_the_status_it_saw(store: AnyStore) -> None:
    import dataclasses

    pending = store.note_seen("Example.com", "sendgrid", "2025-11-28", "2025-11-29", 10, 8)
    asked = dataclasses.replace(pending, owner="ann@example.com", asked_at="2025-11-30T08:00Z")
    assert store.update_item(asked, if_status="Pending")
    approved = dataclasses.replace(asked, status="Approved", decided_by="ann@example.com",
                                   decided_at="2025-11-30T09:00Z")
    rejected = dataclasses.replace(asked, status="Rejected", decided_by="bob@example.com",
                                   decided_at="2025-11-30T09:00Z")
    assert store.update_item(approved, if_status="Pending")
    assert not store.update_item(rejected, if_status="Pending")  # the second click loses
    assert store.inventory()["example.com", "sendgrid"] == approved
    # seen again later: the decision and the owner stay, volumes move on
    later = store.note_seen("example.com", "sendgrid", "2025-11-28", "2025-12-02", 12, 9)
    assert (later.status, later.owner, later.decided_by, later.messages) == (
        "Approved", "ann@example.com", "ann@example.com", 12)
    # a field can be cleared again (Not mine hands the sender to someone else: asked anew)
    handed = dataclasses.replace(later, status="Pending", owner="carl@example.com",
                                 asked_at=None, decided_by=None, decided_at=None)
    assert store.update_item(handed, if_status="Approved")
    assert store.inventory()["example.com", "sendgrid"] == handed
    missing = dataclasses.replace(handed, service_key="nobody")
    assert not store.update_item(missing, if_status="Pending")


# -- Table Storage: crashes, races, connections -------------------------------------------------


class Crash(Exception):
    """The process dies here: nothing after it runs (writes fail too)."""


def tables(azurite: Azurite, prefix: str, *, flush_rows: int | None = None) -> TableStore:
    store = TableStore.from_connection_string(azurite.connection_string, prefix=prefix)
    if flush_rows is not None:
        store._flush_rows = flush_rows
    return store


def crash_after(store: TableStore, writes: int) -> None:
    """Let `writes` entities reach the service, even part of one transaction of rollup rows
    (more than the service would), then crash. A ledger transaction (the commit and the work it
    makes due) is all or nothing, as the service makes it."""
    original = store._submit
    done = 0

    def submit(table: str, operations: list[Any]) -> Any:
        nonlocal done
        allowed = writes - done
        if table == "reports" and allowed < len(operations):
            allowed, done = 0, writes  # the process dies with the transaction unsent
        result = None
        if allowed > 0:
            result = original(table, operations[:allowed])
            done += min(allowed, len(operations))
        if done >= writes or allowed < len(operations):
            raise Crash(f"after {writes} writes")
        return result

    store._submit = submit  # type: ignore[method-assign]


def count_writes(store: TableStore, log: list[tuple[str, list[Any]]] | None = None
                 ) -> Counter[str]:
    """Entities written per table (and each transaction in `log`)."""
    original, counts = store._submit, Counter[str]()

    def submit(table: str, operations: list[Any]) -> Any:
        result = original(table, operations)
        counts[table] += len(operations)
        if log is not None:
            log.append((table, operations))
        return result

    store._submit = submit  # type: ignore[method-assign]
    return counts


def raw_rows(store: TableStore) -> list[dict[str, Any]]:
    return list(store._table("rollups").list_entities())


# Three days, rows repeated across write chunks (flush_rows=4), a count split to one day only.
CRASH_REPORT = aggregate_xml(
    record_xml("192.0.2.1", 10) + record_xml("192.0.2.2", 1) + record_xml("192.0.2.3", 0)
    + record_xml("192.0.2.1", 5) + record_xml("192.0.2.4", 7, spf="fail")
    + record_xml("192.0.2.5", 2, disposition="quarantine"),
    begin=BEGIN, end=BEGIN + 3 * DAY - 1)


@pytest.fixture(scope="module")
def crash_expected(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[object], ...]:
    with SqliteStore(tmp_path_factory.mktemp("ref") / "ref.sqlite3") as reference:
        add_all(reference, CRASH_REPORT)
        return snapshot(reference)


def test_a_crash_at_any_write_then_a_rerun_equals_a_clean_run(
        azurite: Azurite, crash_expected: tuple[list[object], ...]) -> None:
    log: list[tuple[str, list[Any]]] = []
    with tables(azurite, unique_prefix(), flush_rows=4) as clean:
        counts = count_writes(clean, log)
        assert add_all(clean, CRASH_REPORT) == ["stored"]
        counts = Counter(counts)  # the writes of ingest, not of reading the sources below
        assert snapshot(clean) == crash_expected  # same rows, same order as SQLite
        sources = sorted(clean.sources("example.com"), key=repr)
    with SqliteStore(":memory:") as reference:
        add_all(reference, CRASH_REPORT)
        assert sources == sorted(reference.sources("example.com"), key=repr)
    # the domain's index (two entities), the rows, then the commit: the ledger entity, its
    # key's guard and what it adds to each of its four sources with messages
    assert [(t, len(ops)) for t, ops in log if t == "reports"][:2] == [
        ("reports", 2), ("reports", 6)]
    assert counts["rollups"] > 10
    total = counts.total()
    committed = total  # the writes up to the commit
    for writes in range(total + 1):
        prefix = unique_prefix()
        with tables(azurite, prefix, flush_rows=4) as crashing:
            crash_after(crashing, writes)
            with pytest.raises(Crash):
                add_all(crashing, CRASH_REPORT)
            if writes < committed:  # not committed: rows may be there, none is visible
                assert snapshot(crashing) == ([], [])
                assert len(raw_rows(crashing)) == min(max(0, writes - 2), counts["rollups"])
        with tables(azurite, prefix, flush_rows=5) as rerun:  # chunks fall differently now
            assert add_all(rerun, CRASH_REPORT) == (["duplicate"] if writes >= committed
                                                    else ["stored"])
            assert snapshot(rerun) == crash_expected, f"crash after {writes} writes"
            assert sorted(rerun.sources("example.com"), key=repr) == sources
            assert add_all(rerun, CRASH_REPORT) == ["duplicate"]


def test_a_reader_failing_after_writes_leaves_nothing(azurite: Azurite) -> None:
    # Long records (envelope_to is no rollup dimension) so the limit strikes after many rows.
    big = aggregate_xml("".join(record_xml(f"192.0.2.{i % 5}", 1, envelope_to="x" * 3000)
                                for i in range(80)), report_id="big")
    with tables(azurite, unique_prefix(), flush_rows=5) as store:
        counts = count_writes(store)
        with pytest.raises(LimitExceeded):
            add_all(store, big, Limits(max_decompressed_bytes=len(big) * 3 // 4))
        assert counts["rollups"] >= 20  # rows were written before the limit struck …
        assert raw_rows(store) == [] and snapshot(store) == ([], [])  # … and taken back
        assert add_all(store, big) == ["stored"]
        assert sum(m for _, m in store.rollups()) == 80


def test_two_writers_of_one_report_count_it_once(
        azurite: Azurite, crash_expected: tuple[list[object], ...]) -> None:
    prefix = unique_prefix()
    with tables(azurite, prefix, flush_rows=4) as first, tables(azurite, prefix) as second:
        original = first._submit

        def submit(table: str, operations: list[Any]) -> Any:
            if table == "reports" and not operations[0][1]["RowKey"].startswith("~"):
                # the other writer commits between our rows and our ledger
                assert add_all(second, CRASH_REPORT) == ["stored"]
            return original(table, operations)

        first._submit = submit  # type: ignore[method-assign]
        assert add_all(first, CRASH_REPORT) == ["duplicate"]
        assert snapshot(first) == snapshot(second) == crash_expected
        assert len(raw_rows(first)) == len(crash_expected[1])  # the loser took its rows back


def test_a_commit_whose_answer_was_lost_counts_as_stored(
        azurite: Azurite, crash_expected: tuple[list[object], ...]) -> None:
    with tables(azurite, unique_prefix()) as store:
        original = store._submit

        def submit(table: str, operations: list[Any]) -> Any:
            result = original(table, operations)
            if table == "reports":  # the client retries: the ledger entity exists already
                original(table, operations)
            return result

        store._submit = submit  # type: ignore[method-assign]
        assert add_all(store, CRASH_REPORT) == ["stored"]
        assert snapshot(store) == crash_expected
        store._submit = original  # type: ignore[method-assign]
        assert sum(r.messages for r in store.sources("example.com")) == 25


def test_store_errors_are_one_line_and_name_the_table(azurite: Azurite) -> None:
    wrong = azurite.connection_string.replace(KEY, "d3Jvbmcga2V5IGZvciB0ZXN0cw==")
    with TableStore.from_connection_string(wrong, prefix="wrongkey") as store, \
            pytest.raises(StoreError) as refused:
        list(store.reports())
    assert str(refused.value) == ("wrongkeyreports: Table Storage refused the request "
                                  "(AuthorizationFailure)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    service = TableServiceClient(f"http://127.0.0.1:{port}/{ACCOUNT}",
                                 credential=AzureNamedKeyCredential(ACCOUNT, KEY), retry_total=0)
    with TableStore(service) as store, pytest.raises(StoreError) as silent:
        store.put_answer(Answer("example.com", "TXT", (), "example.com", True, 1.0))
        store.flush()  # answers are written in batches
    assert str(silent.value) == ("dmarcbotdnscache: Table Storage did not answer "
                                 "(ServiceRequestError)")
    with pytest.raises(StoreError, match="connection string is not valid"):
        TableStore.from_connection_string("AccountKey=" + KEY)
    with pytest.raises(StoreError, match="must be a letter"):
        TableStore(service, prefix="dmarc-bot")


class StubCredential:
    """Stands in for a managed identity: hands out a token and notes the scopes asked for."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: set[str] = set()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.update(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


def test_identity_based_access_uses_a_bearer_token(
        azurite_oauth: tuple[Azurite, Path]) -> None:
    emulator, ca = azurite_oauth
    credential = StubCredential(bearer_token())
    with TableStore.from_account(emulator.table_endpoint, credential, prefix=unique_prefix(),
                                 connection_verify=str(ca)) as store:
        assert add_all(store, aggregate_xml()) == ["stored"]
        assert [e.key.report_id for e in store.reports()] == ["r-1"]
        assert store.path == f"{emulator.table_endpoint}/{store._prefix}"
    assert credential.scopes == {"https://storage.azure.com/.default"}
    other_audience = StubCredential(bearer_token(audience="https://vault.azure.net"))
    with TableStore.from_account(emulator.table_endpoint, other_audience, prefix="t0",
                                 connection_verify=str(ca), retry_total=0) as store, \
            pytest.raises(StoreError, match=r"^t0reports: Table Storage refused the request"):
        list(store.reports())
    with pytest.raises(StoreError, match="needs an https URL"):
        TableStore.from_account(f"http://127.0.0.1:1/{ACCOUNT}", credential)


def test_settings_choose_the_connection(azurite: Azurite,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.identity

    made: list[dict[str, object]] = []

    class Identity(StubCredential):
        def __init__(self, **kwargs: object) -> None:
            super().__init__("token")
            made.append(kwargs)

    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", Identity)
    url = "https://account.table.core.windows.net"
    with table_store_from_settings({"DMARCBOT_TABLES_ACCOUNT_URL": url,
                                    "DMARCBOT_TABLES_CLIENT_ID": "1234"}) as store:
        assert store.path == f"{url}/dmarcbot"
    with table_store_from_settings({"DMARCBOT_TABLES_ACCOUNT_URL": url,
                                    "DMARCBOT_TABLES_PREFIX": "p2"}) as store:
        assert store.path == f"{url}/p2"
    assert made == [{"client_id": "1234"}, {"client_id": None}]
    conn = {"DMARCBOT_TABLES_CONNECTION": azurite.connection_string}
    with table_store_from_settings({**conn, "DMARCBOT_TABLES_PREFIX": unique_prefix()}) as store:
        assert store.path.startswith(f"http://127.0.0.1:{azurite.table_port}/{ACCOUNT}/")
        assert KEY not in store.path and list(store.reports()) == []
    with pytest.raises(StoreError, match=r"DMARCBOT_TABLES_ACCOUNT_URL.*_CONNECTION"):
        table_store_from_settings({})
    with pytest.raises(StoreError, match="not both"):
        table_store_from_settings({**conn, "DMARCBOT_TABLES_ACCOUNT_URL": url})
    with pytest.raises(StoreError, match="DMARCBOT_TABLES_PREFIX"):
        table_store_from_settings({**conn, "DMARCBOT_TABLES_PREFIX": "no-dashes"})


def test_what_does_not_fit_an_entity_is_cut_with_a_note() -> None:
    from store.tables import _batches, _errors_json, _props, _text

    errors = [f"record {i}: something odd " + "x" * 100 for i in range(10_000)]
    kept = json.loads(_errors_json(errors))
    assert 60_000 > len(json.dumps(kept)) > 50_000
    assert kept[:3] == errors[:3] and kept[-1].endswith("more problems not kept "
                                                        "(Table Storage entity size)")
    props = _props(text="y" * 40_000, n=2**40, none=None, flag=True)
    assert sorted(props) == ["flag", "n", "text", "text_1", "text_2"] and _text(props, "text") \
        == "y" * 40_000
    sizes = [len(b) for b in _batches({"PartitionKey": "p", "RowKey": str(i)} for i in range(250))]
    assert sizes == [100, 100, 50]
    big = [len(b) for b in _batches({"RowKey": str(i), "v": "z" * 700_000} for i in range(7))]
    assert big == [2, 2, 2, 1]


def test_the_naming_mark_outlives_the_store_object(open_store: Opener) -> None:
    """The timer's mark (`Store.naming_mark`) is kept, replaced, and read back by a new
    connection to the same data; the index of domains is not disturbed by it."""
    name = unique_prefix()
    first = open_store(name)
    assert first.naming_mark() is None
    assert add_all(first, aggregate_xml(record_xml("192.0.2.1", 3))) == ["stored"]
    first.set_naming_mark("2026-12-07T19:00:00Z")
    first.set_naming_mark("2026-12-07T19:15:00Z")
    again = open_store(name)
    assert again.naming_mark() == "2026-12-07T19:15:00Z"
    assert again.domains() == ["example.com"]
    assert again.domains(stored_since="2000-01-01") == ["example.com"]
