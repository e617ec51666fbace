"""Tell what an input is from its first bytes, never from its name or declared type."""

from __future__ import annotations

import re
from typing import Literal

Kind = Literal["gzip", "zip", "xml", "json", "mbox", "email", "unknown"]

#: How many leading bytes `sniff` needs to decide.
HEAD_BYTES = 2048
#: The most stray bytes (NULs, control characters, a doubled or foreign byte order mark) taken
#: for junk before a report's XML; the reader drops them and says so (see `xml_start`).
MAX_STRAY_BYTES = 256

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
# An RFC 5322 header line: field name (printable ASCII but ':'), then ':'.
_HEADER_LINE = re.compile(rb"[!-9;-~]{1,76}:")
# Where a report's XML starts after stray bytes: its declaration or an element named feedback
# (any prefix), or a schema element a report was wrapped in. What comes before is no text (no
# printable ASCII but space): prose that mentions <feedback> is not a report.
_XML_AFTER_STRAY = re.compile(
    rb"[^\x21-\x7e]{0,%d}?(<\?xml[\s?]|<(?:[\w.-]+:)?(?:feedback|schema)[\s/>])"
    % MAX_STRAY_BYTES)


def xml_start(head: bytes) -> int:
    """Where a report's XML begins after stray leading bytes (0 when it begins at once, -1 when
    no XML follows a short run of stray bytes)."""
    found = _XML_AFTER_STRAY.match(head)
    return found.start(1) if found else -1


#: What a file name's last extension says an input is (names lie; bytes decide).
_NAME_KINDS: dict[str, Kind] = {"gz": "gzip", "gzip": "gzip", "zip": "zip", "xml": "xml",
                                "json": "json"}


def kind_by_name(name: str) -> Kind | None:
    """The kind a file name claims by its extension, None when it claims none we know."""
    return _NAME_KINDS.get(name.rpartition(".")[2].lower()) if "." in name else None


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
    if xml_start(head) > 0:  # a report behind stray bytes (issue 15): the reader says so
        return "xml"
    return "unknown"
