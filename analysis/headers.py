"""RFC 5322 header values as mail software writes them: comments and quoted strings.

Two readers need the same rule: an ARF field (`Source-IP: 192.0.2.1 (host.name)`) and an
`Authentication-Results` header, where a comment must never be read as a result. A loop, not
recursion: the nesting depth is the sender's to choose.
"""

from __future__ import annotations

__all__ = ["split_unquoted", "uncommented"]


def uncommented(value: str) -> str | None:
    """`value` without its comments (nested ones and quoted-pairs counted, quoted strings kept
    whole, so `"a(b)"@example.com` keeps its parentheses), each comment replaced by a space;
    None when its parentheses or quotes do not balance."""
    out: list[str] = []
    depth, quoted, escaped = 0, False, False
    for char in value:
        if escaped:
            escaped = False
            if not depth:
                out.append(char)
        elif char == "\\":
            escaped = True
            if not depth:
                out.append(char)
        elif depth:
            depth += {"(": 1, ")": -1}.get(char, 0)
            if not depth:
                out.append(" ")
        elif quoted:
            out.append(char)
            quoted = char != '"'
        elif char == '"':
            out.append(char)
            quoted = True
        elif char == "(":
            depth = 1
        else:
            out.append(char)
    if depth or quoted or escaped:
        return None
    return "".join(out)


def split_unquoted(text: str, separator: str) -> list[str]:
    """`text` split at `separator` where it stands outside quoted strings (after
    `uncommented`), each part stripped, empty parts left out."""
    parts: list[str] = []
    current: list[str] = []
    quoted, escaped = False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]
