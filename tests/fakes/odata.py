"""The OData query options the fake Graph understands, and the errors Graph gives for them.

Only what mailbox code needs is supported; anything else is a 400, so a client that starts
relying on an option the fake cannot check fails loudly instead of passing by accident.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_TOP = 1000
DEFAULT_TOP = 10


class GraphError(Exception):
    """An error response in Graph's JSON shape."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


# ----------------------------------------------------------------------------- $select

def parse_select(value: str | None, known: dict[str, str], type_name: str) -> list[str] | None:
    """Canonical property names (case-insensitive, as Graph) or None when absent."""
    if value is None:
        return None
    names = []
    for raw in value.split(","):
        name = raw.strip()
        if not name:
            continue
        canonical = known.get(name.lower())
        if canonical is None:
            raise bad_request(f"Could not find a property named '{name}' on type "
                              f"'microsoft.graph.{type_name}'.", "RequestBroker--ParseUri")
        names.append(canonical)
    return names


def split_top_level(value: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside parentheses and quotes."""
    parts, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(value):
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        elif not quote and depth == 0 and ch == sep:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p.strip() for p in parts if p.strip()]


@dataclass(frozen=True)
class Expand:
    """One $expand item: the navigation property and its nested $select (None = all)."""

    prop: str
    select: str | None


def parse_expand(value: str | None) -> list[Expand]:
    if not value:
        return []
    items = []
    for part in split_top_level(value):
        m = re.fullmatch(r"([\w./]+)\s*(?:\((.*)\))?", part, re.S)
        if not m:
            raise bad_request(f"Invalid $expand '{part}'.")
        nested = m.group(2)
        select = None
        if nested:
            for opt in split_top_level(nested, ";"):
                key, _, val = opt.partition("=")
                if key.strip().lower() != "$select":
                    raise bad_request(f"FakeGraph does not support '{key}' inside $expand.")
                select = val
        items.append(Expand(m.group(1), select))
    return items


# ----------------------------------------------------------------------------- $filter

Predicate = Callable[[Any], bool]
_CLAUSE = re.compile(r"^\s*(\w+)\s+(eq|ne|ge|gt|le|lt)\s+(.+?)\s*$", re.I)
_ANY_CATEGORY = re.compile(
    r"^\s*categories/any\(\s*(\w+)\s*:\s*\1\s+eq\s+'((?:[^']|'')*)'\s*\)\s*$", re.I)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "ge": lambda a, b: a >= b,
    "gt": lambda a, b: a > b, "le": lambda a, b: a <= b, "lt": lambda a, b: a < b,
}


def _datetime_literal(text: str) -> datetime:
    if text.startswith("'"):
        raise bad_request(f"A binary operator with incompatible types was detected. Found operand "
                          f"types 'Edm.DateTimeOffset' and 'Edm.String' ({text}).")
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:  # e.g. '+00:00' that arrived as ' 00:00' (unencoded '+')
        raise bad_request(f"The DateTimeOffset text '{text}' should be in format "
                          "'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is "
                          "within valid range.") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def _bool_literal(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise bad_request(f"Invalid boolean literal '{text}'.")
    return text.lower() == "true"


def _string_literal(text: str) -> str:
    if len(text) < 2 or text[0] != "'" or text[-1] != "'":
        raise bad_request(f"Expected a quoted string literal, got {text}.")
    return text[1:-1].replace("''", "'")


@dataclass(frozen=True)
class Filter:
    """A parsed $filter: the clauses' properties in order, and the combined predicate."""

    props: list[str]
    predicate: Predicate


def _and(preds: list[Predicate]) -> Predicate:
    return lambda item: all(p(item) for p in preds)


def parse_message_filter(value: str | None) -> Filter | None:
    """``receivedDateTime ge|gt|le|lt|eq <ISO>``, ``hasAttachments eq true|false``,
    ``isRead eq true|false``, ``categories/any(c:c eq 'X')``, joined by ``and``."""
    if value is None:
        return None
    props: list[str] = []
    preds: list[Predicate] = []
    for clause in re.split(r"\s+and\s+", value.strip(), flags=re.I):
        cat = _ANY_CATEGORY.match(clause)
        if cat:
            wanted = cat.group(2).replace("''", "'").casefold()
            props.append("categories")
            preds.append(lambda m, w=wanted: any(c.casefold() == w for c in m.categories))
            continue
        m = _CLAUSE.match(clause)
        if not m:
            raise bad_request(f"FakeGraph does not support the filter clause '{clause}'.")
        prop, op, literal = m.group(1).lower(), m.group(2).lower(), m.group(3)
        compare = _COMPARE[op]
        if prop == "receiveddatetime":
            moment = _datetime_literal(literal)
            props.append("receivedDateTime")
            preds.append(lambda msg, c=compare, t=moment: c(msg.received, t))
        elif prop in ("hasattachments", "isread") and op in ("eq", "ne"):
            flag = _bool_literal(literal)
            attr = "has_attachments" if prop == "hasattachments" else "is_read"
            props.append("hasAttachments" if prop == "hasattachments" else "isRead")
            preds.append(lambda msg, c=compare, f=flag, a=attr: c(getattr(msg, a), f))
        else:
            raise bad_request(f"FakeGraph does not support the filter clause '{clause}'.")
    return Filter(props, _and(preds))


def parse_folder_filter(value: str | None) -> Filter | None:
    """``displayName eq 'X'`` (case-insensitive, as Exchange compares)."""
    if value is None:
        return None
    m = _CLAUSE.match(value)
    if not m or m.group(1).lower() != "displayname" or m.group(2).lower() != "eq":
        raise bad_request(f"FakeGraph does not support the mailFolder filter '{value}'.")
    wanted = _string_literal(m.group(3)).casefold()
    return Filter(["displayName"], lambda f: f.display_name.casefold() == wanted)


# ----------------------------------------------------------------------------- $orderby

def parse_message_orderby(value: str | None) -> list[tuple[str, bool]]:
    """[(property, descending)]; only receivedDateTime is sortable in the fake."""
    if not value:
        return []
    out = []
    for part in split_top_level(value):
        words = part.split()
        direction = words[1].lower() if len(words) == 2 else "asc"
        if len(words) not in (1, 2) or direction not in ("asc", "desc") \
                or words[0].lower() != "receiveddatetime":
            raise bad_request(f"FakeGraph does not support $orderby '{part}'.")
        out.append(("receivedDateTime", direction == "desc"))
    return out


def check_filter_and_orderby(filt: Filter | None, orderby: list[tuple[str, bool]]) -> None:
    """Graph's rule: $orderby properties must lead $filter, in the same order."""
    if filt is None or not orderby:
        return
    wanted = [p.lower() for p, _ in orderby]
    if [p.lower() for p in filt.props[:len(wanted)]] != wanted:
        raise bad_request("The restriction or sort order is too complex for this operation.",
                          "InefficientFilter")


# ----------------------------------------------------------------------------- paging

def parse_top(value: str) -> int:
    try:
        top = int(value)
    except ValueError as exc:
        raise bad_request(f"Invalid $top value '{value}'.") from exc
    if not 1 <= top <= MAX_TOP:  # Graph's mail API refuses 0 and more than 1000
        raise bad_request(f"The value of $top must be between 1 and {MAX_TOP}.",
                          "ErrorInvalidUrlQuery")
    return top


def encode_skiptoken(offset: int) -> str:
    raw = json.dumps({"o": offset, "v": 1}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_skiptoken(token: str) -> int:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded))
        return int(data["o"])
    except (ValueError, KeyError, TypeError) as exc:
        raise bad_request("The $skiptoken value is not valid.", "ErrorInvalidUrlQuery") from exc
