"""MTA-STS (RFC 8461): the `_mta-sts.<domain>` TXT record (§3.1) and the policy file (§3.2).

The rules only: `analysis/` does no HTTP. Whoever has an HTTP client (`graph.mta_sts`) fetches
`https://mta-sts.<domain>/.well-known/mta-sts.txt` and hands back what came (`PolicyResponse`:
status, type, body, or how the connection failed); `policy_findings` decides what senders make of
it (§3.2, §3.3) and checks its `mx:` patterns against the domain's MX hosts (§4.1).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Protocol

from analysis.records import taglist
from analysis.records.findings import Finding

MODES = ("enforce", "testing", "none")
MAX_AGE = 31557600  # about a year: the largest max_age a policy may give (§3.2)
#: Under a day a policy lapses soon after a fetch an attacker blocks; §3.2 expects weeks.
SHORT_MAX_AGE = 86400
#: The most of a policy body that is read: the size §3.3 suggests senders accept at most.
MAX_POLICY_BYTES = 64 * 1024
#: Seconds the whole fetch may take. §3.3 suggests senders allow a minute; a check that a person
#: waits for gives up sooner, and says so.
FETCH_TIMEOUT = 10.0
WELL_KNOWN = "/.well-known/mta-sts.txt"
S_TXT = "RFC 8461 §3.1"
S_POLICY = "RFC 8461 §3.2"
S_FETCH = "RFC 8461 §3.3"
S_MX = "RFC 8461 §4.1"
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
    if mode == "none":
        add("info", "policy-none", "mode: none: the policy is withdrawn, senders stop applying "
            "MTA-STS once their cached copy is replaced")
    if max_age is not None and max_age < SHORT_MAX_AGE:
        add("warning", "policy-max-age-short", f"max_age: {max_age} is under a day: senders "
            "fetch the policy again so often that one blocked fetch leaves them without it; "
            "RFC 8461 expects weeks (e.g. max_age: 1209600)")
    valid = not any(f.level == "error" for f in findings)
    return StsPolicy(valid, mode, max_age, tuple(mx), tuple(findings))


# -- the policy file over HTTPS (§3.3) and the MX hosts it must cover (§4.1) -------------------


def policy_host(domain: str) -> str:
    return f"mta-sts.{domain}"


def policy_url(host: str) -> str:
    return f"https://{host}{WELL_KNOWN}"


def announced(txts: Sequence[str]) -> bool:
    """Whether `_mta-sts` holds exactly one valid record, the only case senders fetch a policy."""
    records = [t for t in txts if is_sts(t)]
    return len(records) == 1 and parse_sts_record(records[0]).valid


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyResponse:
    """What fetching the policy file brought back, before any rule of RFC 8461 is applied.

    `failure` is set when no HTTP answer came (or its body was not read in full): one of
    "no-address", "certificate", "tls", "connect", "timeout", "size", "protocol", with `detail`
    saying what happened in one line. Otherwise `status` and the headers are set, and `body`
    too when the status is 200.
    """

    url: str
    failure: str | None = None
    detail: str = ""
    status: int | None = None
    reason: str = ""
    content_type: str | None = None
    location: str | None = None
    body: bytes | None = None


class PolicyFetcher(Protocol):
    """Fetches `https://<host>/.well-known/mta-sts.txt` from one of `addresses` (what DNS gave
    `host`), validating the certificate against `host` and following no redirects."""

    async def fetch(self, host: str, addresses: Sequence[str]) -> PolicyResponse: ...


#: failure -> (severity, code suffix, what it means for senders)
_FAILURES = {
    "no-address": ("error", "no-policy-host", "senders cannot fetch the policy"),
    "certificate": ("error", "fetch-certificate", "senders refuse the policy"),
    "tls": ("error", "fetch-tls", "senders cannot fetch the policy"),
    "connect": ("error", "fetch-connect", "senders cannot fetch the policy"),
    "timeout": ("warning", "fetch-timeout", "senders may give up too; try again"),
    "size": ("error", "fetch-size", "senders may stop reading it"),
    "protocol": ("error", "fetch-protocol", "senders cannot read the policy"),
}


def policy_findings(domain: str, response: PolicyResponse,
                    mx_hosts: Sequence[str] | None) -> list[Finding]:
    """What senders make of the fetched policy file, and whether it covers `mx_hosts` (the
    domain's MX hosts; None when they could not be looked up)."""
    where = response.url

    def failed(level: str, code: str, text: str, rule: str = S_FETCH) -> list[Finding]:
        tail = "" if level != "error" else "; senders without a cached copy deliver without it"
        return [Finding(level, "mta-sts", f"{where}: {text}{tail}", rule,
                        code=f"mta-sts.{code}")]

    if response.failure is not None:
        level, code, then = _FAILURES.get(response.failure, _FAILURES["protocol"])
        return failed(level, code, f"{response.detail}: {then}")
    status = response.status or 0
    if 300 <= status < 400:
        to = f" to {response.location}" if response.location else ""
        return failed("error", "fetch-redirect", f"answered {status} {response.reason} "
                      f"(a redirect{to}): senders do not follow redirects; serve the file at "
                      "this address")
    if status != 200:
        return failed("error", "fetch-status", f"answered {status} {response.reason}: a policy "
                      "counts only when it comes with 200 OK")
    media = (response.content_type or "").split(";")[0].strip().lower()
    if media != "text/plain":
        shown = response.content_type or "no Content-Type"
        return failed("error", "fetch-type", f"served as {shown}, not text/plain: senders "
                      "that check the type ignore it", S_POLICY)
    try:
        text = (response.body or b"").decode("utf-8")
    except UnicodeDecodeError:
        return failed("error", "fetch-encoding", "the file is not UTF-8 text", S_POLICY)
    policy = parse_sts_policy(text)
    return [*policy.findings, *_mx_findings(domain, policy, mx_hosts)]


def mx_covered(host: str, pattern: str) -> bool:
    """§4.1: the pattern names the host, or `*.` stands for exactly its first label."""
    host, pattern = host.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.partition(".")[2] == pattern[2:]
    return host == pattern


def _mx_findings(domain: str, policy: StsPolicy, mx_hosts: Sequence[str] | None
                 ) -> list[Finding]:
    if policy.mode not in ("enforce", "testing"):
        return []
    if mx_hosts is None:
        return [Finding("warning", "mta-sts", f"the MX records of {domain} could not be looked "
                        "up now: the policy's mx: lines were not checked", S_MX,
                        code="mta-sts.mx-unknown")]
    hosts = sorted({h.lower().rstrip(".") for h in mx_hosts if h.strip(".")})
    if not hosts or not policy.mx:
        return []
    missing = [h for h in hosts if not any(mx_covered(h, p) for p in policy.mx)]
    if not missing:
        return []
    add = "; ".join(f"mx: {h}" for h in missing)
    fix = (f"add '{add}' to the policy and change the id in _mta-sts.{domain} so senders "
           "fetch it again")
    if policy.mode == "testing":
        level, then = "warning", "under mode: enforce senders would refuse them; now they report"
    elif len(missing) == len(hosts):
        level, then = "error", "senders that honour the policy deliver no mail to the domain"
    else:
        level, then = "warning", "senders refuse to deliver to them, so they carry no mail"
    return [Finding(level, "mta-sts", f"the policy's mx: lines do not cover the MX host(s) "
                    f"{', '.join(missing)}: {then}; {fix}", S_MX, code="mta-sts.mx-uncovered")]
