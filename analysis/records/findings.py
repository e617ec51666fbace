"""What a record check says: one finding per problem, with its rule and, where one exists, its fix.

Every checker (DMARC, DKIM, MTA-STS, TLS-RPT, BIMI, SPF, the posture around them) speaks this one
shape, so `dmarcbot posture --json` can promise a stable schema (docs/posture.md).
"""

from __future__ import annotations

import dataclasses

#: Severities, worst first. An error breaks mail or reporting (or is ignored by receivers); a
#: warning should change; info is worth knowing.
SEVERITIES = ("error", "warning", "info")


@dataclasses.dataclass(frozen=True, slots=True)
class DnsChange:
    """One record to publish, the records it replaces at the same name, and why.

    An empty `value` means: remove `replaces` and publish nothing in their place.
    """

    name: str
    type: str
    value: str
    why: str
    replaces: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """A problem (or a fact) about a domain's records."""

    level: str  # one of SEVERITIES
    topic: str  # "dmarc", "reports", "spf", "dkim", "mta-sts", "tls-rpt", "bimi", "forwarding"
    text: str
    rfc: str | None = None  # the rule that decides it, e.g. "RFC 9989 §4.8"
    fix: DnsChange | None = None  # the exact record to publish instead, when one exists
    code: str = ""  # stable machine name, e.g. "dmarc.duplicate-tag"

    def __post_init__(self) -> None:
        if self.level not in SEVERITIES:
            raise ValueError(f"finding level {self.level!r} is not one of {SEVERITIES}")


def worst(findings: tuple[Finding, ...] | list[Finding]) -> str | None:
    """The worst severity among `findings` (None when there are none)."""
    levels = {f.level for f in findings}
    return next((s for s in SEVERITIES if s in levels), None)
