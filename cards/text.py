"""Text for cards: untrusted strings made safe and short, numbers and dates in one format.

Everything that comes from reports, DNS or people (domains, reverse DNS names, DKIM domains in
evidence lines, owner names, error messages) goes through `plain` or `md` before it reaches a
card:

* `plain` removes control and format characters (bidi overrides, zero-width characters, line
  breaks), collapses white space, trims to a length limit with an ellipsis, and puts an
  invisible word joiner into `{{` (Adaptive Card text evaluates `{{DATE(...)}}`) and into `://`
  (so no client auto-links a bare URL). Use it for `TextRun`s (RichTextBlock), which never
  interpret markdown.
* `md` is `plain` plus backslash escapes for the markdown that TextBlock and FactSet text
  interpret (links, images, emphasis, code, lists, HTML and autolinks), so a hostile PTR name
  such as ``[Approve here](https://evil.example)`` shows as text and is never a link.

Own wording is written without markdown specials; `md` is only for strings we did not write.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime

#: Default length limits (characters, before escaping).
NAME = 80
LINE = 200
VALUE = 300

_WS = re.compile(r"\s+")
# ASCII punctuation CommonMark lets us escape and that can start markup in Teams or markdown-it.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>~|!#&])")
_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*)://")
_LIST_START = re.compile(r"^(\d+)([.)])(\s)|^([-+*])(\s)")
_WORD_JOINER = "\u2060"
#: Shown for a value that is not known (an en dash).
MISSING = "\u2013"


def _drop(ch: str) -> bool:
    # Cc control, Cf format (bidi overrides, zero-width joiners, soft hyphens), Cs surrogates.
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs")


def plain(value: object, limit: int = LINE) -> str:
    """An untrusted value as one clean line of at most `limit` characters (for TextRuns)."""
    text = "" if value is None else str(value)
    text = "".join(" " if ch in "\t\n\r\v\f\u2028\u2029\x85" else ch
                   for ch in text if ch in "\t\n\r\v\f\x85" or not _drop(ch))
    text = _WS.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: max(limit - 1, 0)].rstrip() + "…"
    # Adaptive Card text evaluates {{DATE(...)}} and {{TIME(...)}}; break the opening braces.
    text = text.replace("{{", "{" + _WORD_JOINER + "{")
    # A client may turn a bare scheme URL into a link; a word joiner after ':' stops that.
    return _SCHEME.sub(lambda m: f"{m[1]}:{_WORD_JOINER}//", text)


def md(value: object, limit: int = LINE) -> str:
    """An untrusted value for TextBlock or FactSet text: `plain`, then markdown neutralised."""
    text = _MD_SPECIAL.sub(r"\\\1", plain(value, limit))
    # A line that starts like a list item ("1. ", "- ") would become a list.
    text = _LIST_START.sub(lambda m: (f"{m[1]}\\{m[2]}{m[3]}" if m[1] else f"\\{m[4]}{m[5]}"),
                           text)
    return text


def count(n: int) -> str:
    """12345 -> '12,345'."""
    return f"{int(n):,}"


def more(n: int, one: str, many: str) -> str:
    """'and 1 more address', 'and 1,204 more addresses'."""
    return f"and {count(n)} more {one if n == 1 else many}"


def percent(part: int, whole: int) -> str:
    """Rounded, never '100 %' unless everything passed and never '0 %' unless nothing did."""
    if whole <= 0:
        return MISSING
    share = 100.0 * part / whole
    shown = round(share)
    if shown == 100 and part < whole:
        shown = 99
    elif shown == 0 and part > 0:
        return "<1 %"
    return f"{shown} %"


def day(value: date | datetime | str | None) -> str:
    """A day as YYYY-MM-DD (datetimes are converted to UTC first); MISSING when unknown."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = str(value)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", text):
        return text[:10]
    return md(text, 32)


def moment(value: date | datetime | str | None) -> str:
    """A time as 'YYYY-MM-DD HH:MM UTC' (naive datetimes are taken as UTC); a date as is."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, str):
        try:
            return moment(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return day(value)
    return day(value)
