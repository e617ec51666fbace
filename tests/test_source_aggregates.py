"""Source rollups (issue 14): naming reads a domain's history with its days folded, kept up to
date at ingest, and names every sender exactly as the daily rows would, on SQLite and on Table
Storage, whatever the believed, unverified, held, conflicting and trusted reports say."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import AggregateReport, read_reports
from analysis.catalog import load_catalog
from analysis.identify import SourceActivity, activities_from_rollups, activities_from_sources
from analysis.rollup import (
    RollupKey,
    SourceRollup,
    fold_days,
    report_days,
    rollup_rows,
    stored_order,
)
from analysis.senders import analyse_activities
from function_app import pipeline
from store import SqliteStore
from store.tables import _COMPACT as COMPACT
from store.tables import TableStore
from tests.azurite import Azurite, unique_prefix
from tests.builders import aggregate_xml, record_xml
from tests.evaluation import load_sources, reports_xml

DAY = 86400
BEGIN = 1764288000  # 2025-11-28T00:00:00Z
CATALOG = load_catalog()
DOMAINS = ("a.example", "b.example")
REPORTERS = ("dmarc@r1.example", "reports@r2.example", "noreply@r3.example")
#: Every set of trusted reporters the comparisons run under.
TRUSTS: tuple[tuple[str, ...], ...] = ((), ("r1.example",), ("r2.example", "r3.example"),
                                       ("r1.example", "r2.example", "r3.example"))

AnyStore = SqliteStore | TableStore


@pytest.fixture(params=["sqlite", "tables"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path
               ) -> Iterator[Callable[[], AnyStore]]:
    opened: list[AnyStore] = []
    azurite: Azurite | None = (request.getfixturevalue("azurite")
                               if request.param == "tables" else None)

    def open_() -> AnyStore:
        store: AnyStore = (SqliteStore(tmp_path / f"{unique_prefix()}.sqlite3")
                           if azurite is None else
                           TableStore.from_connection_string(azurite.connection_string,
                                                             prefix=unique_prefix()))
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def by_days(store: AnyStore, domain: str, trusted: Sequence[str]) -> list[SourceActivity]:
    return activities_from_rollups(store.rollups(domain=domain, trusted_reporters=trusted))


def by_sources(store: AnyStore, domain: str, trusted: Sequence[str]) -> list[SourceActivity]:
    return activities_from_sources(store.sources(domain, trusted_reporters=trusted))


def assert_same_naming(store: AnyStore, domains: Sequence[str] = DOMAINS) -> int:
    """What naming reads is the same from both paths, for every trust; returns the activities
    compared (so a test can check it compared something)."""
    compared = 0
    for trusted in TRUSTS:
        for domain in domains:
            expected = by_days(store, domain, trusted)
            assert by_sources(store, domain, trusted) == expected, (domain, trusted)
            compared += len(expected)
    return compared


def verdicts(activities: list[SourceActivity]) -> tuple[object, object]:
    sources, services, _ = asyncio.run(analyse_activities(activities, CATALOG, None))
    return sources, services


# -- generated reports: many days, copies, conflicts, doubt ------------------------------------


@dataclasses.dataclass(frozen=True)
class Delivery:
    xml: bytes
    unverified: str | None


def _auth(rng: random.Random, domain: str) -> str:
    dkim = rng.choice(["", f"<dkim><domain>{domain}</domain><selector>s{rng.randint(1, 2)}"
                           "</selector><result>pass</result></dkim>",
                       "<dkim><domain>esp.example</domain><result>fail</result></dkim>"])
    spf = rng.choice([f"<spf><domain>{domain}</domain><result>pass</result></spf>",
                      "<spf><domain>bounce.esp.example</domain><result>softfail</result></spf>"])
    return dkim + spf


def generated(seed: int, reports: int) -> list[Delivery]:
    """Reports over ~40 days: single- and multi-day spans, counts of 0, header_from values that
    tie, re-sent copies, copies with other content under one id (conflicts), copies first
    unverified then believed, and held reports."""
    rng = random.Random(seed)
    out: list[Delivery] = []
    for n in range(reports):
        domain = rng.choice(DOMAINS)
        reporter = rng.choice(REPORTERS)
        begin = BEGIN + rng.randrange(40) * DAY + rng.choice([0, 0, 3600])
        end = begin + rng.choice([DAY - 1, DAY, 2 * DAY - 1, 3 * DAY + 7200])
        records = "".join(
            record_xml(f"192.0.2.{rng.randrange(1, 7)}", rng.choice([0, 1, 1, 2, 3, 7, 40]),
                       header_from=rng.choice([domain, f"news.{domain}", "other.example"]),
                       envelope_from=rng.choice([domain, None]),
                       dkim=rng.choice(["pass", "fail"]), spf=rng.choice(["pass", "fail"]),
                       disposition=rng.choice(["none", "none", "quarantine"]),
                       reasons=rng.choice(["", "<reason><type>forwarded</type></reason>"]),
                       auth=_auth(rng, domain))
            for _ in range(rng.randint(1, 5)))
        xml = aggregate_xml(records, email=reporter, report_id=f"g-{n}", begin=begin, end=end,
                            domain=domain)
        doubt = rng.choice([None, None, None, "no DMARC pass", "held for volume: test"])
        out.append(Delivery(xml, doubt))
        roll = rng.random()
        if roll < 0.1:  # the same report again, perhaps believed this time
            out.append(Delivery(xml, rng.choice([None, doubt])))
        elif roll < 0.2:  # another report under its ledger key
            other = records.replace("192.0.2.", "198.51.100.", 1)
            out.append(Delivery(aggregate_xml(other, email=reporter, report_id=f"g-{n}",
                                              begin=begin, end=end, domain=domain),
                                rng.choice([None, "no DMARC pass"])))
    return out


def add(store: AnyStore, deliveries: Sequence[Delivery]) -> list[str]:
    results = []
    for d in deliveries:
        for report in read_reports(d.xml):
            results.append(store.add_report(report, unverified=d.unverified))
    return results


# -- the tests ------------------------------------------------------------------------------


def test_folding_days_keeps_what_naming_reads() -> None:
    rows: list[tuple[RollupKey, int]] = []
    for data in reports_xml(load_sources()):
        for report in read_reports(data):
            assert isinstance(report, AggregateReport)
            days = report_days(report.begin, report.end)
            for record in report.records:
                for key, n in rollup_rows(report, record, days):
                    rows.append((key, n))
                    rows.append((dataclasses.replace(key, day="2025-12-03"), n))  # a later day
    folded = [SourceRollup(dataclasses.replace(k, day=first), last, n)
              for k, (n, first, last) in fold_days(rows).items()]
    assert len(folded) * 2 == len(rows)
    rows.sort(key=lambda kv: (kv[0].policy_domain, kv[0].day, kv[0].source_ip))
    assert activities_from_sources(folded) == activities_from_rollups(rows)


_DAILY_ROW = st.tuples(
    st.sampled_from(["198.51.100.1", "198.51.100.2", "2001:db8::3"]),
    st.sampled_from(["2025-12-01", "2025-12-02", "2025-12-09"]),
    st.sampled_from(["a.example", "b.example", "news.a.example"]),  # ties in header_from
    st.sampled_from([(), (("a.example", "s1", "pass"),), (("esp.example", "k", "fail"),)]),
    st.booleans(), st.sampled_from(["", '["forwarded"]']), st.integers(0, 3))


@settings(max_examples=300, deadline=None)
@given(st.lists(_DAILY_ROW, max_size=30), st.randoms(use_true_random=False))
def test_sources_fold_like_days_whatever_order_a_store_yields(
        drawn: list[tuple[str, str, str, tuple[tuple[str, str, str], ...], bool, str, int]],
        rng: random.Random) -> None:
    """Whatever order a store yields a domain's source rollups in, they fold into the
    activities its daily rows do (equal counts included: header_from values tie)."""
    rows = sorted(((RollupKey("a.example", day, ip, header_from, "", dkim, (), bool(dkim),
                              aligned, "none", reasons), n)
                   for ip, day, header_from, dkim, aligned, reasons, n in drawn),
                  key=lambda kv: stored_order(kv[0]))
    folded = [SourceRollup(dataclasses.replace(k, day=first), last, n)
              for k, (n, first, last) in fold_days(rows).items()]
    rng.shuffle(folded)
    assert activities_from_sources(folded) == activities_from_rollups(rows)


def test_evaluation_verdicts_are_the_same_from_source_rollups(
        open_store: Callable[[], AnyStore]) -> None:
    store = open_store()
    assert set(add(store, [Delivery(x, None) for x in reports_xml(load_sources())])) == {"stored"}
    domains = store.domains()
    assert len(domains) >= 9
    for domain in domains:
        expected = verdicts(activities_from_rollups(store.rollups(domain=domain)))
        assert verdicts(activities_from_sources(store.sources(domain))) == expected, domain
    assert assert_same_naming(store, domains) >= 200 * len(TRUSTS)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_history_names_the_same_senders(open_store: Callable[[], AnyStore],
                                                  seed: int) -> None:
    store = open_store()
    results = add(store, generated(seed, 60))
    assert {"stored", "duplicate", "conflict"} <= set(results)
    assert assert_same_naming(store) > 20
    for domain in DOMAINS:
        for trusted in TRUSTS:
            expected = verdicts(by_days(store, domain, trusted))
            got = verdicts(by_sources(store, domain, trusted))
            assert got == expected


def test_every_step_of_a_history_names_the_same_senders(
        open_store: Callable[[], AnyStore]) -> None:
    # After each report, not only at the end: each change of a report's standing (a conflict
    # arrives, a believed copy lifts a doubt) is applied when it happens.
    store = open_store()
    for delivery in generated(4, 16):
        add(store, [delivery])
        assert_same_naming(store)


def test_a_conflict_takes_the_first_copy_out_and_trust_brings_copies_back(
        open_store: Callable[[], AnyStore]) -> None:
    store = open_store()
    first = aggregate_xml(record_xml("192.0.2.1", 5), email="dmarc@r1.example",
                          domain="a.example")
    forged = aggregate_xml(record_xml("192.0.2.1", 500), email="dmarc@r1.example",
                           domain="a.example")
    late = aggregate_xml(record_xml("192.0.2.1", 3), email="x@r2.example", report_id="late",
                         begin=BEGIN + 5 * DAY, end=BEGIN + 6 * DAY - 1, domain="a.example")
    assert add(store, [Delivery(first, None), Delivery(late, None)]) == ["stored", "stored"]
    [(one,)] = [[(a.messages, a.first_day, a.last_day) for a in by_sources(store, "a.example", ())]]
    assert one == (8, "2025-11-28", "2025-12-03")
    # an unverified copy with other content does not make the believed one doubted …
    assert add(store, [Delivery(forged, "no DMARC pass")]) == ["conflict"]
    assert [a.messages for a in by_sources(store, "a.example", ())] == [8]
    # … until its reporter is trusted: then neither copy counts, and the first day moves
    assert [(a.messages, a.first_day) for a in by_sources(store, "a.example", ["r1.example"])] \
        == [(3, "2025-12-03")]
    assert_same_naming(store, ["a.example"])


def test_an_unverified_report_counts_once_a_believed_copy_arrives(
        open_store: Callable[[], AnyStore]) -> None:
    store = open_store()
    xml = aggregate_xml(record_xml("192.0.2.9", 4), email="x@r3.example", domain="b.example")
    assert add(store, [Delivery(xml, "no DMARC pass")]) == ["stored"]
    assert by_sources(store, "b.example", ()) == []
    assert [a.messages for a in by_sources(store, "b.example", ["r3.example"])] == [4]
    assert add(store, [Delivery(xml, None)]) == ["duplicate"]
    for trusted in ((), ["r3.example"]):  # once, not twice when its reporter is trusted too
        assert [a.messages for a in by_sources(store, "b.example", trusted)] == [4]
    assert_same_naming(store, ["b.example"])


def test_naming_reads_patterns_not_days(open_store: Callable[[], AnyStore]) -> None:
    # The same senders every day: the daily rows grow with the days, what naming reads does not.
    store = open_store()
    read: list[int] = []
    for day in range(12):
        xml = aggregate_xml(record_xml("192.0.2.1", 10) + record_xml("192.0.2.2", 3, dkim="fail"),
                            report_id=f"d{day}", begin=BEGIN + day * DAY,
                            end=BEGIN + (day + 1) * DAY - 1, domain="a.example")
        add(store, [Delivery(xml, None)])
        read.append(len(list(store.sources("a.example"))))
    assert read == [2] * 12
    assert len(list(store.rollups(domain="a.example"))) == 24
    assert [a.messages for a in by_sources(store, "a.example", ())] == [120, 36]


def test_a_source_with_more_patterns_than_one_property_holds_is_read_whole(
        open_store: Callable[[], AnyStore]) -> None:
    # One address, 150 envelope domains a report: its patterns run past one string property of
    # an entity (Table Storage keeps long text in pieces), in a delta and then folded
    store = open_store()
    for day in range(2):
        records = "".join(record_xml("192.0.2.9", n + 1, envelope_from=f"bounce{n}.a.example",
                                     header_from="a.example") for n in range(150))
        add(store, [Delivery(aggregate_xml(records, report_id=f"wide{day}", domain="a.example",
                                           begin=BEGIN + day * DAY,
                                           end=BEGIN + (day + 1) * DAY - 1), None)])
        expected = by_days(store, "a.example", ())
        assert by_sources(store, "a.example", ()) == expected
    (wide,) = expected
    assert wide.messages == 2 * sum(range(1, 151))


def test_a_long_source_entity_that_changes_while_read_is_read_again(azurite: Azurite) -> None:
    # Its first piece comes with the query, the rest with a second read: if the entity changed
    # in between (a settler elsewhere), the pieces would not belong together, so all is re-read
    records = "".join(record_xml("192.0.2.9", n + 1, envelope_from=f"bounce{n}.a.example",
                                 header_from="a.example") for n in range(150))
    with tables(azurite, unique_prefix()) as store:
        add(store, [Delivery(aggregate_xml(records, report_id="wide", domain="a.example"), None)])
        expected = by_days(store, "a.example", ())
        assert by_sources(store, "a.example", ()) == expected  # settled: one read from now on
        get, touched = store._get, []

        def get_after_a_change(table: str, partition: str, row: str) -> Any:
            if row.startswith("~s-") and not touched:  # another writer rewrites it first
                entity = get(table, partition, row)
                store._table(table).upsert_entity(entity)
                touched.append(row)
            return get(table, partition, row)

        units, reads = store._units, []

        def counted_units(partition: str) -> Any:
            reads.append(partition)
            return units(partition)

        store._get = get_after_a_change  # type: ignore[method-assign]
        store._units = counted_units  # type: ignore[method-assign]
        assert by_sources(store, "a.example", ()) == expected
    assert touched and len(reads) == 2  # the first read was dropped, not mixed with the second


def test_domains_lists_each_domain_and_those_stored_since(
        open_store: Callable[[], AnyStore]) -> None:
    store = open_store()
    assert store.domains() == []
    add(store, [Delivery(aggregate_xml(domain=d, report_id=d), None) for d in DOMAINS])
    assert store.domains() == list(DOMAINS)
    assert set(store.domains(stored_since="2020-01-01")) == set(DOMAINS)
    assert store.domains(stored_since="2999-01-01") == []


def test_copies_that_differ_in_a_record_of_no_mail_conflict(
        open_store: Callable[[], AnyStore]) -> None:
    """A record of no messages is kept (its source shows, with none), so a second report
    under the key with another address there is other content: a conflict, on both stores."""
    store = open_store()
    first, other = (aggregate_xml(record_xml(ip, 0) + record_xml("192.0.2.6", 4),
                                  report_id="z", domain="a.example")
                    for ip in ("192.0.2.5", "198.51.100.5"))
    assert add(store, [Delivery(first, None), Delivery(first, None),
                       Delivery(other, None)]) == ["stored", "duplicate", "conflict"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_both_stores_tell_copies_from_conflicts_alike(azurite: Azurite, tmp_path: Path,
                                                      seed: int) -> None:
    deliveries = generated(seed, 60)
    with SqliteStore(tmp_path / "lite.sqlite3") as lite, \
            tables(azurite, unique_prefix()) as remote:
        results = add(lite, deliveries)
        assert {"duplicate", "conflict"} <= set(results)
        assert add(remote, deliveries) == results


def test_all_domains_stream_one_at_a_time(open_store: Callable[[], AnyStore]) -> None:
    store = open_store()
    add(store, generated(5, 30))

    async def stream() -> list[list[str]]:
        return [sorted({s.domain for s in services}) async for services, _ in
                pipeline.senders_by_domain(store, CATALOG, None)]

    assert asyncio.run(stream()) == [[d] for d in DOMAINS]
    services, _ = asyncio.run(pipeline.find_senders(store, CATALOG, None))
    assert services == verdicts(activities_from_rollups(store.rollups()))[1]
    assert len(services) >= 2


# -- Table Storage: pending work is settled exactly once, whatever happens ---------------------


class Crash(Exception):
    """The process dies here."""


def tables(azurite: Azurite, prefix: str) -> TableStore:
    return TableStore.from_connection_string(azurite.connection_string, prefix=prefix)


def settled(store: TableStore) -> list[object]:
    """Naming under every trust, and that nothing is left pending (no fallback was taken)."""
    out = [by_sources(store, d, t) for t in TRUSTS for d in DOMAINS]
    for domain in DOMAINS:
        assert store._pending(domain) == []
    return out


def test_tables_settle_each_report_once_and_read_only_sources(azurite: Azurite) -> None:
    with tables(azurite, unique_prefix()) as store:
        add(store, generated(21, 40))
        # ingest adds each clean report at once; rebuilds (a conflict, a doubt lifted) wait
        pending = [m["op"] for d in DOMAINS for m in store._pending(d)]
        assert pending and set(pending) == {"rebuild"}
        settled(store)  # the first read builds the sources from the history
        more = generated(25, 30)
        add(store, more)
        deltas = [len(u.deltas) for d in DOMAINS for u in store._units(d).values()]
        assert max(deltas) >= COMPACT  # ingest adds deltas beside each source …
        expected = settled(store)
        deltas = [len(u.deltas) for d in DOMAINS for u in store._units(d).values()]
        assert max(deltas) < COMPACT  # … and a reader folds those that gathered many
        with SqliteStore(":memory:") as reference:
            add(reference, generated(21, 40) + more)
            assert expected == [by_days(reference, d, t) for t in TRUSTS for d in DOMAINS]
        assert_same_naming(store)
        reads: list[tuple[str, str]] = []
        original = store._query

        def query(table: str, query: str | None, *args: Any, **kwargs: Any) -> Iterator[Any]:
            reads.append((table, query or ""))
            return original(table, query, *args, **kwargs)

        store._query = query  # type: ignore[method-assign]
        assert settled(store) == expected
        # settled, each read is a range of one partition: the domain's sources, pending work and
        # conflicting keys, and the copies and daily rows of each conflicting key; no scan
        assert reads and all("RowKey ge @low and RowKey lt @high" in q for _, q in reads)
        assert sum(t == "reports" for t, _ in reads) >= 3 * len(TRUSTS) * len(DOMAINS)


@pytest.mark.parametrize("lost_answer", [False, True])
def test_a_crash_at_any_settle_write_then_a_reread_equals_a_clean_settle(
        azurite: Azurite, lost_answer: bool) -> None:
    # Settled once; then more reports (deltas to fold, copies in conflict to rebuild), and a
    # crash at each write of the next reader's settling.
    before, after = generated(22, 8), generated(26, 40)
    with tables(azurite, unique_prefix()) as clean:
        add(clean, before)
        settled(clean)
        add(clean, after)
        writes = _count_submits(clean)
        expected = settled(clean)
    assert writes[0] >= 3
    for crash_at in range(writes[0]):
        with tables(azurite, unique_prefix()) as store:
            add(store, before)
            settled(store)
            add(store, after)
            original, calls = store._submit, [0]

            def submit(table: str, operations: list[Any], original: Any = original,
                       calls: list[int] = calls, crash_at: int = crash_at) -> Any:
                calls[0] += 1
                if calls[0] - 1 == crash_at:
                    if lost_answer:
                        original(table, operations)
                    raise Crash
                return original(table, operations)

            store._submit = submit  # type: ignore[method-assign]
            with pytest.raises(Crash):
                settled(store)
            store._submit = original  # type: ignore[method-assign]
            assert settled(store) == expected, f"crash at settle write {crash_at}"


def _count_submits(store: TableStore, domains: Sequence[str] | None = None) -> list[int]:
    """The transactions one reader's settling takes (of every domain, or of `domains`)."""
    original, calls = store._submit, [0]

    def submit(table: str, operations: list[Any]) -> Any:
        calls[0] += 1
        return original(table, operations)

    store._submit = submit  # type: ignore[method-assign]
    if domains is None:
        settled(store)
    else:
        for domain in domains:
            list(store.sources(domain))
    store._submit = original  # type: ignore[method-assign]
    return calls


def test_two_settlers_at_once_count_each_report_once(azurite: Azurite) -> None:
    prefix = unique_prefix()
    deliveries, meanwhile = generated(23, 20), generated(24, 6)[:5]
    also = list(meanwhile)
    with tables(azurite, prefix) as first, tables(azurite, prefix) as second:
        add(first, deliveries)
        original, interleaved = first._submit, []

        def submit(table: str, operations: list[Any]) -> Any:
            if meanwhile:  # between our reads and our write, another process stores and settles
                delivery = meanwhile.pop()
                add(second, [delivery])
                interleaved.extend(list(second.sources(domain)) for domain in DOMAINS)
            return original(table, operations)

        first._submit = submit  # type: ignore[method-assign]
        got = settled(first)
        assert len(interleaved) >= 2  # our write lost the race at least once, and was redone
        first._submit = original  # type: ignore[method-assign]
        add(second, meanwhile)
        got = settled(first)
        assert got == settled(second)
        with SqliteStore(":memory:") as reference:
            add(reference, deliveries + also)
            assert got == [by_days(reference, d, t) for t in TRUSTS for d in DOMAINS]


def test_a_report_too_large_for_one_transaction_is_added_in_steps(azurite: Azurite) -> None:
    # 200 sources: more than one transaction holds, so ingest leaves it to the reader, who adds
    # it a part at a time, noting each part; a crash between parts neither loses nor repeats one
    big = aggregate_xml("".join(record_xml(f"198.18.{i // 250}.{i % 250}", i + 1)
                                for i in range(200)), report_id="big", domain="a.example")
    small = aggregate_xml(record_xml("198.18.0.5", 1000), report_id="small", domain="a.example")
    with SqliteStore(":memory:") as reference:
        add(reference, [Delivery(small, None), Delivery(big, None)])
        expected = by_days(reference, "a.example", ())
    assert len(expected) == 200
    with tables(azurite, unique_prefix()) as clean:
        add(clean, [Delivery(small, None), Delivery(big, None)])
        assert [m["op"] for m in clean._pending("a.example")] == ["add"]
        writes = _count_submits(clean, ["a.example"])
    assert writes[0] >= 3
    for crash_at in range(writes[0]):
        with tables(azurite, unique_prefix()) as store:
            add(store, [Delivery(small, None), Delivery(big, None)])
            original, calls = store._submit, [0]

            def submit(table: str, operations: list[Any], original: Any = original,
                       calls: list[int] = calls, crash_at: int = crash_at) -> Any:
                calls[0] += 1
                if calls[0] - 1 == crash_at:
                    raise Crash
                return original(table, operations)

            store._submit = submit  # type: ignore[method-assign]
            with pytest.raises(Crash):
                list(store.sources("a.example"))
            store._submit = original  # type: ignore[method-assign]
            assert by_sources(store, "a.example", ()) == expected, f"crash at {crash_at}"
            assert store._pending("a.example") == []


def test_a_source_in_more_reports_than_a_transaction_holds(azurite: Azurite) -> None:
    # 120 reports from one address before anyone reads: its deltas are folded (and, at the
    # first read, replaced by the rebuilt source) a transaction's worth at a time, and a crash
    # between two of them changes nothing in the end
    deliveries = [Delivery(aggregate_xml(record_xml("192.0.2.7", n + 1), report_id=f"m{n}",
                                         begin=BEGIN + n * 3600, end=BEGIN + n * 3600 + DAY,
                                         domain="a.example"), None) for n in range(120)]
    expected = [(a.ip, a.messages) for a in activities_from_rollups(
        [(k, n) for d in deliveries for r in read_reports(d.xml)
         for k, n in _rows(r)])]
    assert expected == [("192.0.2.7", sum(range(1, 121)))]
    with tables(azurite, unique_prefix()) as clean:
        add(clean, deliveries)
        writes = _count_submits(clean, ["a.example"])
    assert writes[0] >= 3
    for crash_at in range(writes[0]):
        with tables(azurite, unique_prefix()) as store:
            add(store, deliveries)
            original, calls = store._submit, [0]

            def submit(table: str, operations: list[Any], original: Any = original,
                       calls: list[int] = calls, crash_at: int = crash_at) -> Any:
                calls[0] += 1
                if calls[0] - 1 == crash_at:
                    raise Crash
                return original(table, operations)

            store._submit = submit  # type: ignore[method-assign]
            with pytest.raises(Crash):
                list(store.sources("a.example"))
            store._submit = original  # type: ignore[method-assign]
            got = [(a.ip, a.messages) for a in by_sources(store, "a.example", ())]
            assert got == expected, f"crash at {crash_at}"
            assert by_sources(store, "a.example", ()) == by_days(store, "a.example", ())


def _rows(report: object) -> list[tuple[RollupKey, int]]:
    assert isinstance(report, AggregateReport)
    days = report_days(report.begin, report.end)
    return [row for record in report.records for row in rollup_rows(report, record, days)]


def test_a_store_from_before_the_upgrade_builds_its_sources_once(azurite: Azurite) -> None:
    # Reports stored by the code before issue 14 have no guard, deltas or sources: the first
    # reader of each domain builds them from the daily rows; later reports add deltas as usual
    with tables(azurite, unique_prefix()) as store:
        add(store, generated(27, 30))
        table = store._table("reports")
        for domain in DOMAINS:
            for e in list(table.query_entities("PartitionKey eq @pk and RowKey ge @low",
                                               parameters={"pk": domain, "low": "~"})):
                table.delete_entity(e["PartitionKey"], e["RowKey"])
        assert all(store._units(d) == {} for d in DOMAINS)
        first = settled(store)
        assert all(store._get("reports", d, "~v") is not None for d in DOMAINS)
        add(store, generated(28, 10))
        with SqliteStore(":memory:") as reference:
            add(reference, generated(27, 30))
            assert first == [by_days(reference, d, t) for t in TRUSTS for d in DOMAINS]
            add(reference, generated(28, 10))
            assert settled(store) == [by_days(reference, d, t) for t in TRUSTS for d in DOMAINS]


def test_patterns_made_in_a_rolled_back_report_are_not_reused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite names each pattern by an id made in the report's transaction: one that rolls back
    # after making it must not leave the id behind for the next report to point at
    from store.sqlite_sources import SqliteSources

    first = aggregate_xml(record_xml("192.0.2.1", 5), report_id="first", domain="a.example")
    again = aggregate_xml(record_xml("192.0.2.1", 7), report_id="again", domain="a.example")
    with SqliteStore(tmp_path / "s.sqlite3") as store:
        original = SqliteSources.add

        def add_then_fail(self: SqliteSources, *args: Any) -> None:
            original(self, *args)
            raise OSError("disk full")

        monkeypatch.setattr(SqliteSources, "add", add_then_fail)
        with pytest.raises(OSError):
            add(store, [Delivery(first, None)])
        monkeypatch.undo()
        assert store._db.execute("SELECT count(*) FROM patterns").fetchone() == (0,)
        assert add(store, [Delivery(again, None)]) == ["stored"]
        assert [a.messages for a in by_sources(store, "a.example", ())] == [7]
