"""Every wrapping real receivers use, recognised by its bytes alone."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from analysis import (
    AggregateReport,
    CorruptInput,
    NotAReport,
    TlsReport,
    read_reports,
)
from tests.builders import (
    aggregate_xml,
    forwarded,
    gzipped,
    record_xml,
    report_email,
    zipped,
)
from tests.conftest import read_all

REPORT = aggregate_xml(record_xml("192.0.2.7", 5) + record_xml("2001:db8::1", 2))
TLS = (b'{"organization-name": "Receiver", "report-id": "t-1", "date-range": '
       b'{"start-datetime": "2025-11-28T00:00:00", "end-datetime": "2025-11-28T23:59:59Z"}, '
       b'"policies": [{"policy": {"policy-type": "sts", "policy-domain": "example.com", '
       b'"mx-host": "mx.example.com"}, "summary": {"total-successful-session-count": 9, '
       b'"total-failure-session-count": 1}}]}')


def counts(data: bytes | Path, **kw: object) -> list[tuple[str, int]]:
    out = []
    for report, records in read_all(data, **kw):
        assert isinstance(report, AggregateReport)
        out.append((report.report_id, sum(r.count for r in records)))
    return out


@pytest.mark.parametrize("wrap", [
    pytest.param(lambda b: b, id="raw"),
    pytest.param(gzipped, id="gzip"),
    pytest.param(lambda b: gzipped(b) + b"\r\n\x00stray trailer", id="gzip+stray-bytes"),
    pytest.param(lambda b: gzipped(b[:100]) + gzipped(b[100:]), id="multi-member-gzip"),
    pytest.param(lambda b: zipped(("r.xml", b)), id="zip"),
    pytest.param(lambda b: b"\xef\xbb\xbf" + b, id="utf8-bom"),
    pytest.param(lambda b: report_email(gzipped(b)), id="eml-gzip-base64"),
    pytest.param(lambda b: report_email(zipped(("r.xml", b)), content_type="application/zip",
                                        filename="r.zip"), id="eml-zip"),
    pytest.param(lambda b: report_email(b, content_type="text/xml", cte="quoted-printable",
                                        filename="r.xml"), id="eml-xml-qp"),
    pytest.param(lambda b: report_email(gzipped(b), content_type="application/octet-stream",
                                        filename="report.bin"), id="eml-octet-stream"),
    pytest.param(lambda b: report_email(gzipped(b), filename="x.zip",
                                        content_type="application/zip"), id="eml-wrong-type"),
    pytest.param(lambda b: forwarded(report_email(gzipped(b))), id="forwarded-rfc822"),
])
def test_wrappings_give_the_same_report(wrap) -> None:  # type: ignore[no-untyped-def]
    assert counts(wrap(REPORT)) == [("r-1", 7)]


def test_report_as_whole_message_body() -> None:
    body = (b"From: noreply@receiver.example\r\nTo: dmarc@example.com\r\nSubject: report\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: application/zip\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    import base64

    data = body + base64.encodebytes(zipped(("google.com!example.com!1!2.xml", REPORT)))
    assert counts(data) == [("r-1", 7)]


def test_zip_with_several_reports_and_a_readme() -> None:
    other = aggregate_xml(record_xml(count=3), report_id="r-2")
    data = zipped(("a.xml", REPORT), ("README.txt", b"hello"), ("b.xml.gz", gzipped(other)),
                  ("tls.json", TLS))
    reports = [r for r, _ in read_all(data)]
    assert [r.kind for r in reports] == ["aggregate", "aggregate", "tls"]
    assert reports[1].source == "<bytes> > b.xml.gz"


def test_mbox_with_reports_and_ordinary_mail(tmp_path: Path) -> None:
    plain = b"From: a@example.com\nSubject: hello\n\nFrom the desk of nobody.\n"
    msgs = [report_email(gzipped(REPORT)), plain,
            report_email(gzipped(aggregate_xml(record_xml(count=4), report_id="<r-2@rcv>")))]
    mbox = b"".join(b"From MAILER-DAEMON Fri Nov 28 00:00:00 2025\n" + m.replace(b"\r\n", b"\n")
                    + b"\n" for m in msgs)
    path = tmp_path / "reports.mbox"
    path.write_bytes(mbox)
    assert counts(path) == [("r-1", 7), ("r-2", 4)]


def test_folder_of_mixed_inputs(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.xml").write_bytes(REPORT)
    (tmp_path / "sub" / "b.gz").write_bytes(gzipped(aggregate_xml(report_id="r-2")))
    (tmp_path / ".hidden").write_bytes(b"ignored")
    assert counts(tmp_path) == [("r-1", 7), ("r-2", 1)]


def test_tls_report_plain_and_gzip_and_in_email() -> None:
    for data in (TLS, gzipped(TLS), report_email(gzipped(TLS), filename="t.json.gz",
                                                 content_type="application/tlsrpt+gzip")):
        ((report, _),) = read_all(data)
        assert isinstance(report, TlsReport)
        assert report.policies[0].mx_host == ("mx.example.com",)  # string form accepted
        assert report.start_datetime.tzinfo is not None  # zone-less means UTC
        assert report.policies[0].total_successful_session_count == 9


@pytest.mark.parametrize(("data", "error", "words"), [
    (b"", NotAReport, "not a report"),
    (b"unused", NotAReport, "not a report"),  # Yahoo/AOL's gzip of the word "unused"
    (gzipped(b"unused"), NotAReport, "not a report"),
    (b"<html><body>hi</body></html>", NotAReport, "not an aggregate <feedback>"),
    (b'{"hello": 1}', NotAReport, "not an SMTP TLS report"),
    (b"{not json", CorruptInput, "JSON cannot be read"),
    (gzipped(REPORT)[:-30], CorruptInput, "gzip"),
    (b"PK\x03\x04" + b"\x00" * 40, CorruptInput, "zip"),
    (report_email(b"just text", content_type="text/plain", filename="a.txt"), NotAReport,
     "no DMARC or TLS report"),
    (aggregate_xml(report_id=""), NotAReport, "report_id"),
])
def test_rejections_are_specific_and_one_line(data: bytes, error: type, words: str) -> None:
    with pytest.raises(error) as info:
        read_all(data)
    message = str(info.value)
    assert words in message and "\n" not in message
    assert message.startswith("<bytes>")


def test_missing_file_is_rejected_by_name(tmp_path: Path) -> None:
    with pytest.raises(NotAReport, match=r"nope\.xml: cannot be opened"):
        read_all(tmp_path / "nope.xml")


def test_gzip_of_gzip_is_unwrapped() -> None:
    assert counts(gzip.compress(gzipped(REPORT))) == [("r-1", 7)]


def test_named_bytes_keep_their_name() -> None:
    (report,) = [r for r, _ in read_all(REPORT)]
    assert report.source == "<bytes>"
    named = list(read_reports(REPORT, name="mail 42 > r.xml"))
    assert named[0].source == "mail 42 > r.xml"


def test_tls_report_with_odd_failure_details_is_read() -> None:
    odd = TLS.replace(b'"summary"', b'"failure-details": 5, "summary"')
    ((report, _),) = read_all(odd)
    assert isinstance(report, TlsReport) and report.policies[0].failure_details == ()


def test_zip_member_count_is_checked_before_the_directory_is_read() -> None:
    from analysis import LimitExceeded, Limits

    many = zipped(*[(f"m{i}.txt", b"x") for i in range(300)])
    with pytest.raises(LimitExceeded, match="zip declares 300 members"):
        read_all(many, Limits(max_members=10))


def test_a_damaged_message_in_an_mbox_does_not_hide_the_next_report(tmp_path: Path) -> None:
    broken = report_email(b"PK\x03\x04" + b"\x00" * 60, filename="holiday.zip",
                          content_type="application/zip")
    msgs = [broken, report_email(gzipped(REPORT))]
    mbox = b"".join(b"From MAILER-DAEMON Fri Nov 28 00:00:00 2025\n" + m.replace(b"\r\n", b"\n")
                    + b"\n" for m in msgs)
    path = tmp_path / "box.mbox"
    path.write_bytes(mbox)
    assert counts(path) == [("r-1", 7)]


def test_an_e_mail_reads_its_report_even_beside_a_damaged_attachment() -> None:
    from email import message_from_bytes, policy

    msg = message_from_bytes(report_email(gzipped(REPORT)), policy=policy.default)
    msg.add_attachment(b"PK\x03\x04" + b"\x00" * 60, maintype="application", subtype="zip",
                       filename="holiday.zip")
    messages = []
    with pytest.raises(CorruptInput):  # the damage is still reported...
        for report in read_reports(msg.as_bytes()):
            assert isinstance(report, AggregateReport)
            messages.append(sum(r.count for r in report.records))
    assert messages == [7]  # ...but only after the report was read
