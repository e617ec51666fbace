"""The SPF walk asks a record's questions together, yet counts and orders as a receiver does."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from typing import Any

from analysis.spftree import EXPANSION_BUDGET, SpfTree, expand


@dataclasses.dataclass(frozen=True)
class _Answer:
    records: tuple[str, ...]
    nxdomain: bool = False


class _Zone:
    """Names to records, each answered a few loop turns later; tracks what is in flight."""

    def __init__(self, records: dict[tuple[str, str], tuple[str, ...]],
                 failing: frozenset[str] = frozenset()) -> None:
        self.records = records
        self.failing = failing
        self.asked: list[tuple[str, str]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def lookup(self, name: str, rdtype: str) -> _Answer:
        self.asked.append((name, rdtype))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            if name in self.failing:
                raise TimeoutError(f"{name} {rdtype}: timed out")
            found = self.records.get((name, rdtype))
            return _Answer(found or (), nxdomain=not any(n == name for n, _ in self.records))
        finally:
            self.in_flight -= 1


def _tree() -> dict[tuple[str, str], tuple[str, ...]]:
    return {
        ("example.com", "TXT"): ("v=spf1 include:one.test include:two.test a:host.example.com "
                                 "mx include:three.test -all include:never.test",),
        ("one.test", "TXT"): ("v=spf1 ip4:192.0.2.0/25 include:deep.test -all",),
        ("deep.test", "TXT"): ("v=spf1 ip4:192.0.2.128/25 -all",),
        ("two.test", "TXT"): ("v=spf1 ip4:198.51.100.0/24 -all",),
        ("three.test", "TXT"): ("v=spf1 ip6:2001:db8::/32 -all",),
        ("host.example.com", "A"): ("203.0.113.5",),
        ("example.com", "MX"): ("10 mx.example.com",),
        ("mx.example.com", "A"): ("203.0.113.25",),
        ("never.test", "TXT"): ("v=spf1 ip4:10.0.0.0/8 -all",),
    }


def _run(zone: _Zone, domain: str = "example.com") -> SpfTree:
    return asyncio.run(expand(domain, zone.lookup, temporary=(TimeoutError,)))


def test_a_records_questions_are_asked_together_and_the_result_is_a_receivers() -> None:
    zone = _Zone(_tree())
    tree = _run(zone)
    # one include, two includes, a and mx at once: not one question at a time
    assert zone.most_in_flight >= 5
    # what a receiver evaluating term by term finds, in its order
    assert [str(n) for n in tree.networks] == [
        "192.0.2.0/25", "192.0.2.128/25", "198.51.100.0/24", "203.0.113.5/32",
        "203.0.113.25/32", "2001:db8::/32"]
    assert tree.includes == ("one.test", "deep.test", "two.test", "three.test")
    assert tree.lookups == 6 and not tree.errors and not tree.temporary
    # nothing after `all` is asked, and every question is asked once
    assert ("never.test", "TXT") not in zone.asked
    assert len(zone.asked) == len(set(zone.asked))


def test_reading_ahead_stays_within_the_expansion_budget() -> None:
    includes = " ".join(f"include:i{n}.test" for n in range(3 * EXPANSION_BUDGET))
    records = {("wide.test", "TXT"): (f"v=spf1 {includes} -all",)}
    records |= {(f"i{n}.test", "TXT"): ("v=spf1 -all",) for n in range(3 * EXPANSION_BUDGET)}
    zone = _Zone(records)
    tree = _run(zone, "wide.test")
    assert tree.lookups == EXPANSION_BUDGET + 1 and tree.errors  # stopped, as before
    assert len(zone.asked) <= EXPANSION_BUDGET + 1  # the record itself and the budget's terms


def test_a_failure_read_ahead_and_never_used_is_no_unhandled_error() -> None:
    zone = _Zone(_tree(), failing=frozenset({"one.test", "two.test", "three.test"}))
    unhandled: list[dict[str, Any]] = []

    async def go() -> SpfTree:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: unhandled.append(ctx))
        tree = await expand("example.com", zone.lookup, temporary=(TimeoutError,))
        for _ in range(10):  # let the other read-ahead questions fail too
            await asyncio.sleep(0)
        gc.collect()
        return tree

    tree = asyncio.run(go())
    assert tree.temporary and "one.test TXT: timed out" in tree.errors
    assert {"two.test", "three.test"} <= {name for name, _ in zone.asked}
    assert unhandled == []
