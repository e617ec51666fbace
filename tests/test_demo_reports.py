"""The demo report set must look like a real DMARC mailbox and be reproducible byte for byte."""

from __future__ import annotations

import email
import email.policy
import gzip
import io
import ipaddress
import re
import zipfile
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from lxml import etree

from function_app.demo_reports import write_demo_reports

LAST_DAY = date(2026, 11, 27)
DOMAINS = {"contoso.com", "fabrikam.com"}
REPORTERS = {"google.com", "Enterprise Outlook", "Yahoo", "GMX", "tailspintoys.com"}
RFC9990_NS = "urn:ietf:params:xml:ns:dmarc-2.0"
FILENAME = re.compile(r"^[a-z0-9.-]+![a-z0-9.-]+!\d+!\d+\.(xml|xml\.gz|zip)$")


def _kind(data: bytes) -> str:
    """Classify by content, not extension, the way an ingester has to."""
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    if data.startswith(b"PK\x03\x04"):
        return "zip"
    if data.lstrip().startswith((b"<?xml", b"<feedback")):
        return "xml"
    if re.match(rb"^[A-Za-z-]+: ", data) and b"\r\n\r\n" in data:
        return "email"
    return "unknown"


def _unwrap(data: bytes) -> list[bytes]:
    """Every XML document inside a file, opening gzip, zip and e-mail with the stdlib."""
    kind = _kind(data)
    if kind == "xml":
        return [data]
    if kind == "gzip":
        return _unwrap(gzip.decompress(data))
    if kind == "zip":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [doc for name in archive.namelist() for doc in _unwrap(archive.read(name))]
    if kind == "email":
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return [doc for part in message.iter_attachments() for doc in _unwrap(part.get_content())]
    raise AssertionError(f"unrecognised content starting {data[:16]!r}")


def _text(element: etree._Element, name: str) -> str:
    """Text of the first descendant `name`, namespace-agnostic (RFC 9990 reports use one)."""
    found = element.xpath(f".//*[local-name()='{name}']")
    assert found, f"<{name}> missing"
    return found[0].text or ""


def _all(element: etree._Element, name: str) -> list[etree._Element]:
    return element.xpath(f".//*[local-name()='{name}']")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    write_demo_reports(folder, last_day=LAST_DAY)
    return folder


@pytest.fixture(scope="module")
def reports(demo_dir: Path) -> list[tuple[Path, etree._Element]]:
    parsed = []
    for path in sorted(demo_dir.iterdir()):
        for doc in _unwrap(path.read_bytes()):
            parsed.append((path, etree.fromstring(doc)))
    return parsed


def test_same_seed_and_day_give_identical_bytes(tmp_path: Path) -> None:
    first = write_demo_reports(tmp_path / "a", last_day=LAST_DAY, seed=7)
    second = write_demo_reports(tmp_path / "b", last_day=LAST_DAY, seed=7)
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_other_seed_changes_the_data(tmp_path: Path) -> None:
    one = write_demo_reports(tmp_path / "a", last_day=LAST_DAY, seed=1)
    two = write_demo_reports(tmp_path / "b", last_day=LAST_DAY, seed=2)
    assert [p.read_bytes() for p in one] != [p.read_bytes() for p in two]


def test_returns_exactly_the_files_written(tmp_path: Path) -> None:
    written = write_demo_reports(tmp_path / "new" / "folder", last_day=LAST_DAY)
    assert sorted(written) == sorted((tmp_path / "new" / "folder").iterdir())
    assert 40 <= len(written) <= 120
    assert sum(p.stat().st_size for p in written) < 1_000_000


def test_all_transport_kinds_present(demo_dir: Path) -> None:
    files = Counter(_kind(p.read_bytes()) for p in demo_dir.iterdir())
    assert set(files) == {"gzip", "email", "xml"}, files
    attached = Counter()
    for path in demo_dir.iterdir():
        data = path.read_bytes()
        if _kind(data) == "email":
            message = email.message_from_bytes(data, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            attached.update(_kind(part.get_content()) for part in message.iter_attachments())
    assert set(attached) == {"zip", "gzip"}, attached
    # Bare files carry the RFC 7489 name; e-mails carry it on the attachment.
    for path in demo_dir.iterdir():
        if _kind(path.read_bytes()) != "email":
            assert FILENAME.match(path.name), path.name


def test_email_attachments_look_like_the_real_senders(demo_dir: Path) -> None:
    content_types: Counter[str] = Counter()
    for path in demo_dir.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        subject = str(message["Subject"])
        sender = str(message["From"])
        (attachment,) = message.iter_attachments()
        filename = attachment.get_filename()
        assert filename and FILENAME.match(filename), filename
        content_types[attachment.get_content_type()] += 1
        if "google.com" in sender:
            assert subject.startswith("Report domain: ")
            assert "Submitter: google.com Report-ID: " in subject
            assert filename.startswith("google.com!") and filename.endswith(".zip")
            assert attachment.get_content_type() == "application/zip"
        else:
            assert "dmarcreport@microsoft.com" in sender
            assert filename.startswith("enterprise.protection.outlook.com!")
            assert filename.endswith(".xml.gz")
        assert attachment["Content-Transfer-Encoding"] == "base64"
    assert content_types["application/octet-stream"] == 1
    assert content_types["application/gzip"] >= 1


def test_every_report_is_well_formed_with_positive_counts(reports) -> None:
    assert reports
    for path, root in reports:
        assert etree.QName(root).localname == "feedback", path.name
        records = _all(root, "record")
        assert records, path.name
        for count in _all(root, "count"):
            assert re.fullmatch(r"[1-9]\d*", count.text or ""), (path.name, count.text)


def test_domains_and_reporters_all_appear(reports) -> None:
    domains = {_text(_all(root, "policy_published")[0], "domain") for _, root in reports}
    orgs = {_text(root, "org_name") for _, root in reports}
    header_from = {el.text for _, root in reports for el in _all(root, "header_from")}
    assert domains == DOMAINS
    assert orgs == REPORTERS
    assert "news.contoso.com" in header_from


def test_report_ids_unique_per_reporter(reports) -> None:
    ids: defaultdict[str, list[str]] = defaultdict(list)
    for _, root in reports:
        ids[_text(root, "org_name")].append(_text(root, "report_id"))
    for org, values in ids.items():
        assert len(values) == len(set(values)), org


def test_seven_utc_days_covered(reports) -> None:
    covered: set[date] = set()
    multi_day = 0
    for _, root in reports:
        begin, end = int(_text(root, "begin")), int(_text(root, "end"))
        assert begin % 86400 == 0 and end > begin
        start = datetime.fromtimestamp(begin, UTC).date()
        last = datetime.fromtimestamp(end - 1, UTC).date()
        covered.update(start + timedelta(days=n) for n in range((last - start).days + 1))
        multi_day += (last - start).days >= 2
    assert covered == {LAST_DAY - timedelta(days=n) for n in range(7)}
    assert multi_day == 1


def test_reporter_dialects(reports) -> None:
    by_org: defaultdict[str, list[etree._Element]] = defaultdict(list)
    for _, root in reports:
        by_org[_text(root, "org_name")].append(root)
    for root in by_org["google.com"]:
        assert not _all(root, "version") and not _all(root, "envelope_from")
        assert int(_text(root, "end")) - int(_text(root, "begin")) == 86399
        assert not _all(root, "scope")
    for root in by_org["Enterprise Outlook"]:
        assert _text(root, "version") == "1.0"
        assert re.fullmatch(r"[0-9a-f]{32}", _text(root, "report_id"))
        assert int(_text(root, "end")) - int(_text(root, "begin")) == 86400
        assert _all(root, "envelope_to") and _text(root, "scope") == "mfrom"
    (gmx,) = by_org["GMX"]
    assert etree.QName(gmx).namespace == RFC9990_NS
    assert _text(gmx, "discovery_method") == "treewalk" and _text(gmx, "testing") == "n"
    assert not _all(gmx, "pct") and _all(gmx, "generator")
    assert "pass" in {el.text for el in _all(gmx, "disposition")}


def test_source_ips_valid_and_include_ipv6(reports) -> None:
    ips = {el.text or "" for _, root in reports for el in _all(root, "source_ip")}
    parsed = {ipaddress.ip_address(ip) for ip in ips}
    v6 = {ip for ip in parsed if ip.version == 6}
    assert v6
    assert all(str(ip) in ips for ip in v6), "IPv6 must be written in compressed form"


def test_fabrikam_dkim_is_not_aligned_but_spf_is(reports) -> None:
    seen = 0
    for _, root in reports:
        for record in _all(root, "record"):
            dkim_domains = {_text(d, "domain") for d in _all(record, "dkim") if len(d)}
            if dkim_domains == {"fabrikam.onmicrosoft.com"} and _text(
                record, "source_ip"
            ).startswith("40.107."):
                evaluated = _all(record, "policy_evaluated")[0]
                assert _text(evaluated, "dkim") == "fail"
                assert _text(evaluated, "spf") == "pass"
                seen += 1
    assert seen


def test_override_reasons_and_impostor_dispositions(reports) -> None:
    reasons = {_text(r, "type") for _, root in reports for r in _all(root, "reason")}
    assert {"local_policy", "mailing_list"} <= reasons
    for _, root in reports:
        domain = _text(_all(root, "policy_published")[0], "domain")
        for record in _all(root, "record"):
            ip = ipaddress.ip_address(_text(record, "source_ip"))
            documentation = (
                ipaddress.ip_network("203.0.113.0/24"),
                ipaddress.ip_network("198.51.100.0/24"),
            )
            if any(ip in net for net in documentation):
                expected = "quarantine" if domain == "fabrikam.com" else "none"
                assert _text(record, "disposition") == expected
