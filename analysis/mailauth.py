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
from collections.abc import Iterable, Sequence

from analysis.headers import split_unquoted, uncommented
from analysis.model import MailEvidence

__all__ = ["MailEvidence", "MailVerdict", "judge", "mail_evidence", "reporter_domain"]

_METHODS = frozenset({"auth", "dkim", "dmarc", "spf", "arc", "compauth", "iprev", "sender-id",
                      "domainkeys", "bimi", "smime", "rrvs", "vbr", "dkim-adsp", "x-original"})


@dataclasses.dataclass(frozen=True, slots=True)
class MailVerdict:
    verified: bool
    reason: str  # one line: what was found, for `ingest`'s output and the ledger


def mail_evidence(headers: Iterable[tuple[str, str]]) -> MailEvidence:
    """The evidence in a message's headers, in their order (top first)."""
    return MailEvidence(tuple(" ".join(str(value).split()) for name, value in headers
                              if name.strip().lower() == "authentication-results"))


def judge(evidence: MailEvidence | None, reporter_email: str | None,
          trusted_authserv_ids: Iterable[str] = (), *, exchange_mailbox: bool = False
          ) -> MailVerdict:
    """Whether the mail passed DMARC for the reporter's domain, by a header dmarcbot trusts.

    `exchange_mailbox`: the mail was read from the Exchange Online mailbox (through Graph), so
    its topmost header without an authserv-id is Exchange Online's own. In a file (an `.eml`,
    an mbox from any server) that form proves nothing: anyone can write it.
    """
    if evidence is None:
        return MailVerdict(True, "a file, not an e-mail: the admin's own")
    reporter = reporter_domain(reporter_email)
    if reporter is None:
        return MailVerdict(False, "the report names no reporter e-mail to check the mail against")
    passed = _dmarc_passes(evidence.authentication_results,
                           frozenset(i.lower() for i in trusted_authserv_ids), exchange_mailbox)
    if not passed:
        return MailVerdict(False, "no trusted Authentication-Results header says the mail passed"
                                  " DMARC")
    for domain in sorted(passed):
        if reporter == domain or reporter.endswith("." + domain):
            return MailVerdict(True, f"the mail passed DMARC for {domain}")
    return MailVerdict(False, f"the mail passed DMARC for {', '.join(sorted(passed))}, not for "
                              f"the reporter's {reporter}")


def _dmarc_passes(headers: Sequence[str], trusted: frozenset[str], exchange: bool) -> set[str]:
    """The header.from domains that trusted headers say passed DMARC."""
    passed: set[str] = set()
    seen_ids: set[str] = set()
    for position, header in enumerate(headers):
        segments = _segments(header)
        if not segments:
            continue  # unbalanced quotes or comments: not a header to believe
        first = segments[0].split()
        if first and "=" in first[0] and first[0].split("=", 1)[0].lower() in _METHODS:
            if not (exchange and position == 0):
                continue  # Exchange Online's form counts only as its own topmost header
            results = segments
        else:
            authserv = first[0].lower() if first else ""
            if authserv not in trusted or authserv in seen_ids:
                continue  # RFC 8601 §5: the receiver removed older headers claiming its id
            seen_ids.add(authserv)
            results = segments[1:]
        dmarc = [r for r in results if r.split() and _method(r.split()[0]) == "dmarc"]
        if len(dmarc) != 1:
            continue  # none, or several that could disagree: nothing to believe
        tokens = dmarc[0].split()
        values = [t.partition("=") for t in tokens[1:] if "=" in t]
        froms = [v.strip('"').lower().rstrip(".") for k, _, v in values
                 if k.lower() == "header.from"]
        if tokens[0].lower() == "dmarc=pass" and len(froms) == 1 and froms[0]:
            passed.add(froms[0])
    return passed


def _method(token: str) -> str:
    return token.split("=", 1)[0].lower()


def _segments(header: str) -> list[str]:
    """The `;`-separated parts of a header value with its comments taken out; quoted strings
    stay whole, `;` inside them included. Empty when the quotes or parentheses do not balance."""
    bare = uncommented(header)
    return [] if bare is None else split_unquoted(bare, ";")


def reporter_domain(email: str | None) -> str | None:
    """The domain of a reporter's e-mail (what DMARCBOT_TRUSTED_REPORTERS lists); None for a
    reporter known by its organisation's name only."""
    if not email or "@" not in email:
        return None
    domain = email.rsplit("@", 1)[1].strip().strip(">").lower().rstrip(".")
    return domain or None
