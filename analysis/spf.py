"""SPF records (RFC 7208) as values: parsing only, no DNS.

What the posture check and the expansion in `analysis.dnsevidence` need: the mechanisms with their
qualifiers and arguments, the modifiers, and the problems a reader can see without resolving.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

#: Mechanisms and modifiers that cost a DNS lookup (RFC 7208 §4.6.4); at most 10 per check.
LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
MAX_LOOKUPS = 10
MAX_VOID_LOOKUPS = 2
_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_TERM = re.compile(r"^([+?~-]?)([a-z0-9][a-z0-9_.-]*)([:=/]?)(.*)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True, slots=True)
class Term:
    """One mechanism (`-all`, `include:x`, `ip4:1.2.3.0/24`, `a/24`) or modifier (`redirect=x`)."""

    name: str  # lower-case mechanism or modifier name
    qualifier: str  # "+", "-", "~", "?" (modifiers: "")
    value: str  # the domain-spec or address, "" when absent
    cidr4: int | None = None
    cidr6: int | None = None

    @property
    def is_modifier(self) -> bool:
        return self.name not in _MECHANISMS

    def __str__(self) -> str:
        if self.is_modifier:
            return f"{self.name}={self.value}"
        text = ("" if self.qualifier == "+" else self.qualifier) + self.name
        if self.value:
            text += f":{self.value}"
        if self.cidr4 is not None and self.name in ("a", "mx"):
            text += f"/{self.cidr4}"
        if self.cidr6 is not None and self.name in ("a", "mx"):
            text += f"//{self.cidr6}"
        return text


@dataclasses.dataclass(frozen=True, slots=True)
class SpfRecord:
    text: str
    terms: tuple[Term, ...]
    errors: tuple[str, ...]

    @property
    def mechanisms(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if not t.is_modifier)

    def modifier(self, name: str) -> str | None:
        for term in self.terms:
            if term.is_modifier and term.name == name:
                return term.value
        return None

    @property
    def all_qualifier(self) -> str | None:
        """The qualifier of the final `all`, or None when the record has none."""
        for term in self.mechanisms:
            if term.name == "all":
                return term.qualifier
        return None


def is_spf(text: str) -> bool:
    """An SPF record starts with exactly `v=spf1` followed by a space or the end (§4.5)."""
    return text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")


def parse_spf(text: str) -> SpfRecord:
    """Split a record into terms; a term that does not parse is kept out and named in errors."""
    terms: list[Term] = []
    errors: list[str] = []
    for raw in text.split()[1:]:
        term = _term(raw)
        if term is None:
            errors.append(f"unknown or malformed term {raw[:60]!r}")
        else:
            terms.append(term)
    return SpfRecord(text, tuple(terms), tuple(errors))


def _term(raw: str) -> Term | None:
    match = _TERM.match(raw)
    if match is None:
        return None
    qualifier, name, separator, rest = match.groups()
    name = name.lower()
    if separator == "=":
        if qualifier or name in _MECHANISMS:
            return None
        return Term(name, "", rest)
    if name not in _MECHANISMS:
        return None
    qualifier = qualifier or "+"
    value, cidr4, cidr6 = rest, None, None
    if name in ("a", "mx"):
        value, cidr4, cidr6 = _cidrs(("/" + rest) if separator == "/" else rest)
        if separator == ":" and not value:
            return None
    elif name in ("ip4", "ip6"):
        if separator != ":" or not _valid_network(name, rest):
            return None
    elif name == "all":
        if separator or rest:
            return None
    elif separator != ":" and name in ("include", "exists"):
        return None
    return Term(name, qualifier, value, cidr4, cidr6)


def _cidrs(spec: str) -> tuple[str, int | None, int | None]:
    """`domain/24//64` -> ("domain", 24, 64); either length may be missing."""
    domain, _, lengths = spec.partition("/")
    cidr4 = cidr6 = None
    if lengths:
        four, _, six = lengths.partition("//")
        if lengths.startswith("/"):
            four, six = "", lengths[1:]
        cidr4 = int(four) if four.isdigit() and int(four) <= 32 else None
        cidr6 = int(six) if six.isdigit() and int(six) <= 128 else None
    return domain, cidr4, cidr6


def _valid_network(kind: str, value: str) -> bool:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return network.version == (4 if kind == "ip4" else 6)
