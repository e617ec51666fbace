"""Taking reports out of e-mail: attachments, whole bodies, forwarded messages, mbox files.

Receivers disagree about everything here (zip or gzip, `application/octet-stream`, the report as
the whole message, a forward of the original), so parts are chosen by their decoded bytes alone.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage, Message
from typing import BinaryIO

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


def report_parts(msg: Message, source: str, limits: Limits) -> Iterator[tuple[str, bytes]]:
    """Yield (label, decoded bytes) for every leaf part that may be a report, forwards included."""
    seen = 0
    for part in msg.walk():
        if part.is_multipart():
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
        if not isinstance(payload, bytes) or not payload:
            continue
        if sniff(payload[:HEAD_BYTES]) in REPORT_KINDS:
            label = part.get_filename() or part.get_content_type()
            yield label, payload


def split_mbox(stream: BinaryIO, source: str, limits: Limits) -> Iterator[bytes]:
    """Yield each message of an mbox file, un-escaping `>From ` lines, one message in memory."""
    lines: list[bytes] = []
    size = 0
    previous_blank = True
    number = 0
    for line in stream:
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
            raise LimitExceeded(
                source, f"max_input_bytes={limits.max_input_bytes}",
                f"message {number} of the mbox is larger than {limits.max_input_bytes} bytes",
            )
        lines.append(line)
    if lines:
        yield b"".join(lines)
