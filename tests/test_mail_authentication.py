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
GATEWAY = "mx.contoso.example"  # the receiving server the tests' deployment trusts


def stamp(domain: str, dmarc: str = "pass") -> str:
    """The trusted gateway's RFC 8601 header for mail from `domain`."""
    return (f"{GATEWAY}; spf={dmarc} smtp.mailfrom={domain}; dkim={dmarc} header.d={domain}; "
            f"dmarc={dmarc} (p=REJECT) header.from={domain}")


@pytest.fixture(autouse=True)
def trusted_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMARCBOT_TRUSTED_AUTHSERV_IDS", GATEWAY)
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
    genuine = mail(tmp_path, "genuine.eml", GENUINE, "g-1", stamp("receiver.example"))
    # the forger's own header sits below the one the gateway added on arrival
    forged = mail(tmp_path, "forged.eml", FORGED, "f-1", stamp("receiver.example", "fail"),
                  f"{GATEWAY}; dmarc=pass header.from=receiver.example")
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
    path = mail(tmp_path, "other.eml", FORGED, "f-2", stamp("evil.example"))
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
    header = stamp("receiver.example")
    db = str(tmp_path / "s.sqlite3")
    monkeypatch.setenv("DMARCBOT_TRUSTED_AUTHSERV_IDS", "")
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
    first = mail(tmp_path, "a.eml", GENUINE, "g-4", stamp("receiver.example", "fail"))
    again = mail(tmp_path, "b.eml", GENUINE, "g-4", stamp("receiver.example"))
    run(capsys, "--db", db, "ingest", str(first))
    assert messages_by_ip(capsys, db) == {}
    code, out = run(capsys, "--db", db, "ingest", str(again))
    assert code == 0 and out.strip().endswith("duplicate")
    assert messages_by_ip(capsys, db) == {"192.0.2.10": 20}


def test_a_forged_copy_of_a_believed_report_s_key_does_not_unseat_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.sqlite3")
    forged = mail(tmp_path, "f.eml", FORGED, "g-5")  # no header at all, same key, first
    genuine = mail(tmp_path, "g.eml", GENUINE, "g-5", stamp("receiver.example"))
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


def test_exchange_online_s_header_counts_only_on_top_and_only_from_the_mailbox(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = exchange_stamp("google.com")
    assert judge(mail_evidence([("Authentication-Results", ok)]),
                 "noreply-dmarc-support@google.com", exchange_mailbox=True).verified
    below = mail_evidence([("Authentication-Results", exchange_stamp("google.com", "fail")),
                           ("Authentication-Results", ok)])
    assert not judge(below, "noreply-dmarc-support@google.com", exchange_mailbox=True).verified
    # in a file, from any server, anyone can have written that form: it proves nothing
    assert not judge(mail_evidence([("Authentication-Results", ok)]),
                     "noreply-dmarc-support@google.com").verified
    db = str(tmp_path / "s.sqlite3")
    path = mail(tmp_path, "exo.eml", GENUINE, "g-6", exchange_stamp("receiver.example"))
    code, out = run(capsys, "--db", db, "ingest", str(path))
    assert code == 0 and "unverified" in out


def test_the_reporter_may_be_under_the_domain_that_passed_not_above_it() -> None:
    def evidence(domain: str) -> Any:
        return mail_evidence([("Authentication-Results", stamp(domain))])

    assert judge(evidence("google.com"), "x@dmarc.google.com", [GATEWAY]).verified
    assert not judge(evidence("mail.google.com"), "x@google.com", [GATEWAY]).verified
    assert not judge(evidence("google.com"), "x@google.com.evil.example", [GATEWAY]).verified
    assert not judge(evidence("google.com"), None, [GATEWAY]).verified  # nothing to tie it to


@pytest.mark.parametrize("header", [
    # a comment that hides a pass (and one that escapes its parenthesis)
    f"{GATEWAY}; spf=fail (x; dmarc=pass header.from=google.com) smtp.mailfrom=evil.example; "
    "dmarc=fail header.from=google.com",
    f"{GATEWAY}; spf=fail (a \\) dmarc=pass header.from=google.com (x) smtp.mailfrom=e.example; "
    "dmarc=fail header.from=google.com",
    # another method's value echoing a pass; the real DMARC result says fail
    f"{GATEWAY}; dkim=pass header.d=evil.example dmarc=pass header.from=google.com; "
    "dmarc=fail header.from=google.com",
    # two DMARC results, or two header.from in one: ambiguous, not believed
    f"{GATEWAY}; dmarc=pass header.from=google.com; dmarc=fail header.from=google.com",
    f"{GATEWAY}; dmarc=pass header.from=evil.example header.from=google.com",
    # unbalanced: not a header to read at all
    f"{GATEWAY}; dmarc=pass header.from=google.com (",
    f'{GATEWAY}; spf=pass smtp.mailfrom="a;b; dmarc=pass header.from=google.com',
])
def test_a_header_that_only_looks_like_a_pass_is_not_one(header: str) -> None:
    assert not judge(mail_evidence([("Authentication-Results", header)]), "x@google.com",
                     [GATEWAY]).verified


def test_comments_quotes_and_folding_are_read_as_rfc_8601_has_them() -> None:
    folded = (f"{GATEWAY};\r\n dkim=pass (good (nested) signature) header.d=google.com;\r\n\t"
              'spf=pass smtp.mailfrom="x;y"@google.com; dmarc=pass (p=REJECT) '
              "header.from=Google.COM")
    assert judge(mail_evidence([("Authentication-Results", folded)]), "x@google.com",
                 [GATEWAY]).verified


def test_no_reporter_e_mail_is_never_believed_whatever_is_trusted(
        tmp_path: Path, table_store: Any) -> None:
    xml = aggregate_xml(FORGED, email="", report_id="n-1")
    with SqliteStore(tmp_path / "s.sqlite3") as store:
        for found in read_reports(xml):
            store.add_report(found, unverified="no reporter e-mail")
        assert list(store.rollups(trusted_reporters=["other.example"])) == []
    for found in read_reports(xml):
        table_store.add_report(found, unverified="no reporter e-mail")
    assert list(table_store.rollups(trusted_reporters=["other.example"])) == []


def test_a_real_forwarded_google_report_that_failed_dmarc_is_unverified(samples: Path) -> None:
    path = samples / "aggregate" / "Report domain- borschow.com Submitter- google.com " \
                                   "Report-ID- 949348866075514174.eml"
    (report,) = [r for r in read_reports(path)]
    assert report.mail is not None
    verdict = judge(report.mail, report.reporter.email, exchange_mailbox=True)
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
