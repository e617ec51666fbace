"""`tag=value; tag=value` lists, the shape DKIM (RFC 6376 §3.2) gave to DNS records.

DMARC, DKIM keys, MTA-STS and TLS-RPT TXT records and BIMI all use it with small differences in
which names, values and blanks their ABNF allows; each caller passes its own, so every grammar is
read exactly as written and the splitting lives in one place.
"""

from __future__ import annotations

import dataclasses
import re

#: RFC 5234 WSP. DMARC, MTA-STS and TLS-RPT allow only these around `=` and `;`.
WSP = " \t"
#: RFC 6376 FWS, as it arrives in a TXT string: WSP plus line breaks.
FWS = " \t\r\n"


@dataclasses.dataclass(frozen=True, slots=True)
class Tag:
    name: str  # as published (callers fold case where their grammar says names are caseless)
    value: str  # blanks around it removed
    raw: str  # the whole `name=value` part, as published


@dataclasses.dataclass(frozen=True, slots=True)
class TagList:
    tags: tuple[Tag, ...]
    bad: tuple[str, ...]  # parts that are not `name=value` in the caller's grammar
    empty_parts: int  # `;;` or a leading `;`: not allowed by any of the grammars

    def names(self) -> list[str]:
        return [t.name for t in self.tags]

    def duplicates(self, fold: bool = False) -> list[str]:
        """Names that occur more than once (in order of their second occurrence)."""
        seen: set[str] = set()
        twice: list[str] = []
        for tag in self.tags:
            key = tag.name.lower() if fold else tag.name
            if key in seen and key not in twice:
                twice.append(key)
            seen.add(key)
        return twice


def split(text: str, *, name: str = r"[A-Za-z][A-Za-z0-9_]*", value: str = r"[\x21-\x3a\x3c-\x7e]",
          blanks: str = WSP, inner_blanks: bool = True) -> TagList:
    """Split `text` into tags; `name` is the regex of a tag name, `value` of one value character.

    Blanks (`blanks`) around `=` and `;` are dropped; `inner_blanks` allows them between value
    characters too (DMARC's %x20, DKIM's FWS inside a value).
    """
    pattern = re.compile(
        rf"({name})[{blanks}]*=[{blanks}]*((?:{value}|[{blanks}])*)" if inner_blanks
        else rf"({name})[{blanks}]*=[{blanks}]*((?:{value})*)")
    tags: list[Tag] = []
    bad: list[str] = []
    empty = 0
    parts = text.split(";")
    for number, part in enumerate(parts):
        stripped = part.strip(blanks)
        if not stripped:
            empty += number != len(parts) - 1  # only a trailing `;` may be followed by nothing
            continue
        match = pattern.fullmatch(stripped)
        if match is None:
            bad.append(stripped)
            continue
        tags.append(Tag(match.group(1), match.group(2).strip(blanks), stripped))
    return TagList(tuple(tags), tuple(bad), empty)
