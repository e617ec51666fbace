"""Naming remembers (issue 14): the scheduled step names again only the sources whose reports
changed since the last naming, and what it shows is what naming every source would show, on the
labeled world with real DNS (knot) and on generated histories with copies, conflicts, doubt and
changes of trust. A naming that dies leaves its changes for the next; a new context (trust,
catalog, offline or not) names everything again; kept rows that are not ours are not believed."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from analysis import read_reports
from analysis.catalog import Catalog, load_catalog
from analysis.dnsevidence import DnsEvidence, MemoryCache, make_resolver
from analysis.identify import (
    DNS_BUDGET,
    DNS_LOOKED_UP,
    Identification,
    Identifier,
    SourceActivity,
    activities_from_sources,
)
from analysis.remembered import decode, encode, naming_context, needs_lookup
from analysis.senders import analyse_activities
from analysis.verdicts import ServiceVerdict
from function_app.pipeline import name_domain
from store import SqliteStore, Store
from store import tables as tables_module
from store.table_sources import unit_row
from store.tables import TableStore
from tests.azurite import Azurite, unique_prefix
from tests.builders import aggregate_xml, record_xml
from tests.dnslab.server import KnotServer
from tests.evaluation import load_sources, reports_xml
from tests.test_source_aggregates import (  # noqa: F401 (open_store: a fixture)
    DOMAINS,
    Delivery,
    add,
    generated,
    open_store,
)

CATALOG = load_catalog()


@pytest.fixture
def named(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The addresses `Identifier.identify` names, in order."""
    calls: list[str] = []
    identify = Identifier.identify

    def counting(self: Identifier, activity: SourceActivity) -> Identification:
        calls.append(activity.ip)
        return identify(self, activity)

    monkeypatch.setattr(Identifier, "identify", counting)
    yield calls


AnyStore = SqliteStore | TableStore


@pytest.fixture
def stores(open_store: Callable[[], AnyStore],  # noqa: F811 (the imported fixture)
           monkeypatch: pytest.MonkeyPatch
           ) -> Callable[[], AnyStore]:
    """A fresh store of each kind (`open_store`). On Table Storage the overlap after a naming's
    clock is taken away: these tests write and name within seconds, and would see every source
    as written since (`test_table_storage_counts_what_was_written_just_before_a_naming`)."""
    monkeypatch.setattr(tables_module, "NAMING_OVERLAP", dt.timedelta(0))
    return open_store


def whole(store: Store, domain: str, dns: DnsEvidence | None = None,
          trusted: Sequence[str] = ()) -> list[ServiceVerdict]:
    """Every source of the domain named now, nothing remembered: what naming must show."""
    activities = activities_from_sources(store.sources(domain, trusted_reporters=trusted))
    return asyncio.run(analyse_activities(activities, CATALOG, dns))[1]


def remembered(store: Store, domain: str, dns: DnsEvidence | None = None
               ) -> list[ServiceVerdict]:
    return asyncio.run(name_domain(store, CATALOG, dns, domain))[0]


def kept_rows(store: SqliteStore, domain: str) -> dict[str, str]:
    return dict(store._db.execute("SELECT source_ip, identification FROM named_sources"
                                  " WHERE policy_domain = ?", (domain,)).fetchall())


# -- what is kept reads back exactly ------------------------------------------------------------


def _knot_dns(server: KnotServer) -> DnsEvidence:
    return DnsEvidence(make_resolver([f"{server.host}:{server.port}"]), cache=MemoryCache())


def test_identifications_read_back_exactly(dns_server: KnotServer) -> None:
    """Every identification of the labeled world, online (PTRs, confirmations, delegated DKIM,
    disputed SPF) and offline, reads back equal to what was written."""
    from tests.evaluation import activities_for

    activities = activities_for(load_sources())

    async def both() -> list[Identification]:
        online = await analyse_activities(activities, CATALOG, _knot_dns(dns_server))
        offline = await analyse_activities(activities, CATALOG, None)
        return [s.identification for s in (*online[0], *offline[0])]

    identifications = asyncio.run(both())
    assert any(i.ptr_confirmed for i in identifications)
    assert any(i.delegated or i.spf_disputed or i.forwarded_from for i in identifications)
    for i in identifications:
        assert decode(i.activity.domain, encode(i)) == i


@pytest.mark.parametrize("text", [
    "", "not json", "[]", '{"a": 1}',
    # a count that is text, negative, or a boolean; a flag that is a number; a float that is text
    json.dumps(["192.0.2.1", "5", 0, 0, 0, [], [], [], [], "", "", "unknown", None, 0.5, [],
                None, False, "looked up", "", None, None, None, False, None]),
    json.dumps(["192.0.2.1", -5, 0, 0, 0, [], [], [], [], "", "", "unknown", None, 0.5, [],
                None, False, "looked up", "", None, None, None, False, None]),
    json.dumps(["192.0.2.1", True, 0, 0, 0, [], [], [], [], "", "", "unknown", None, 0.5, [],
                None, False, "looked up", "", None, None, None, False, None]),
    json.dumps(["192.0.2.1", 5, 0, 0, 0, [], [], [], [], "", "", "unknown", None, 0.5, [],
                None, 1, "looked up", "", None, None, None, False, None]),
    json.dumps(["192.0.2.1", 5, 0, 0, 0, [], [], [], [], "", "", "unknown", None, "0.5", [],
                None, False, "looked up", "", None, None, None, False, None]),
    json.dumps(["192.0.2.1", 5, 0, 0, 0, [["a.example", "s1", 3]], [], [], [], "", "",
                "unknown", None, 0.5, [], None, False, "looked up", "", None, None, None,
                False, None]),
    # a reason's messages that are text, a header From that is a number, text after the row
    json.dumps(["192.0.2.1", 5, 0, 0, 0, [], [], [["forwarded", "5"]], [], "", "",
                "unknown", None, 0.5, [], None, False, "looked up", "", None, None, None,
                False, None]),
    json.dumps(["192.0.2.1", 5, 0, 0, 0, [], [], [], [7], "", "", "unknown", None, 0.5, [],
                None, False, "looked up", "", None, None, None, False, None]),
    json.dumps(["192.0.2.1", 5, 0, 0, 0, [], [], [], [], "", "", "unknown", None, 0.5, [],
                None, False, "looked up", "", None, None, None, False, None]) + " []",
])
def test_a_kept_row_that_is_not_ours_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        decode("a.example", text)
    assert "a.example" in str(caught.value) and "\n" not in str(caught.value)


def test_a_source_not_looked_up_is_named_again() -> None:
    activity = SourceActivity("a.example", "192.0.2.1", 1, 0, 0, 0, (), (), (), ())
    looked_up = Identification(activity, "unknown", None, 0.0, (), None, dns=DNS_LOOKED_UP)
    assert not needs_lookup(looked_up)
    assert needs_lookup(dataclasses.replace(looked_up, dns=DNS_BUDGET))


# -- naming again only what changed -------------------------------------------------------------


def _deliveries_in_halves(sources_xml: list[bytes]) -> tuple[list[Delivery], list[Delivery]]:
    first = [Delivery(x, None) for x in sources_xml[::2]]
    second = [Delivery(x, None) for x in sources_xml[1::2]]
    return first, second


def test_the_labeled_world_named_in_two_steps_shows_what_naming_all_shows(
        tmp_path: Path, dns_server: KnotServer, named: list[str]) -> None:
    first, second = _deliveries_in_halves(reports_xml(load_sources()))
    with SqliteStore(tmp_path / "steps.sqlite3") as store:
        add(store, first)
        domains = store.domains()
        for domain in domains:
            remembered(store, domain, _knot_dns(dns_server))
        add(store, second)
        again: list[str] = []
        compared = 0
        for domain in store.domains():
            named.clear()
            got = remembered(store, domain, _knot_dns(dns_server))
            again += named
            assert got == whole(store, domain, _knot_dns(dns_server)), domain
            compared += sum(len(line.sources) for line in got)
        assert compared >= 200
        # the second step named the sources of the second half's reports, not all of them
        changed = {rec.source_ip for d in second for r in read_reports(d.xml)
                   for rec in r.records}
        assert again and set(again) <= changed and len(again) < compared


def test_nothing_new_names_nothing_again(stores: Callable[[], AnyStore],
                                         named: list[str]) -> None:
    """Except sources with believed reports in conflict, read from their daily rows each time
    (the labeled world has none)."""
    store = stores()
    add(store, [Delivery(x, None) for x in reports_xml(load_sources())])
    first = {d: remembered(store, d) for d in store.domains()}
    assert len(named) >= 200
    named.clear()
    assert {d: remembered(store, d) for d in store.domains()} == first
    assert named == []


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_generated_histories_named_step_by_step_show_what_naming_all_shows(
        stores: Callable[[], AnyStore], seed: int, monkeypatch: pytest.MonkeyPatch,
        named: list[str]) -> None:
    """Copies, conflicts (a conflicting copy rebuilds the sources it touched), doubt, held
    reports, and a change of trusted reporters half-way (a new context: all named again)."""
    history = generated(seed, 120)
    fewer = 0  # steps that named fewer sources than the domains have
    with stores() as store:
        for step, start in enumerate(range(0, len(history), 20)):
            trusted = ("r1.example",) if step >= 3 else ()
            monkeypatch.setenv("DMARCBOT_TRUSTED_REPORTERS", ",".join(trusted))
            add(store, history[start:start + 20])
            again = 0
            for domain in DOMAINS:
                named.clear()
                got = remembered(store, domain)
                again += len(named)
                assert got == whole(store, domain, None, trusted), (step, domain)
            everything = sum(len({r.key.source_ip for r in store.sources(
                d, trusted_reporters=trusted)}) for d in DOMAINS)
            if step == 3:  # the trust changed: every source is named again
                assert again == everything
            elif step > 0:
                assert again <= everything
                fewer += again < everything
    assert fewer >= 1


def test_a_naming_that_dies_leaves_its_changes_for_the_next(
        stores: Callable[[], AnyStore], named: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    history = generated(7, 80)
    with stores() as store:
        add(store, history[:40])
        for domain in DOMAINS:
            remembered(store, domain)
        add(store, history[40:])

        def dying(*_: object, **__: object) -> None:
            raise RuntimeError("the host stopped the function")

        named.clear()
        with monkeypatch.context() as patched, pytest.raises(RuntimeError):
            patched.setattr(type(store), "remember_naming", dying)
            remembered(store, DOMAINS[0])  # its changes were claimed, never remembered
        claimed = set(named)
        named.clear()
        got = remembered(store, DOMAINS[0])
        assert claimed and named == sorted(claimed)  # named again, those alone
        assert got == whole(store, DOMAINS[0])


def test_a_source_gone_from_the_history_is_not_kept(tmp_path: Path) -> None:
    """A rebuild that takes a source's last believed row away while a naming is between reading
    and remembering: what that naming kept of it must not show next time."""
    with SqliteStore(tmp_path / "gone.sqlite3") as store:
        add(store, [Delivery(x, None) for x in reports_xml(load_sources())])
        for domain in store.domains():
            remembered(store, domain)
        domain = max(store.domains(), key=lambda d: len(kept_rows(store, d)))
        ip = sorted(kept_rows(store, domain))[0]
        store._db.execute("DELETE FROM source_rollups WHERE policy_domain = ? AND source_ip = ?",
                          (domain, ip))  # as that rebuild leaves it; named_sources keeps it
        got = remembered(store, domain)
        assert ip not in {v.identification.activity.ip for line in got for v in line.sources}
        assert got == whole(store, domain)


def test_a_change_of_context_names_everything_again(tmp_path: Path, named: list[str]) -> None:
    """Another catalog (a fact added) or another mode (offline, then with DNS) is another
    context; the same one is not."""
    with SqliteStore(tmp_path / "context.sqlite3") as store:
        add(store, generated(3, 40))
        remembered(store, DOMAINS[0])
        (context,) = store._db.execute("SELECT context FROM naming").fetchone()
        sources = len(kept_rows(store, DOMAINS[0]))
        assert sources > 0

        another = Catalog(CATALOG.services[:-1])
        assert another.digest != CATALOG.digest
        offline = asyncio.run(analyse_activities([], CATALOG, None))[2]
        assert naming_context(CATALOG, offline, ()) == context
        assert naming_context(another, offline, ()) != context
        assert naming_context(CATALOG, offline, ("r1.example",)) != context
        online = dataclasses.replace(offline, is_offline=False)
        assert naming_context(CATALOG, online, ()) != context

        named.clear()
        asyncio.run(name_domain(store, another, None, DOMAINS[0]))
        assert len(named) == sources


def test_a_kept_row_that_is_not_ours_means_naming_the_whole_history(
        tmp_path: Path, named: list[str], caplog: pytest.LogCaptureFixture) -> None:
    with SqliteStore(tmp_path / "tampered.sqlite3") as store:
        add(store, generated(4, 40))
        expected = remembered(store, DOMAINS[0])
        ip = next(iter(kept_rows(store, DOMAINS[0])))
        store._db.execute("UPDATE named_sources SET identification = '[1, 2]'"
                          " WHERE source_ip = ?", (ip,))
        named.clear()
        assert remembered(store, DOMAINS[0]) == expected
        assert len(named) == len(kept_rows(store, DOMAINS[0]))
        assert "not readable" in caplog.text and "naming the whole history" in caplog.text
        assert json.loads(kept_rows(store, DOMAINS[0])[ip])[0] == ip  # written whole again


# -- Table Storage: what tells a naming what changed ------------------------------------------


def _tables(azurite: Azurite, prefix: str | None = None) -> TableStore:
    return TableStore.from_connection_string(azurite.connection_string,
                                             prefix=prefix or unique_prefix())


def _report(ip: str, n: int, report_id: str, domain: str = DOMAINS[0]) -> Delivery:
    return Delivery(aggregate_xml(record_xml(ip, n), report_id=report_id, domain=domain), None)


def _naming_rows(store: TableStore, domain: str) -> list[str]:
    return sorted(e["RowKey"] for e in store._query(
        "reports", "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
        {"pk": domain, "low": "~n", "high": "~o"}, select=["RowKey"]))


def test_table_storage_counts_what_was_written_just_before_a_naming(
        azurite: Azurite, named: list[str]) -> None:
    """Entities written within `NAMING_OVERLAP` before a naming began count as changed for the
    next one: a transaction stamped before the naming's clock may not have been visible to it.
    Here everything was written within seconds, so the next naming names it all again."""
    with _tables(azurite) as store:
        add(store, [_report(f"192.0.2.{n}", n, f"r{n}") for n in range(1, 6)])
        remembered(store, DOMAINS[0])
        named.clear()
        got = remembered(store, DOMAINS[0])
        assert sorted(named) == [f"192.0.2.{n}" for n in range(1, 6)]
        assert got == whole(store, DOMAINS[0])


def test_table_storage_names_only_the_sources_written_since(
        azurite: Azurite, named: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables_module, "NAMING_OVERLAP", dt.timedelta(0))
    with _tables(azurite) as store:
        add(store, [_report(f"192.0.2.{n}", n, f"r{n}") for n in range(1, 6)])
        remembered(store, DOMAINS[0])
        add(store, [_report("192.0.2.2", 10, "again"), _report("198.51.100.7", 3, "new")])
        named.clear()
        recalled = store.recall_naming(DOMAINS[0])
        assert {r.key.source_ip for r in recalled.changed} == {"192.0.2.2", "198.51.100.7"}
        assert sorted(recalled.kept) == ["192.0.2.1", "192.0.2.3", "192.0.2.4", "192.0.2.5"]
        store._naming.clear()  # that recall was only looked at
        got = remembered(store, DOMAINS[0])
        assert sorted(named) == ["192.0.2.2", "198.51.100.7"]
        assert got == whole(store, DOMAINS[0])
        # a changed source's whole history is read: both of 192.0.2.2's reports
        line = {v.identification.activity.ip: v.identification.activity.messages
                for ln in remembered(store, DOMAINS[0]) for v in ln.sources}
        assert line["192.0.2.2"] == 12 and line["198.51.100.7"] == 3


def test_table_storage_folds_a_busy_source_as_it_names_it(
        azurite: Azurite, named: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy source gains a delta a report and is read each time it changes: a naming that
    reads it folds its deltas, as a whole read's settle does."""
    monkeypatch.setattr(tables_module, "NAMING_OVERLAP", dt.timedelta(0))
    with _tables(azurite) as store:
        add(store, [_report("192.0.2.1", 1, "r0"), _report("192.0.2.2", 1, "other")])
        remembered(store, DOMAINS[0])
        add(store, [_report("192.0.2.1", n, f"r{n}") for n in range(1, 13)])
        prefix = unit_row("192.0.2.1", "")
        rows = [e["RowKey"] for e in store._query(
            "reports", "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": DOMAINS[0], "low": prefix, "high": prefix[:-1] + "."}, select=["RowKey"])]
        assert sum(r[len(prefix):].startswith("d") for r in rows) == 13  # a delta a report
        named.clear()
        got = remembered(store, DOMAINS[0])
        assert named == ["192.0.2.1"]
        rows = [e["RowKey"] for e in store._query(
            "reports", "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": DOMAINS[0], "low": prefix, "high": prefix[:-1] + "."}, select=["RowKey"])]
        assert rows == [f"{prefix}0000"]  # folded into one
        named.clear()
        assert remembered(store, DOMAINS[0]) == got
        assert named == []  # its own fold is no change to the next naming
        assert got == whole(store, DOMAINS[0])
        assert {v.identification.activity.ip: v.identification.activity.messages
                for ln in got for v in ln.sources}["192.0.2.1"] == 1 + sum(range(1, 13))


def test_table_storage_generations_are_merged_and_nothing_is_left_behind(
        azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables_module, "NAMING_OVERLAP", dt.timedelta(0))
    with _tables(azurite) as store:
        for n in range(1, 9):
            add(store, [_report(f"192.0.2.{n}", n, f"r{n}")])
            remembered(store, DOMAINS[0])
            state = store._get("reports", DOMAINS[0], "~n")
            assert state is not None
            generations = json.loads(state["generations"])
            assert 1 <= len(generations) <= 4
            # every part left is one of the state's generations
            assert {row.rsplit("-", 1)[0] for row in _naming_rows(store, DOMAINS[0])
                    if row.startswith("~n-")} == {f"~n-{g}" for g in generations}
        assert store.recall_naming(DOMAINS[0]).kept.keys() == {
            f"192.0.2.{n}" for n in range(1, 9)}
        assert remembered(store, DOMAINS[0]) == whole(store, DOMAINS[0])


def test_table_storage_a_naming_that_loses_a_race_keeps_nothing(
        azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two namings of one domain at once: the one that remembers second finds the clock
    touched since it began, keeps nothing, and leaves no part behind."""
    monkeypatch.setattr(tables_module, "NAMING_OVERLAP", dt.timedelta(0))
    prefix = unique_prefix()
    with _tables(azurite, prefix) as first, _tables(azurite, prefix) as second:
        add(first, [_report(f"192.0.2.{n}", n, f"r{n}") for n in range(1, 4)])
        remembered(first, DOMAINS[0])
        add(first, [_report("192.0.2.9", 9, "r9")])
        one, two = first.recall_naming(DOMAINS[0]), second.recall_naming(DOMAINS[0])
        assert {r.key.source_ip for r in one.changed} == {"192.0.2.9"}
        second.remember_naming(DOMAINS[0], str(two.context), [("192.0.2.9", "second")],
                               whole=False)
        first.remember_naming(DOMAINS[0], str(one.context), [("192.0.2.9", "first")],
                              whole=False)
        third = first.recall_naming(DOMAINS[0])
        first._naming.clear()
        assert third.kept["192.0.2.9"] == "second"
        state = first._get("reports", DOMAINS[0], "~n")
        assert state is not None
        assert {row.rsplit("-", 1)[0] for row in _naming_rows(first, DOMAINS[0])
                if row.startswith("~n-")} == {f"~n-{g}" for g in json.loads(
                    state["generations"])}


def test_table_storage_a_rebuild_forgets_what_naming_kept(
        azurite: Azurite, named: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild may take a source away, which no entity written since would show: it drops
    what naming kept, and a naming that began before it keeps nothing of its own."""
    monkeypatch.setattr(tables_module, "NAMING_OVERLAP", dt.timedelta(0))
    prefix = unique_prefix()
    with _tables(azurite, prefix) as store, _tables(azurite, prefix) as other:
        add(store, [_report("192.0.2.1", 5, "same"), _report("192.0.2.2", 3, "r2")])
        remembered(store, DOMAINS[0])
        recalled = store.recall_naming(DOMAINS[0])  # a naming begins
        assert recalled.context is not None
        # another copy of report "same" with other content: a conflict, and a rebuild that
        # takes 192.0.2.1's report out of the sources, done by another reader meanwhile
        add(other, [_report("192.0.2.7", 5, "same")])
        list(other.sources(DOMAINS[0]))
        store.remember_naming(DOMAINS[0], str(recalled.context),
                              [("192.0.2.2", recalled.kept["192.0.2.2"])], whole=False)
        assert store._get("reports", DOMAINS[0], "~n") is None  # forgotten, not rewritten
        named.clear()
        assert remembered(store, DOMAINS[0]) == whole(store, DOMAINS[0])
        assert "192.0.2.2" in named  # the whole history named again


def test_table_storage_a_kept_part_that_is_not_ours_names_the_whole_history(
        azurite: Azurite, named: list[str], caplog: pytest.LogCaptureFixture) -> None:
    with _tables(azurite) as store:
        add(store, [_report(f"192.0.2.{n}", n, f"r{n}") for n in range(1, 4)])
        expected = remembered(store, DOMAINS[0])
        part = next(r for r in _naming_rows(store, DOMAINS[0]) if r.startswith("~n-"))
        store._table("reports").upsert_entity({"PartitionKey": DOMAINS[0], "RowKey": part,
                                               "kept": '["not", "ours"]'})
        named.clear()
        assert remembered(store, DOMAINS[0]) == expected
        assert sorted(named) == [f"192.0.2.{n}" for n in range(1, 4)]
        assert "not ours" in caplog.text and "naming the whole history" in caplog.text
