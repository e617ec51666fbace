"""The reports as values: what every reader produces and everything downstream consumes.

Treat them as read-only. `Record` is a plain (not frozen) dataclass only because frozen ones
cost three times as much to build, and a large report builds millions of them; the auth results
and reasons inside records are frozen, because the reader shares equal ones between records.

Field names follow the RFCs in snake_case; they are also the JSON contract of `dmarcbot parse`
(docs/report-json.md), so renaming one is a breaking change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime
from typing import Literal

Schema = Literal["draft", "rfc7489", "rfc9990"]


@dataclasses.dataclass(frozen=True, slots=True)
class Reporter:
    org_name: str
    email: str | None
    extra_contact_info: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyPublished:
    domain: str
    p: str | None
    sp: str | None
    np: str | None
    adkim: str | None
    aspf: str | None
    pct: int | None
    fo: str | None
    testing: str | None
    discovery_method: str | None
    #: Names of the fields above that the report left out and we filled with the RFC default.
    defaulted: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Reason:
    type: str
    comment: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class DkimResult:
    domain: str
    selector: str | None
    result: str
    human_result: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SpfResult:
    domain: str | None
    scope: str | None
    result: str
    human_result: str | None = None
    #: True when the report gave no scope and `mfrom` was assumed.
    scope_defaulted: bool = False


@dataclasses.dataclass(slots=True)
class Record:
    """One row: a count of messages sharing source IP, identifiers and results."""

    source_ip: str
    count: int
    disposition: str
    dkim: str
    spf: str
    reasons: tuple[Reason, ...]
    header_from: str
    envelope_from: str | None
    envelope_to: str | None
    auth_dkim: tuple[DkimResult, ...]
    auth_spf: tuple[SpfResult, ...]
    #: The `policy_evaluated` fields (`disposition`, `dkim`, `spf`) the report left out, so that
    #: a reader can tell a filled-in value from a reported one: dkim/spf then hold what the auth
    #: results support, disposition `none` (analysis/crosscheck.py).
    defaulted: tuple[str, ...] = ()


class RecordStream(Iterator[Record]):
    """A report's records, read from the input as they are asked for.

    Once the reader moves on to the next input or report, unread records are gone; asking for
    them then raises instead of looking like an empty report.
    """

    def __init__(self, records: Iterator[Record], source: str) -> None:
        self._records = records
        self._source = source
        self.exhausted = False
        self._closed = False

    def __next__(self) -> Record:
        if self._closed:
            raise RuntimeError(
                f"{self._source}: records must be read before the reader moves to the next report"
            )
        try:
            return next(self._records)
        except StopIteration:
            self.exhausted = True
            raise

    def close(self) -> None:
        """Called by the reader when it moves on."""
        if not self.exhausted:
            self._closed = True


@dataclasses.dataclass(frozen=True, slots=True)
class MailEvidence:
    """What the e-mail that delivered a report says about itself: its `Authentication-Results`
    headers, top first (analysis.mailauth judges them). Never its body."""

    authentication_results: tuple[str, ...]


@dataclasses.dataclass(slots=True)
class AggregateReport:
    """An aggregate (rua) report. `records` streams: iterate it once; `errors` grows meanwhile."""

    schema: Schema
    source: str
    reporter: Reporter
    report_id: str
    begin: datetime
    end: datetime
    generator: str | None
    policy: PolicyPublished
    records: RecordStream
    errors: list[str]
    kind: Literal["aggregate"] = "aggregate"
    #: The delivering e-mail's evidence, when the report came in one (the outermost e-mail of
    #: the input); None for a bare file.
    mail: MailEvidence | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class FailureReport:
    """A failure (ruf) report: RFC 6591/9991 ARF fields, or what a plain-text notice gives."""

    source: str
    format: Literal["arf", "text"]
    reporter: str | None
    feedback_type: str | None
    user_agent: str | None
    version: str | None
    auth_failure: str | None
    identity_alignment: str | None
    delivery_result: str | None
    original_mail_from: str | None
    original_rcpt_to: str | None
    original_envelope_id: str | None
    arrival_date: datetime | None
    source_ip: str | None
    reported_domain: str | None
    authentication_results: str | None
    dkim_domain: str | None
    dkim_identity: str | None
    dkim_selector: str | None
    spf_dns: str | None
    reported_uri: str | None
    #: A few headers of the sample message (from, to, subject, date, message_id), never the body.
    sample_headers: dict[str, str]
    errors: list[str]
    kind: Literal["failure"] = "failure"


@dataclasses.dataclass(frozen=True, slots=True)
class TlsFailureDetail:
    result_type: str
    failed_session_count: int
    sending_mta_ip: str | None
    receiving_mx_hostname: str | None
    receiving_mx_helo: str | None
    receiving_ip: str | None
    additional_information: str | None
    failure_reason_code: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class TlsPolicy:
    policy_type: str
    policy_string: tuple[str, ...]
    policy_domain: str
    mx_host: tuple[str, ...]
    total_successful_session_count: int
    total_failure_session_count: int
    failure_details: tuple[TlsFailureDetail, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class TlsReport:
    """An SMTP TLS report (RFC 8460)."""

    source: str
    organization_name: str
    start_datetime: datetime
    end_datetime: datetime
    contact_info: str | None
    report_id: str
    policies: tuple[TlsPolicy, ...]
    errors: list[str]
    kind: Literal["tls"] = "tls"


Report = AggregateReport | FailureReport | TlsReport
