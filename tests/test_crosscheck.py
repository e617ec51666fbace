"""Issue 13: a `policy_evaluated` pass that the record's own auth results do not back is a
contradiction, flagged in the report's errors and not believed (analysis/crosscheck.py)."""

from __future__ import annotations

import glob
import json
import os
from datetime import date
from pathlib import Path

import pytest

from analysis import AggregateReport, Limits, read_reports
from analysis.crosscheck import may_align
from analysis.model import Record
from analysis.rollup import ContentDigest, ledger_key, report_days, rollup_rows
from function_app import cli
from function_app.demo_reports import write_demo_reports
from store.sqlite import SqliteStore
from tests.builders import aggregate_xml, record_xml
from tests.evaluation import load_sources, reports_xml

SAMPLES = Path("/work/shared/samples/real-world")
NOTE = "policy_evaluated contradicts auth_results"

# The reproduction: dkim=pass claimed, while the only signature is SendGrid's own d=.
SENDGRID_ONLY = ("<dkim><domain>sendgrid.net</domain><selector>smtpapi</selector>"
                 "<result>pass</result></dkim>"
                 "<spf><domain>sendgrid.net</domain><scope>mfrom</scope><result>pass</result></spf>")
FORGED = aggregate_xml(record_xml("167.89.115.10", 4000, dkim="pass", spf="fail",
                                  envelope_from="sendgrid.net", auth=SENDGRID_ONLY),
                       org="Forger", email="dmarc@forger.example", report_id="forged-1")


def _dkim(domain: str, result: str = "pass") -> str:
    return (f"<dkim><domain>{domain}</domain><selector>s1</selector>"
            f"<result>{result}</result></dkim>")


def _spf(domain: str, result: str = "pass") -> str:
    return f"<spf><domain>{domain}</domain><scope>mfrom</scope><result>{result}</result></spf>"


def _report(xml: bytes) -> tuple[AggregateReport, list[Record]]:
    """The one report in `xml` and its records, read at once (they stream: the reader closes
    them when it moves on)."""
    for report in read_reports(xml, Limits()):
        assert isinstance(report, AggregateReport)
        return report, list(report.records)
    raise AssertionError("no report")


def _read(xml: bytes) -> tuple[list[Record], list[str]]:
    report, records = _report(xml)
    return records, report.errors


def _notes(errors: list[str]) -> list[str]:
    return [e for e in errors if e.startswith(NOTE)]


# -- through the command line ------------------------------------------------------------------


def test_a_forged_dkim_pass_signed_only_by_sendgrid_is_not_set_up_correctly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "forged.xml").write_bytes(FORGED)
    db = str(tmp_path / "db.sqlite3")
    assert cli.main(["--db", db, "ingest", str(tmp_path / "forged.xml")]) == 0
    assert "1 problems recovered" in capsys.readouterr().out
    assert cli.main(["--db", db, "senders", "--json", "--offline", "--evidence"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (sendgrid,) = [r for r in rows if r["service_key"] == "sendgrid"]
    assert sendgrid["messages"] == 4000
    assert sendgrid["dkim_aligned_pass"] == 0 and sendgrid["dmarc_pass"] == 0
    assert sendgrid["verdict"] != "compliant"
    with SqliteStore(tmp_path / "db.sqlite3") as store:
        (entry,) = list(store.reports())
        (note,) = _notes(list(entry.errors))
    assert "in 1 record(s) (4000 messages)" in note
    assert "DKIM pass with no aligned passing signature in 1" in note
    assert "d=sendgrid.net pass" in note and "header_from example.com" in note


def test_the_forged_report_brings_no_set_up_correctly_card(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMARCBOT_OWNERS", "example.com=ann@example.com")
    folder, outbox = tmp_path / "reports", tmp_path / "outbox"
    folder.mkdir()
    (folder / "forged.xml").write_bytes(FORGED)
    code = cli.main(["--db", str(tmp_path / "db.sqlite3"), "run", "--source", str(folder),
                     "--offline", "--outbox", str(outbox)])
    assert code == 0, capsys.readouterr().err
    (card,) = [json.loads(p.read_text()) for p in outbox.glob("*.json")]
    # still asked about (it did send as the domain), but not as a sender already set up
    assert card["service"] == "sendgrid"
    assert "Set up correctly" not in json.dumps(card)


# -- the rule ----------------------------------------------------------------------------------


def test_an_aligned_subdomain_signature_is_believed_under_relaxed_alignment() -> None:
    records, errors = _read(aggregate_xml(record_xml(
        auth=_dkim("mail.example.com") + _spf("bounce.example.com"))))
    assert (records[0].dkim, records[0].spf) == ("pass", "pass")
    assert errors == []


def test_siblings_and_the_parent_of_header_from_align_relaxed() -> None:
    records, errors = _read(aggregate_xml(record_xml(
        header_from="news.example.com", auth=_dkim("mail.example.com") + _spf("example.com"))))
    assert (records[0].dkim, records[0].spf) == ("pass", "pass")
    assert errors == []


def test_strict_dkim_alignment_flags_a_subdomain_signature() -> None:
    records, errors = _read(aggregate_xml(
        record_xml(auth=_dkim("mail.example.com") + _spf("example.com")),
        policy="<adkim>s</adkim><p>reject</p>"))
    assert (records[0].dkim, records[0].spf) == ("fail", "pass")
    (note,) = _notes(errors)
    assert "DKIM pass with no aligned passing signature in 1" in note
    assert "SPF pass with no aligned passing SPF result in 0" in note


def test_strict_spf_alignment_flags_a_subdomain_return_path() -> None:
    records, errors = _read(aggregate_xml(
        record_xml(auth=_dkim("example.com") + _spf("bounce.example.com")),
        policy="<aspf>s</aspf><p>reject</p>"))
    assert (records[0].dkim, records[0].spf) == ("pass", "fail")
    (note,) = _notes(errors)
    assert "SPF pass with no aligned passing SPF result in 1" in note


def test_an_spf_pass_for_someone_elses_return_path_is_a_contradiction() -> None:
    records, errors = _read(aggregate_xml(record_xml(
        "198.51.100.7", 30, dkim="fail", auth=_dkim("example.com", "fail") + _spf("mailer.test"))))
    assert (records[0].dkim, records[0].spf) == ("fail", "fail")
    (note,) = _notes(errors)
    assert "(30 messages)" in note and "SPF (mailer.test pass)" in note


def test_a_failing_aligned_signature_does_not_back_a_dkim_pass() -> None:
    records, errors = _read(aggregate_xml(record_xml(
        auth=_dkim("example.com", "fail") + _dkim("esp.test") + _spf("example.com"))))
    assert (records[0].dkim, records[0].spf) == ("fail", "pass")
    assert len(_notes(errors)) == 1


def test_no_auth_results_to_check_against_is_unknown_not_a_contradiction() -> None:
    # Old reporters (a 2012 AOL report) give no DKIM result; Zoho's HELO results no domain.
    helo = "<spf><scope>helo</scope><result>pass</result></spf>"
    records, errors = _read(aggregate_xml(
        record_xml(auth="") + record_xml("192.0.2.2", auth=helo)))
    assert [(r.dkim, r.spf) for r in records] == [("pass", "pass"), ("pass", "pass")]
    assert errors == []


def test_one_note_per_report_however_many_records_contradict() -> None:
    forged = "".join(record_xml(f"192.0.2.{n}", 2, auth=_dkim("esp.test") + _spf("esp.test"))
                     for n in range(1, 201))
    records, errors = _read(aggregate_xml(forged + record_xml("198.51.100.1", 5)))
    assert sum(r.dkim == "pass" for r in records) == 1  # only the genuine record's
    assert len(errors) == 1
    assert errors[0].startswith(f"{NOTE} in 200 record(s) (400 messages): a DKIM pass with no "
                                "aligned passing signature in 200, an SPF pass with no aligned "
                                "passing SPF result in 200")


def test_the_rollup_key_holds_what_the_auth_results_support() -> None:
    report, records = _report(FORGED)
    days = report_days(report.begin, report.end)
    rows = [row for record in records for row in rollup_rows(report, record, days)]
    ((key, messages),) = rows
    assert messages == 4000 and not key.dkim_aligned and not key.spf_aligned
    assert key.dkim == (("sendgrid.net", "smtpapi", "pass"),)  # the evidence itself is kept


def test_a_resent_contradicting_report_is_a_duplicate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "forged.xml").write_bytes(FORGED)
    db = str(tmp_path / "db.sqlite3")
    for _ in range(2):
        assert cli.main(["--db", db, "ingest", str(tmp_path / "forged.xml")]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first.endswith(": stored (1 problems recovered, see `dmarcbot parse`)")
    assert ": duplicate" in second and "conflict" not in second


def test_a_resent_contradicting_report_has_the_same_content_digest() -> None:
    digests = []
    for _ in range(2):
        report, records = _report(FORGED)
        digest = ContentDigest(ledger_key(report))
        for record in records:
            digest.add_record(record)
        digests.append(digest.hexdigest())
    assert digests[0] == digests[1]


@pytest.mark.parametrize(("name", "header_from", "strict", "expected"), [
    ("example.com", "example.com", True, True),
    ("EXAMPLE.com.", "example.com", True, True),
    ("mail.example.com", "example.com", True, False),
    ("mail.example.com", "example.com", False, True),
    ("example.com", "a.b.example.com", False, True),
    ("a.example.co.uk", "b.example.co.uk", False, True),
    ("mail.bmw", "bmw", False, True),  # one is the other's ancestor: a one-label org domain
    ("sendgrid.net", "example.com", False, False),
    ("example.com.evil.test", "example.com", False, False),
    ("notexample.com", "example.com", False, False),
    ("xn--bcher-kva.example", "bücher.example", True, True),  # A-label and U-label
    ("mail.xn--bcher-kva.example", "BÜCHER.example", False, True),
    ("example.com", "user@example.com", True, True),  # an address stands for its domain
    ("", "example.com", False, False),
])
def test_may_align(name: str, header_from: str, strict: bool, expected: bool) -> None:
    assert may_align(name, header_from, strict) is expected


# -- genuine data: no contradiction ------------------------------------------------------------


def _contradictions(inputs: list[Path] | list[bytes], limits: Limits | None = None
                    ) -> tuple[int, int, int]:
    """(reports, records, contradiction notes) over inputs, each report's records read at once
    (they stream: the next report closes them)."""
    reports = records = notes = 0
    for data in inputs:
        for report in read_reports(data, limits or Limits()):
            if isinstance(report, AggregateReport):
                reports += 1
                records += sum(1 for _ in report.records)
                notes += len(_notes(report.errors))
    return reports, records, notes


def test_no_real_world_sample_is_contradicted() -> None:
    paths = [Path(p) for p in sorted(glob.glob(str(SAMPLES / "**" / "*"), recursive=True))
             if os.path.isfile(p)]
    # The RFC 9990 sample is dated 1979: the date limit would refuse it, the check need not.
    reports, records, notes = _contradictions(paths, Limits(earliest_report_year=1970))
    assert reports >= 12 and records >= 2000
    assert notes == 0


def test_no_demo_report_is_contradicted(tmp_path: Path) -> None:
    paths = write_demo_reports(tmp_path, last_day=date(2026, 11, 27))
    reports, records, notes = _contradictions(paths)
    assert reports > 40 and records > 300 and notes == 0


def test_no_evaluation_report_is_contradicted() -> None:
    reports, records, notes = _contradictions(reports_xml(load_sources()))
    assert reports > 0 and records > 200 and notes == 0
