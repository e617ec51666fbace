"""Failure (ruf) reports: RFC 6591 ARF as updated by RFC 9991, and plain-text notices.

Failure reports carry personal data (a sample of the failed message), so only the ARF fields and a
handful of the sample's headers are kept; the sample's body is never read.
"""

from __future__ import annotations

import email.parser
import email.policy
import ipaddress
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email import errors as email_errors
from email.message import Message
from email.utils import parseaddr, parsedate_to_datetime

from analysis.headers import uncommented
from analysis.model import FailureReport

_SAMPLE_HEADERS = ("from", "to", "subject", "date", "message-id")
_TEXT_NOTICE = re.compile(r"^\s*Sender IP Address:", re.MULTILINE | re.IGNORECASE)
_TEXT_FIELD = re.compile(r"^\s*([A-Za-z][A-Za-z ]+?):[ \t]*(.*?)\s*$", re.MULTILINE)
_HEADER_COPY = re.compile(r"^-+ This is a copy of the headers.*$", re.MULTILINE | re.IGNORECASE)
_DELIVERY = {"accept": "delivered", "reject": "reject", "quarantine": "spam"}
#: ARF fields holding an address, a domain or an IP, where RFC 5965 section 3.5 and RFC 6591
#: allow comments (CFWS) around the value: OpenDMARC writes `Source-IP: 192.0.2.1 (host.name)`.
#: A comment is not part of the value, so it is taken out (issue 15).
_ADDRESS_FIELDS = frozenset({"source-ip", "original-mail-from", "original-rcpt-to",
                             "reported-domain", "dkim-domain", "dkim-identity", "dkim-selector"})


def _uncommented(value: str) -> str | None:
    """`value` without its RFC 5322 comments, its spacing tidied; None when unbalanced."""
    bare = uncommented(value)
    return None if bare is None else " ".join(bare.split())


def _ip_field(value: str | None, what: str, errors: list[str]) -> str | None:
    """The canonical text of the IP address in a field (as aggregate records give theirs), or
    None with a note in `errors` when the field holds something else."""
    if value is None:
        return None
    bare = _uncommented(value)
    try:
        return str(ipaddress.ip_address(bare or ""))
    except ValueError:
        errors.append(f"{what} {value[:60]!r} is not an IP address; left out")
        return None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
        return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _header(msg: Message, name: str) -> str | None:
    """One header as plain text; None when absent or when the header parser chokes on it."""
    try:
        value = msg.get(name)
    except Exception:  # the e-mail header parser raises on some hostile headers
        return None
    return None if value is None else " ".join(str(value).split())


def _reporter(msg: Message) -> str | None:
    try:
        address = parseaddr(str(msg.get("from", "")))[1]
    except Exception:  # the header parser has raised on hostile From lines; not worth a report
        return None
    return address.lower() or None


def _headers_of(part: Message, notes: list[str]) -> Message | None:
    """The header block carried by a `message/*` or `text/rfc822-headers` part."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        encoding = (_header(part, "content-transfer-encoding") or "").lower()
        if encoding not in ("base64", "quoted-printable"):
            return payload[0]
        # A message/* part must not be encoded (RFC 2045 section 6.4), but NetEase sends its
        # ARF part in base64 (issue 15). The e-mail parser read the encoded text as a message;
        # put it back together and decode it the way the e-mail package decodes any part.
        decoded = _decoded(_as_written(payload[0]), encoding)
        notes.append(f"{part.get_content_type()} part sent {encoding}-encoded; decoded")
        return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(decoded)
    raw = part.get_payload(decode=True)
    if isinstance(raw, bytes):
        return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    return None


def _as_written(inner: Message) -> str:
    """The text a sub-message was parsed from, near enough to decode: its header lines, the
    blank line if it had one, its body."""
    head = "".join(f"{name}: {value}\n" for name, value in inner.raw_items())
    separated = not any(isinstance(d, email_errors.MissingHeaderBodySeparatorDefect)
                        for d in inner.defects)
    body = inner.get_payload()
    return head + ("\n" if separated and head else "") + (body if isinstance(body, str) else "")


def _decoded(text: str, encoding: str) -> bytes:
    part = Message()
    part["Content-Transfer-Encoding"] = encoding
    part.set_payload(text)
    data = part.get_payload(decode=True)  # the e-mail package's lenient decoders
    return data if isinstance(data, bytes) else b""


def _walk(msg: Message) -> Iterator[tuple[Message, str, str]]:
    """Every part, in order, with its type and the type of the multipart it sits in ("" for
    the message). Each type is parsed once: the e-mail package parses a header on every read."""
    stack: list[tuple[Message, str]] = [(msg, "")]
    while stack:
        part, parent = stack.pop()
        ctype = part.get_content_type()
        yield part, ctype, parent
        children = part.get_payload() if part.is_multipart() else None
        if isinstance(children, list):
            stack.extend((child, ctype) for child in reversed(children)
                         if isinstance(child, Message))


def _sample(headers: Message | None) -> dict[str, str]:
    if headers is None:
        return {}
    out = {}
    for name in _SAMPLE_HEADERS:
        value = _header(headers, name)
        if value is not None:
            out[name.replace("-", "_")] = value
    return out


def find_failure_report(msg: Message, source: str) -> FailureReport | None:
    """Return the failure report this e-mail carries, or None when it carries none."""
    feedback = sample = None
    notes: list[str] = []
    container = ""
    for part, ctype, parent in _walk(msg):
        if ctype == "message/feedback-report" and feedback is None:
            feedback, container = _headers_of(part, notes), parent
        elif ctype in ("message/rfc822", "text/rfc822-headers") and feedback is not None:
            sample = _headers_of(part, notes)
            break
    if feedback is not None and _header(feedback, "feedback-type"):
        if container != "multipart/report":  # NetEase sends multipart/mixed (issue 15)
            notes.insert(0, f"ARF report sent in {container or 'a single-part message'}, not in "
                            "the multipart/report RFC 5965 section 2 asks for")
        return _from_arf(msg, feedback, sample, source, notes)
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                body = text.decode("utf-8", "replace")
                if _TEXT_NOTICE.search(body) and "DMARC" in body:
                    return _from_text(msg, body, source)
    return None


def _from_arf(msg: Message, fb: Message, sample: Message | None, source: str,
              notes: list[str]) -> FailureReport:
    def field(name: str) -> str | None:
        value = _header(fb, name) or None
        if value is not None and name in _ADDRESS_FIELDS:
            bare = _uncommented(value)  # None: unbalanced, kept as written (it may still serve)
            value = value if bare is None else bare or None
        return value

    errors = list(notes)
    return FailureReport(
        source=source, format="arf", reporter=_reporter(msg),
        feedback_type=(field("feedback-type") or "").lower() or None,
        user_agent=field("user-agent"), version=field("version"),
        auth_failure=(field("auth-failure") or "").lower() or None,
        identity_alignment=(field("identity-alignment") or "").lower() or None,
        delivery_result=(field("delivery-result") or "").lower() or None,
        original_mail_from=field("original-mail-from"), original_rcpt_to=field("original-rcpt-to"),
        original_envelope_id=field("original-envelope-id"),
        arrival_date=_date(field("arrival-date") or field("received-date")),
        source_ip=_ip_field(_header(fb, "source-ip") or None, "Source-IP", errors),
        reported_domain=(field("reported-domain") or "").lower() or None,
        authentication_results=field("authentication-results"),
        dkim_domain=field("dkim-domain"), dkim_identity=field("dkim-identity"),
        dkim_selector=field("dkim-selector"), spf_dns=field("spf-dns"),
        reported_uri=field("reported-uri"), sample_headers=_sample(sample), errors=errors,
    )


def _from_text(msg: Message, body: str, source: str) -> FailureReport:
    notice, *rest = _HEADER_COPY.split(body, maxsplit=1)
    copied = rest[0] if rest else ""
    fields = {k.strip().lower(): v for k, v in _TEXT_FIELD.findall(notice)}
    unaligned = [m for m in ("dkim", "spf") if fields.get(f"{m} alignment", "").lower() == "no"]
    results = [w.strip().lower() for w in fields.get("dmarc results", "").split(",")]
    action = results[-1] if results and results[-1] else ""
    sample = email.parser.Parser(policy=email.policy.compat32).parsestr(
        copied.lstrip("\r\n"), headersonly=True
    ) if copied.strip() else None
    errors: list[str] = []
    return FailureReport(
        source=source, format="text", reporter=_reporter(msg), feedback_type="auth-failure",
        user_agent=None, version=None, auth_failure="dmarc",
        identity_alignment=",".join(unaligned) or "none",
        delivery_result=_DELIVERY.get(action, "other") if action else None,
        original_mail_from=None, original_rcpt_to=None, original_envelope_id=None,
        arrival_date=_date(fields.get("received date")),
        source_ip=_ip_field(fields.get("sender ip address") or None, "Sender IP Address", errors),
        reported_domain=(fields.get("sender domain") or "").lower() or None,
        authentication_results=None, dkim_domain=None, dkim_identity=None, dkim_selector=None,
        spf_dns=None, reported_uri=None, sample_headers=_sample(sample), errors=errors,
    )
