"""Issue 15, "Reading reports": what real reporters leave out or add is read, and `errors` says
what a report lacks. Every sample here is written for this test (none is copied from elsewhere).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from analysis import AggregateReport, Limits, read_reports
from analysis.model import FailureReport, Record, TlsReport
from function_app import cli
from tests.builders import aggregate_xml, record_xml

MISSING_NOTE = "policy_evaluated incomplete in "


def _aggregate(data: bytes) -> tuple[AggregateReport, list[Record]]:
    """The one report in `data` and its records, read before the reader moves on."""
    for report in read_reports(data, Limits(), name="sample"):
        assert isinstance(report, AggregateReport)
        return report, list(report.records)
    raise AssertionError("no report")


def _parse_cli(tmp_path: Path, name: str, data: bytes,
               capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    path = tmp_path / name
    path.write_bytes(data)
    assert cli.main(["parse", str(path)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _missing_notes(errors: list[str]) -> list[str]:
    return [e for e in errors if e.startswith(MISSING_NOTE)]


# -- 1. policy_evaluated with only a disposition (AOL, 2012) ----------------------------------

# Written in the style of AOL's 2012 reports: draft schema, no <version>, policy_evaluated holding
# only <disposition>, DKIM results without a selector, SPF results without a scope.
AOL_2012 = b"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>AOL</org_name>
    <email>postmaster@aol.example</email>
    <report_id>example.com_1343865599</report_id>
    <date_range><begin>1343779200</begin><end>1343865599</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>example.com</domain><adkim>r</adkim><aspf>s</aspf><p>none</p><sp>none</sp>
    <pct>100</pct>
  </policy_published>
  <record>
    <row><source_ip>192.0.2.10</source_ip><count>12</count>
      <policy_evaluated><disposition>none</disposition></policy_evaluated></row>
    <identifiers><header_from>example.com</header_from></identifiers>
    <auth_results>
      <dkim><domain>mail.example.com</domain><result>pass</result></dkim>
      <spf><domain>example.com</domain><result>pass</result></spf>
    </auth_results>
  </record>
  <record>
    <row><source_ip>198.51.100.7</source_ip><count>3</count>
      <policy_evaluated><disposition>none</disposition></policy_evaluated></row>
    <identifiers><header_from>example.com</header_from></identifiers>
    <auth_results>
      <dkim><domain>bulkmailer.example</domain><result>pass</result></dkim>
      <spf><domain>bounces.example.com</domain><result>pass</result></spf>
    </auth_results>
  </record>
  <record>
    <row><source_ip>203.0.113.9</source_ip><count>1</count>
      <policy_evaluated><disposition>none</disposition></policy_evaluated></row>
    <identifiers><header_from>example.com</header_from></identifiers>
    <auth_results>
      <dkim><domain>example.com</domain><result>fail</result></dkim>
      <spf><domain>example.com</domain><result>softfail</result></spf>
    </auth_results>
  </record>
</feedback>
"""


def test_missing_policy_evaluated_results_are_derived_from_aligned_auth_results() -> None:
    report, records = _aggregate(AOL_2012)
    got = [(r.source_ip, r.disposition, r.dkim, r.spf) for r in records]
    assert got == [
        # relaxed DKIM: mail.example.com aligns; strict SPF: example.com is the header_from
        ("192.0.2.10", "none", "pass", "pass"),
        # a vendor's own d= does not align; bounces.example.com is not example.com under aspf=s
        ("198.51.100.7", "none", "fail", "fail"),
        # nothing passed
        ("203.0.113.9", "none", "fail", "fail"),
    ]
    assert [r.defaulted for r in records] == [("dkim", "spf")] * 3
    (note,) = _missing_notes(report.errors)
    assert report.errors == [note]
    assert "3 record(s) (16 messages)" in note
    assert "RFC 7489 Appendix C" in note and "derived from auth_results" in note
    assert "dkim missing in 3" in note and "spf missing in 3" in note


def test_the_aol_sender_shows_its_dmarc_pass_through_the_cli(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (out,) = _parse_cli(tmp_path, "aol.xml", AOL_2012, capsys)
    first = out["records"][0]
    assert (first["dkim"], first["spf"]) == ("pass", "pass")
    assert [r["defaulted"] for r in out["records"]] == [["dkim", "spf"]] * 3
    assert len(_missing_notes(out["errors"])) == 1


def test_a_derived_result_needs_a_domain_and_the_mail_from_scope() -> None:
    """A passing SPF result without a domain cannot be shown aligned; a HELO pass stands for
    SPF only when the message had no envelope sender (RFC 7489 section 3.1.2)."""
    no_domain = "<spf><result>pass</result></spf>"
    helo = ("<spf><domain>example.com</domain><scope>helo</scope><result>pass</result></spf>")
    evaluated = "<policy_evaluated><disposition>none</disposition></policy_evaluated>"
    records = "".join(
        record_xml(ip, auth=auth, envelope_from=envelope).replace(
            "<policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf>"
            "</policy_evaluated>", evaluated)
        for ip, auth, envelope in (("192.0.2.1", no_domain, "example.com"),
                                   ("192.0.2.2", helo, "example.com"),
                                   ("192.0.2.3", helo, None)))
    _, got = _aggregate(aggregate_xml(records))
    assert [(r.dkim, r.spf) for r in got] == [("fail", "fail"), ("fail", "fail"),
                                              ("fail", "pass")]


def test_given_results_are_not_marked_or_noted() -> None:
    report, (record,) = _aggregate(aggregate_xml(record_xml(dkim="fail", spf="pass")))
    assert report.errors == []
    assert (record.dkim, record.spf, record.defaulted) == ("fail", "pass", ())


# -- 2. every policy_evaluated field missing ---------------------------------------------------

def _without_evaluated(xml: str, replacement: str) -> str:
    start, end = xml.index("<policy_evaluated>"), xml.index("</policy_evaluated>")
    return xml[:start] + replacement + xml[end + len("</policy_evaluated>"):]


@pytest.mark.parametrize("replacement", ["<policy_evaluated></policy_evaluated>",
                                         "<policy_evaluated><dkim/><spf> </spf></policy_evaluated>",
                                         ""], ids=["empty", "empty-fields", "absent"])
def test_a_record_with_no_policy_evaluated_fields_is_derived_and_noted(replacement: str) -> None:
    records = (_without_evaluated(record_xml("192.0.2.1", 5), replacement)
               + record_xml("192.0.2.2", 2, dkim="fail", spf="fail"))
    report, got = _aggregate(aggregate_xml(records))
    assert [(r.disposition, r.dkim, r.spf) for r in got] == [
        ("none", "pass", "pass"), ("none", "fail", "fail")]
    assert [r.defaulted for r in got] == [("disposition", "dkim", "spf"), ()]
    (note,) = _missing_notes(report.errors)
    assert report.errors == [note]
    assert "1 record(s) (5 messages)" in note and "disposition missing in 1" in note
    assert "read as none" in note


def test_a_record_with_no_policy_evaluated_through_the_cli(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xml = aggregate_xml(_without_evaluated(record_xml(auth=(
        "<dkim><domain>other.example</domain><selector>s</selector><result>pass</result></dkim>"
    )), ""))
    (out,) = _parse_cli(tmp_path, "bare.xml", xml, capsys)
    (record,) = out["records"]
    assert (record["disposition"], record["dkim"], record["spf"]) == ("none", "fail", "fail")
    assert record["defaulted"] == ["disposition", "dkim", "spf"]
    (note,) = _missing_notes(out["errors"])
    assert "disposition missing in 1" in note


# -- 3. comments in ARF address fields ---------------------------------------------------------

def _arf(fields: str) -> bytes:
    return (
        "From: OpenDMARC Filter <opendmarc@receiver.example>\r\nTo: ruf@example.com\r\n"
        "Subject: FW: Example subject\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nThis is an authentication failure report.\r\n"
        "--b1\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: auth-failure\r\nVersion: 1\r\nUser-Agent: OpenDMARC-Filter/1.3.2\r\n"
        "Auth-Failure: dmarc\r\nAuthentication-Results: receiver.example; dmarc=fail "
        "header.from=example.com\r\n" + fields +
        "\r\n--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        "From: someone@example.com\r\nSubject: hello\r\n\r\n--b1--\r\n"
    ).encode()


OPENDMARC = _arf("Original-Envelope-Id: 4Y2abc\r\n"
                 "Original-Mail-From: <bounce@example.com> (envelope sender)\r\n"
                 "Source-IP: 192.0.2.135 (sender.example.org)\r\n"
                 "Reported-Domain: example.com (the From domain)\r\n"
                 "DKIM-Domain: (signer) example.com\r\n")


def _failure(data: bytes) -> FailureReport:
    (report,) = list(read_reports(data, Limits(), name="ruf.eml"))
    assert isinstance(report, FailureReport)
    return report


def test_arf_address_fields_lose_their_comments() -> None:
    report = _failure(OPENDMARC)
    assert report.source_ip == "192.0.2.135"
    assert report.original_mail_from == "<bounce@example.com>"
    assert report.reported_domain == "example.com"
    assert report.dkim_domain == "example.com"
    assert report.original_envelope_id == "4Y2abc"
    assert report.errors == []
    assert "sender.example.org" not in repr(report)


def test_arf_source_ip_through_the_cli(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    (out,) = _parse_cli(tmp_path, "ruf.eml", OPENDMARC, capsys)
    assert out["source_ip"] == "192.0.2.135" and out["errors"] == []


@pytest.mark.parametrize(("written", "read", "noted"), [
    ("2001:DB8:0:0::1 (v6.example)", "2001:db8::1", False),
    ("(before) 192.0.2.1 (after (nested))", "192.0.2.1", False),
    ("192.0.2.300 (bad.example)", None, True),
    ("192.0.2.1 (unclosed", None, True),
])
def test_arf_source_ip_is_validated(written: str, read: str | None, noted: bool) -> None:
    report = _failure(_arf(f"Source-IP: {written}\r\n"))
    assert report.source_ip == read
    assert [e for e in report.errors if e.startswith("Source-IP")] == (
        [report.errors[0]] if noted else [])


def test_a_quoted_local_part_keeps_its_parentheses() -> None:
    report = _failure(_arf('Original-Mail-From: <"a(b)c"@example.com> (comment)\r\n'))
    assert report.original_mail_from == '<"a(b)c"@example.com>'


# -- 4. a zip member without a name -------------------------------------------------------------

def _zip_with_unnamed_member(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # zipfile's writestr refuses an empty name given as a string, not as a ZipInfo
        archive.writestr(zipfile.ZipInfo(""), data, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def test_a_zip_member_without_a_name_is_read() -> None:
    data = _zip_with_unnamed_member(aggregate_xml(record_xml(count=7)))
    report, records = _aggregate(data)
    assert report.source == "sample > <unnamed member>"
    assert [r.count for r in records] == [7]


def test_a_zip_member_without_a_name_through_the_cli(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _zip_with_unnamed_member(aggregate_xml(record_xml(count=7)))
    (out,) = _parse_cli(tmp_path, "report.zip", data, capsys)
    assert out["source"].endswith("report.zip > <unnamed member>")
    assert out["records"][0]["count"] == 7


# -- 5. what a report lacks is named ------------------------------------------------------------

TLS_NO_DOMAIN = json.dumps({
    "organization-name": "Receiver", "report-id": "t-15", "contact-info": "tls@receiver.example",
    "date-range": {"start-datetime": "2025-11-28T00:00:00Z",
                   "end-datetime": "2025-11-28T23:59:59Z"},
    "policies": [{"policy": {"policy-type": "no-policy-found"},
                  "summary": {"total-successful-session-count": 4,
                              "total-failure-session-count": 0}}],
}).encode()


def test_a_tls_report_without_a_policy_domain_says_so() -> None:
    (report,) = list(read_reports(TLS_NO_DOMAIN, Limits(), name="tls.json"))
    assert isinstance(report, TlsReport)
    assert report.policies[0].policy_domain == ""
    assert report.errors == ["policy 1 has no policy-domain (RFC 8460 requires one)"]


def test_a_tls_report_without_a_policy_domain_through_the_cli(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (out,) = _parse_cli(tmp_path, "tls.json", TLS_NO_DOMAIN, capsys)
    assert [e for e in out["errors"] if "policy-domain" in e]


def test_an_aggregate_report_without_a_reporter_email_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xml = aggregate_xml().replace(b"<email>dmarc@receiver.example</email>", b"")
    report, _ = _aggregate(xml)
    assert report.reporter.email is None
    assert report.errors == ["report_metadata/email is missing (RFC 7489 Appendix C requires "
                             "the reporter's e-mail)"]
    (out,) = _parse_cli(tmp_path, "noemail.xml", xml, capsys)
    assert out["errors"] == report.errors


@pytest.mark.parametrize("field", ["organization-name", "contact-info"])
def test_a_tls_report_that_does_not_say_who_sent_it_says_so(field: str) -> None:
    doc = json.loads(TLS_NO_DOMAIN)
    doc["policies"][0]["policy"]["policy-domain"] = "example.com"
    del doc[field]
    (report,) = list(read_reports(json.dumps(doc).encode(), Limits(), name="tls.json"))
    assert isinstance(report, TlsReport)
    assert report.errors == [f"TLS report has no {field} (RFC 8460 requires one)"]
