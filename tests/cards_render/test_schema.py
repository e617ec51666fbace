"""The fast (compiled) schema check agrees with jsonschema, the reference, on broken cards.

`schema.errors` trusts the compiled validator's verdict and asks jsonschema only to name a
problem, so a card the compiled code accepted but jsonschema would reject would slip through.
These tests break valid cards in seeded, typical ways (a wrong type, an unknown value, a key
dropped or added, a list where an object goes, a trailing newline) and compare the two verdicts.
The only difference allowed is the known one: a pattern's `$` in the compiled code does not
match before a final newline, so it rejects a few values jsonschema accepts (never the reverse).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cards_render import schema
from tests.test_cards import CARDS

Path = tuple[str | int, ...]
_DROP = object()


def _nodes(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _nodes(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _nodes(child, (*path, i))


def _with(card: dict[str, Any], path: Path, new: Any) -> dict[str, Any]:
    changed = copy.deepcopy(card)
    parent = changed
    for step in path[:-1]:
        parent = parent[step]
    if new is _DROP:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return changed


def mutations(card: dict[str, Any]) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    """(how, where, broken card) for every node of the card."""
    for path, value in _nodes(card):
        if not path:
            continue
        if isinstance(value, str):
            yield "int", path, _with(card, path, 5)
            yield "unknown value", path, _with(card, path, "Nope")
            yield "newline", path, _with(card, path, value + "\n")
        elif isinstance(value, bool):
            yield "str", path, _with(card, path, "yes")
        elif isinstance(value, int | float):
            yield "str", path, _with(card, path, "x")
        elif isinstance(value, list):
            yield "object", path, _with(card, path, {})
        elif isinstance(value, dict):
            yield "list", path, _with(card, path, [])
            yield "extra key", path, _with(card, path, {**value, "bogus": 1})
        yield "null", path, _with(card, path, None)
        yield "dropped", path, _with(card, path, _DROP)


@pytest.mark.parametrize(("name", "sample"), [("decision-notmine", 100), ("approval", 25)])
def test_the_compiled_check_agrees_with_jsonschema(name: str, sample: int) -> None:
    every = list(mutations(CARDS[name]()))
    disagree = []
    for how, path, card in random.Random(f"cards/{name}").sample(every, sample):
        fast, reference = schema.is_valid(card), not schema.jsonschema_errors(card)
        if fast != reference and not (how == "newline" and reference and not fast):
            disagree.append((how, path, fast, reference))
    assert disagree == []


def test_a_card_only_the_compiled_check_rejects_still_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    card = CARDS["decision-notmine"]()
    card["body"][3]["wrap"] = "yes"
    monkeypatch.setattr(schema, "jsonschema_errors", lambda card: [])  # jsonschema sees nothing
    problem = schema.first_error(card)
    assert problem is not None and "found by the compiled schema only" in problem


def test_non_json_values_are_not_waved_through() -> None:
    card = CARDS["decision-notmine"]()
    card["body"] = tuple(card["body"])  # the compiled code takes a tuple for an array
    assert not schema.is_valid(card)
    problem = schema.first_error(card)
    assert problem is not None and problem.startswith("body: ({'type': 'Container'")
    assert problem.endswith("is not of type 'array'")


def test_checking_never_changes_the_card() -> None:
    for name in ("approval", "digest-60"):
        card = CARDS[name]()
        before = copy.deepcopy(card)
        assert schema.errors(card) == []
        assert card == before, name  # no schema defaults written in
