"""Taking reports out of e-mail: attachments, whole bodies, forwarded messages, mbox files.

Receivers disagree about everything here (zip or gzip, `application/octet-stream`, the report as
the whole message, a forward of the original), so parts are chosen by their decoded bytes alone.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message
from typing import BinaryIO, cast

from analysis.errors import CorruptInput, LimitExceeded
from analysis.limits import Limits
from analysis.sniff import HEAD_BYTES, kind_by_name, sniff

#: Part kinds that may hold a report; text and HTML bodies are skipped unless they are XML/JSON.
REPORT_KINDS = frozenset({"gzip", "zip", "xml", "json"})
#: What a part's declared media type says it holds. RFC 7489 section 7.2.1.1 names
#: application/gzip and text/xml; the others are the aliases mail programs and receivers use.
_TYPE_KINDS = {
    "application/gzip": "gzip", "application/x-gzip": "gzip", "application/x-gunzip": "gzip",
    "application/gzip-compressed": "gzip", "application/x-gzip-compressed": "gzip",
    "application/tlsrpt+gzip": "gzip",
    "application/zip": "zip", "application/x-zip": "zip", "application/x-zip-compressed": "zip",
    "application/zip-compressed": "zip",
    "text/xml": "xml", "application/xml": "xml",
    "application/json": "json", "application/tlsrpt+json": "json", "text/json": "json",
}
#: Declared types that say nothing of the content (Amazon SES sends application/octet-stream).
_VAGUE_TYPES = frozenset({"application/octet-stream", "binary/octet-stream", "text/plain",
                          "application/x-download", "application/download"})


def parse_message(data: bytes, source: str) -> Message:
    """The message with its headers kept as text (`compat32`): reading a report needs a few
    of them, and the modern policy parses a structured header again on every read, which cost
    more than the report itself for a small one."""
    try:
        return email.message_from_bytes(data, policy=email.policy.compat32)
    except Exception as exc:  # the parser is lenient; anything it raises means unreadable
        raise CorruptInput(source, f"e-mail cannot be parsed ({type(exc).__name__})") from None


def report_parts(msg: Message, source: str, limits: Limits,
                 depth: int = 0) -> Iterator[tuple[str, bytes, int, str | None]]:
    """Yield (label, decoded bytes, depth, note) for every leaf part that may be a report; the
    note says when the part's declared type or file name is not what its bytes are.

    Forwards are included; each forwarded message (`message/rfc822`) is one more level of
    nesting, and the depth yielded is the part's own.
    """
    seen = 0
    stack: list[tuple[Message, int]] = [(msg, depth)]
    while stack:
        part, level = stack.pop()
        if part.get_content_maintype() == "message":
            level += 1
            if level > limits.max_depth:
                raise LimitExceeded(source, f"max_depth={limits.max_depth}",
                                    "forwarded e-mails nested too deeply")
        if part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):  # of the parts, never str, once it is multipart
                stack.extend((child, level) for child in reversed(cast("list[Message]", children)))
            continue
        seen += 1
        if seen > limits.max_members:
            raise LimitExceeded(
                source, f"max_members={limits.max_members}", "e-mail has too many parts"
            )
        try:
            payload = part.get_payload(decode=True)
        except Exception:  # a damaged transfer encoding: this part cannot be a report
            continue
        if not (isinstance(payload, bytes) and payload):
            continue
        kind = sniff(payload[:HEAD_BYTES])
        if kind in REPORT_KINDS:
            name = _filename(part)
            yield name or part.get_content_type(), payload, level, declared_note(part, kind, name)


def declared_note(part: Message, kind: str, name: str) -> str | None:
    """A note when a part's declared media type or file name does not say what its bytes are:
    the report is read by its bytes all the same (issue 15: MIME types and names that lie).
    `name` is the part's file name, read once by the caller (each read parses the header)."""
    ctype = part.get_content_type()
    said = []
    if ctype in _VAGUE_TYPES or _TYPE_KINDS.get(ctype, kind) != kind:
        said.append(f"declared {ctype}")
    if kind_by_name(name) not in (None, kind):  # (the whole name is in the report's source)
        said.append(f"named *.{name.rpartition('.')[2].lower()}")
    if not said:
        return None
    return f"e-mail part {' and '.join(said)} holds {kind}; read by its bytes"


def _filename(part: Message) -> str:
    """The part's file name, RFC 2231 parameters and RFC 2047 encoded words decoded."""
    try:
        name = part.get_filename() or ""
        return str(make_header(decode_header(name))) if "=?" in name else name
    except Exception:  # hostile Content-Disposition parameters can make the parser raise
        return ""


def split_mbox(stream: BinaryIO, source: str, limits: Limits) -> Iterator[bytes]:
    """Yield each message of an mbox file, un-escaping `>From ` lines, one message in memory."""
    lines: list[bytes] = []
    size = 0
    previous_blank = at_line_start = True
    number = 0
    # Read in bounded pieces: one enormous line must not be held whole before it is counted.
    while line := stream.readline(64 * 1024):
        starts_line, at_line_start = at_line_start, line.endswith(b"\n")
        if not starts_line:  # the rest of a long line
            size += len(line)
            if size > limits.max_input_bytes:
                raise _too_big(source, limits, number)
            lines.append(line)
            continue
        if line.startswith(b"From ") and previous_blank:
            if lines:
                yield b"".join(lines)
            lines, size = [], 0
            number += 1
            previous_blank = False
            continue  # the separator line is not part of the message
        previous_blank = line in (b"\n", b"\r\n")
        if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
            line = line[1:]
        size += len(line)
        if size > limits.max_input_bytes:
            raise _too_big(source, limits, number)
        lines.append(line)
    if lines:
        yield b"".join(lines)


def _too_big(source: str, limits: Limits, number: int) -> LimitExceeded:
    return LimitExceeded(
        source, f"max_input_bytes={limits.max_input_bytes}",
        f"message {number} of the mbox is larger than {limits.max_input_bytes} bytes",
    )
