"""Only reports whose e-mail passed DMARC for their reporter are believed (issue 13).

The attack: anyone can mail the rua address. A forged report claiming 400,000 DKIM-aligned
messages from a Microsoft 365 address, or naming a sender compliant, must not move the advice,
the verdicts or the cards. It is kept (nothing lost) and shown as unverified.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from analysis import read_reports
from analysis.mailauth import judge, mail_evidence
from function_app.cli import main
from store import SqliteStore
from tests.builders import aggregate_xml, gzipped, record_xml, report_email
from tests.fakes.mailbox import exchange_stamp

REPORTER = "dmarc@receiver.example"
GENUINE = record_xml("192.0.2.10", 20, dkim="pass", spf="pass", header_from="example.com",
                     auth='<dkim><domain>example.com</domain><result>pass</result></dkim>'
                          '<spf><domain>example.com</domain><result>pass</result></spf>')
FORGED = record_xml("203.0.113.66", 400_000, dkim="pass", spf="fail",
                    header_from="example.com", envelope_from="evil.example",
                    auth='<dkim><domain>example.com</domain><selector>selector1</selector>'
                         '<result>pass</result></dkim>'
                         '<spf><domain>evil.example</domain><result>fail</result></spf>')


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out


def mail(tmp_path: Path, name: str, records: str, report_id: str, *headers: str) -> Path:
    path = tmp_path / name
    xml = aggregate_xml(records, email=REPORTER, report_id=report_id)
    path.write_bytes(report_email(gzipped(xml), authentication_results=headers))
    return path


def messages_by_ip(capsys: pytest.CaptureFixture[str], db: str) -> dict[str, int]:
    code, out = run(capsys, "--db", db, "senders", "--json", "--offline", "--evidence")
    assert code == 0
    found: dict[str, int] = {}
    for line in out.splitlines():
        row = json.loads(line)
        for source in row.get("sources", []):
            found[source["ip"]] = found.get(source["ip"], 0) + source["messages"]
    return found


def test_a_forged_report_is_kept_shown_unverified_and_not_believed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "s.sqlite3")
    genuine = mail(tmp_path, "genuine.eml", GENUINE, "g-1", exchange_stamp("receiver.example"))
    # the forger's own header sits below the one Exchange Online added on arrival
    forged = mail(tmp_path, "forged.eml", FORGED, "f-1",
                  exchange_stamp("receiver.example", "fail"),
                  "spf=pass smtp.mailfrom=receiver.example; dmarc=pass action=none "
                  "header.from=receiver.example")
    code, out = run(capsys, "--db", db, "ingest", str(genuine), str(forged))
    assert code == 0
    genuine_line, forged_line = out.splitlines()
    assert genuine_line.endswith("stored")
    assert "stored (unverified: no trusted Authentication-Results header says the mail passed" \
           " DMARC" in forged_line
    with SqliteStore(db) as store:
        assert len(list(store.reports())) == 2  # nothing lost
        assert [e.unverified is None for e in store.reports()] == [True, False]
        assert {k.source_ip for k, _ in store.rollups(conflicting=True)} == {
            "192.0.2.10", "203.0.113.66"}
    assert messages_by_ip(capsys, db) == {"192.0.2.10": 20}  # the forgery moves nothing
    code, out = run(capsys, "--db", db, "summary", "--json")
    assert code == 0 and json.loads(out)["messages"] == 20

    # an administrator who trusts the reporter believes its reports from then on
    monkeypatch.setenv("DMARCBOT_TRUSTED_REPORTERS", "receiver.example")
    assert messages_by_ip(capsys, db) == {"192.0.2.10": 20, "203.0.113.66": 400_000}


def test_a_report_whose_mail_passed_for_another_domain_is_not_believed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.sqlite3")
    path = mail(tmp_path, "other.eml", FORGED, "f-2", exchange_stamp("evil.example"))
    code, out = run(capsys, "--db", db, "ingest", str(path))
    assert code == 0
    assert "the mail passed DMARC for evil.example, not for the reporter's receiver.example" in out
    assert messages_by_ip(capsys, db) == {}


def test_bare_files_are_the_admins_own_and_believed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.sqlite3")
    path = tmp_path / "r.xml"
    path.write_bytes(aggregate_xml(GENUINE, email=REPORTER))
    code, out = run(capsys, "--db", db, "ingest", str(path))
    assert code == 0 and out.strip().endswith("stored")
    assert messages_by_ip(capsys, db) == {"192.0.2.10": 20}


def test_a_trusted_receiving_server_s_rfc8601_header_is_believed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    header = ("mx.contoso.example; dkim=pass header.d=receiver.example; spf=pass (sender ok) "
              "smtp.mailfrom=receiver.example; dmarc=pass (p=REJECT) header.from=receiver.example")
    db = str(tmp_path / "s.sqlite3")
    path = mail(tmp_path, "gw.eml", GENUINE, "g-2", header)
    code, out = run(capsys, "--db", db, "ingest", str(path))
    assert "unverified" in out  # nobody said to trust mx.contoso.example
    monkeypatch.setenv("DMARCBOT_TRUSTED_AUTHSERV_IDS", "MX.contoso.example")
    path = mail(tmp_path, "gw2.eml", GENUINE, "g-3", header)
    code, out = run(capsys, "--db", db, "ingest", str(path))
    assert code == 0 and out.strip().endswith("stored")
    assert messages_by_ip(capsys, db) == {"192.0.2.10": 20}  # g-3 only


def test_the_same_report_from_a_believed_mail_makes_the_stored_copy_believed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.sqlite3")
    first = mail(tmp_path, "a.eml", GENUINE, "g-4", exchange_stamp("receiver.example", "fail"))
    again = mail(tmp_path, "b.eml", GENUINE, "g-4", exchange_stamp("receiver.example"))
    run(capsys, "--db", db, "ingest", str(first))
    assert messages_by_ip(capsys, db) == {}
    code, out = run(capsys, "--db", db, "ingest", str(again))
    assert code == 0 and out.strip().endswith("duplicate")
    assert messages_by_ip(capsys, db) == {"192.0.2.10": 20}


def test_a_forged_copy_of_a_believed_report_s_key_does_not_unseat_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.sqlite3")
    forged = mail(tmp_path, "f.eml", FORGED, "g-5")  # no header at all, same key, first
    genuine = mail(tmp_path, "g.eml", GENUINE, "g-5", exchange_stamp("receiver.example"))
    run(capsys, "--db", db, "ingest", str(forged))
    code, out = run(capsys, "--db", db, "ingest", str(genuine))
    assert code == 0 and "conflicts" in out
    assert messages_by_ip(capsys, db) == {"192.0.2.10": 20}  # believed beside an unbelieved copy


def test_table_storage_believes_as_sqlite_does(table_store: Any) -> None:
    def add(records: str, report_id: str, unverified: str | None = None) -> str:
        for found in read_reports(aggregate_xml(records, email=REPORTER, report_id=report_id)):
            return str(table_store.add_report(found, unverified=unverified))
        raise AssertionError("no report")

    assert add(GENUINE, "t-1") == "stored"
    assert add(FORGED, "t-2", "no header") == "stored"
    assert add(FORGED, "t-1", "no header") == "conflict"
    believed = {k.source_ip: n for k, n in table_store.rollups()}
    assert believed == {"192.0.2.10": 20}  # t-1 believed beside its unbelieved copy
    trusted = {k.source_ip: n for k, n in table_store.rollups(
        trusted_reporters=["receiver.example"])}
    assert trusted == {"203.0.113.66": 400_000}  # t-1's copies now disagree: neither believed
    assert sum(e.unverified is not None for e in table_store.reports()) == 2


# -- the headers themselves ----------------------------------------------------------------------


def test_exchange_online_s_header_counts_only_on_top() -> None:
    ok = exchange_stamp("google.com")
    assert judge(mail_evidence([("Authentication-Results", ok)]),
                 "noreply-dmarc-support@google.com").verified
    below = mail_evidence([("Authentication-Results", exchange_stamp("google.com", "fail")),
                           ("Authentication-Results", ok)])
    assert not judge(below, "noreply-dmarc-support@google.com").verified


def test_the_reporter_may_be_under_the_domain_that_passed_not_above_it() -> None:
    evidence = mail_evidence([("Authentication-Results", exchange_stamp("google.com"))])
    assert judge(evidence, "x@dmarc.google.com").verified
    upper = mail_evidence([("Authentication-Results", exchange_stamp("mail.google.com"))])
    assert not judge(upper, "x@google.com").verified
    assert not judge(evidence, "x@google.com.evil.example").verified
    assert not judge(evidence, None).verified  # no reporter e-mail: nothing to tie it to


def test_comments_and_spacing_in_the_header_do_not_fool_the_reader() -> None:
    tricky = ("spf=fail (sender IP is 198.51.100.7; dmarc=pass header.from=google.com) "
              "smtp.mailfrom=evil.example; dmarc=fail action=none header.from=google.com")
    assert not judge(mail_evidence([("Authentication-Results", tricky)]),
                     "x@google.com").verified
    folded = ("mx.example;\r\n dkim=pass header.d=google.com;\r\n\tdmarc=pass (p=REJECT)"
              " header.from=Google.COM")
    assert judge(mail_evidence([("Authentication-Results", folded)]), "x@google.com",
                 ["mx.example"]).verified


def test_a_real_forwarded_google_report_that_failed_dmarc_is_unverified(samples: Path) -> None:
    path = samples / "aggregate" / "Report domain- borschow.com Submitter- google.com " \
                                   "Report-ID- 949348866075514174.eml"
    (report,) = [r for r in read_reports(path)]
    assert report.mail is not None and report.mail.from_address == \
        "noreply-dmarc-support@google.com"
    verdict = judge(report.mail, report.reporter.email)
    assert not verdict.verified  # Exchange Online said dmarc=fail (a relayed copy)


def test_the_mailbox_s_own_headers_decide_through_graph(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        entra: Any, graph: Any, test_ca: Any) -> None:
    from tests.fakes.mailbox import FileAttachment
    from tests.mailbox_env import CLIENT_ID, MAILBOX, SECRET, env_for

    entra.add_client(CLIENT_ID, secret=SECRET)
    box = graph.add_mailbox(MAILBOX).grant(CLIENT_ID)
    for name, value in env_for(entra, graph, test_ca).items():
        monkeypatch.setenv(name, value)
    box.add_message(internet_message_id="<ok@r>", attachments=[FileAttachment(
        "g.xml.gz", gzipped(aggregate_xml(GENUINE, email=REPORTER, report_id="m-1")))])
    box.add_message(internet_message_id="<forged@r>", dmarc="fail", attachments=[FileAttachment(
        "f.xml.gz", gzipped(aggregate_xml(FORGED, email=REPORTER, report_id="m-2")))])
    db = str(tmp_path / "s.sqlite3")
    code, out = run(capsys, "--db", db, "run", "--source", "graph", "--offline")
    assert code == 0
    assert "processed <forged@r>: 1 reports" in out  # kept and sorted like any report
    with SqliteStore(db) as store:
        unverified = {e.key.report_id: e.unverified for e in store.reports()}
    assert unverified["m-1"] is None and unverified["m-2"]
    assert messages_by_ip(capsys, db) == {"192.0.2.10": 20}
