"""Streaming reader for DMARC aggregate (rua) reports in all three schemas seen today.

The pre-1.0 draft (no `<version>`), RFC 7489 Appendix C and RFC 9990 (with or without its
namespace) share one shape, so one namespace-agnostic reader serves them all. The document is fed
to lxml's streaming parser in chunks; the records each chunk completes are read one at a time, and
their elements freed before the next chunk, so memory stays flat whatever the report's size. The
parser refuses DTDs (no entity is ever expanded), never touches the network and recovers what it
can from documents that are not well-formed, keeping the error.
"""

from __future__ import annotations

import itertools
import math
import re
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

from lxml import etree

from analysis.crosscheck import CrossCheck
from analysis.errors import CorruptInput, LimitExceeded, NotAReport, UnsafeXml
from analysis.limits import Limits, MiB
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
from analysis.sniff import xml_start

RFC9990_NAMESPACE = "urn:ietf:params:xml:ns:dmarc-2.0"
#: Messages one record may count; more is a broken record (and would overflow the store).
MAX_COUNT = 1_000_000_000
_TAIL = 512
# The document's last tag must close <feedback> (comments, processing instructions and
# whitespace may follow).
_CLOSED = re.compile(rb"(?:</(?:[\w.-]+:)?feedback\s*>|<(?:[\w.-]+:)?feedback\b[^<>]*/>)"
                     rb"(?:\s|<!--.*?-->|<\?.*?\?>)*\Z", re.DOTALL)
#: The same for a report wrapped in another element: the wrappers' end tags may follow.
_CLOSED_WRAPPED = re.compile(rb"</(?:[\w.-]+:)?feedback\s*>"
                             rb"(?:\s|<!--.*?-->|<\?.*?\?>|</[\w.:-]+\s*>)*\Z", re.DOTALL)
#: A <feedback> start tag, looked for in the first chunk of a document whose root is another
#: element (IKEA once sent its report inside a stray <xs:schema> open tag; issue 15).
_FEEDBACK_TAG = re.compile(rb"<(?:[\w.-]+:)?feedback[\s/>]")
#: Namespaces a <feedback> is known in: none (most reports), RFC 9990's, and the one RFC 7489's
#: XSD declares as its target. Another is read all the same, by local names, and noted.
_KNOWN_NAMESPACES = frozenset({"", "urn:ietf:params:xml:ns:dmarc-2.0",
                               "http://dmarc.org/dmarc-xml/0.1"})
#: Above this, a date_range value is milliseconds (SFR sends them; issue 15): as seconds it
#: would be past the year 5000, in milliseconds it is after 1973.
_MILLISECONDS = 10**11
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?")
_MISMATCH = re.compile(r"tag mismatch: ([\w.:-]+) line")
#: Elements whose wrong closing loses report data (a stray unknown tag is only repaired).
_STRUCTURE = frozenset({"feedback", "report_metadata", "policy_published", "record", "row",
                        "policy_evaluated", "identifiers", "auth_results"})
#: Records read before the report's header is complete (out-of-order documents) at most.
_EARLY_RECORDS = 10_000
_FIRST_TAG = re.compile(rb"<([A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)")
_PROLOG = re.compile(rb"\A(?:\s|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>)*", re.DOTALL)


def _root_name(head: bytes) -> str | None:
    """The name of the first element, prefix included, read from the bytes (None when not plain
    ASCII-compatible XML or not in this chunk): a non-report document is refused before parsing."""
    start = _PROLOG.match(head.removeprefix(b"\xef\xbb\xbf"))
    rest = head.removeprefix(b"\xef\xbb\xbf")[start.end() if start else 0:]
    found = _FIRST_TAG.match(rest)
    return found.group(0)[1:].decode("ascii") if found else None


#: The report's parts: the top-level elements it is read from.
_PARTS = frozenset({"version", "report_metadata", "policy_published", "record"})
#: Put before the root element so the tree can be reached while lxml builds it: see
#: `_AggregateParser`. A processing instruction is allowed there in every XML document.
_MARKER = b"<?dmarcbot?>"
_DTD_REFUSED = "XML declares a DTD (DOCTYPE), which reports never need"
#: Where the marker goes: after a byte order mark and the XML declaration, which must come first.
_DECLARATION = re.compile(rb"(?:\xef\xbb\xbf)?(?:<\?xml\s[^<>]*?\?>)?")
#: What is left of a declaration that `_DECLARATION` could not take whole.
_BROKEN_DECLARATION = re.compile(rb"<\?xml\s")
#: The prolog's comments, processing instructions and white space (no DTD: it is refused).
_MISC = re.compile(rb"(?:\s|<\?.*?\?>|<!--.*?-->)*", re.DOTALL)
_CHUNK = 64 * 1024
#: The most one part of a report (a record, the metadata, the policy) may span. An open part is
#: kept whole, so without a cap one endless <record> would hold the whole document in memory.
_MAX_PART_BYTES = 1 * MiB
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


def _seconds(value: str, what: str) -> float:
    try:
        seconds = float(value)  # allows the surrounding whitespace, as xs:integer does
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise _BrokenRecord(f"{what} {value[:40]!r} is not a Unix time")
    return seconds


_AF_INET, _AF_INET6 = int(socket.AF_INET), int(socket.AF_INET6)  # plain ints convert faster
_pton, _ntop = socket.inet_pton, socket.inet_ntop
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: An IPv4 address as reports give it, already canonical: no call to the C library needed.
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


#: Notes on what a report's records spell otherwise than the standards, by kind: one line per
#: kind per report (the first case), however many records share it.
Quirks = dict[str, str]


def _ip(value: str, quirks: Quirks) -> str:
    """The canonical text of an IP address (compressed, lower-case IPv6)."""
    if _CANONICAL_IPV4.fullmatch(value):
        return value
    value = value.strip()
    family = _AF_INET6 if ":" in value else _AF_INET
    try:
        return _ntop(family, _pton(family, value))
    except (OSError, ValueError):
        pass
    # An IPv6 address in URI brackets or with a zone index (`fe80::1%eth0`) names the same
    # address; a zone means nothing beyond the receiver's own host.
    bare = value.removeprefix("[").removesuffix("]").partition("%")[0]
    if bare != value and ":" in bare:
        try:
            canonical = _ntop(_AF_INET6, _pton(_AF_INET6, bare))
        except (OSError, ValueError):
            pass
        else:
            quirks.setdefault("ip", f"source_ip written with brackets or a zone index (first: "
                                    f"{value[:60]!r}); read as {canonical}")
            return canonical
    raise _BrokenRecord(
        f"source_ip {value[:60]!r} is not an IP address" if value else "missing source_ip")


# Elements a record is read from, numbered so the hot loop below compares small integers.
# Anything else (extensions, the plain containers row/policy_evaluated/identifiers) is skipped.
# First the five fields of a result slot (see _parse_record), then the record's own fields.
(_DOMAIN, _SELECTOR, _RESULT, _SCOPE, _HUMAN_RESULT,
 _SOURCE_IP, _COUNT, _DISPOSITION, _HEADER_FROM, _ENVELOPE_FROM, _ENVELOPE_TO,
 _DKIM, _SPF, _REASON, _AUTH_RESULTS) = range(15)
_SLOTS_END, _FIELDS_END = _SOURCE_IP, _DKIM
_RECORD_FIELDS = (
    "domain", "selector", "result", "scope", "human_result",
    "source_ip", "count", "disposition", "header_from", "envelope_from", "envelope_to",
    "dkim", "spf", "reason", "auth_results",
)
#: <reason> children share the result slots: type in the domain slot, comment in the selector's.
_REASON_SLOTS = {"type": _DOMAIN, "comment": _SELECTOR}


def record_tags(namespace: str) -> dict[str, int]:
    """Map the report's own qualified tags to field numbers: one dict lookup names an element.

    Elements of any other namespace (RFC 9990 extensions) find no entry and are skipped.
    """
    names = {name: code for code, name in enumerate(_RECORD_FIELDS)} | _REASON_SLOTS
    tags = dict(names)
    if namespace:
        # Also the names in no namespace: a report whose root alone carries a prefix
        # (`<d:feedback xmlns:d=...>` around unprefixed children) is still read.
        tags.update({f"{{{namespace}}}{name}": code for name, code in names.items()})
    return tags


def _lower(text: str | None) -> str:
    return text.strip().lower() if text else ""


def _result(text: str | None) -> str:
    if text is None:
        return ""
    word = _WORDS.get(text)  # the usual spellings, without the string work
    if word is None:
        word = text.strip().lower()
        word = _RESULT_ALIASES.get(word, word)
    return word


def _checked(text: str | None, quirks: Quirks) -> str:
    """`_result`, noting a word the standards spell otherwise (`PASS`, `Fail`, `hardfail`):
    the XSDs' values are lower-case words, but real reports vary (issue 15)."""
    word = _result(text)
    if text and word and text.strip() != word:  # (white space around a word is common)
        quirks.setdefault("spelling", f"results not spelled as the standards do (first: "
                                      f"{text.strip()[:20]!r}, read as {word!r})")
    return word


#: Results and dispositions as the standards spell them; any other spelling takes `_checked`.
_WORDS: dict[str | None, str] = {
    word: word for word in ("pass", "fail", "none", "softfail", "neutral", "temperror",
                            "permerror", "policy", "quarantine", "reject")
}


#: A report's records repeat the same few auth results and reasons (a sender signs with one
#: selector all day), so each distinct one is built once per parser and shared; they are frozen.
_SHARED_LIMIT = 4096
_Slots = list[str | None]
#: The parts one chunk completed, in document order, and whether they are all records.
_Batch = tuple[list[etree._Element], bool]


def _parse_record(rec: etree._Element, tags: dict[str, int], shared: dict[tuple[Any, ...], object],
                  quirks: Quirks) -> Record:
    # One pass over the record's elements in document order. This loop is most of the time spent
    # on a large report, so per element it does one dict lookup and at most one text read.
    fields: _Slots = [None] * _FIELDS_END  # the record's own fields by code: the last one wins
    dkim = spf = None  # policy_evaluated's
    in_auth = False
    slots: _Slots | None = None  # the reason or DKIM/SPF result being filled: the first one wins
    reasons: list[_Slots] = []
    dkims: list[_Slots] = []
    spfs: list[_Slots] = []
    get = tags.get
    for el in rec.iter():
        code = get(el.tag)
        if code is None:
            continue
        if code < _SLOTS_END:
            if slots is not None and slots[code] is None:
                slots[code] = el.text
        elif code < _FIELDS_END:
            fields[code] = el.text
        elif code == _DKIM:
            if in_auth:
                slots = [None, None, None, None, None]
                dkims.append(slots)
            else:
                dkim = el.text
        elif code == _SPF:
            if in_auth:
                slots = [None, None, None, None, None]
                spfs.append(slots)
            else:
                spf = el.text
        elif code == _AUTH_RESULTS:
            in_auth, slots = True, None
        else:  # _REASON: its own text in the result slot (rspamd wrote the type there)
            slots = [None, None, el.text, None, None]
            reasons.append(slots)
    source_ip, count, disposition, header_from, envelope_from, envelope_to = fields[_SLOTS_END:]
    header = header_from.strip().lower() if header_from else ""
    if not header:
        raise _BrokenRecord("missing identifiers/header_from")
    words = _WORDS  # the usual spellings of a result, looked up here without a call
    disposition = words.get(disposition) or _checked(disposition, quirks)
    dkim = words.get(dkim) or _checked(dkim, quirks)
    spf = words.get(spf) or _checked(spf, quirks)
    # A missing (or empty) result is unknown, not a fail: it is left empty here and filled by
    # the report's CrossCheck, which knows the alignment modes (issue 15).
    missing = () if disposition and dkim and spf else _missing(disposition, dkim, spf)
    return Record(
        _ip(source_ip or "", quirks), _count(count), disposition or "none", dkim, spf,
        _shared(reasons, _reason, shared, quirks) if reasons else (),
        header, envelope_from.strip().lower() or None if envelope_from else None,
        envelope_to.strip().lower() or None if envelope_to else None,
        _shared(dkims, _dkim_result, shared, quirks) if dkims else (),
        _shared(spfs, _spf_result, shared, quirks) if spfs else (),
        missing,
    )


def _missing(disposition: str, dkim: str, spf: str) -> tuple[str, ...]:
    """The names of the `policy_evaluated` fields a record left out or left empty."""
    return tuple(name for name, value in (("disposition", disposition), ("dkim", dkim),
                                          ("spf", spf)) if not value)


def _count(text: str | None) -> int:
    try:
        count = int(text)  # type: ignore[arg-type]  # int() allows the surrounding whitespace
    except (TypeError, ValueError):
        text = text.strip() if text else ""
        raise _BrokenRecord(
            f"count {text[:40]!r} is not a whole number" if text else "missing count"
        ) from None
    if count < 0:
        raise _BrokenRecord(f"count {count} is negative")
    if count > MAX_COUNT:
        raise _BrokenRecord(f"count {count} is implausibly large (limit {MAX_COUNT})")
    return count


def _shared(filled: list[_Slots], build: Callable[..., Any], shared: dict[tuple[Any, ...], object],
            quirks: Quirks) -> tuple[Any, ...]:
    """The results built from each slot list (None from `build` drops one), reusing equal ones.
    (A reused one was built, and any quirk in it noted, earlier in the same report.)"""
    out = []
    for slots in filled:
        key = (build, *slots)
        item = shared.get(key)
        if item is None:
            item = build(*slots, quirks)
            if item is None:
                continue
            if len(shared) >= _SHARED_LIMIT:
                shared.clear()
            shared[key] = item
        out.append(item)
    return tuple(out)


def _reason(kind: str | None, comment: str | None, text: str | None, _: str | None,
            __: str | None, quirks: Quirks) -> Reason:
    if kind is None and text and text.strip():  # `<reason>sampled_out</reason>` (rspamd)
        kind = text
        quirks.setdefault("reason", f"policy_evaluated/reason given as text, not in <type> "
                                    f"(first: {text.strip()[:30]!r}); read as its type")
    return Reason(_result(kind) or "other", comment.strip() or None if comment else None)


_NOT_IN_NAMES = re.compile(r"[\s/=]")


def _check_name(what: str, value: str | None) -> None:
    """No domain or selector holds whitespace, `/` or `=`: a record naming one is forged or
    broken, and is skipped rather than stored (issue 13)."""
    if value and _NOT_IN_NAMES.search(value.strip()):
        raise _BrokenRecord(f"{what} {value.strip()[:60]!r} is not a name")


def _dkim_result(domain: str | None, selector: str | None, result: str | None, _: str | None,
                 human: str | None, quirks: Quirks) -> DkimResult | None:
    if not (domain and domain.strip()):
        return None  # a DKIM result names the signing domain, or it says nothing
    _check_name("DKIM domain", domain)
    _check_name("DKIM selector", selector)
    return DkimResult(_lower(domain), selector.strip() or None if selector else None,
                      _checked(result, quirks) or "none", human.strip() if human else None)


def _spf_result(domain: str | None, _: str | None, result: str | None, scope: str | None,
                human: str | None, quirks: Quirks) -> SpfResult:
    _check_name("SPF domain", domain)
    return SpfResult(_lower(domain) or None, _lower(scope) or "mfrom",
                     _checked(result, quirks) or "none",
                     human.strip() if human else None, not _lower(scope))


def _last_element(el: etree._Element) -> etree._Element:
    """The element the parser added last under `el` (itself if it has none)."""
    while len(el):
        el = el[-1]
    return el


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

    empty = [name for name in _POLICY_WORDS if name in fields and not fields[name]]
    if empty:
        errors.append("policy_published has empty " + ", ".join(f"<{n}>" for n in empty)
                      + "; read as absent")

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


#: The policy fields read as words or numbers; an empty one is read as absent, and noted.
_POLICY_WORDS = ("p", "sp", "np", "adkim", "aspf", "pct", "fo", "testing", "discovery_method")


def _dates(header: _Header, source: str, errors: list[str]) -> tuple[datetime, datetime]:
    """The date range. RFC 7489 Appendix C gives whole seconds since the epoch; a fraction is
    dropped and milliseconds (SFR sends them) are divided by 1000, each noted (issue 15)."""
    try:
        begin = _seconds(header.begin, "date_range/begin")
        end = _seconds(header.end, "date_range/end")
        if not (begin.is_integer() and end.is_integer()):
            errors.append(f"date_range {header.begin[:24]!r}..{header.end[:24]!r} is not in "
                          "whole seconds; the fraction is dropped")
        if begin >= _MILLISECONDS and end >= _MILLISECONDS:
            begin, end = begin / 1000, end / 1000
            errors.append("date_range is in milliseconds, not the seconds RFC 7489 Appendix C "
                          "asks for; divided by 1000")
        return (datetime.fromtimestamp(int(begin), tz=UTC),
                datetime.fromtimestamp(int(end), tz=UTC))
    except _BrokenRecord as exc:
        raise NotAReport(source, f"aggregate report date range unusable: {exc}") from None
    except (ValueError, OverflowError, OSError):
        raise NotAReport(source, "aggregate report date range unusable: "
                                 f"{header.begin[:40]!r}..{header.end[:40]!r} is out of range"
                         ) from None


def _check_dates(begin: datetime, end: datetime, source: str, limits: Limits,
                 now: datetime) -> None:
    """Refuse a date range no real report has: dates decide which day's rollups a record joins
    and when alerts fire again, so a forged far-future date would silence them for years."""
    days = (end - begin).total_seconds() / 86400
    if days > limits.max_report_days:
        raise LimitExceeded(source, f"max_report_days={limits.max_report_days}",
                            f"report covers {days:.0f} days")
    if begin.year < limits.earliest_report_year:
        raise LimitExceeded(source, f"earliest_report_year={limits.earliest_report_year}",
                            f"report begins {begin:%Y-%m-%dT%H:%M:%SZ}, before DMARC's "
                            "first reports")
    ahead = (end - now).total_seconds() / 3600
    if ahead > limits.max_future_hours:
        raise LimitExceeded(source, f"max_future_hours={limits.max_future_hours}",
                            f"report ends {end:%Y-%m-%dT%H:%M:%SZ}, {ahead:.0f} hours from now")


def _report(header: _Header, source: str, records: RecordStream,
            errors: list[str], limits: Limits, now: datetime) -> AggregateReport:
    meta = header.metadata or {}
    email = meta.get("email") or None
    org = meta.get("org_name", "")
    if not org and email and "@" in email:
        org = email.rpartition("@")[2].lower()
        errors.append("report_metadata/org_name is empty; using the reporter e-mail's domain")
    if not org:
        raise NotAReport(source, "aggregate report names no reporter (org_name or email)")
    if email is None:  # accepted, but never believed from a mailbox (analysis/mailauth.py)
        errors.append("report_metadata/email is missing (RFC 7489 Appendix C requires the "
                      "reporter's e-mail)")
    report_id = normalise_report_id(meta.get("report_id", ""))
    if not report_id:
        raise NotAReport(source, "aggregate report has no report_metadata/report_id")
    if not (header.policy or {}).get("domain"):
        raise NotAReport(source, "aggregate report has no policy_published/domain")
    begin, end = _dates(header, source, errors)
    if header.version is not None and not _NUMBER.fullmatch(header.version):
        errors.append(f"version {header.version[:20]!r} is not a number (RFC 7489 Appendix C: "
                      "1.0); ignored")
    if end < begin:
        begin, end = end, begin
        errors.append("date_range/end is before begin; swapped")
    _check_dates(begin, end, source, limits, now)
    errors.extend(f"reporter error: {e}" for e in header.reporter_errors)
    return AggregateReport(
        schema=_schema(header), source=source,
        reporter=Reporter(org, email, meta.get("extra_contact_info") or None),
        report_id=report_id, begin=begin, end=end, generator=meta.get("generator") or None,
        policy=_policy(header.policy or {}, errors), records=records, errors=errors,
    )


def parse_aggregate(stream: BinaryIO, source: str, limits: Limits | None = None, *,
                    now: datetime | None = None) -> AggregateReport:
    """Read the report's header now and return it with a lazy stream of its records.

    Raise `UnsafeXml` for a DTD, `NotAReport` when the document is not an aggregate report,
    `CorruptInput` when not even lxml's recovery can read it, `LimitExceeded` for a date range
    out of reason (`now`, the current time unless given, is what "the future" is measured
    from). The stream must stay open until the records are consumed.
    """
    return _AggregateParser(stream, source, limits or Limits(), now).report()


class _AggregateParser:
    """Feeds the document to lxml in chunks and reads the report's parts between chunks.

    lxml's parse events cost a call into Python, and a trip for the GIL, for every element. So
    none is asked for: libxml2 builds the tree on its own, and the tree is reached through a
    processing instruction put before the root element (the only event there is). After each
    chunk, the parts (version, metadata, policy, records) that the chunk completed are read: every
    part that is not on the path of elements still open. Before the next chunk, everything off
    that path is dropped, read or not (unknown elements, extensions), so no document, however
    built, grows the tree.
    """

    def __init__(self, stream: BinaryIO, source: str, limits: Limits,
                 now: datetime | None = None) -> None:
        self.stream = stream
        self.source = source
        self.limits = limits
        self.now = now  # what "the future" is measured from; None: the clock, when checked
        self.parser = etree.XMLPullParser(
            events=("pi",), recover=True, resolve_entities=False, no_network=True,
            load_dtd=False, huge_tree=False, remove_comments=True, remove_blank_text=True,
        )
        self.marker: etree._Element | None = None  # the processing instruction before the root
        self.foreign_pis = False  # whether the document has processing instructions of its own
        self.closed_at: int | None = None  # `fed` when something was seen after the root
        self.fed = 0  # bytes given to lxml so far
        self.open_part: etree._Element | None = None  # the part kept whole at the last pruning
        self.open_since = 0  # `fed` when it was first kept
        self.open_tip: etree._Element | None = None  # its last element then: it grew if that moved
        self.root: etree._Element | None = None  # <feedback>, once seen
        self.document_root: etree._Element | None = None  # whatever the root was, at the end
        self.finished = False
        self.tail = b""  # the last bytes read up to the last '>', to see how the document ends
        self.trailing = 0  # bytes read after the last '>'
        self.trailing_markup = False  # whether a '<' is among them
        self.trailing_blank = True  # whether they are all white space
        self.wrapper: str | None = None  # the element a report came wrapped in, if it did
        self.namespace = ""
        self.tags = record_tags("")
        self.record_tag = "record"
        self.errors: list[str] = []
        self.record_no = 0
        self.shared: dict[tuple[Any, ...], object] = {}  # see _shared
        self.quirks: Quirks = {}  # see _checked; noted once the records are read

    def report(self) -> AggregateReport:
        header = _Header()
        early: list[Record] = []  # records read before the header was complete
        rest: list[etree._Element] = []  # the parts after those, in the batch that completed it
        batches = self._batches()
        for parts, _ in batches:
            for at, el in enumerate(parts):
                name = _local(el.tag)
                if name == "record":
                    if header.complete:  # later header parts are repeats, and ignored
                        rest = parts[at:]
                        break
                    self.record_no += 1
                    try:
                        early.append(_parse_record(el, self.tags, self.shared, self.quirks))
                    except _BrokenRecord as exc:
                        self.errors.append(f"record {self.record_no} skipped: {exc}")
                    if len(early) > _EARLY_RECORDS:
                        raise NotAReport(self.source, f"more than {_EARLY_RECORDS} records "
                                         "before the report's metadata and policy")
                elif name == "version":
                    header.version = _text(el)
                elif name == "report_metadata":
                    header.take_metadata(el)
                elif name == "policy_published":
                    header.policy = _fields(el)
            else:
                continue
            break
        else:
            self._check_complete(header)
        header.namespace = self.namespace
        policy = header.policy or {}
        check = CrossCheck(policy.get("adkim", "").lower(), policy.get("aspf", "").lower())
        return _report(header, self.source,
                       RecordStream(self._records(early, rest, batches, check), self.source),
                       self.errors, self.limits, self.now or datetime.now(UTC))

    def _records(self, early: list[Record], rest: list[etree._Element],
                 batches: Iterator[_Batch], check: CrossCheck) -> Iterator[Record]:
        # This loop runs once per record: it keeps to local names. Parts other than records
        # after the header are repeats, and ignored. Each record is cross-checked here, in
        # normalisation, so nothing downstream believes a contradicted pass (crosscheck.py).
        for record in early:
            yield check(record)
        tags, shared, quirks, number = self.tags, self.shared, self.quirks, self.record_no
        for parts, only_records in itertools.chain([(rest, False)], batches):
            for el in parts:
                if not only_records and _local(el.tag) != "record":
                    continue
                number += 1
                try:
                    record = _parse_record(el, tags, shared, quirks)
                except _BrokenRecord as exc:
                    self.errors.append(f"record {number} skipped: {exc}")
                    continue
                yield check(record)
        self.errors.extend(quirks.values())
        self.errors.extend(check.notes())

    def _batches(self) -> Iterator[_Batch]:
        """After each chunk, the parts it completed, in document order, each once."""
        while not self.finished:
            self._feed()
            if self.root is not None:
                parts: list[etree._Element] = []
                only_records = self._collect(self.root, not self.finished, parts)
                if self.foreign_pis:
                    for part in parts:  # their text goes on after them (kept for the marker)
                        etree.strip_elements(part, etree.PI, with_tail=False)
                yield parts, only_records
                parts.clear()  # no proxy left: lxml frees a pruned element at once

    def _collect(self, el: etree._Element, is_open: bool, parts: list[etree._Element]) -> bool:
        """Add the whole parts under `el` to `parts`; say whether all its children were records."""
        # Only the last child of an open element can be open.
        found = list(el.iterchildren(self.record_tag))
        if len(found) == len(el):  # only records, the usual case: lxml filters them
            if is_open and found:
                found.pop()
            parts.extend(found)
            return True
        for child in el[:-1] if is_open else el:
            self._take(child, False, parts)
        if is_open:
            self._take(el[-1], True, parts)
        return False

    def _take(self, el: etree._Element, is_open: bool, parts: list[etree._Element]) -> None:
        # Parts under a stray open tag (IKEA once sent one) are still the report's; inside an
        # extension or inside another part they are not.
        name = _local(el.tag)
        if name in _PARTS:
            if not is_open:
                parts.append(el)
        elif name and name != "extension":
            self._collect(el, is_open, parts)

    def _prune(self) -> None:
        # Everything before the last child of an open element has been read (or is of no use).
        # An open part is kept whole, up to _MAX_PART_BYTES.
        el = self.root
        while el is not None and len(el):
            del el[:-1]
            el = el[0]
            name = _local(el.tag)
            if name in _PARTS:
                # (A whole part followed by comments or junk stays last too, but does not grow.)
                tip = _last_element(el)
                if el is not self.open_part:
                    self.open_part, self.open_since = el, self.fed
                elif tip is not self.open_tip and self.fed - self.open_since > _MAX_PART_BYTES:
                    raise LimitExceeded(self.source, "1 MiB per report part",
                                        f"<{name}> is larger than 1 MiB")
                self.open_tip = tip
                return
        self.open_part = self.open_tip = None

    def _feed(self) -> None:
        """Give lxml the next chunk, or tell it the document ended (then `finished` is set)."""
        try:
            chunk = self.stream.read(_CHUNK)
            if chunk:
                if not self.fed:
                    chunk = self._first(chunk)
                self._keep_tail(chunk)
            # Every part so far has been read. Nothing is allocated between the pruning and the
            # parsing, which reuses the freed nodes: a block of 1 KiB or more in between makes
            # malloc merge all of them first (a tenth of the parse time).
            self._prune()
            if chunk:
                self.fed += len(chunk)
                self.parser.feed(chunk)
                self._find_root()
                return
            self.finished = True
            self.document_root = self.parser.close()
        except etree.XMLSyntaxError as exc:
            if self.root is None and "Document is empty" in str(exc):
                raise NotAReport(self.source, "XML holds no elements") from None
            raise CorruptInput(self.source, f"XML cannot be read ({exc.msg})") from None
        self._find_root()
        self._check_whole()
        context_errors(self.parser, self.errors)

    def _keep_tail(self, chunk: bytes) -> None:
        """Keep the document's last bytes up to its last '>', and what follows that: stray
        bytes after the closing </feedback> are ignored, a cut-off document is not."""
        gt = chunk.rfind(b">")
        rest = chunk
        if gt >= 0:
            self.tail = (self.tail + chunk[max(0, gt + 1 - _TAIL):gt + 1])[-_TAIL:]
            self.trailing, self.trailing_markup, self.trailing_blank = 0, False, True
            rest = chunk[gt + 1:]
        if rest:
            self.trailing += len(rest)
            self.trailing_markup = self.trailing_markup or b"<" in rest
            self.trailing_blank = self.trailing_blank and not rest.strip()

    def _skip_stray(self, chunk: bytes) -> bytes:
        """The first chunk without what some reporters put before the XML (issue 15): white
        space before the declaration (which would hide its encoding) or a few stray bytes."""
        body = chunk.removeprefix(b"\xef\xbb\xbf")
        if body[:1] == b"<":
            return chunk
        stripped = body.lstrip(b" \t\r\n")
        if stripped.startswith(b"<?xml"):
            self.errors.append("white space before the XML declaration ignored")
            return stripped
        at = xml_start(body)
        if stripped.startswith(b"<") or at <= 0:  # white space before the root is allowed
            return chunk
        self.errors.append(f"{at} stray bytes before the XML ignored")
        return body[at:]

    def _first(self, chunk: bytes) -> bytes:
        """Refuse a document that is plainly not a report; put the marker before its root."""
        chunk = self._skip_stray(chunk)
        name = _root_name(chunk)
        if name is not None and name.rpartition(":")[2] != "feedback":
            if not _FEEDBACK_TAG.search(chunk):
                raise NotAReport(self.source, f"XML root is <{name}>, not an aggregate <feedback>")
            # A report inside another element: the <feedback> in it is the report.
            self.wrapper = name
            self.errors.append(f"report wrapped in <{name}>; the <feedback> inside it is read")
        at = _DECLARATION.match(chunk).end()  # type: ignore[union-attr]  # it matches anywhere
        if _BROKEN_DECLARATION.match(chunk, at):
            # The marker cannot go before it, and its encoding would be lost after it.
            raise CorruptInput(self.source, "XML declaration is not well-formed")
        if chunk.startswith(b"<!DOCTYPE", _MISC.match(chunk, at).end()):  # type: ignore[union-attr]
            raise UnsafeXml(self.source, _DTD_REFUSED)  # before lxml reads it: it can be long
        return chunk[:at] + _MARKER + chunk[at:]

    def _find_root(self) -> None:
        for _, pi in self.parser.read_events():  # read every time: they pile up otherwise
            if self.marker is None:
                self.marker = pi
            else:
                self.foreign_pis = True
        if self.marker is None:
            return
        if self.root is None:
            root = self.marker.getroottree().getroot()
            if root is not None:
                self._take_root(root)
            elif self.fed >= _CHUNK:
                # lxml's cost grows with the square of what precedes the root element.
                raise NotAReport(self.source, f"XML has no root element in its first "
                                 f"{_CHUNK // 1024} KiB")
            if self.root is None and self.fed >= 2 * _CHUNK:  # a wrapper, never unwrapped
                raise NotAReport(self.source, f"XML has no <feedback> in its first "
                                 f"{2 * _CHUNK // 1024} KiB")
        elif self.closed_at is None:
            if self.root.getnext() is not None:  # the root is closed
                self.closed_at = self.fed
        elif self.fed - self.closed_at > _TAIL:
            # Nothing after the root is ever pruned; such a document is refused at its end anyway.
            raise CorruptInput(self.source, f"more than {_TAIL} bytes follow the closing "
                               "</feedback>")

    def _check_whole(self) -> None:
        """Refuse a report that lost records: cut short, or closed early by a stray end tag.

        lxml's recovery would hand back the records before the damage as if they were all; a
        report is stored whole or not at all, so such a copy must not take the ledger key.
        """
        if self.root is None:
            return  # not a report at all; said elsewhere
        closed = _CLOSED_WRAPPED if self.wrapper else _CLOSED
        if self.trailing_markup or not closed.search(self.tail):
            raise CorruptInput(self.source, "XML ends before its closing </feedback> (truncated)")
        if not self.trailing_blank:  # stray bytes after the report (issue 15)
            self.errors.append(f"{self.trailing} bytes that are not XML follow the closing "
                               "</feedback>; ignored")
        for entry in self.parser.feed_error_log:
            if entry.type == etree.ErrorTypes.ERR_TAG_NAME_MISMATCH:
                found = _MISMATCH.search(entry.message)
                if found and found.group(1).rpartition(":")[2] in _STRUCTURE:
                    raise CorruptInput(self.source, f"XML line {entry.line}: <{found.group(1)}> "
                                       "is closed by the wrong tag; records would be lost")

    def _take_root(self, root: etree._Element, *, at_end: bool = False) -> None:
        if root.getroottree().docinfo.doctype:
            raise UnsafeXml(self.source, _DTD_REFUSED)
        if _local(root.tag) != "feedback":
            inner = next(root.iter("{*}feedback"), None) if self.wrapper else None
            if inner is None:
                if self.wrapper and not at_end:
                    return  # its <feedback> is not built yet
                raise NotAReport(self.source,
                                 f"XML root is <{_local(root.tag)}>, not an aggregate <feedback>")
            root = inner
        self.root = root
        namespace = root.tag[1:].partition("}")[0] if root.tag.startswith("{") else ""
        if namespace not in _KNOWN_NAMESPACES:
            self.errors.append(f"<feedback> is in the unknown namespace {namespace[:80]!r}; "
                               "read by its elements' local names")
        self.namespace = namespace
        prefix = f"{{{namespace}}}" if namespace else ""
        self.tags = record_tags(namespace)
        self.record_tag = prefix + "record"

    def _check_complete(self, header: _Header) -> None:
        if self.root is None:
            if self.document_root is None:
                raise NotAReport(self.source, "XML holds no elements")
            self._take_root(self.document_root, at_end=True)  # refuses a DTD or names the root
        if not header.complete:
            missing = "report_metadata" if header.metadata is None else "policy_published"
            raise NotAReport(self.source, f"aggregate report has no <{missing}>")


def context_errors(parser: etree.XMLPullParser, errors: list[str]) -> None:
    """Keep what lxml had to recover from, one short line each, without document text."""
    seen = 0
    for entry in parser.feed_error_log:
        if entry.level >= etree.ErrorLevels.ERROR:
            seen += 1
            if seen <= 20:
                errors.append(f"XML line {entry.line}: {entry.message}")
    if seen > 20:
        errors.append(f"XML: {seen - 20} more errors")
