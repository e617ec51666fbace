"""Streaming reader for DMARC aggregate (rua) reports in all three schemas seen today.

The pre-1.0 draft (no `<version>`), RFC 7489 Appendix C and RFC 9990 (with or without its
namespace) share one shape, so one namespace-agnostic reader serves them all. Records are built
one at a time from `lxml.etree.iterparse` and their elements freed at once, so memory stays flat
whatever the report's size. The parser refuses DTDs (no entity is ever expanded), never touches the
network and recovers what it can from documents that are not well-formed, keeping the error.
"""

from __future__ import annotations

import socket
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
_TAGS = ("{*}version", "{*}report_metadata", "{*}policy_published", "{*}record")
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
    """The canonical text of an IP address (compressed, lower-case IPv6)."""
    family = socket.AF_INET6 if ":" in value else socket.AF_INET
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, value))
    except (OSError, ValueError):
        raise _BrokenRecord(
            f"source_ip {value[:60]!r} is not an IP address" if value else "missing source_ip"
        ) from None


#: Local names of the elements a record is read from; anything else (extensions, the plain
#: containers row, policy_evaluated and identifiers) is skipped.
_RECORD_FIELDS = (
    "source_ip", "count", "disposition", "dkim", "spf", "reason", "type", "comment",
    "header_from", "envelope_from", "envelope_to", "auth_results", "domain", "selector",
    "result", "scope", "human_result",
)


def record_tags(namespace: str) -> dict[str, str]:
    """Map the report's own qualified tags to local names, so one dict lookup names an element.

    Elements of any other namespace (RFC 9990 extensions) find no entry and are skipped.
    """
    prefix = f"{{{namespace}}}" if namespace else ""
    return {prefix + name: name for name in _RECORD_FIELDS}


def _parse_record(rec: etree._Element, tags: dict[str, str]) -> Record:
    # One pass over the record's elements in document order; per-element work is kept to a
    # dict lookup and a text read, because this loop is most of the time spent on a large report.
    source_ip = count_text = disposition = dkim = spf = ""
    header_from = envelope_from = envelope_to = ""
    in_auth = False
    entry: dict[str, str] | None = None  # the reason, DKIM or SPF result being filled
    reasons: list[dict[str, str]] = []
    dkims: list[dict[str, str]] = []
    spfs: list[dict[str, str]] = []
    for el in rec.iter():
        name = tags.get(el.tag)  # type: ignore[call-overload]
        if name is None:  # a plain container, or another namespace's extension
            continue
        text = (el.text or "").strip()
        if name in ("domain", "selector", "result", "scope", "human_result", "type", "comment"):
            if entry is not None and name not in entry:
                entry[name] = text
        elif name == "dkim":
            if in_auth:
                entry = {}
                dkims.append(entry)
            else:
                dkim = text
        elif name == "spf":
            if in_auth:
                entry = {}
                spfs.append(entry)
            else:
                spf = text
        elif name == "source_ip":
            source_ip = text
        elif name == "count":
            count_text = text
        elif name == "disposition":
            disposition = text
        elif name == "reason":
            entry = {}
            reasons.append(entry)
        elif name == "header_from":
            header_from = text
        elif name == "envelope_from":
            envelope_from = text
        elif name == "envelope_to":
            envelope_to = text
        elif name == "auth_results":
            in_auth, entry = True, None
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
        source_ip=ip, count=count, disposition=_word(disposition) or "none",
        dkim=_word(dkim) or "fail", spf=_word(spf) or "fail",
        reasons=tuple(
            Reason(_word(r.get("type", "")) or "other", r.get("comment") or None) for r in reasons
        ),
        header_from=header_from.lower(), envelope_from=envelope_from.lower() or None,
        envelope_to=envelope_to.lower() or None,
        auth_dkim=tuple(
            DkimResult(d["domain"].lower(), d.get("selector") or None,
                       _word(d.get("result", "")) or "none", d.get("human_result") or None)
            for d in dkims if d.get("domain")
        ),
        auth_spf=tuple(
            SpfResult(d.get("domain", "").lower() or None, d.get("scope", "").lower() or "mfrom",
                      _word(d.get("result", "")) or "none", d.get("human_result") or None,
                      scope_defaulted=not d.get("scope"))
            for d in spfs
        ),
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
    """Read the report's header now and return it with a lazy stream of its records.

    Raise `UnsafeXml` for a DTD, `NotAReport` when the document is not an aggregate report,
    `CorruptInput` when not even lxml's recovery can read it. The stream must stay open until
    the records are consumed.
    """
    return _AggregateParser(stream, source).report()


class _AggregateParser:
    def __init__(self, stream: BinaryIO, source: str) -> None:
        self.source = source
        self.context = etree.iterparse(
            stream, events=("end",), tag=_TAGS, recover=True, resolve_entities=False,
            no_network=True, load_dtd=False, huge_tree=False, remove_comments=True,
            remove_pis=True,
        )
        self.events = iter(self.context)
        self.root: etree._Element | None = None
        self.tags = record_tags("")
        self.errors: list[str] = []
        self.record_no = 0

    def report(self) -> AggregateReport:
        header = _Header()
        early: list[Record] = []  # records read while looking for the header
        try:
            for el in self._elements():
                name = _local(el.tag)
                if self.root is None:
                    self._take_root(el, header)
                if name == "record":
                    if self._is_report_record(el):
                        record = self._take_record(el)
                        if record is not None:
                            early.append(record)
                        if header.complete:
                            break
                elif name == "version":
                    header.version = _text(el)
                elif name == "report_metadata":
                    header.take_metadata(el)
                    _free(el)
                elif name == "policy_published":
                    header.policy = _fields(el)
                    _free(el)
            else:
                self._finish()
                self._check_complete(header)
                return _report(header, self.source, RecordStream(iter(early), self.source),
                               self.errors)
        except etree.XMLSyntaxError as exc:
            raise CorruptInput(self.source, f"XML cannot be read ({exc.msg})") from None
        return _report(header, self.source, RecordStream(self._records(early), self.source),
                       self.errors)

    def _elements(self) -> Iterator[etree._Element]:
        for _, el in self.events:
            yield el

    def _take_root(self, el: etree._Element, header: _Header) -> None:
        root = el.getroottree().getroot()
        self._refuse_dtd(root)
        if _local(root.tag) != "feedback":
            raise NotAReport(self.source,
                             f"XML root is <{_local(root.tag)}>, not an aggregate <feedback>")
        self.root = root
        header.namespace = root.tag[1:].partition("}")[0] if root.tag.startswith("{") else ""
        self.tags = record_tags(header.namespace)

    def _check_complete(self, header: _Header) -> None:
        if self.root is None:
            found = self.context.root
            if found is None:
                raise NotAReport(self.source, "XML holds no elements")
            self._take_root(found, header)
        if not header.complete:
            missing = "report_metadata" if header.metadata is None else "policy_published"
            raise NotAReport(self.source, f"aggregate report has no <{missing}>")

    def _records(self, early: list[Record]) -> Iterator[Record]:
        yield from early
        try:
            for _, el in self.events:
                if _local(el.tag) == "record" and self._is_report_record(el):
                    record = self._take_record(el)
                    if record is not None:
                        yield record
        except etree.XMLSyntaxError as exc:
            raise CorruptInput(self.source, f"XML cannot be read ({exc.msg})") from None
        self._finish()

    def _finish(self) -> None:
        context_errors(self.context, self.errors)

    def _refuse_dtd(self, el: etree._Element) -> None:
        if el.getroottree().docinfo.doctype:
            raise UnsafeXml(self.source, "XML declares a DTD (DOCTYPE), which reports never need")

    def _is_report_record(self, el: etree._Element) -> bool:
        # A <record> inside an extension (its own namespace, any depth) is not a report row.
        parent = el.getparent()
        while parent is not None and parent is not self.root:
            if _local(parent.tag) in ("record", "extension"):
                return False
            parent = parent.getparent()
        return True

    def _take_record(self, el: etree._Element) -> Record | None:
        self.record_no += 1
        try:
            return _parse_record(el, self.tags)
        except _BrokenRecord as exc:
            self.errors.append(f"record {self.record_no} skipped: {exc}")
            return None
        finally:
            _free(el)


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
