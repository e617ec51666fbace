"""Issue 13, "Nothing forged is believed": the ledger, structured results, a safe first start.

- A report that copies another's ledger key with other content cannot pre-empt it: both are
  stored and flagged whichever came first, and neither is believed; only a true copy (same bytes,
  or the same content re-serialised) is a duplicate. On SQLite and on Table Storage (Azurite).
- DKIM and SPF results are stored structured: a domain holding a space reads back as itself,
  and the normaliser refuses such a record with a note.
- Several processes opening a new SQLite file at once apply the schema once and all succeed.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analysis import Limits, read_reports
from analysis.model import AggregateReport, DkimResult, Record, SpfResult
from analysis.rollup import ledger_key
from function_app import cli
from store import SqliteStore, Store
from store.sqlite import _migrations, latest_schema_version
from store.tables import TableStore
from tests.azurite import Azurite, unique_prefix
from tests.builders import aggregate_xml, gzipped, record_xml, report_email

AnyStore = SqliteStore | TableStore

FAILING = ("<dkim><domain>evil.example</domain><selector>x</selector><result>fail</result></dkim>"
           "<spf><domain>evil.example</domain><scope>mfrom</scope><result>fail</result></spf>")
#: FastMail's report ids are sequential: a forger can send tomorrow's report first.
KEY = {"email": "noreply-dmarc@fastmail.example", "report_id": "1234567"}
GENUINE_RECORDS = [record_xml("192.0.2.1", 50),
                   record_xml("203.0.113.66", 7, dkim="fail", spf="fail", auth=FAILING)]
GENUINE = aggregate_xml("".join(GENUINE_RECORDS), **KEY)  # type: ignore[arg-type]
FORGED = aggregate_xml(record_xml("192.0.2.1", 57), **KEY)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "tables"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyStore]:
    opened: AnyStore
    if request.param == "sqlite":
        opened = SqliteStore(tmp_path / "s.sqlite3")
    else:
        azurite: Azurite = request.getfixturevalue("azurite")
        opened = TableStore.from_connection_string(azurite.connection_string,
                                                   prefix=unique_prefix())
    with opened:
        yield opened


def add(store: Store, data: bytes) -> list[str]:
    return [store.add_report(r) for r in read_reports(data, Limits())]


def ips(store: Store, **kwargs: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, messages in store.rollups(**kwargs):
        out[key.source_ip] = out.get(key.source_ip, 0) + messages
    return out


# -- 1. a ledger that cannot be pre-empted ---------------------------------------------------


@pytest.mark.parametrize("first, second", [(GENUINE, FORGED), (FORGED, GENUINE)],
                         ids=["genuine-first", "forged-first"])
def test_a_report_with_a_copied_key_is_stored_beside_the_first(
        store: AnyStore, first: bytes, second: bytes) -> None:
    assert add(store, first) == ["stored"]
    assert add(store, second) == ["conflict"]  # stored, never a duplicate
    entries = list(store.reports())
    assert len(entries) == 2 and all(e.conflict for e in entries)
    assert {e.key for e in entries} == {ledger_key(next(read_reports(GENUINE, Limits())))}
    assert sorted(e.messages for e in entries) == [57, 57]
    # Both are kept: the genuine failing record is in the store …
    assert ips(store, conflicting=True) == {"192.0.2.1": 50 + 57, "203.0.113.66": 7}
    # … and neither copy is believed until someone resolves the conflict.
    assert ips(store) == {}
    # Sending either copy again changes nothing.
    assert add(store, first) == ["duplicate"] and add(store, second) == ["duplicate"]
    assert len(list(store.reports())) == 2


def test_other_reports_stay_believed_beside_a_conflict(store: AnyStore) -> None:
    add(store, GENUINE)
    add(store, FORGED)
    assert add(store, aggregate_xml(record_xml("192.0.2.9", 3), report_id="other")) == ["stored"]
    assert ips(store) == {"192.0.2.9": 3}
    assert [e.conflict for e in store.reports() if e.key.report_id == "other"] == [False]


def test_a_true_resend_is_a_duplicate(store: AnyStore) -> None:
    assert add(store, GENUINE) == ["stored"]
    reordered = aggregate_xml("\n  ".join(reversed(GENUINE_RECORDS)), **KEY)  # type: ignore[arg-type]
    for copy in (GENUINE, gzipped(GENUINE), report_email(gzipped(GENUINE)),
                 GENUINE.replace(b"<report_id>1234567<", b"<report_id>&lt;1234567@fm&gt;<"),
                 reordered):
        assert add(store, copy) == ["duplicate"]
    ((entry,),) = [list(store.reports())]
    assert not entry.conflict
    assert ips(store) == {"192.0.2.1": 50, "203.0.113.66": 7}


def test_ingest_says_a_report_conflicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    (tmp_path / "forged.xml").write_bytes(FORGED)
    (tmp_path / "genuine.xml").write_bytes(GENUINE)
    db = str(tmp_path / "db.sqlite3")
    assert cli.main(["--db", db, "ingest", str(tmp_path / "forged.xml")]) == 0
    assert cli.main(["--db", db, "ingest", str(tmp_path / "genuine.xml")]) == 0
    assert cli.main(["--db", db, "ingest", str(tmp_path / "genuine.xml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{tmp_path / 'forged.xml'}: stored",
        f"{tmp_path / 'genuine.xml'}: stored (conflicts with another report of the same id: a"
        " copy counts only when no other believed copy disagrees)",
        f"{tmp_path / 'genuine.xml'}: duplicate",
    ]


# -- 2. structured results end to end ---------------------------------------------------------

ATTACK = ("<dkim><domain>mandrillapp.com/mte1=pass evil.example</domain>"
          "<result>permerror</result></dkim>"
          "<spf><domain>evil.example</domain><result>fail</result></spf>")


def test_a_dkim_domain_with_a_space_is_refused_and_never_a_mandrill_pass(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xml = aggregate_xml(record_xml("203.0.113.5", 40, dkim="fail", spf="fail", auth=ATTACK)
                        + record_xml("192.0.2.1", 3))
    (tmp_path / "attack.xml").write_bytes(xml)
    db = tmp_path / "db.sqlite3"
    assert cli.main(["--db", str(db), "ingest", str(tmp_path / "attack.xml")]) == 0
    assert "1 problems recovered" in capsys.readouterr().out
    with SqliteStore(db) as store:
        (entry,) = list(store.reports())
        assert entry.records == 1 and any("DKIM domain" in e and "not a name" in e
                                          for e in entry.errors)
        signatures = [d for key, _ in store.rollups() for d in key.dkim]
        assert signatures == [("example.com", "s1", "pass")]  # the rest of the report is kept
    assert cli.main(["--db", str(db), "senders", "--json", "--offline", "--evidence"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and not any("mandrill" in json.dumps(r).lower() for r in rows)


@pytest.mark.parametrize("what", ["selector", "spf"])
def test_names_with_slash_equals_or_space_are_refused_per_record(what: str) -> None:
    bad = {"selector": "<dkim><domain>example.com</domain><selector>s1=pass</selector>"
                       "<result>fail</result></dkim>",
           "spf": "<spf><domain>mandrillapp.com pass</domain><result>fail</result></spf>"}[what]
    for report in read_reports(aggregate_xml(record_xml("203.0.113.5", auth=bad)
                                             + record_xml("192.0.2.1")), Limits()):
        assert isinstance(report, AggregateReport)
        assert [r.source_ip for r in report.records] == ["192.0.2.1"]
        assert len(report.errors) == 1 and "not a name" in report.errors[0]


def test_results_round_trip_structured_whatever_they_hold(store: AnyStore) -> None:
    """Even past the normaliser (a future reader, an old row): never split on spaces."""
    (report,) = read_reports(aggregate_xml(), Limits())
    assert isinstance(report, AggregateReport)
    record = Record("203.0.113.5", 9, "none", "fail", "fail", (), "example.com", None, None,
                    (DkimResult("mandrillapp.com/mte1=pass evil.example", None, "permerror"),
                     DkimResult("b.example", "s=2 x", "pass")),
                    (SpfResult("spf.mandrillapp.com=pass x", "mfrom", "fail"),))
    forged = dataclasses.replace(report, records=iter([record]))  # type: ignore[arg-type]
    assert store.add_report(forged) == "stored"
    ((key, messages),) = list(store.rollups())
    assert messages == 9
    assert key.dkim == (("mandrillapp.com/mte1=pass evil.example", "", "permerror"),
                        ("b.example", "s=2 x", "pass"))
    assert key.spf == (("spf.mandrillapp.com=pass x", "mfrom", "fail"),)


def _v3_database(path: Path) -> None:
    from store.sqlite import _migrations, _statements

    db = sqlite3.connect(path)
    for number, script in enumerate(_migrations()[:3], start=1):
        for statement in _statements(script):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")
    (report,) = read_reports(GENUINE, Limits())
    key = ledger_key(report)
    db.execute("INSERT INTO reports (kind, reporter, report_id, policy_domain, begin_ts, end_ts,"
               " org_name, source, records, messages, stored_at) VALUES (?, ?, ?, ?, ?, ?,"
               " 'Fastmail', 'old.xml', 2, 57, '2026-01-01T00:00:00Z')",
               dataclasses.astuple(key))
    rows = [("192.0.2.1", "example.com/s1=pass", "example.com/mfrom=pass", 1, 50),
            ("203.0.113.66", "evil.example/x=fail", "evil.example/mfrom=fail", 0, 7),
            # an old row holding the attack, as it was stored: ambiguous, read as it was
            ("203.0.113.5", "mandrillapp.com/mte1=pass evil.example/=permerror", "", 0, 1)]
    db.executemany("INSERT INTO daily_rollups VALUES ('example.com', '2025-11-28', ?,"
                   " 'example.com', 'example.com', ?, ?, ?, ?, 'none', '', ?)",
                   [(ip, dkim, spf, ok, ok, n) for ip, dkim, spf, ok, n in rows])
    db.commit()
    db.close()


def test_schema_4_converts_old_rows_and_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite3"
    _v3_database(path)
    with SqliteStore(path) as store:
        assert store.schema_version == latest_schema_version()
        got = {key.source_ip: (key.dkim, key.spf, n) for key, n in store.rollups()}
        assert got["192.0.2.1"] == ((("example.com", "s1", "pass"),),
                                    (("example.com", "mfrom", "pass"),), 50)
        assert got["203.0.113.66"][2] == 7
        assert got["203.0.113.5"][0] == (("mandrillapp.com", "mte1", "pass"),
                                         ("evil.example", "", "permerror"))
        (entry,) = list(store.reports())
        assert (entry.org_name, entry.messages, entry.conflict) == ("Fastmail", 57, False)
        # A report stored before version 4 compares by its counts: a re-send is a duplicate …
        assert add(store, GENUINE) == ["duplicate"]
        # … and one with other counts is stored beside it and flagged.
        assert add(store, FORGED.replace(b"<count>57<", b"<count>58<")) == ["conflict"]
        assert [e.conflict for e in store.reports()] == [True, True]
    foreign = sqlite3.connect(path).execute("PRAGMA foreign_key_check").fetchall()
    assert foreign == []


def test_old_table_storage_entities_read_as_before(azurite: Azurite) -> None:
    """Entities written before issue 13: the ledger RowKey is the key's digest alone and the
    results are space-joined `dkim`/`spf` text. They read back structured, and a re-send of
    the same report is still a duplicate."""
    from store.tables import _digest, _props

    with TableStore.from_connection_string(azurite.connection_string,
                                           prefix=unique_prefix()) as store:
        (report,) = read_reports(GENUINE, Limits())
        key = ledger_key(report)
        same = _digest(*dataclasses.astuple(key))
        rows = [("192.0.2.1", "example.com/s1=pass", "example.com/mfrom=pass", True, 50),
                ("203.0.113.66", "evil.example/x=fail", "evil.example/mfrom=fail", False, 7)]
        store._submit("rollups", [("upsert", {
            "PartitionKey": "example.com!2025-11-28", "RowKey": f"{same}-old1-0-{i}",
            **_props(policy_domain="example.com", source_ip=ip, header_from="example.com",
                     envelope_from="example.com", dkim=dkim, spf=spf, disposition="none",
                     reasons="", day="2025-11-28", dkim_aligned=ok, spf_aligned=ok,
                     messages=n)}) for i, (ip, dkim, spf, ok, n) in enumerate(rows)])
        store._submit("reports", [("create", {
            "PartitionKey": "example.com", "RowKey": same,
            **_props(kind="aggregate", reporter=key.reporter, report_id=key.report_id,
                     policy_domain="example.com", begin_ts=key.begin, end_ts=key.end,
                     org_name="Fastmail", source="old.xml", records=2, messages=57,
                     errors="[]", stored_at="2026-01-01T00:00:00Z", attempt="old1")})])
        got = {k.source_ip: (k.dkim, n) for k, n in store.rollups()}
        assert got == {"192.0.2.1": ((("example.com", "s1", "pass"),), 50),
                       "203.0.113.66": ((("evil.example", "x", "fail"),), 7)}
        assert add(store, GENUINE) == ["duplicate"]
        assert add(store, FORGED) == ["conflict"]
        assert [e.conflict for e in store.reports()] == [True, True] and ips(store) == {}


# -- 3. a first start safe under concurrency ---------------------------------------------------


def _race(barrier: Any, db: str, paths: list[str], log: str) -> None:
    """One `dmarcbot ingest` process; each schema script it applies is logged."""
    import store.sqlite

    statements = store.sqlite._statements

    def logged(script: str) -> Iterator[str]:
        with open(log, "a", encoding="utf-8") as out:
            out.write(script.splitlines()[0] + "\n")
        return statements(script)

    store.sqlite._statements = logged  # type: ignore[assignment]
    barrier.wait()
    sys.exit(cli.main(["--db", db, "ingest", *paths]))


def test_first_start_by_several_processes_at_once(tmp_path: Path) -> None:
    processes = 6
    shared = tmp_path / "shared.xml"
    shared.write_bytes(GENUINE)
    own = []
    for i in range(processes):
        own.append(tmp_path / f"own-{i}.xml")
        own[-1].write_bytes(aggregate_xml(record_xml("192.0.2.1", i + 1), report_id=f"own-{i}"))
    db, log = tmp_path / "new.sqlite3", tmp_path / "applied.log"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    racers = [context.Process(target=_race, args=(barrier, str(db), [str(shared), str(p)],
                                                   str(log))) for p in own]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert [r.exitcode for r in racers] == [0] * processes
    applied = log.read_text().splitlines()
    # each version once, in order
    assert applied == [script.splitlines()[0] for script in _migrations()]
    with SqliteStore(db) as store:
        assert store.schema_version == latest_schema_version()
        entries = list(store.reports())
        assert sorted(e.key.report_id for e in entries) == sorted(
            ["1234567"] + [f"own-{i}" for i in range(processes)])
        assert not any(e.conflict for e in entries)
        assert ips(store) == {"192.0.2.1": 50 + sum(range(1, processes + 1)), "203.0.113.66": 7}


def _open(barrier: Any, db: str) -> None:
    barrier.wait()
    SqliteStore(db).close()


def test_opening_a_new_file_at_once_migrates_it_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(8)
    db = tmp_path / "new.sqlite3"
    openers = [context.Process(target=_open, args=(barrier, str(db))) for _ in range(8)]
    for opener in openers:
        opener.start()
    for opener in openers:
        opener.join()
    assert [o.exitcode for o in openers] == [0] * 8
    tables = sqlite3.connect(db).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
    assert [t for (t,) in tables] == ["daily_rollups", "dns_cache", "expired", "failure_reports",
                                      "inventory", "monthly_rollups", "named_sources", "naming",
                                      "naming_mark", "patterns", "reports", "source_rollups",
                                      "tls_results"]
