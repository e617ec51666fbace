"""Whether a report's e-mail really came from its reporter: the receiving server's verdict.

Anyone can mail the rua address, so a report is believed only when the mail that carried it
passed DMARC for the reporter's own domain, as the server that received it says in its
`Authentication-Results` header. Which headers count:

* Exchange Online's own, which has no authserv-id (`spf=pass (...) smtp.mailfrom=…;
  dmarc=pass action=none header.from=…`): only the topmost header, the one added last, by the
  receiving server; a sender can add headers of its own, but only below it;
* an RFC 8601 header (`mx.example; dmarc=pass header.from=…`) whose authserv-id the deployment
  trusts (its own receiving servers), the topmost of each such id (RFC 8601 §5: a receiver
  removes earlier ones claiming its id).

The header says which domain passed (`header.from`); the report says who its reporter is (the
e-mail in `report_metadata`). The report is believed when the reporter's domain is that domain
or under it (a mail that passed for `google.com` may speak for `dmarc.google.com`, not the
reverse). Pure: headers in, a verdict out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from analysis.model import MailEvidence

__all__ = ["MailEvidence", "MailVerdict", "judge", "mail_evidence", "reporter_domain"]

_COMMENT = re.compile(r"\([^()]*\)")  # RFC 5322 comments; nested ones are removed in passes
_METHODS = frozenset({"auth", "dkim", "dmarc", "spf", "arc", "compauth", "iprev", "sender-id",
                      "domainkeys", "bimi", "smime", "rrvs", "vbr", "dkim-adsp", "x-original"})


@dataclasses.dataclass(frozen=True, slots=True)
class MailVerdict:
    verified: bool
    reason: str  # one line: what was found, for `ingest`'s output and the ledger


def mail_evidence(headers: Iterable[tuple[str, str]]) -> MailEvidence:
    """The evidence in a message's headers, in their order (top first)."""
    results, sender = [], None
    for name, value in headers:
        lowered = name.strip().lower()
        if lowered == "authentication-results":
            results.append(" ".join(str(value).split()))
        elif lowered == "from" and sender is None:
            sender = _address(str(value))
    return MailEvidence(tuple(results), sender)


def judge(evidence: MailEvidence | None, reporter_email: str | None,
          trusted_authserv_ids: Iterable[str] = ()) -> MailVerdict:
    """Whether the mail passed DMARC for the reporter's domain, by a header dmarcbot trusts."""
    if evidence is None:
        return MailVerdict(True, "a file, not an e-mail: the admin's own")
    reporter = reporter_domain(reporter_email)
    if reporter is None:
        return MailVerdict(False, "the report names no reporter e-mail to check the mail against")
    passed = _dmarc_passes(evidence.authentication_results,
                           frozenset(i.lower() for i in trusted_authserv_ids))
    if not passed:
        return MailVerdict(False, "no trusted Authentication-Results header says the mail passed"
                                  " DMARC")
    for domain in passed:
        if reporter == domain or reporter.endswith("." + domain):
            return MailVerdict(True, f"the mail passed DMARC for {domain}")
    return MailVerdict(False, f"the mail passed DMARC for {', '.join(sorted(passed))}, not for "
                              f"the reporter's {reporter}")


def _dmarc_passes(headers: Sequence[str], trusted: frozenset[str]) -> set[str]:
    """The header.from domains that trusted headers say passed DMARC."""
    passed: set[str] = set()
    seen_ids: set[str] = set()
    for position, header in enumerate(headers):
        authserv, results = _split(header)
        if authserv is None:
            if position != 0:
                continue  # Exchange Online's form counts only as the topmost header
        elif authserv not in trusted or authserv in seen_ids:
            continue
        else:
            seen_ids.add(authserv)
        for result in results:
            properties = dict(_properties(result))
            if properties.get("dmarc") == "pass" and properties.get("header.from"):
                passed.add(properties["header.from"].lower().rstrip("."))
    return passed


def _split(header: str) -> tuple[str | None, list[str]]:
    """(authserv-id or None, the resinfo parts) of one header value."""
    text = header
    for _ in range(3):
        text = _COMMENT.sub(" ", text)
    parts = [p.strip() for p in text.split(";") if p.strip()]
    if not parts:
        return None, []
    first = parts[0].split()[0] if parts[0].split() else ""
    method = first.split("=", 1)[0].lower()
    if "=" in first and method in _METHODS:
        return None, parts  # no authserv-id: Exchange Online's form
    return first.lower(), parts[1:]


def _properties(result: str) -> Iterable[tuple[str, str]]:
    for token in result.split():
        key, sep, value = token.partition("=")
        if sep:
            yield key.lower(), value.strip('"').lower()


_ANGLED = re.compile(r"<([^<>@\s]+@[^<>\s]+)>")
_BARE = re.compile(r"([^\s<>@,;\"]+@[^\s<>,;\"]+)")


def _address(value: str) -> str | None:
    found = _ANGLED.search(value) or _BARE.search(value)
    return found.group(1).lower() if found else None


def reporter_domain(email: str | None) -> str | None:
    """The domain of a reporter's e-mail (what DMARCBOT_TRUSTED_REPORTERS lists); None for a
    reporter known by its organisation's name only."""
    if not email or "@" not in email:
        return None
    domain = email.rsplit("@", 1)[1].strip().strip(">").lower().rstrip(".")
    return domain or None
