"""Taking reports out of e-mail: attachments, whole bodies, forwarded messages, mbox files.

Receivers disagree about everything here (zip or gzip, `application/octet-stream`, the report as
the whole message, a forward of the original), so parts are chosen by their decoded bytes alone.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage, Message
from typing import BinaryIO, cast

from analysis.errors import CorruptInput, LimitExceeded
from analysis.limits import Limits
from analysis.sniff import HEAD_BYTES, sniff

#: Part kinds that may hold a report; text and HTML bodies are skipped unless they are XML/JSON.
REPORT_KINDS = frozenset({"gzip", "zip", "xml", "json"})


def parse_message(data: bytes, source: str) -> EmailMessage:
    try:
        msg = email.message_from_bytes(data, policy=email.policy.default)
    except Exception as exc:  # the parser is lenient; anything it raises means unreadable
        raise CorruptInput(source, f"e-mail cannot be parsed ({type(exc).__name__})") from None
    assert isinstance(msg, EmailMessage)
    return msg


def report_parts(msg: Message, source: str, limits: Limits,
                 depth: int = 0) -> Iterator[tuple[str, bytes, int]]:
    """Yield (label, decoded bytes, depth) for every leaf part that may be a report.

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
        if isinstance(payload, bytes) and payload and sniff(payload[:HEAD_BYTES]) in REPORT_KINDS:
            yield _part_label(part), payload, level


def _part_label(part: Message) -> str:
    try:
        name = part.get_filename()
    except Exception:  # hostile Content-Disposition parameters can make the parser raise
        name = None
    return name or part.get_content_type()


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
