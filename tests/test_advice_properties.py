"""Advice only moves forward (issue 15), checked over generated DMARC records.

Two properties, over records built from RFC 9989's grammar with the mistakes real records carry
(duplicated tags, bad values, scheme-less report addresses, removed and unknown tags, two records,
near-misses receivers ignore):

- equivalent spellings (tag-name and value case, blanks around `=` and `;`, the order of the tags
  after `p`, a trailing `;`) give the same findings and the same advice;
- no proposal asks for less than the published record: the strength is recomputed here, apart
  from the code under test, from the values the grammar allows (p, sp and np as receivers apply
  them after t=y, strict alignment), every report destination is kept, and the proposal replaces
  what `_dmarc.<domain>` holds instead of adding a second record.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.dnsevidence import DmarcRecord, dmarc_tags
from analysis.posture import dmarc_findings, plan
from analysis.records.dmarc import is_dmarc, near_dmarc, parse_dmarc

DOMAIN = "contoso.example"
NAME = f"_dmarc.{DOMAIN}"
LEVEL = {"none": 0, "quarantine": 1, "reject": 2}
#: Derandomised, so every run checks the same records; no deadline (no wall-clock bounds).
CHECKS = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow])

policies = st.sampled_from(["none", "quarantine", "reject"])
addresses = st.sampled_from(["d@contoso.example", "rua@vendor.example", "x@reports.example"])


@st.composite
def uris(draw: st.DrawFn) -> str:
    address = draw(addresses)
    scheme = draw(st.sampled_from(["mailto:", "mailto:", "mailto:", ""]))  # "" is the mistake
    size = draw(st.sampled_from(["", "", "!10m", "!5k"]))
    return scheme + address + size


def tag_values(name: str) -> st.SearchStrategy[str]:
    bad = st.sampled_from(["block", "rejct", "yes", "x", "1"])
    return {
        "p": st.one_of(policies, policies, bad), "sp": st.one_of(policies, bad),
        "np": st.one_of(policies, bad), "t": st.sampled_from(["y", "n", "yes"]),
        "adkim": st.sampled_from(["r", "s", "x"]), "aspf": st.sampled_from(["r", "s", "q"]),
        "psd": st.sampled_from(["u", "n", "x"]), "fo": st.sampled_from(["0", "1", "d:s", "0:1"]),
        "rua": st.lists(uris(), min_size=1, max_size=3).map(",".join),
        "ruf": st.lists(uris(), min_size=1, max_size=2).map(",".join),
        "pct": st.sampled_from(["0", "50", "100"]), "rf": st.just("afrf"),
        "ri": st.just("86400"), "colour": st.just("blue"),
    }[name]


NAMES = ["sp", "np", "t", "adkim", "aspf", "psd", "fo", "rua", "ruf", "pct", "rf", "ri", "colour"]


@st.composite
def tag_lists(draw: st.DrawFn, duplicates: bool) -> list[tuple[str, str]]:
    """(name, value) pairs after v: p first (when present), then others, maybe repeated."""
    names = draw(st.lists(st.sampled_from(NAMES), max_size=7, unique=not duplicates))
    tags = [(n, draw(tag_values(n))) for n in names]
    if draw(st.booleans()) or not tags:
        tags.insert(0, ("p", draw(tag_values("p"))))
        if duplicates and draw(st.booleans()):
            tags.insert(draw(st.integers(1, len(tags))), ("p", draw(tag_values("p"))))
    return tags


def write(tags: Sequence[tuple[str, str]]) -> str:
    return "; ".join(["v=DMARC1", *(f"{n}={v}" for n, v in tags)])


@st.composite
def spellings(draw: st.DrawFn, tags: list[tuple[str, str]]) -> str:
    """The same record spelled another way the grammar allows."""
    head = [t for t in tags[:1] if t[0] == "p"]
    rest = draw(st.permutations(tags[len(head):]))
    blank = st.sampled_from(["", " ", "\t", "  ", " \t"])
    parts = [draw(st.sampled_from(["v", "V"])) + draw(blank) + "=" + draw(blank) + "DMARC1"]
    for name, value in [*head, *rest]:
        if name not in ("rua", "ruf"):
            value = "".join(c.upper() if draw(st.booleans()) else c for c in value)
        name = "".join(c.upper() if draw(st.booleans()) else c for c in name)
        parts.append(name + draw(blank) + "=" + draw(blank) + value)
    text = ""
    for number, part in enumerate(parts):
        text += part if number == 0 else draw(blank) + ";" + draw(blank) + part
    return text + draw(st.sampled_from(["", ";", " ;", ";\t"]))


def own(texts: Sequence[str]) -> DmarcRecord:
    valid = [t for t in texts if is_dmarc(t)]
    record = valid[0] if len(valid) == 1 else None
    return DmarcRecord(DOMAIN, DOMAIN if record else None, record,
                       dmarc_tags(record) if record else {}, 1, (), own=tuple(texts))


def signature(found: DmarcRecord) -> object:
    """What an admin is told: findings (without the quoted text) and the advice."""
    findings = sorted((f.level, f.code, f.rfc or "", f.fix.name if f.fix else "",
                       f.fix.value if f.fix else "") for f in dmarc_findings(DOMAIN, found))
    advice = [plan(DOMAIN, found, considered, ready, blockers, 0)
              for considered, ready, blockers in ((0, 0, []), (100, 96, []), (100, 100, []),
                                                  (100, 100, ["b"]))]
    return findings, [(p, s, [(c.name, c.value) for c in cs]) for p, s, cs in advice]


@CHECKS
@given(st.data())
def test_equivalent_spellings_get_the_same_findings_and_advice(data: st.DataObject) -> None:
    tags = data.draw(tag_lists(duplicates=False))
    plain = write(tags)
    other = data.draw(spellings(tags))
    assert is_dmarc(other), other
    assert signature(own([other])) == signature(own([plain])), (plain, other)


# -- the floor every proposal must cover, recomputed from the text ------------------------------

_TAG = re.compile(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")


def floor(texts: Sequence[str]) -> tuple[tuple[int, ...], set[str]]:
    """(strength, destinations) the published records ask for, read without the code under test:
    of duplicated values the strictest that the grammar allows; t=y only when every t says so."""
    strengths, where = [], set()
    for text in texts:
        values: dict[str, list[str]] = {}
        body = re.sub(r"^\s*v\s*=\s*dmarc1\s*;?", "", text, flags=re.IGNORECASE)
        for part in body.split(";"):
            match = _TAG.match(part)
            if match:
                values.setdefault(match.group(1).lower(), []).append(match.group(2).lower())
        p = _top(values, "p", 0)
        sp = _top(values, "sp", p)
        np = _top(values, "np", sp)
        soften = 1 if values.get("t") and all(v == "y" for v in values["t"]) else 0
        strengths.append((max(0, p - soften), max(0, sp - soften), max(0, np - soften),
                          int("s" in values.get("adkim", [])), int("s" in values.get("aspf", []))))
        for tag in ("rua", "ruf"):
            for uri in ",".join(values.get(tag, [])).split(","):
                address = re.sub(r"!\d+[kmgt]?$", "", uri.strip()).removeprefix("mailto:")
                if "@" in address:
                    where.add(f"{tag}:{address}")
    return tuple(max(s[i] for s in strengths) for i in range(5)), where


def _top(values: dict[str, list[str]], name: str, default: int) -> int:
    found = [LEVEL[v] for v in values.get(name, []) if v in LEVEL]
    return max(found) if found else default


def asked(value: str) -> tuple[tuple[int, ...], set[str]]:
    return floor([value])


@st.composite
def published(draw: st.DrawFn) -> list[str]:
    """What `_dmarc.<domain>` holds: one record, two, or a near-miss receivers ignore."""
    first = write(draw(tag_lists(duplicates=True)))
    shape = draw(st.sampled_from(["one", "one", "two", "blank", "case", "order"]))
    if shape == "two":
        return [first, write(draw(tag_lists(duplicates=True)))]
    if shape == "blank":
        return [" " + first]
    if shape == "case":
        return [first.replace("DMARC1", "dmarc1", 1)]
    if shape == "order" and ";" in first:
        head, _, rest = first.partition(";")
        return [rest.strip() + "; " + head]
    return [first]


@CHECKS
@given(published(), st.integers(0, 1000), st.integers(0, 1000), st.booleans(),
       st.integers(0, 50))
def test_no_proposal_is_weaker_than_what_is_published(texts: list[str], considered: int,
                                                      ready: int, blocked: bool,
                                                      lists: int) -> None:
    ready = min(ready, considered)
    found = own(texts)
    meant = [t for t in texts if is_dmarc(t) or near_dmarc(t)]
    strength, destinations = floor(meant)
    proposals = list(plan(DOMAIN, found, considered, ready, ["b"] if blocked else [], lists)[2])
    proposals += [f.fix for f in dmarc_findings(DOMAIN, found)
                  if f.fix is not None and f.fix.name == NAME and f.fix.value]
    for change in proposals:
        assert change.name == NAME and change.type == "TXT"
        assert set(change.replaces) >= set(meant), "a second record would be added"
        assert is_dmarc(change.value), change.value
        assert not [f for f in parse_dmarc(change.value).findings if f.level == "error"], (
            change.value)
        new_strength, new_destinations = asked(change.value)
        assert all(a >= b for a, b in zip(new_strength, strength, strict=True)), (
            texts, change.value)
        assert new_destinations >= destinations, (texts, change.value)
