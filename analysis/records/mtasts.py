"""MTA-STS (RFC 8461): the `_mta-sts.<domain>` TXT record (§3.1) and the policy file (§3.2).

Parse-only: the policy file is fetched over HTTPS from `mta-sts.<domain>/.well-known/mta-sts.txt`
by whoever has an HTTP client (not `analysis/`, which does no I/O) and its text handed in here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from analysis.records import taglist
from analysis.records.findings import Finding

MODES = ("enforce", "testing", "none")
MAX_AGE = 31557600  # about a year: the largest max_age a policy may give (§3.2)
S_TXT = "RFC 8461 §3.1"
S_POLICY = "RFC 8461 §3.2"
_VERSION = re.compile(r"v=STSv1(?=[ \t]*(?:;|$))")
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"
_MX = re.compile(r"(?:\*\.)?(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*"
                 r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?")


@dataclasses.dataclass(frozen=True, slots=True)
class StsRecord:
    text: str
    valid: bool
    id: str | None
    findings: tuple[Finding, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class StsPolicy:
    valid: bool  # senders can use it: every required field, each with a value its rule allows
    mode: str | None
    max_age: int | None
    mx: tuple[str, ...]
    findings: tuple[Finding, ...]


def is_sts(text: str) -> bool:
    return _VERSION.match(text) is not None


def parse_sts_record(text: str) -> StsRecord:
    """One `_mta-sts` TXT string: `v=STSv1; id=<1-32 letters or digits>;`."""
    findings: list[Finding] = []

    def add(level: str, code: str, message: str) -> None:
        findings.append(Finding(level, "mta-sts", message, S_TXT, code=f"mta-sts.{code}"))

    match = _VERSION.match(text)
    if match is None:
        add("error", "not-sts", "the record must start with v=STSv1 (case-sensitive): senders "
            "ignore it")
        return StsRecord(text, False, None, tuple(findings))
    rest = text[match.end():].lstrip(taglist.WSP)
    parts = taglist.split(rest[1:] if rest.startswith(";") else rest, name=_EXT_NAME,
                          value=r"[\x21-\x3a\x3c\x3e-\x7e]", inner_blanks=False)
    for bad in parts.bad:
        add("error", "syntax", f"{bad!r} is not field=value")
    ids = [t.value for t in parts.tags if t.name == "id"]
    if not ids:
        add("error", "no-id", "no id= field: senders cannot tell when the policy changed, and "
            "ignore the record")
    elif not _ID.fullmatch(ids[0]):
        add("error", "bad-id", f"id={ids[0]} must be 1 to 32 letters or digits")
    if len(ids) > 1:
        add("warning", "duplicate", "id appears more than once: only the first counts")
    valid = bool(ids) and _ID.fullmatch(ids[0]) is not None and not parts.bad
    return StsRecord(text, valid, ids[0] if ids else None, tuple(findings))


def sts_record_findings(domain: str, txts: Sequence[str]) -> list[Finding]:
    """Every TXT string at `_mta-sts.<domain>`: exactly one must start with v=STSv1."""
    records = [t for t in txts if is_sts(t)]
    if len(records) > 1:
        return [Finding("error", "mta-sts", f"_mta-sts.{domain} has {len(records)} MTA-STS "
                        "records: senders assume there is no policy", S_TXT,
                        code="mta-sts.multiple")]
    return list(parse_sts_record(records[0]).findings) if records else []


def parse_sts_policy(text: str) -> StsPolicy:
    """The policy file: `key: value` lines (LF or CRLF); non-mx duplicates keep the first."""
    findings: list[Finding] = []

    def add(level: str, code: str, message: str) -> None:
        findings.append(Finding(level, "mta-sts", message, S_POLICY, code=f"mta-sts.{code}"))

    fields: dict[str, str] = {}
    mx: list[str] = []
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        if not line.strip(taglist.WSP):
            continue
        key, colon, value = line.partition(":")
        if not colon or not re.fullmatch(_EXT_NAME, key):
            add("error", "policy-syntax", f"line {number} is not 'key: value'")
            continue
        value = value.strip(taglist.WSP)
        if key == "mx":
            if _MX.fullmatch(value):
                mx.append(value.lower())
            else:
                add("error", "policy-mx", f"mx: {value!r} is not a host name or *.host pattern")
        elif key in fields:
            add("warning", "policy-duplicate", f"{key} appears more than once: the first counts")
        else:
            fields[key] = value
    if fields.get("version") != "STSv1":
        add("error", "policy-version", "the policy must have 'version: STSv1'")
    mode = fields.get("mode")
    if mode not in MODES:
        add("error", "policy-mode", f"mode must be enforce, testing or none, not {mode!r}")
        mode = None
    age = fields.get("max_age")
    max_age = int(age) if age is not None and re.fullmatch(r"\d{1,10}", age) else None
    if max_age is None or max_age > MAX_AGE:
        add("error", "policy-max-age", f"max_age must be a number of seconds up to {MAX_AGE}, "
            f"not {age!r}")
        max_age = None
    if mode in ("enforce", "testing") and not mx:
        add("error", "policy-no-mx", f"mode: {mode} needs at least one mx: line")
    if mode == "testing":
        add("info", "policy-testing", "mode: testing: senders report failures but deliver anyway")
    valid = not any(f.level == "error" for f in findings)
    return StsPolicy(valid, mode, max_age, tuple(mx), tuple(findings))
