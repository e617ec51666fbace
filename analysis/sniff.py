"""Tell what an input is from its first bytes, never from its name or declared type."""

from __future__ import annotations

import re
from typing import Literal

Kind = Literal["gzip", "zip", "xml", "json", "mbox", "email", "unknown"]

#: How many leading bytes `sniff` needs to decide.
HEAD_BYTES = 2048

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
# An RFC 5322 header line: field name (printable ASCII but ':'), then ':'.
_HEADER_LINE = re.compile(rb"[!-9;-~]{1,76}:")


def sniff(head: bytes) -> Kind:
    """Classify an input by its leading bytes (give at least `HEAD_BYTES` when there are more)."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"From "):
        return "mbox"
    text = head
    for bom in _BOMS:
        if text.startswith(bom):
            text = text[len(bom):]
            break
    text = text.lstrip(b" \t\r\n")
    if text.startswith(b"<"):
        return "xml"
    if text.startswith(b"{"):
        return "json"
    if _HEADER_LINE.match(head):
        return "email"
    return "unknown"
