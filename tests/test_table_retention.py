"""Retention on Table Storage (issue 14): the scenarios of tests/test_retention.py on Azurite,
against SQLite as the reference, plus what Table Storage adds: a crash at any request of an
expiry leaves a state the next one completes, a reader that needs a rebuild finishes a batch a
crash left, and a run with nothing new to expire costs a request or a few per domain."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from analysis.rollup import results_from_json
from function_app import pipeline
from store import SqliteStore
from store import table_sources as ts
from store.tables import TableStore
from tests.azurite import Azurite, unique_prefix
from tests.builders import aggregate_xml, record_xml
from tests.test_retention import CUTOFF, HORIZON
from tests.test_source_aggregates import (
    DOMAINS,
    TRUSTS,
    Delivery,
    add,
    by_days,
    by_sources,
    generated,
)

AnyStore = SqliteStore | TableStore


class Crash(Exception):
    """The process dies here: the request is never sent."""


# -- helpers ---------------------------------------------------------------------------------


def tables(azurite: Azurite, prefix: str, **options: Any) -> TableStore:
    return TableStore.from_connection_string(azurite.connection_string, prefix=prefix,
                                             **options)


def clone(azurite: Azurite, prefix: str) -> str:
    """A copy of a store's ledger and daily rows under a new prefix (faster than ingesting the
    same reports again, and the same attempts, so states compare entity for entity)."""
    new = unique_prefix()
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        for table in ("reports", "rollups"):
            source = service.get_table_client(prefix + table)
            target = service.create_table(new + table)
            entities = sorted(source.list_entities(), key=lambda e: e["PartitionKey"])
            for _, group in itertools.groupby(entities, key=lambda e: e["PartitionKey"]):
                rows = list(group)
                for i in range(0, len(rows), 100):
                    target.submit_transaction([("upsert", e) for e in rows[i:i + 100]])
    return new


def naming(store: AnyStore) -> list[object]:
    return [by_sources(store, d, t) for t in TRUSTS for d in DOMAINS]


def monthly(store: AnyStore) -> list[tuple[object, ...]]:
    """Every monthly rollup: (domain, month, ip, pattern…, basis, messages, first, last)."""
    if isinstance(store, SqliteStore):
        return sorted(
            (d, m, ip, hf, ef, results_from_json(dk), results_from_json(sp), bool(da),
             bool(sa), di, re, b, n, f, la)
            for d, m, ip, hf, ef, dk, sp, da, sa, di, re, b, n, f, la in store._db.execute(
                "SELECT r.policy_domain, r.month, r.source_ip, p.header_from, p.envelope_from,"
                " p.dkim, p.spf, p.dkim_aligned, p.spf_aligned, p.disposition, p.reasons,"
                " r.basis, r.messages, r.first_day, r.last_day FROM monthly_rollups r"
                " JOIN patterns p ON p.id = r.pattern"))
    out = []
    for domain in DOMAINS:
        for (month, ip, basis), found in store._retention._monthly(domain).items():
            for (hf, ef, dk, sp, da, sa, di, re), (n, f, la) in found.totals.items():
                out.append((domain, month, ip, hf, ef, results_from_json(dk),
                            results_from_json(sp), da, sa, di, re, basis, n, f, la))
    return sorted(out)


def state(store: TableStore) -> list[object]:
    """What retention touches, without ETags, times and batch ids: the ledger's reports and
    marks, the daily rows, each source's totals, the monthly rollups, and no batch under way."""
    ledger = store._table("reports").list_entities(select=["PartitionKey", "RowKey"])
    keys = sorted((e["PartitionKey"], e["RowKey"]) for e in ledger  # not the domains' index
                  if not e["RowKey"].startswith((ts.SOURCE, ts.MONTHLY, ts.EXPIRY))
                  and e["PartitionKey"] != "~domains")
    days = sorted((e["PartitionKey"], e["RowKey"]) for e in
                  store._table("rollups").list_entities(select=["PartitionKey", "RowKey"]))
    sources = {d: {name: unit.totals() for name, unit in store._units(d).items()}
               for d in DOMAINS}
    for domain in DOMAINS:
        assert store._retention._state(domain)[0] is None  # no batch under way
    return [keys, days, sources, monthly(store)]


def ledger(store: AnyStore) -> list[tuple[object, ...]]:
    return sorted(((e.key, e.messages, e.conflict, e.unverified) for e in store.reports()),
                  key=repr)  # the stores order reports of one begin apart


History = tuple[str, SqliteStore, SqliteStore, int]


@pytest.fixture(scope="module")
def history(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """The history of tests/test_retention.py once in Table Storage (each test expires a
    clone), and in SQLite twice: kept whole, and expired to HORIZON (how many reports went)."""
    deliveries = generated(11, 80)
    folder = tmp_path_factory.mktemp("retention")
    prefix = unique_prefix()
    with tables(azurite, prefix) as store, SqliteStore(folder / "kept.sqlite3") as kept, \
            SqliteStore(folder / "expired.sqlite3") as expired:
        assert add(store, deliveries) == add(kept, deliveries) == add(expired, deliveries)
        yield prefix, kept, expired, expired.expire(HORIZON)


# -- the scenarios of tests/test_retention.py ------------------------------------------------


def test_expired_history_still_names_the_same_senders(
        azurite: Azurite, history: History) -> None:
    prefix, kept, reference, expired = history
    with tables(azurite, clone(azurite, prefix)) as store:
        before = len(list(store.reports()))
        gone = store.expire(HORIZON)
        assert 10 < gone < before and gone == expired
        assert naming(store) == naming(kept)
        since = HORIZON.isoformat()
        for trusted in TRUSTS:  # the days kept are untouched, the days expired gone
            assert list(store.rollups(since=since, trusted_reporters=trusted)) == list(
                kept.rollups(since=since, trusted_reporters=trusted))
            assert list(store.rollups(trusted_reporters=trusted)) == list(
                reference.rollups(trusted_reporters=trusted))
        # the same reports stay as in SQLite: in conflict, or ending after the horizon
        assert ledger(store) == ledger(reference)
        left = [e for e in store.reports() if e.key.begin < CUTOFF]
        assert left and all(e.conflict or e.key.end >= CUTOFF for e in left)
        assert any(e.conflict for e in left)
        # every message is somewhere: in a kept daily row or a monthly one, as in SQLite
        assert monthly(store) == monthly(reference) and monthly(store)
        daily = sum(n for _, n in store.rollups(conflicting=True))
        (whole,) = kept._db.execute("SELECT sum(messages) FROM daily_rollups").fetchone()
        assert daily + sum(row[-3] for row in monthly(store)) == whole  # type: ignore[misc]
        # the daily rows of expired reports are deleted, not only hidden: every row left is
        # of a report still in the ledger
        rows = list(store._table("rollups").list_entities(select=["PartitionKey", "RowKey"]))
        reports = store._table("reports").query_entities("RowKey lt '~'", select=["RowKey"])
        assert rows and {e["RowKey"][:32] for e in rows} <= {e["RowKey"][:32] for e in reports}


def test_expiring_again_changes_nothing_and_costs_one_request(
        azurite: Azurite, history: History) -> None:
    prefix = clone(azurite, history[0])
    requests = [0]

    def count(_: object) -> None:
        requests[0] += 1

    with tables(azurite, prefix, raw_request_hook=count) as store:
        assert store.expire(HORIZON) > 0
        after = state(store)
        requests[0] = 0
        assert store.expire(HORIZON) == 0
        assert requests[0] == 1  # the horizon's marker: nothing is new
        assert store.expire(HORIZON - dt.timedelta(days=10)) == 0  # an older horizon: no-op
        assert requests[0] == 2
        assert state(store) == after
    with tables(azurite, prefix, raw_request_hook=count) as fresh:  # another process
        requests[0] = 0
        assert fresh.expire(HORIZON) == 0
        assert requests[0] <= 2  # the ledger table made sure of, and the marker


def test_a_new_horizon_with_nothing_to_expire_costs_a_few_requests_per_domain(
        azurite: Azurite) -> None:
    requests = [0]

    def count(_: object) -> None:
        requests[0] += 1

    domains = [f"d{n}.example" for n in range(6)]
    with tables(azurite, unique_prefix(), raw_request_hook=count) as store:
        add(store, [Delivery(aggregate_xml(record_xml("192.0.2.1", 3), domain=d,
                                           report_id=f"r-{n}", begin=CUTOFF + n * 3600,
                                           end=CUTOFF + 86399), None)
                    for n in range(8) for d in domains])
        assert store.domains() == domains
        requests[0] = 0
        assert store.expire(HORIZON) == 0  # every report ends after it
        # the marker read and written, the domains listed; per domain its batch state and one
        # scan of its reports; then the marker says done
        assert requests[0] == 4 + 2 * len(domains), requests[0]
        requests[0] = 0
        assert store.expire(HORIZON) == 0
        assert requests[0] == 1


def test_a_crash_at_any_request_then_a_rerun_equals_a_clean_run(azurite: Azurite) -> None:
    deliveries = generated(12, 16)
    with tables(azurite, unique_prefix()) as template:
        add(template, deliveries)
        expected_naming = naming(template)  # settled: what is crashed below is retention's
        prefix = template._prefix
    with SqliteStore(":memory:") as reference:
        add(reference, deliveries)
        gone = reference.expire(HORIZON)
        assert naming(reference) == expected_naming
    with tables(azurite, clone(azurite, prefix)) as clean:
        clean._retention.batch = 3  # several batches per domain, some days in two of them
        writes = _count_writes(clean)
        assert clean.expire(HORIZON) == gone > 6
        expected = state(clean)
        assert naming(clean) == expected_naming
    assert writes[0] > 20
    for crash_at in range(writes[0]):
        copy = clone(azurite, prefix)
        with tables(azurite, copy) as crashing:
            crashing._retention.batch = 3
            _crash_at(crashing, crash_at)
            with pytest.raises(Crash):
                crashing.expire(HORIZON)
        with tables(azurite, copy) as rerun:  # another process, the batch size of the first
            rerun._retention.batch = 3
            rerun.expire(HORIZON)
            assert state(rerun) == expected, f"crash at write {crash_at}"
            assert rerun.expire(HORIZON) == 0


def _count_writes(store: TableStore) -> list[int]:
    original, calls = store._submit, [0]

    def submit(table: str, operations: list[Any]) -> Any:
        calls[0] += 1
        return original(table, operations)

    store._submit = submit  # type: ignore[method-assign]
    return calls


def _crash_at(store: TableStore, crash_at: int) -> None:
    original, calls = store._submit, [0]

    def submit(table: str, operations: list[Any]) -> Any:
        calls[0] += 1
        if calls[0] - 1 == crash_at:
            raise Crash
        return original(table, operations)

    store._submit = submit  # type: ignore[method-assign]


def test_a_late_copy_of_an_expired_report_adds_nothing(
        azurite: Azurite, history: History) -> None:
    prefix, kept, _, _ = history
    copy = clone(azurite, prefix)
    with tables(azurite, copy) as store, tables(azurite, copy) as stale:
        assert stale._retention.expired_before() == 0  # read before the horizon moved …
        stale._retention._seen = (float("inf"), 0)  # … and still trusted when the copy comes
        store.expire(HORIZON)
        after = state(store)
        old = aggregate_xml(record_xml("192.0.2.1", 1000), report_id="g-0", domain="a.example")
        assert add(store, [Delivery(old, None)]) == ["duplicate"]
        # a process that read the horizon before it moved: its key's guard refuses the copy
        first = next(e for e in kept.reports() if e.key.end < CUTOFF and not e.conflict)
        for count in (1000, 1):  # the same content or not: a copy of what went
            again = aggregate_xml(record_xml("192.0.2.1", count), email=first.key.reporter,
                                  report_id=first.key.report_id, begin=first.key.begin,
                                  end=first.key.end, domain=first.key.policy_domain)
            assert add(stale, [Delivery(again, None)]) == ["duplicate"]
        assert state(store) == after
        # reports after the horizon still count, and change both stores alike
        with SqliteStore(":memory:") as whole:
            late = [Delivery(aggregate_xml(record_xml("192.0.2.1", 9), report_id="new",
                                           domain=d, begin=1767225600, end=1767311999), None)
                    for d in DOMAINS]
            add(whole, generated(11, 80))
            assert add(store, late) == add(whole, late) == ["stored", "stored"]
            assert naming(store) == naming(whole)


def test_a_conflict_after_expiry_rebuilds_from_the_monthly_rows(
        azurite: Azurite, history: History) -> None:
    prefix, kept, _, _ = history
    with tables(azurite, clone(azurite, prefix)) as store, SqliteStore(":memory:") as whole:
        add(whole, generated(11, 80))
        store.expire(HORIZON)
        recent = next(e for e in kept.reports() if e.key.begin >= CUTOFF
                      and not e.conflict and e.key.policy_domain == "a.example")
        forged = aggregate_xml(record_xml("192.0.2.1", 777), email=recent.key.reporter,
                               report_id=recent.key.report_id, begin=recent.key.begin,
                               end=recent.key.end, domain="a.example")
        assert add(store, [Delivery(forged, None)]) == add(whole, [Delivery(forged, None)]) == [
            "conflict"]
        assert naming(store) == naming(whole)


def test_the_scheduled_step_expires_whole_months(azurite: Azurite) -> None:
    with tables(azurite, unique_prefix()) as store:
        add(store, generated(13, 30))
        assert pipeline.expire_history(store, dt.date(2026, 2, 15), None) == 0
        assert pipeline.expire_history(store, dt.date(2026, 2, 15), 2) > 0
        assert store._retention._marker().before == "2025-12-01"
        december = int(dt.datetime(2025, 12, 1, tzinfo=dt.UTC).timestamp())
        assert all(e.key.end >= december for e in store.reports() if not e.conflict)


# -- what Table Storage adds ---------------------------------------------------------------


def test_a_long_expiry_goes_on_in_the_next_call(
        azurite: Azurite, history: History) -> None:
    prefix, _, _, expired = history
    with tables(azurite, clone(azurite, prefix)) as whole:
        whole.expire(HORIZON)
        expected = state(whole)
    with tables(azurite, clone(azurite, prefix)) as store:
        store._retention.batch, store._retention.batches_per_call = 4, 2
        calls = list(itertools.takewhile(lambda gone: gone > 0,
                                         (store.expire(HORIZON) for _ in range(100))))
        assert len(calls) > 3 and sum(calls) == expired
        assert state(store) == expected


def test_a_reader_finishes_a_batch_a_crash_left(
        azurite: Azurite, history: History) -> None:
    # The expiry dies between deleting a batch's ledger entities and writing their monthly
    # rollups; before it runs again, a copy in conflict arrives and a reader rebuilds sources
    prefix, kept, _, _ = history
    copy = clone(azurite, prefix)
    with tables(azurite, copy) as store:
        original = store._submit

        def submit(table: str, operations: list[Any]) -> Any:
            if table == "reports" and any(op[1]["RowKey"].startswith(ts.MONTHLY)
                                          for op in operations):
                raise Crash
            return original(table, operations)

        store._submit = submit  # type: ignore[method-assign]
        with pytest.raises(Crash):
            store.expire(HORIZON)
    with tables(azurite, copy) as reader, SqliteStore(":memory:") as whole:
        add(whole, generated(11, 80))
        assert any(reader._retention._state(d)[0] is not None for d in DOMAINS)
        recent = next(e for e in kept.reports() if e.key.begin >= CUTOFF and not e.conflict
                      and e.key.policy_domain == DOMAINS[0])  # the domain of the batch
        forged = aggregate_xml(record_xml("192.0.2.7", 31), email=recent.key.reporter,
                               report_id=recent.key.report_id, begin=recent.key.begin,
                               end=recent.key.end, domain=recent.key.policy_domain)
        assert add(reader, [Delivery(forged, None)]) == add(whole, [Delivery(forged, None)])
        assert naming(reader) == naming(whole)  # the rebuild finished the batch first
        assert all(reader._retention._state(d)[0] is None for d in DOMAINS)
        reader.expire(HORIZON)
        assert naming(reader) == naming(whole)
        assert reader.expire(HORIZON) == 0


def test_a_rebuild_that_read_while_a_batch_expired_reads_again(
        azurite: Azurite, history: History) -> None:
    # A reader rebuilding sources reads the monthly rollups, then another process expires,
    # then the reader reads the ledger: the expired reports are in neither of what it read,
    # so its write must fail on `~x` and it must read again
    prefix, kept, _, _ = history
    copy = clone(azurite, prefix)
    with tables(azurite, copy) as reader, tables(azurite, copy) as expirer, \
            SqliteStore(":memory:") as whole:
        add(whole, generated(11, 80))
        naming(reader)  # settled; now a copy in conflict makes a rebuild due
        recent = next(e for e in kept.reports() if e.key.begin >= CUTOFF and not e.conflict
                      and e.key.policy_domain == DOMAINS[0])
        forged = aggregate_xml(record_xml("192.0.2.1", 5) + record_xml("192.0.2.2", 5),
                               email=recent.key.reporter, report_id=recent.key.report_id,
                               begin=recent.key.begin, end=recent.key.end, domain=DOMAINS[0])
        assert add(reader, [Delivery(forged, None)]) == add(whole, [Delivery(forged, None)])

        def leave_pending_work(partition: str) -> tuple[dict[Any, Any], set[str]]:
            return expirer._units(partition), set()  # the rebuild is the reader's to do

        expirer._settle = leave_pending_work  # type: ignore[method-assign]
        original, raced = reader._query, list[int]()

        def query(table: str, query: str | None, *args: Any, **kwargs: Any) -> Iterator[Any]:
            if table == "reports" and "RowKey lt @high and kind eq @kind" in (query or "") \
                    and not raced:
                raced.append(expirer.expire(HORIZON))
            return original(table, query, *args, **kwargs)

        reader._query = query  # type: ignore[method-assign]
        assert naming(reader) == naming(whole)
        assert raced and raced[0] > 10


def test_a_reader_that_keeps_losing_races_folds_daily_and_monthly_rows(
        azurite: Azurite, history: History,
        monkeypatch: pytest.MonkeyPatch) -> None:
    prefix, kept, _, _ = history
    with tables(azurite, clone(azurite, prefix)) as store:
        store.expire(HORIZON)
        def losing(partition: str) -> None:  # another writer always changed something first
            return None

        monkeypatch.setattr(store, "_settle", losing)
        assert naming(store) == naming(kept)


def test_expiry_on_sqlite_and_tables_alike_through_the_store_interface(
        azurite: Azurite, tmp_path: Path) -> None:
    # The generated history of another seed, expired to two horizons one after the other
    deliveries = generated(15, 50)
    with tables(azurite, unique_prefix()) as store, SqliteStore(tmp_path / "s.sqlite3") as ref:
        assert add(store, deliveries) == add(ref, deliveries)
        for horizon in (dt.date(2025, 12, 10), HORIZON, dt.date(2026, 1, 1)):
            assert store.expire(horizon) == ref.expire(horizon)
            assert naming(store) == naming(ref)
            assert ledger(store) == ledger(ref)
            assert monthly(store) == monthly(ref)
            for trusted in TRUSTS:
                for domain in DOMAINS:
                    assert by_days(store, domain, trusted) == by_days(ref, domain, trusted)
