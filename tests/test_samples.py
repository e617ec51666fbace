"""Every real-world sample parses (or is refused for its documented reason); none crashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import (
    AggregateReport,
    FailureReport,
    LimitExceeded,
    TlsReport,
    iter_files,
    read_reports,
)
from tests.conftest import REFUSED_SAMPLES, read_all

# file -> (kind, schema or format, policy/reported domain, records, messages, errors)
EXPECTED = {
    "aggregate/!large-example.com!1711897200!1711983600.xml":
        ("aggregate", "draft", "example.com", 2286, 2286, 1),  # empty org_name: e-mail's domain
    "aggregate/Report domain- borschow.com Submitter- google.com Report-ID- "
    "949348866075514174.eml": ("aggregate", "draft", "borschow.com", 1, 1, 0),
    "aggregate/empty_reason.xml": ("aggregate", "rfc7489", "example.com", 1, 2, 0),
    "aggregate/estadocuenta1.infonacot.gob.mx!example.com!1536853302!1536939702!2940.xml.zip":
        ("aggregate", "draft", "example.com", 1, 1, 0),
    "aggregate/example.net!example.com!1529366400!1529452799.xml":
        ("aggregate", "rfc7489", "example.com", 1, 1, 0),
    "aggregate/fastmail.com!example.com!1516060800!1516147199!102675056.xml.gz":
        ("aggregate", "rfc7489", "indemed.com", 1, 1, 0),
    # recovered; the damage took its e-mail, so that is missing too (issue 15)
    "aggregate/invalid_xml.xml": ("aggregate", "draft", "example.com", 1, 1, 5),
    "aggregate/nice-input.xml": ("aggregate", "draft", "example.com", 20, 3047, 0),
    "aggregate/nice-input.xml.gz": ("aggregate", "draft", "example.com", 20, 3047, 0),
    "aggregate/nice-input.xml.zip": ("aggregate", "draft", "example.com", 20, 3047, 0),
    "aggregate/old_draft_from_wiki.xml": ("aggregate", "draft", "example.com", 1, 2, 0),
    "aggregate/protection.outlook.com!example.com!1711756800!1711843200.xml":
        ("aggregate", "rfc7489", "example.com", 1, 1, 0),
    "failure/dmarc_ruf_report_linkedin.eml": ("failure", "arf", "example.com", 1, 1, 0),
    "failure/exim_plain_text_only_no_arf_part.eml": ("failure", "text", "example.com", 1, 1, 0),
    "tls/google.com_smtp_tls_report.eml": ("tls", None, "cardinalhealth.ca", 1, 48, 0),
    "tls/rfc8460.json": ("tls", None, "company-y.example", 1, 5629, 0),
}


def _summary(path: Path) -> tuple[object, ...]:
    ((report, records),) = read_all(path)  # each sample holds exactly one report
    if isinstance(report, AggregateReport):
        return ("aggregate", report.schema, report.policy.domain, len(records),
                sum(r.count for r in records), len(report.errors))
    if isinstance(report, FailureReport):
        return ("failure", report.format, report.reported_domain, 1, 1, len(report.errors))
    assert isinstance(report, TlsReport)
    sessions = sum(p.total_successful_session_count + p.total_failure_session_count
                   for p in report.policies)
    return ("tls", None, report.policies[0].policy_domain, len(report.policies), sessions,
            len(report.errors))


def test_every_sample_is_listed(samples: Path) -> None:
    found = {str(p.relative_to(samples)) for p in iter_files([samples])}
    assert found == set(EXPECTED) | set(REFUSED_SAMPLES)
    assert not set(EXPECTED) & set(REFUSED_SAMPLES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_reads_as_expected(samples: Path, name: str) -> None:
    assert _summary(samples / name) == EXPECTED[name]


def test_nice_input_is_identical_raw_gzip_and_zip(samples: Path) -> None:
    def records(name: str) -> list[object]:
        ((report, records),) = read_all(samples / "aggregate" / name)
        assert isinstance(report, AggregateReport)
        return records

    raw = records("nice-input.xml")
    assert raw == records("nice-input.xml.gz") == records("nice-input.xml.zip")
    assert len(raw) == 20


def test_google_report_fields(samples: Path) -> None:
    ((report, records),) = read_all(samples / "aggregate" / "nice-input.xml")
    assert isinstance(report, AggregateReport)
    assert report.reporter.org_name == "google.com"
    assert report.reporter.email == "noreply-dmarc-support@google.com"
    assert report.report_id == "11038226378739404135"
    assert report.begin.isoformat() == "2024-06-13T00:00:00+00:00"
    assert report.policy.np == "none" and report.policy.pct == 100
    first = records[0]
    assert first.envelope_from is None  # Google sends none
    assert first.auth_spf[0].scope == "mfrom" and first.auth_spf[0].scope_defaulted


@pytest.mark.parametrize("name", sorted(REFUSED_SAMPLES))
def test_sample_is_refused_naming_its_limit(samples: Path, name: str) -> None:
    with pytest.raises(LimitExceeded) as info:
        read_all(samples / name)
    assert info.value.limit == REFUSED_SAMPLES[name]
    assert str(info.value).startswith(str(samples / name)) and "\n" not in str(info.value)


def test_rfc9990_sample_fields(samples: Path) -> None:
    """The RFC's example, dated 1979 and so refused as it is, read with its dates made real."""
    document = (samples / "aggregate" / "rfc9990-sample.xml").read_bytes()
    assert b"<begin>302832000</begin>" in document and b"<end>302918399</end>" in document
    document = document.replace(b"<begin>302832000</begin>", b"<begin>1718236800</begin>")
    document = document.replace(b"<end>302918399</end>", b"<end>1718323199</end>")
    ((report, (record,)),) = read_all(document)
    assert isinstance(report, AggregateReport)
    assert report.schema == "rfc9990"
    assert (report.policy.domain, len(report.errors)) == ("example.com", 0)
    assert report.policy.pct is None
    assert record.count == 123


def test_invalid_xml_is_recovered_with_errors_kept(samples: Path) -> None:
    ((report, (record,)),) = read_all(samples / "aggregate" / "invalid_xml.xml")
    assert isinstance(report, AggregateReport)
    assert record.source_ip == "199.230.200.36"
    *repairs, missing = report.errors
    assert repairs and all(e.startswith("XML line") for e in repairs)
    # <email><bad-xml@bad-xml.net></email>: the address was read as a broken element
    assert report.reporter.email is None and missing.startswith("report_metadata/email is missing")


def test_failure_reports_keep_no_body(samples: Path) -> None:
    (arf,) = list(read_reports(samples / "failure" / "dmarc_ruf_report_linkedin.eml"))
    assert isinstance(arf, FailureReport)
    assert arf.feedback_type == "auth-failure" and arf.auth_failure == "dmarc"
    assert arf.source_ip == "10.10.10.10" and arf.delivery_result == "delivered"
    assert set(arf.sample_headers) <= {"from", "to", "subject", "date", "message_id"}
    (text,) = list(read_reports(samples / "failure" / "exim_plain_text_only_no_arf_part.eml"))
    assert isinstance(text, FailureReport)
    assert text.source_ip == "203.0.113.68" and text.identity_alignment == "dkim,spf"


def test_records_read_after_the_reader_moved_on_raise(samples: Path) -> None:
    (report,) = list(read_reports(samples / "aggregate" / "nice-input.xml"))
    assert isinstance(report, AggregateReport)
    with pytest.raises(RuntimeError, match="must be read before"):
        next(report.records)
