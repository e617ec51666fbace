"""Why an input was refused.

Every rejection is a `RejectedInput` subclass whose message is one line naming the input and the
rule it broke, so the command line and the mailbox job can show it as is (and file the mail under
`Failed` with it) without a traceback.
"""

from __future__ import annotations


class RejectedInput(Exception):
    """An input that is not a report we can read. `str()` is the user-facing one-line reason."""

    rule = "rejected"

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = detail
        super().__init__(f"{source}: {detail}")


class LimitExceeded(RejectedInput):
    """The input is larger, deeper or more compressed than a limit allows (see `Limits`)."""

    rule = "limit"

    def __init__(self, source: str, limit: str, detail: str) -> None:
        self.limit = limit
        super().__init__(source, f"{detail} (limit {limit})")


class UnsafeXml(RejectedInput):
    """The XML declares a DTD or entities; reports never need them and bombs always do."""

    rule = "unsafe-xml"


class NotAReport(RejectedInput):
    """The bytes are readable but hold no DMARC aggregate, failure or TLS report."""

    rule = "not-a-report"


class CorruptInput(RejectedInput):
    """A container (gzip, zip, e-mail) or document is damaged beyond what we can recover."""

    rule = "corrupt"
