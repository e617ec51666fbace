"""Aggregate reports: every field of the three schemas, normalised, with broken parts skipped."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from analysis import AggregateReport, CorruptInput, LimitExceeded, Limits, NotAReport
from analysis.aggregate import normalise_report_id, parse_aggregate
from tests.builders import aggregate_xml, record_xml
from tests.conftest import read_all

NS = "urn:ietf:params:xml:ns:dmarc-2.0"


def one(data: bytes) -> tuple[AggregateReport, list]:  # type: ignore[type-arg]
    ((report, records),) = read_all(data)
    assert isinstance(report, AggregateReport)
    return report, records


@pytest.mark.parametrize(("kwargs", "schema"), [
    ({"version": None}, "draft"),
    ({"version": "1.0"}, "rfc7489"),
    ({"version": "1.0", "namespace": NS}, "rfc9990"),
    ({"version": None, "namespace": NS}, "rfc9990"),
    ({"version": "1.0", "metadata_extra": "<generator>Receiver 2.1</generator>"}, "rfc9990"),
    ({"version": None, "policy": "<p>none</p><np>none</np><pct>100</pct>"}, "draft"),
])
def test_schema_is_detected(kwargs: dict, schema: str) -> None:  # type: ignore[type-arg]
    report, records = one(aggregate_xml(**kwargs))
    assert report.schema == schema
    assert len(records) == 1


def test_rfc9990_fields_with_namespace_extensions_and_lang() -> None:
    records = (
        '<record><row><source_ip>2001:DB8:0:0::25</source_ip><count>4</count>'
        '<policy_evaluated><disposition>pass</disposition><dkim>pass</dkim><spf>fail</spf>'
        '<reason><type>policy_test_mode</type><comment lang="en">t=y</comment></reason>'
        '<reason><type>local_policy</type><comment>arc=pass</comment></reason>'
        '</policy_evaluated></row><identifiers><envelope_to>Recipient.example</envelope_to>'
        '<envelope_from></envelope_from><header_from>Example.com</header_from></identifiers>'
        '<auth_results><dkim><domain>example.com</domain><selector>sel</selector>'
        '<result>pass</result><human_result lang="en">good sig</human_result></dkim>'
        '<spf><domain>bounce.example.com</domain><scope>mfrom</scope><result>fail</result>'
        '</spf></auth_results><x:ext xmlns:x="urn:example:ext"><x:record>no</x:record></x:ext>'
        '</record>'
    )
    data = aggregate_xml(
        records, namespace=NS, version="1.0",
        metadata_extra="<generator>Mail 3.0</generator><error lang='en'>partial data</error>",
        policy=("<discovery_method>treewalk</discovery_method><p>reject</p><sp>quarantine</sp>"
                "<np>reject</np><fo>1</fo><adkim>s</adkim><aspf>r</aspf><testing>y</testing>"),
    ).replace(b"</policy_published>",
              b'</policy_published><extension><y:z xmlns:y="urn:e"/></extension>')
    report, (record,) = one(data)
    assert report.generator == "Mail 3.0"
    p = report.policy
    assert (p.p, p.sp, p.np, p.adkim, p.aspf, p.testing, p.discovery_method, p.fo, p.pct) == (
        "reject", "quarantine", "reject", "s", "r", "y", "treewalk", "1", None)
    assert p.defaulted == ()
    assert record.source_ip == "2001:db8::25"  # canonical form
    assert record.disposition == "pass"
    assert [(r.type, r.comment) for r in record.reasons] == [
        ("policy_test_mode", "t=y"), ("local_policy", "arc=pass")]
    assert record.header_from == "example.com" and record.envelope_from is None
    assert record.envelope_to == "recipient.example"
    assert record.auth_dkim[0].human_result == "good sig"
    assert record.auth_spf[0].domain == "bounce.example.com"
    assert report.errors == ["reporter error: partial data"]


def test_normalisation_and_defaults() -> None:
    auth = ("<dkim><domain>Example.COM</domain><result>Pass</result></dkim>"
            "<spf><domain>example.com</domain><result>HardFail</result></spf>")
    reasons = "<reason><type></type></reason>"
    data = aggregate_xml(
        record_xml(auth=auth, dkim="PASS", spf="Fail", disposition="None", reasons=reasons),
        org="", email="reports@Receiver.example", report_id=" <abc123@receiver.example> ",
        policy="<p>Quarantine</p>", version=None,
    )
    report, (record,) = one(data)
    assert report.reporter.org_name == "receiver.example"
    assert report.report_id == "abc123"
    assert (report.policy.adkim, report.policy.aspf, report.policy.sp) == ("r", "r", "quarantine")
    assert report.policy.defaulted == ("adkim", "aspf", "sp")
    assert (record.dkim, record.spf, record.disposition) == ("pass", "fail", "none")
    assert record.auth_dkim[0].domain == "example.com" and record.auth_dkim[0].selector is None
    assert record.auth_dkim[0].result == "pass"
    spf = record.auth_spf[0]
    assert (spf.result, spf.scope, spf.scope_defaulted) == ("fail", "mfrom", True)
    assert record.reasons[0].type == "other"


@pytest.mark.parametrize(("raw", "clean"), [
    ("abc", "abc"), ("<abc>", "abc"), ("abc@host.example", "abc"), (" <a.b@c> ", "a.b"),
])
def test_report_id_normalisation(raw: str, clean: str) -> None:
    assert normalise_report_id(raw) == clean


def test_broken_records_are_skipped_and_recorded() -> None:
    records = (
        record_xml("192.0.2.1", 3)
        + record_xml("not-an-ip", 2)
        + record_xml("192.0.2.2", 1).replace("<count>1</count>", "<count>many</count>")
        + record_xml("192.0.2.3", 1).replace("<source_ip>192.0.2.3</source_ip>", "")
        + record_xml("192.0.2.4", 1).replace("<count>1</count>", "<count>-5</count>")
        + record_xml("192.0.2.5", 1).replace("<header_from>example.com</header_from>", "")
        + record_xml("192.0.2.6", 6)
    )
    report, kept = one(aggregate_xml(records))
    assert [r.source_ip for r in kept] == ["192.0.2.1", "192.0.2.6"]
    assert report.errors == [
        "record 2 skipped: source_ip 'not-an-ip' is not an IP address",
        "record 3 skipped: count 'many' is not a whole number",
        "record 4 skipped: missing source_ip",
        "record 5 skipped: count -5 is negative",
        "record 6 skipped: missing identifiers/header_from",
    ]


def test_empty_auth_results_and_no_envelope_from() -> None:
    _, (record,) = one(aggregate_xml(record_xml(auth="", envelope_from=None)))
    assert record.auth_dkim == () and record.auth_spf == ()
    assert record.envelope_from is None


def test_end_before_begin_is_swapped_and_noted() -> None:
    report, _ = one(aggregate_xml(begin=1764374399, end=1764288000))
    assert report.begin < report.end
    assert "date_range/end is before begin; swapped" in report.errors


def test_header_after_records_is_still_read() -> None:
    data = (b"<feedback><record>" + record_xml().encode()[8:] +
            b"<report_metadata><org_name>R</org_name><report_id>x</report_id><date_range>"
            b"<begin>1764288000</begin><end>1764374399</end></date_range></report_metadata>"
            b"<policy_published><domain>example.com</domain><p>none</p></policy_published>"
            b"</feedback>")
    report, records = one(data)
    assert report.report_id == "x" and len(records) == 1


@pytest.mark.parametrize(("data", "words"), [
    (aggregate_xml(domain=""), "policy_published/domain"),
    (aggregate_xml(org="", email=""), "names no reporter"),
    (aggregate_xml(begin="soon"), "date range unusable"),  # type: ignore[arg-type]
    (b"<feedback><report_metadata/></feedback>", "no <policy_published>"),
    (b"<feedback/>", "no <report_metadata>"),
])
def test_unusable_reports_are_refused(data: bytes, words: str) -> None:
    with pytest.raises(NotAReport, match=words):
        read_all(data)


def test_stray_open_tag_is_recovered() -> None:
    # IKEA once sent a stray <xs:schema> open tag; the records inside are still read.
    data = aggregate_xml(record_xml(count=2)).replace(
        b"<record>", b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><record>', 1)
    report, records = one(data)
    assert [r.count for r in records] == [2]
    assert report.errors  # the repair is noted


@pytest.mark.parametrize("where", ["metadata_extra", "policy", "records"])
def test_a_part_nested_inside_another_is_not_a_part_of_the_report(where: str) -> None:
    # Parts are read when the next one starts; one inside another must neither count nor cut its
    # host short (which would free an element the parser is still building).
    nested = record_xml("203.0.113.9", 7)
    kwargs = {"metadata_extra": nested, "policy": "<p>none</p>" + nested,
              "records": record_xml(count=2).replace("</row>", "</row>" + nested)}
    data = aggregate_xml(**({"records": record_xml(count=2)} | {where: kwargs[where]}))
    report, records = one(data)
    assert len(records) == 1
    if where != "records":  # (inside a record, which values win is anybody's guess)
        assert (records[0].source_ip, records[0].count) == ("192.0.2.1", 2)
    assert report.policy.domain == "example.com" and report.reporter.org_name == "Example Receiver"


def test_records_inside_a_nested_feedback_are_read() -> None:
    data = aggregate_xml(record_xml(count=2) + "<feedback>" + record_xml(count=3) + "</feedback>"
                         + record_xml(count=4))
    _, records = one(data)
    assert [r.count for r in records] == [2, 3, 4]


@pytest.mark.parametrize("count", [1, 2, 3000])
def test_every_record_is_read_across_chunks_and_the_last_one_at_the_end(count: int) -> None:
    data = aggregate_xml("".join(record_xml(f"192.0.2.{i % 250 + 1}", i + 1)
                                 for i in range(count)))
    _, records = one(data)
    assert [r.count for r in records] == list(range(1, count + 1))


@pytest.mark.parametrize("prolog", [
    pytest.param(b"", id="none"),
    pytest.param(b"\xef\xbb\xbf", id="bom"),
    pytest.param(b'<?xml version="1.0" encoding="UTF-8"?>\n', id="declaration"),
    pytest.param(b"\xef\xbb\xbf<?xml version='1.0' standalone='yes'?>", id="bom-declaration"),
    pytest.param(b'<?xml version="1.0"?>\n<!-- made by hand -->\n<?xml-stylesheet href="r.xsl"?>\n',
                 id="comment-and-pi"),
])
def test_every_prolog_gives_the_same_report(prolog: bytes) -> None:
    # The reader puts a processing instruction of its own before the root element.
    data = aggregate_xml(record_xml(count=2) + record_xml(count=3))
    report, records = one(prolog + data[data.index(b"<feedback"):])
    assert [r.count for r in records] == [2, 3]
    assert report.report_id == "r-1" and report.errors == []


def test_a_declared_single_byte_encoding_is_honoured() -> None:
    data = aggregate_xml(org="Empfänger GmbH").decode().replace(
        'encoding="UTF-8"', 'encoding="ISO-8859-1"').encode("latin-1")
    report, _ = one(data)
    assert report.reporter.org_name == "Empfänger GmbH"


def test_recovered_errors_keep_their_line_numbers() -> None:
    data = aggregate_xml(org="A and B").replace(b"<version>", b"\n\n<version>").replace(
        b"A and B", b"A & B")
    report, records = one(data)
    assert len(records) == 1
    assert report.errors and all(e.startswith("XML line 4: ") for e in report.errors)


def test_processing_instructions_inside_values_do_not_cut_them() -> None:
    data = aggregate_xml(record_xml("192.0.2.7", header_from="example.com")).replace(
        b">example.com</header_from>", b">exa<?x?>mple.com</header_from>").replace(
        b">192.0.2.7<", b">192.0.<?x?>2.7<").replace(
        b">Example Receiver<", b">Ex<?x?>ample Receiver<")
    report, records = one(data)
    assert [(r.source_ip, r.header_from) for r in records] == [("192.0.2.7", "example.com")]
    assert report.reporter.org_name == "Example Receiver"


@pytest.mark.parametrize("filler", [0, 70_000])  # the repeat in the first chunk, or a later one
def test_header_parts_after_the_first_record_are_ignored(filler: int) -> None:
    # Whatever the chunk boundaries: a second metadata or policy cannot take over the report.
    repeat = (b"<x>" + b" " * filler + b"</x><report_metadata><org_name>Other</org_name>"
              b"<report_id>r-2</report_id><date_range><begin>1</begin><end>2</end></date_range>"
              b"</report_metadata><policy_published><domain>evil.example</domain>"
              b"</policy_published>")
    data = aggregate_xml(record_xml(count=2) + "@" + record_xml(count=3)).replace(b"@", repeat)
    report, records = one(data)
    assert (report.report_id, report.policy.domain) == ("r-1", "example.com")
    assert [r.count for r in records] == [2, 3]


def test_ten_thousand_records_before_the_header_are_allowed_and_more_after_it() -> None:
    rec = record_xml().encode()
    head, meta, tail = aggregate_xml(rec.decode() * 300).partition(b"<report_metadata>")
    _, records = one(head + rec * 9_900 + meta + tail)
    assert len(records) == 10_200


def test_a_broken_xml_declaration_is_refused() -> None:
    data = aggregate_xml().replace(b'encoding="UTF-8"?>', b'encoding="ISO-8859-1" x=">"?>')
    with pytest.raises(CorruptInput, match="XML declaration is not well-formed"):
        read_all(data)


def test_truncated_report_is_refused_not_half_read() -> None:
    full = aggregate_xml("".join(record_xml(f"192.0.2.{i}", 1) for i in range(200)))
    with pytest.raises(CorruptInput, match=r"ends before its closing </feedback> \(truncated\)"):
        read_all(full[: len(full) // 2])


def test_stray_end_tag_that_would_drop_records_is_refused() -> None:
    full = aggregate_xml("".join(record_xml(f"192.0.2.{i}", 1) for i in range(50)))
    broken = full.replace(b"</header_from>", b"</header_from></feedback>", 1)
    with pytest.raises(CorruptInput, match="closed by the wrong tag"):
        read_all(broken)


def test_a_date_range_of_centuries_is_refused() -> None:
    with pytest.raises(LimitExceeded, match="max_report_days=62"):
        read_all(aggregate_xml(begin=0, end=253402300000))


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
FLOOR = 1_325_376_000  # 2012-01-01T00:00:00Z


def parse_at(data: bytes, now: datetime, limits: Limits | None = None) -> AggregateReport:
    return parse_aggregate(io.BytesIO(data), "r.xml", limits, now=now)


@pytest.mark.parametrize(("begin", "end", "limit"), [
    (4_070_908_800, 4_070_995_199, "max_future_hours=24"),  # 2099-01-01
    (int(NOW.timestamp()), int(NOW.timestamp()) + 24 * 3600 + 1, "max_future_hours=24"),
    (1_306_886_400, 1_306_972_799, "earliest_report_year=2012"),  # 2011-06-01
    (FLOOR - 1, FLOOR + 3600, "earliest_report_year=2012"),
    (4_070_995_199, 4_070_908_800, "max_future_hours=24"),  # swapped: still in 2099
])
def test_dates_out_of_reason_are_refused(begin: int, end: int, limit: str) -> None:
    with pytest.raises(LimitExceeded) as info:
        parse_at(aggregate_xml(begin=begin, end=end), NOW)
    assert info.value.limit == limit
    message = str(info.value)
    assert message.startswith("r.xml: report ") and message.endswith(f"(limit {limit})")
    assert "\n" not in message


def test_dates_at_the_edges_of_reason_are_read() -> None:
    now = int(NOW.timestamp())
    for begin, end in ((FLOOR, FLOOR + 86399), (now - 86400, now + 24 * 3600),
                       (now - 3600, now + 3 * 3600)):
        report = parse_at(aggregate_xml(begin=begin, end=end), NOW)
        assert [r.count for r in report.records] == [1]
    # The future is measured from `now`: the same report is refused a day earlier.
    with pytest.raises(LimitExceeded, match="max_future_hours=24"):
        parse_at(aggregate_xml(begin=now - 3600, end=now + 3 * 3600), NOW - timedelta(days=1))
    # and `max_future_hours` moves the edge
    later = aggregate_xml(begin=now + 40 * 3600, end=now + 47 * 3600)
    with pytest.raises(LimitExceeded, match="max_future_hours=24"):
        parse_at(later, NOW)
    assert parse_at(later, NOW, Limits(max_future_hours=48)).end > NOW


def test_absurd_counts_are_broken_records() -> None:
    report, kept = one(aggregate_xml(record_xml("192.0.2.1", 99999999999999999999)
                                     + record_xml("192.0.2.2", 5)))
    assert [r.count for r in kept] == [5]
    assert "implausibly large" in report.errors[0]


def test_non_report_xml_is_refused_from_its_first_bytes() -> None:
    data = b"<html>" + b"<p>x</p>" * 200_000 + b"</html>"
    with pytest.raises(NotAReport, match="XML root is <html>"):
        read_all(data)
