"""BIMI assertion records, `default._bimi.<domain>` (draft-brand-indicators-for-message-
identification, "Assertion Record Definition"): `v=BIMI1` first, `l=` one HTTPS URI of the logo
(REQUIRED; empty with an empty `a=` declines BIMI), `a=` one HTTPS URI of the evidence document.
"""

from __future__ import annotations

import dataclasses
import re

from analysis.records import taglist
from analysis.records.findings import Finding

S_RECORD = "BIMI draft, Assertion Record Definition"
_VERSION = re.compile(r"v[ \t]*=[ \t]*BIMI1(?=[ \t]*(?:;|$))", re.IGNORECASE)
_HTTPS = re.compile(r"https://[A-Za-z0-9.-]+(?::\d+)?(?:/(?:[A-Za-z0-9\-._~!$&'()*+=:@/?#]|"
                    r"%[0-9A-Fa-f]{2})*)?", re.IGNORECASE)


@dataclasses.dataclass(frozen=True, slots=True)
class BimiRecord:
    text: str
    valid: bool
    logo: str | None
    evidence: str | None
    declined: bool  # `l=` and `a=` both empty: an explicit "no logo here"
    findings: tuple[Finding, ...]


def parse_bimi(text: str) -> BimiRecord:
    findings: list[Finding] = []

    def add(level: str, code: str, message: str) -> None:
        findings.append(Finding(level, "bimi", message, S_RECORD, code=f"bimi.{code}"))

    match = _VERSION.match(text)
    if match is None or "BIMI1" not in match.group(0):
        add("error", "not-bimi", "the record must start with v=BIMI1: mailbox providers ignore it")
        return BimiRecord(text, False, None, None, False, tuple(findings))
    rest = text[match.end():].lstrip(taglist.WSP)
    parts = taglist.split(rest[1:] if rest.startswith(";") else rest, name="[A-Za-z]+",
                          value=r"[\x21-\x3a\x3c-\x7e]", blanks=taglist.FWS)
    for bad in parts.bad:
        add("error", "syntax", f"{bad!r} is not tag=value")
    for duplicate in parts.duplicates(fold=True):
        add("error", "duplicate-tag", f"the tag {duplicate} appears more than once")
    tags: dict[str, str] = {}
    for tag in parts.tags:
        tags.setdefault(tag.name.lower(), tag.value)
    logo, evidence = tags.get("l"), tags.get("a", "")
    if logo is None:
        add("error", "no-l", "no l= tag (the logo's location): it is required")
    declined = logo == "" and evidence == ""
    for name, value in (("l", logo), ("a", evidence)):
        if value and not _HTTPS.fullmatch(value):
            add("error", "bad-uri", f"{name}={value} must be one https:// URI")
    if logo and not evidence:
        add("info", "no-evidence", "no a= (evidence document): several mailbox providers show "
            "the logo only with a mark certificate")
    valid = logo is not None and not any(f.level == "error" for f in findings)
    return BimiRecord(text, valid, logo or None, evidence or None, declined, tuple(findings))
