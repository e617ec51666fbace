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
from analysis.accounts import Claim
from analysis.catalog import Catalog, load_catalog
from analysis.dnsevidence import DnsEvidence, MemoryCache, make_resolver
from analysis.identify import (
    DNS_BUDGET,
    DNS_LOOKED_UP,
    EvidenceBundle,
    Identification,
    Identifier,
    SourceActivity,
    activities_from_sources,
    signed,
)
from analysis.remembered import (
    Kept,
    decode,
    decode_kept,
    encode,
    naming_context,
    needs_lookup,
)
from analysis.senders import analyse_activities
from analysis.verdicts import SHOWN_SOURCES, ServiceVerdict, SourceVerdict, member_of
from function_app.pipeline import name_domain
from store import SqliteStore, Store
from store import table_sources as ts_module
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


def test_kept_sources_read_back_exactly(dns_server: KnotServer) -> None:
    """Every judged source of the labeled world, online (PTRs, confirmations, delegated DKIM,
    disputed SPF) and offline, reads back equal to what was written: its member, what it
    signed, and its identification."""
    from tests.evaluation import activities_for

    activities = activities_for(load_sources())

    async def both() -> list[SourceVerdict]:
        online = await analyse_activities(activities, CATALOG, _knot_dns(dns_server))
        offline = await analyse_activities(activities, CATALOG, None)
        return [*online[0], *offline[0]]

    verdicts = asyncio.run(both())
    identifications = [v.identification for v in verdicts]
    assert any(i.ptr_confirmed for i in identifications)
    assert any(i.delegated or i.spf_disputed or i.forwarded_from for i in identifications)
    assert any(v.claim for v in verdicts) and any(m.selectors for m in map(member_of, verdicts))
    for v in verdicts:
        domain = v.identification.activity.domain
        kept = decode_kept(domain, encode(v))
        assert kept.member == member_of(v)
        assert kept.signed == signed(v.identification.activity)
        assert decode(domain, kept) == v.identification


_MEMBER = ["192.0.2.1", "unknown", "", "impostor", 5, 0, 0, 0, 0.5, "", "", None, "looked up",
           [], [], None, [], []]


@pytest.mark.parametrize("text", [
    "", "not json", "[]", '{"a": 1}', json.dumps(_MEMBER),  # no identification after it
    json.dumps(["192.0.2.1", "unknown", "", "impostor", -5, *_MEMBER[5:]]) + "\n[]",
    json.dumps([*_MEMBER[:4], "5", *_MEMBER[5:]]) + "\n[]",
    json.dumps([*_MEMBER[:13], [7], *_MEMBER[14:]]) + "\n[]",
    json.dumps([*_MEMBER[:14], [["s1"]], *_MEMBER[15:]]) + "\n[]",
    json.dumps([*_MEMBER[:15], ["key", "not a list"], *_MEMBER[16:]]) + "\n[]",
    json.dumps([*_MEMBER[:16], [["a.example", "s1", "3"]], []]) + "\n[]",
    json.dumps(_MEMBER) + " []\n[]",
])
def test_a_kept_member_that_is_not_ours_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        decode_kept("a.example", text)
    assert "a.example" in str(caught.value) and "\n" not in str(caught.value)


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
def test_a_kept_identification_that_is_not_ours_is_refused_in_one_line(text: str) -> None:
    kept = decode_kept("a.example", json.dumps(_MEMBER) + "\n" + text)
    with pytest.raises(ValueError) as caught:
        decode("a.example", kept)
    assert "a.example" in str(caught.value) and "\n" not in str(caught.value)


def test_a_source_not_looked_up_is_named_again() -> None:
    activity = SourceActivity("a.example", "192.0.2.1", 1, 0, 0, 0, (), (), (), ())
    looked_up = Identification(activity, "unknown", None, 0.0, (), None, dns=DNS_LOOKED_UP)

    def kept(identification: Identification) -> Kept:
        return decode_kept("a.example", encode(SourceVerdict(identification, "impostor", None,
                                                             "")))

    assert not needs_lookup(kept(looked_up))
    assert needs_lookup(kept(dataclasses.replace(looked_up, dns=DNS_BUDGET)))


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


def _day_report(records: str, day: int, domain: str = "contoso.example") -> Delivery:
    begin = 1764288000 + 86400 * day
    return Delivery(aggregate_xml(records, domain=domain, report_id=f"{domain}-{day}",
                                  begin=begin, end=begin + 86399), None)


def test_a_kept_naming_reads_in_full_only_what_its_lines_show(
        stores: Callable[[], AnyStore], named: list[str], monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """A line of 150 impostors and one more the next day: the second naming names the new one,
    decodes the identifications of the line's largest sources only, and shows and counts
    what naming all of them shows."""
    import analysis.senders

    fails = ("<dkim><domain>evil.example</domain><result>fail</result></dkim><spf><domain>"
             "evil.example</domain><result>fail</result></spf>")

    def impostors(ips: range, day: int) -> Delivery:
        return _day_report("".join(record_xml(f"198.51.{n // 250}.{n % 250 + 1}", n + 1,
                                          dkim="fail", spf="fail",
                                          header_from="contoso.example",
                                          envelope_from="evil.example", auth=fails)
                               for n in ips), day)

    store = stores()
    add(store, [impostors(range(150), 0)])
    remembered(store, "contoso.example")
    add(store, [impostors(range(150, 151), 1)])
    decoded: list[str] = []
    decode = analysis.senders.decode

    def counting(domain: str, kept: Kept) -> Identification:
        decoded.append(kept.member.ip)
        return decode(domain, kept)

    monkeypatch.setattr(analysis.senders, "decode", counting)
    named.clear()
    got = remembered(store, "contoso.example")
    assert named == ["198.51.0.151"]
    (line,) = got
    assert line.verdict == "impostor" and line.source_count == 151
    assert len(line.sources) == SHOWN_SOURCES
    assert [v.identification.activity.ip for v in line.sources][:2] == [
        "198.51.0.151", "198.51.0.150"]
    assert len(decoded) <= SHOWN_SOURCES + 1
    assert got == whole(store, "contoso.example")


def test_a_new_account_of_the_domain_judges_the_kept_sources_again(
        stores: Callable[[], AnyStore]) -> None:
    """A Microsoft 365 tenant's mail, unaligned: nothing ties it to another account, so it
    needs DKIM. Then the domain's own tenant shows up (aligned DKIM, and its own tenant
    signature): the first is another tenant now, with no change to its own reports, and naming
    says so (the domain's accounts are part of what a kept verdict was made in)."""
    def m365(ip: str, tenant: str, aligned: bool, day: int) -> Delivery:
        auth = (f"<dkim><domain>{tenant}</domain><selector>selector1</selector>"
                "<result>pass</result></dkim>")
        if aligned:
            auth = ("<dkim><domain>contoso.example</domain><selector>selector1</selector>"
                    "<result>pass</result></dkim>" + auth)
        auth += ("<spf><domain>contoso.example</domain><result>"
                 f"{'pass' if aligned else 'fail'}</result></spf>")
        return _day_report(record_xml(ip, 40, dkim="pass" if aligned else "fail",
                                  spf="pass" if aligned else "fail",
                                  header_from="contoso.example",
                                  envelope_from="contoso.example", auth=auth), day)

    store = stores()
    add(store, [m365("203.0.113.9", "fabrikam.onmicrosoft.com", False, 0)])
    before = remembered(store, "contoso.example")
    add(store, [m365("203.0.113.10", "contoso.onmicrosoft.com", True, 1)])
    after = remembered(store, "contoso.example")
    assert after == whole(store, "contoso.example")

    def verdict_of(got: list[ServiceVerdict]) -> str:
        return next(line.verdict for line in got for v in line.sources
                    if v.identification.activity.ip == "203.0.113.9")

    assert (verdict_of(before), verdict_of(after)) == ("needs-dkim", "impostor")


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


def test_a_domain_asked_for_in_capitals_is_the_one_stored(tmp_path: Path) -> None:
    """`senders --domain A.EXAMPLE`: the same lines, whether what was kept is used or not."""
    with SqliteStore(tmp_path / "case.sqlite3") as store:
        add(store, generated(4, 40))
        expected = whole(store, DOMAINS[0])
        assert remembered(store, DOMAINS[0].upper()) == expected
        assert remembered(store, DOMAINS[0].upper()) == expected


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
        claims = [c for text in kept_rows(store, DOMAINS[0]).values()
                  if (c := decode_kept(DOMAINS[0], text).member.claim) is not None]

        def context_of(catalog: Catalog = CATALOG, bundle: EvidenceBundle = offline,
                       trusted: tuple[str, ...] = (), shown: Sequence[Claim] = claims) -> str:
            return naming_context(catalog, bundle, trusted, DOMAINS[0], shown)

        assert context_of() == context
        assert context_of(another) != context
        assert context_of(trusted=("r1.example",)) != context
        assert context_of(bundle=dataclasses.replace(offline, is_offline=False)) != context
        # another account of the domain's own (a tenant its aligned mail showed) is another
        assert context_of(shown=[*claims, ("sendgrid", ("u42.wl.sendgrid.net",))]) != context
        assert context_of(shown=claims[::-1]) == context

        named.clear()
        asyncio.run(name_domain(store, another, None, DOMAINS[0]))
        assert len(named) == sources


@pytest.mark.parametrize("part", ["member", "identification"])
def test_a_kept_row_that_is_not_ours_means_naming_the_whole_history(
        tmp_path: Path, named: list[str], caplog: pytest.LogCaptureFixture, part: str) -> None:
    """A kept source whose member does not read back, or whose identification does not when
    a line shows it in full (the largest of the domain's sources)."""
    with SqliteStore(tmp_path / "tampered.sqlite3") as store:
        add(store, generated(4, 40))
        remembered(store, DOMAINS[0])
        named.clear()
        expected = remembered(store, DOMAINS[0])  # names only those in conflict, every time
        ip, text = max(((ip, text) for ip, text in kept_rows(store, DOMAINS[0]).items()
                        if ip not in named),
                       key=lambda row: decode_kept(DOMAINS[0], row[1]).member.messages)
        tampered = ("[1, 2]" if part == "member" else
                    text.partition("\n")[0] + "\n" + json.dumps([ip, "not an identification"]))
        store._db.execute("UPDATE named_sources SET identification = ? WHERE source_ip = ?",
                          (tampered, ip))
        named.clear()
        assert remembered(store, DOMAINS[0]) == expected
        assert set(named) == set(kept_rows(store, DOMAINS[0]))  # every source named again
        assert "not readable" in caplog.text and "naming the whole history" in caplog.text
        assert decode_kept(DOMAINS[0], kept_rows(store, DOMAINS[0])[ip]).member.ip == ip


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
        # a naming with nothing new to name adds no generation and rewrites nothing kept
        rows = _naming_rows(store, DOMAINS[0])
        for _ in range(ts_module.MAX_GENERATIONS + 1):
            assert remembered(store, DOMAINS[0]) == whole(store, DOMAINS[0])
            assert _naming_rows(store, DOMAINS[0]) == rows


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
