"""Streaming reader for DMARC aggregate (rua) reports in all three schemas seen today.

The pre-1.0 draft (no `<version>`), RFC 7489 Appendix C and RFC 9990 (with or without its
namespace) share one shape, so one namespace-agnostic reader serves them all. Records are built
one at a time from `lxml.etree.iterparse` and their elements freed at once, so memory stays flat
whatever the report's size. The parser refuses DTDs (no entity is ever expanded), never touches the
network and recovers what it can from documents that are not well-formed, keeping the error.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import BinaryIO

from lxml import etree

from analysis.errors import CorruptInput, NotAReport, UnsafeXml
from analysis.model import (
    AggregateReport,
    DkimResult,
    PolicyPublished,
    Reason,
    Record,
    RecordStream,
    Reporter,
    Schema,
    SpfResult,
)

RFC9990_NAMESPACE = "urn:ietf:params:xml:ns:dmarc-2.0"
_TAGS = ("{*}feedback", "{*}version", "{*}report_metadata", "{*}policy_published", "{*}record")
#: Fields only RFC 9990 defines; their presence marks a report without the namespace as 9990.
#: (`np` is not among them: Google added it to its draft-schema reports.)
_RFC9990_ONLY = frozenset({"generator", "testing", "discovery_method"})
_RESULT_ALIASES = {"hardfail": "fail"}


class _BrokenRecord(Exception):
    """A record that cannot be used; it is skipped and its reason kept in the report's errors."""


def _local(tag: object) -> str:
    # Comments, processing instructions and unexpanded entities have non-string tags.
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _text(el: etree._Element) -> str:
    return (el.text or "").strip()


def _word(value: str) -> str:
    word = value.lower()
    return _RESULT_ALIASES.get(word, word)


def _fields(el: etree._Element) -> dict[str, str]:
    """Leaf children of a small element (metadata, policy) by local name; first one wins."""
    out: dict[str, str] = {}
    for child in el:
        name = _local(child.tag)
        if name and name not in out:
            out[name] = _text(child)
    return out


def normalise_report_id(raw: str) -> str:
    """`<abc@example.com>` and `abc` are the same report: strip brackets and the `@` part."""
    rid = raw.strip().strip("<>").strip()
    return rid.split("@", 1)[0].strip() if "@" in rid else rid


def _epoch(value: str, what: str) -> datetime:
    try:
        return datetime.fromtimestamp(int(float(value)), tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise _BrokenRecord(f"{what} {value[:40]!r} is not a Unix time") from None


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _BrokenRecord(
            f"source_ip {value[:60]!r} is not an IP address" if value else "missing source_ip"
        ) from None


def _parse_record(rec: etree._Element) -> Record:
    source_ip = count_text = ""
    disposition = dkim = spf = ""
    reasons: list[Reason] = []
    header_from = envelope_from = envelope_to = None
    auth_dkim: list[DkimResult] = []
    auth_spf: list[SpfResult] = []
    for part in rec:
        name = _local(part.tag)
        if name == "row":
            for field in part:
                fname = _local(field.tag)
                if fname == "source_ip":
                    source_ip = _text(field)
                elif fname == "count":
                    count_text = _text(field)
                elif fname == "policy_evaluated":
                    for pe in field:
                        pname = _local(pe.tag)
                        if pname == "disposition":
                            disposition = _word(_text(pe))
                        elif pname == "dkim":
                            dkim = _word(_text(pe))
                        elif pname == "spf":
                            spf = _word(_text(pe))
                        elif pname == "reason":
                            r = _fields(pe)
                            kind = _word(r.get("type", "")) or "other"
                            reasons.append(Reason(kind, r.get("comment") or None))
        elif name == "identifiers":
            for field in part:
                fname = _local(field.tag)
                if fname == "header_from":
                    header_from = _text(field).lower() or None
                elif fname == "envelope_from":
                    envelope_from = _text(field).lower() or None
                elif fname == "envelope_to":
                    envelope_to = _text(field).lower() or None
        elif name == "auth_results":
            for result in part:
                rname = _local(result.tag)
                if rname == "dkim":
                    d = _fields(result)
                    if d.get("domain"):
                        auth_dkim.append(DkimResult(
                            d["domain"].lower(), d.get("selector") or None,
                            _word(d.get("result", "")) or "none", d.get("human_result") or None,
                        ))
                elif rname == "spf":
                    s = _fields(result)
                    scope = s.get("scope", "").lower()
                    auth_spf.append(SpfResult(
                        s.get("domain", "").lower() or None, scope or "mfrom",
                        _word(s.get("result", "")) or "none", s.get("human_result") or None,
                        scope_defaulted=not scope,
                    ))
    ip = _ip(source_ip)
    try:
        count = int(count_text)
    except ValueError:
        raise _BrokenRecord(
            f"count {count_text[:40]!r} is not a whole number" if count_text else "missing count"
        ) from None
    if count < 0:
        raise _BrokenRecord(f"count {count} is negative")
    if not header_from:
        raise _BrokenRecord("missing identifiers/header_from")
    return Record(
        source_ip=ip, count=count, disposition=disposition or "none", dkim=dkim or "fail",
        spf=spf or "fail", reasons=tuple(reasons), header_from=header_from,
        envelope_from=envelope_from, envelope_to=envelope_to,
        auth_dkim=tuple(auth_dkim), auth_spf=tuple(auth_spf),
    )


def _free(el: etree._Element) -> None:
    """Drop a processed element and the siblings before it, so the tree never grows."""
    el.clear(keep_tail=False)
    parent = el.getparent()
    if parent is not None:
        while el.getprevious() is not None:
            del parent[0]


class _Header:
    """Everything before the records, gathered as the parser passes it."""

    def __init__(self) -> None:
        self.namespace = ""
        self.version: str | None = None
        self.metadata: dict[str, str] | None = None
        self.reporter_errors: list[str] = []
        self.begin = self.end = ""
        self.policy: dict[str, str] | None = None

    def take_metadata(self, el: etree._Element) -> None:
        self.metadata = _fields(el)
        for child in el:
            name = _local(child.tag)
            if name == "date_range":
                dates = _fields(child)
                self.begin, self.end = dates.get("begin", ""), dates.get("end", "")
            elif name == "error" and _text(child):
                self.reporter_errors.append(_text(child))

    @property
    def complete(self) -> bool:
        return self.metadata is not None and self.policy is not None


def _schema(header: _Header) -> Schema:
    names = set(header.metadata or ()) | set(header.policy or ())
    if header.namespace == RFC9990_NAMESPACE or names & _RFC9990_ONLY:
        return "rfc9990"
    return "rfc7489" if header.version is not None else "draft"


def _policy(fields: dict[str, str], errors: list[str]) -> PolicyPublished:
    def word(name: str) -> str | None:
        return fields.get(name, "").lower() or None

    pct: int | None = None
    if fields.get("pct"):
        try:
            pct = int(fields["pct"])
        except ValueError:
            errors.append(f"policy_published/pct {fields['pct'][:20]!r} is not a whole number")
    p = word("p")
    defaulted = []
    adkim, aspf, sp = word("adkim"), word("aspf"), word("sp")
    if adkim is None:
        adkim = "r"
        defaulted.append("adkim")
    if aspf is None:
        aspf = "r"
        defaulted.append("aspf")
    if sp is None and p is not None:
        sp = p
        defaulted.append("sp")
    return PolicyPublished(
        domain=fields["domain"].lower(), p=p, sp=sp, np=word("np"), adkim=adkim, aspf=aspf,
        pct=pct, fo=fields.get("fo") or None, testing=word("testing"),
        discovery_method=word("discovery_method"), defaulted=tuple(defaulted),
    )


def _report(header: _Header, source: str, records: Iterator[Record],
            errors: list[str]) -> AggregateReport:
    meta = header.metadata or {}
    email = meta.get("email") or None
    org = meta.get("org_name", "")
    if not org and email and "@" in email:
        org = email.rpartition("@")[2].lower()
        errors.append("report_metadata/org_name is empty; using the reporter e-mail's domain")
    if not org:
        raise NotAReport(source, "aggregate report names no reporter (org_name or email)")
    report_id = normalise_report_id(meta.get("report_id", ""))
    if not report_id:
        raise NotAReport(source, "aggregate report has no report_metadata/report_id")
    if not (header.policy or {}).get("domain"):
        raise NotAReport(source, "aggregate report has no policy_published/domain")
    try:
        begin = _epoch(header.begin, "date_range/begin")
        end = _epoch(header.end, "date_range/end")
    except _BrokenRecord as exc:
        raise NotAReport(source, f"aggregate report date range unusable: {exc}") from None
    if end < begin:
        begin, end = end, begin
        errors.append("date_range/end is before begin; swapped")
    errors.extend(f"reporter error: {e}" for e in header.reporter_errors)
    return AggregateReport(
        schema=_schema(header), source=source,
        reporter=Reporter(org, email, meta.get("extra_contact_info") or None),
        report_id=report_id, begin=begin, end=end, generator=meta.get("generator") or None,
        policy=_policy(header.policy or {}, errors), records=records, errors=errors,
    )


def parse_aggregate(stream: BinaryIO, source: str) -> AggregateReport:
    """Read the report's header now and return it with a lazy iterator over its records.

    Raise `UnsafeXml` for a DTD, `NotAReport` when the document is not an aggregate report. The
    stream must stay open until the records are consumed.
    """
    context = etree.iterparse(
        stream, events=("start", "end"), tag=_TAGS, recover=True, resolve_entities=False,
        no_network=True, load_dtd=False, huge_tree=False, remove_comments=True, remove_pis=True,
    )
    events = _guarded(context, source)
    header = _Header()
    errors: list[str] = []
    early: list[Record] = []  # records that came before the header (out-of-order documents)
    record_no = 0
    root_seen = False
    root: etree._Element | None = None

    def refuse_dtd(el: etree._Element) -> None:
        if el.getroottree().docinfo.doctype:
            raise UnsafeXml(source, "XML declares a DTD (DOCTYPE), which reports never need")

    def is_report_record(el: etree._Element) -> bool:
        # A <record> inside an extension (its own namespace, any depth) is not a report row.
        parent = el.getparent()
        while parent is not None and parent is not root:
            if _local(parent.tag) in ("record", "extension"):
                return False
            parent = parent.getparent()
        return True

    def take_record(el: etree._Element) -> Record | None:
        nonlocal record_no
        record_no += 1
        try:
            return _parse_record(el)
        except _BrokenRecord as exc:
            errors.append(f"record {record_no} skipped: {exc}")
            return None
        finally:
            _free(el)

    for event, el in events:
        name = _local(el.tag)
        if not root_seen:
            refuse_dtd(el)
            root_seen, root = True, el
            if name != "feedback" or event != "start":
                raise NotAReport(source, f"XML root is <{name}>, not an aggregate <feedback>")
            header.namespace = el.tag[1:].partition("}")[0] if el.tag.startswith("{") else ""
            continue
        if event == "start":
            if name == "record" and header.complete:
                break
            continue
        if name == "version":
            header.version = _text(el)
        elif name == "report_metadata":
            header.take_metadata(el)
            _free(el)
        elif name == "policy_published":
            header.policy = _fields(el)
            _free(el)
        elif name == "record" and is_report_record(el):
            record = take_record(el)
            if record is not None:
                early.append(record)
    else:
        context_errors(context, errors)
        if not root_seen:
            found = context.root
            if found is None:
                raise NotAReport(source, "XML holds no elements")
            refuse_dtd(found)
            raise NotAReport(
                source, f"XML root is <{_local(found.tag)}>, not an aggregate <feedback>"
            )
        if not header.complete:
            missing = "report_metadata" if header.metadata is None else "policy_published"
            raise NotAReport(source, f"aggregate report has no <{missing}>")
        return _report(header, source, RecordStream(iter(early), source), errors)

    def records() -> Iterator[Record]:
        yield from early
        for event, el in events:
            if event == "end" and _local(el.tag) == "record" and is_report_record(el):
                record = take_record(el)
                if record is not None:
                    yield record
        context_errors(context, errors)

    return _report(header, source, RecordStream(records(), source), errors)


def _guarded(context: etree.iterparse, source: str) -> Iterator[tuple[str, etree._Element]]:
    """lxml recovers from most damage; what it cannot survive becomes a `CorruptInput`."""
    try:
        yield from context
    except etree.XMLSyntaxError as exc:
        raise CorruptInput(source, f"XML cannot be read ({exc.msg})") from None


def context_errors(context: etree.iterparse, errors: list[str]) -> None:
    """Keep what lxml had to recover from, one short line each, without document text."""
    seen = 0
    for entry in context.error_log:
        if entry.level >= etree.ErrorLevels.ERROR:
            seen += 1
            if seen <= 20:
                errors.append(f"XML line {entry.line}: {entry.message}")
    if seen > 20:
        errors.append(f"XML: {seen - 20} more errors")
