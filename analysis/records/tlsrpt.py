"""SMTP TLS Reporting records, `_smtp._tls.<domain>` (RFC 8460 §3).

`v=TLSRPTv1` first (case-sensitive), then `rua=` with one or more `mailto:` or `https:` URIs;
unknown fields are ignored. Senders discard TXT strings that do not start with the version and
use the domain's record only when exactly one remains (§3).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from analysis.records import taglist
from analysis.records.findings import Finding

SCHEMES = ("mailto", "https")
S_RECORD = "RFC 8460 §3"
_VERSION = re.compile(r"v=TLSRPTv1(?=[ \t]*;)")  # at least one field must follow (§3)
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"
_VALUE = r"[\x21-\x3a\x3c\x3e-\x7e]"
_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(?:[A-Za-z0-9\-._~!$&'()*+=:@/?#]|%[0-9A-Fa-f]{2})+")


@dataclasses.dataclass(frozen=True, slots=True)
class TlsRptRecord:
    text: str
    valid: bool  # senders can use it: version first, at least one usable rua URI
    rua: tuple[str, ...]
    findings: tuple[Finding, ...]


def is_tlsrpt(text: str) -> bool:
    return _VERSION.match(text) is not None


def parse_tlsrpt(text: str) -> TlsRptRecord:
    findings: list[Finding] = []

    def add(level: str, code: str, message: str) -> None:
        findings.append(Finding(level, "tls-rpt", message, S_RECORD, code=f"tls-rpt.{code}"))

    match = _VERSION.match(text)
    if match is None:
        add("error", "not-tlsrpt", "the record must start with v=TLSRPTv1 (case-sensitive): "
            "senders ignore it")
        return TlsRptRecord(text, False, (), tuple(findings))
    rest = text[match.end():]
    if not rest.startswith(";"):
        add("warning", "blank-before-semicolon", "a blank before the first ';': senders that "
            "look for the literal 'v=TLSRPTv1;' ignore the record")
    rest = rest.lstrip(taglist.WSP)
    parts = taglist.split(rest[1:] if rest.startswith(";") else rest, name=_NAME,
                          value=r"[\x21-\x3a\x3c-\x7e]", inner_blanks=True)
    for bad in parts.bad:
        add("error", "syntax", f"{bad!r} is not field=value")
    if parts.empty_parts:
        add("error", "syntax", "empty field between two ';'")
    uris: list[str] = []
    for tag in parts.tags:
        if tag.name == "rua":
            continue
        if not re.fullmatch(rf"(?:{_VALUE})+", tag.value):
            add("error", "syntax", f"{tag.name}={tag.value}: an extension value may not hold "
                "blanks, '=' or ';'")
        elif tag.name == "v":
            add("warning", "duplicate", "v appears more than once")
        else:
            add("info", "unknown-field", f"unknown field {tag.name}: senders ignore it")
    rua = [t.value for t in parts.tags if t.name == "rua"]  # several rua fields add up (§3)
    if not rua:
        add("error", "no-rua", "no rua= field: senders have nowhere to send reports")
    for uri in (u.strip(taglist.WSP) for value in rua for u in value.split(",")):
        found = _URI.fullmatch(uri)
        if found is None:
            add("error", "bad-uri", f"rua {uri!r} is not a URI")
        elif found.group(1).lower() not in SCHEMES:
            add("error", "bad-uri", f"rua {uri}: only mailto: and https: are defined")
        else:
            uris.append(uri)
    valid = bool(uris) and not any(f.level == "error" for f in findings)
    return TlsRptRecord(text, valid, tuple(uris), tuple(findings))


def tlsrpt_findings(domain: str, txts: Sequence[str]) -> list[Finding]:
    """Findings for every TXT string at `_smtp._tls.<domain>`: one record, and a valid one."""
    records = [t for t in txts if is_tlsrpt(t)]
    others = [t for t in txts if not is_tlsrpt(t) and not t.lower().lstrip().startswith("v=tlsrpt")]
    unrelated = [Finding("info", "tls-rpt", f"_smtp._tls.{domain} also holds TXT that is not "
                         "TLS-RPT; senders ignore it", S_RECORD, code="tls-rpt.unrelated")
                 for _ in others[:1]]
    if len(records) > 1:
        return [Finding("error", "tls-rpt", f"_smtp._tls.{domain} has {len(records)} TLS-RPT "
                        "records: senders use none of them", S_RECORD,
                        code="tls-rpt.multiple"), *unrelated]
    if records:
        return [*parse_tlsrpt(records[0]).findings, *unrelated]
    near = [t for t in txts if t.lower().lstrip().startswith("v=tlsrpt")]
    return [*(f for t in near for f in parse_tlsrpt(t).findings), *unrelated]
