"""Naming remembers (issue 14): the scheduled step names again only the sources whose reports
changed since the last naming, and what it shows is what naming every source would show, on the
labeled world with real DNS (knot) and on generated histories with copies, conflicts, doubt and
changes of trust. A naming that dies leaves its changes for the next; a new context (trust,
catalog, offline or not) names everything again; kept rows that are not ours are not believed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator, Sequence
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
from store.base import NOTHING_RECALLED
from store.tables import TableStore
from tests.azurite import Azurite, unique_prefix
from tests.dnslab.server import KnotServer
from tests.evaluation import load_sources, reports_xml
from tests.test_source_aggregates import DOMAINS, Delivery, add, generated

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


def test_nothing_new_names_nothing_again(tmp_path: Path, named: list[str]) -> None:
    """Except sources with believed reports in conflict, read from their daily rows each time
    (the labeled world has none)."""
    with SqliteStore(tmp_path / "same.sqlite3") as store:
        add(store, [Delivery(x, None) for x in reports_xml(load_sources())])
        first = {d: remembered(store, d) for d in store.domains()}
        assert len(named) >= 200
        named.clear()
        assert {d: remembered(store, d) for d in store.domains()} == first
        assert named == []


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_generated_histories_named_step_by_step_show_what_naming_all_shows(
        tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch, named: list[str]) -> None:
    """Copies, conflicts (a conflicting copy rebuilds the sources it touched), doubt, held
    reports, and a change of trusted reporters half-way (a new context: all named again)."""
    history = generated(seed, 120)
    with SqliteStore(tmp_path / "gen.sqlite3") as store:
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


def test_a_naming_that_dies_leaves_its_changes_for_the_next(
        tmp_path: Path, named: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    history = generated(7, 80)
    with SqliteStore(tmp_path / "dies.sqlite3") as store:
        add(store, history[:40])
        for domain in DOMAINS:
            remembered(store, domain)
        add(store, history[40:])

        def dying(*_: object, **__: object) -> None:
            raise RuntimeError("the host stopped the function")

        named.clear()
        with monkeypatch.context() as patched, pytest.raises(RuntimeError):
            patched.setattr(SqliteStore, "remember_naming", dying)
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


def test_table_storage_keeps_nothing_and_names_the_whole_history(azurite: Azurite) -> None:
    with TableStore.from_connection_string(azurite.connection_string,
                                           prefix=unique_prefix()) as store:
        add(store, generated(4, 30))
        assert store.recall_naming(DOMAINS[0]) == NOTHING_RECALLED
        assert remembered(store, DOMAINS[0]) == whole(store, DOMAINS[0])
        assert store.recall_naming(DOMAINS[0]) == NOTHING_RECALLED
