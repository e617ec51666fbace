"""Build small reports and their wrappings for tests, with every field under the test's control."""

from __future__ import annotations

import gzip
import io
import zipfile
from email.message import EmailMessage
from xml.sax.saxutils import escape


def record_xml(ip: str = "192.0.2.1", count: int = 1, *, disposition: str = "none",
               dkim: str = "pass", spf: str = "pass", header_from: str = "example.com",
               envelope_from: str | None = "example.com", envelope_to: str | None = None,
               auth: str | None = None, reasons: str = "") -> str:
    identifiers = f"<header_from>{escape(header_from)}</header_from>"
    if envelope_from is not None:
        identifiers = f"<envelope_from>{escape(envelope_from)}</envelope_from>" + identifiers
    if envelope_to is not None:
        identifiers = f"<envelope_to>{escape(envelope_to)}</envelope_to>" + identifiers
    if auth is None:
        auth = ("<dkim><domain>example.com</domain><selector>s1</selector><result>pass</result>"
                "</dkim><spf><domain>example.com</domain><scope>mfrom</scope>"
                "<result>pass</result></spf>")
    return (
        f"<record><row><source_ip>{ip}</source_ip><count>{count}</count><policy_evaluated>"
        f"<disposition>{disposition}</disposition><dkim>{dkim}</dkim><spf>{spf}</spf>{reasons}"
        f"</policy_evaluated></row><identifiers>{identifiers}</identifiers>"
        f"<auth_results>{auth}</auth_results></record>"
    )


def aggregate_xml(records: str | None = None, *, org: str = "Example Receiver",
                  email: str = "dmarc@receiver.example", report_id: str = "r-1",
                  begin: int = 1764288000, end: int = 1764374399, domain: str = "example.com",
                  policy: str = "<p>none</p>", version: str | None = "1.0",
                  namespace: str | None = None, metadata_extra: str = "") -> bytes:
    """An aggregate report; `begin` defaults to 2025-11-28T00:00:00Z, a one-day report."""
    if records is None:
        records = record_xml()
    ns = f' xmlns="{namespace}"' if namespace else ""
    ver = f"<version>{version}</version>" if version is not None else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<feedback{ns}>{ver}<report_metadata>'
        f"<org_name>{escape(org)}</org_name><email>{escape(email)}</email>"
        f"<report_id>{escape(report_id)}</report_id><date_range><begin>{begin}</begin>"
        f"<end>{end}</end></date_range>{metadata_extra}</report_metadata><policy_published>"
        f"<domain>{domain}</domain>{policy}</policy_published>{records}</feedback>\n"
    ).encode()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zipped(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def report_email(attachment: bytes, *, filename: str = "report.xml.gz",
                 content_type: str = "application/gzip", cte: str = "base64",
                 body: str = "This is a DMARC aggregate report.",
                 authentication_results: tuple[str, ...] = ()) -> bytes:
    """A report e-mail with one attachment, encoded base64 or quoted-printable, and the
    receiving servers' `Authentication-Results` headers, top first."""
    msg = EmailMessage()
    for value in authentication_results:
        msg["Authentication-Results"] = value
    msg["From"] = "noreply-dmarc@receiver.example"
    msg["To"] = "dmarc@example.com"
    msg["Subject"] = "Report Domain: example.com Submitter: receiver.example Report-ID: r-1"
    msg.set_content(body)
    maintype, subtype = content_type.split("/")
    msg.add_attachment(attachment, maintype=maintype, subtype=subtype, filename=filename,
                       cte=cte)
    return msg.as_bytes()


def forwarded(inner: bytes) -> bytes:
    """An e-mail forwarding `inner` as a message/rfc822 attachment."""
    msg = EmailMessage()
    msg["From"] = "admin@example.com"
    msg["To"] = "dmarc@example.com"
    msg["Subject"] = "Fwd: DMARC report"
    msg.set_content("See attached.")
    from email import message_from_bytes, policy

    msg.add_attachment(message_from_bytes(inner, policy=policy.default))
    return msg.as_bytes()
