"""SMTP TLS reports (RFC 8460 JSON), with the spellings real reporters use."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from analysis.errors import CorruptInput, NotAReport
from analysis.model import TlsFailureDetail, TlsPolicy, TlsReport


def _datetime(value: Any, what: str, source: str) -> datetime:
    if not isinstance(value, str) or not value:
        raise NotAReport(source, f"TLS report has no {what}")
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        # Microsoft sends date-times without a zone; RFC 8460 means UTC.
        return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise CorruptInput(source, f"TLS report {what} is not a usable date-time") from None


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # RFC 8460's example (erratum 6241) has a string, not an array
        return (value,)
    if isinstance(value, list):
        return tuple(str(v) for v in value if v is not None)
    return ()


def _count(value: Any) -> int:
    """A session count; anything else (negative, not a number, beyond 10^9) reads as 0."""
    valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9
    return value if valid else 0


def _opt(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def parse_tls(data: bytes, source: str) -> TlsReport:
    """Parse one RFC 8460 report; `NotAReport` when the JSON is something else."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise CorruptInput(source, "JSON cannot be read") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("policies"), list):
        raise NotAReport(source, "JSON is not an SMTP TLS report (no 'policies' list)")
    dates = doc["date-range"] if isinstance(doc.get("date-range"), dict) else {}
    errors: list[str] = []
    policies = []
    for n, item in enumerate(doc["policies"], start=1):
        if not isinstance(item, dict) or not isinstance(item.get("policy"), dict):
            errors.append(f"policy {n} skipped: no 'policy' object")
            continue
        pol = item["policy"]
        if not pol.get("policy-domain"):
            # kept (its sessions still count), but what it is about is unknown: say so
            errors.append(f"policy {n} has no policy-domain (RFC 8460 requires one)")
        summary = item["summary"] if isinstance(item.get("summary"), dict) else {}
        details = []
        details_raw = item.get("failure-details")
        for d in details_raw if isinstance(details_raw, list) else []:
            if not isinstance(d, dict) or not d.get("result-type"):
                errors.append(f"policy {n}: a failure detail without result-type skipped")
                continue
            details.append(TlsFailureDetail(
                result_type=str(d["result-type"]).lower(),
                failed_session_count=_count(d.get("failed-session-count")),
                sending_mta_ip=_opt(d.get("sending-mta-ip")),
                receiving_mx_hostname=_opt(d.get("receiving-mx-hostname")),
                receiving_mx_helo=_opt(d.get("receiving-mx-helo")),
                receiving_ip=_opt(d.get("receiving-ip")),
                additional_information=_opt(
                    d.get("additional-information") or d.get("additional-info-uri")
                ),
                failure_reason_code=_opt(d.get("failure-reason-code")),
            ))
        policies.append(TlsPolicy(
            policy_type=str(pol.get("policy-type") or "").lower(),
            policy_string=_strings(pol.get("policy-string")),
            policy_domain=str(pol.get("policy-domain") or "").lower(),
            mx_host=_strings(pol.get("mx-host") or pol.get("mx-host-pattern")),
            total_successful_session_count=_count(summary.get("total-successful-session-count")),
            total_failure_session_count=_count(summary.get("total-failure-session-count")),
            failure_details=tuple(details),
        ))
    report_id = _opt(doc.get("report-id"))
    if report_id is None:
        raise NotAReport(source, "TLS report has no report-id")
    # Accepted without them, but a report that does not say who sent it is named as such.
    errors.extend(f"TLS report has no {name} (RFC 8460 requires one)"
                  for name in ("organization-name", "contact-info") if not doc.get(name))
    return TlsReport(
        source=source, organization_name=str(doc.get("organization-name") or ""),
        start_datetime=_datetime(dates.get("start-datetime"), "start-datetime", source),
        end_datetime=_datetime(dates.get("end-datetime"), "end-datetime", source),
        contact_info=_opt(doc.get("contact-info")), report_id=report_id,
        policies=tuple(policies), errors=errors,
    )
