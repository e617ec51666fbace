"""Advice only moves forward (issue 15), checked over generated DMARC records.

Two properties, over records built from RFC 9989's grammar with the mistakes real records carry
(duplicated tags, bad values, scheme-less report addresses, removed and unknown tags, two records,
near-misses receivers ignore):

- equivalent spellings (tag-name and value case, blanks around `=` and `;`, the order of the tags
  after `p`, a trailing `;`) give the same findings and the same advice;
- no proposal asks for less than the records in force, or than the weakest of them when they
  disagree (two records, or one tag twice with different values: receivers apply none of them):
  the strength is recomputed here, apart from the code under test, from the values the grammar
  allows (p, sp and np as receivers apply them after t=y, strict alignment), every report
  destination is kept, and the proposal replaces what `_dmarc.<domain>` holds instead of adding
  a second record;
- where they disagree, no proposal asks for more than readiness allows: a repair stays at the
  weakest, and the plan goes one step past it only when the approved mail is ready (docs/
  posture.md, "Two records that disagree").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.dnsevidence import DmarcRecord, dmarc_tags
from analysis.posture import TEST, Readiness, dmarc_findings, plan
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
#: The one misspelling the generator makes that says what it meant (docs/posture.md: "a typo
#: in a value read as the value it meant").
TYPOS = {"rejct": "reject"}
READABLE = {"p": set(LEVEL), "sp": set(LEVEL), "np": set(LEVEL), "t": {"y", "n"},
            "adkim": {"r", "s"}, "aspf": {"r", "s"}}


def reading(text: str) -> dict[str, list[str]]:
    """Every value of every tag (lower case), typos read as meant; values no rule allows
    are dropped, as they state no intent."""
    values: dict[str, list[str]] = {}
    body = re.sub(r"^\s*v\s*=\s*dmarc1\s*;?", "", text, flags=re.IGNORECASE)
    for part in body.split(";"):
        match = _TAG.match(part)
        if match:
            name, value = match.group(1).lower(), match.group(2).lower()
            value = TYPOS.get(value, value)
            if name not in READABLE or value in READABLE[name]:
                values.setdefault(name, []).append(value)
    return values


def strength_of(values: dict[str, list[str]]) -> tuple[int, ...]:
    """What a record asks for, reading duplicated values as their weakest (the record is invalid
    as a whole: receivers may take either, or none)."""
    p = min((LEVEL[v] for v in values.get("p", [])), default=0)
    sp = min((LEVEL[v] for v in values.get("sp", [])), default=p)
    np = min((LEVEL[v] for v in values.get("np", [])), default=sp)
    soften = 1 if "y" in values.get("t", []) else 0
    strict = [int(bool(values.get(t)) and set(values[t]) == {"s"}) for t in ("adkim", "aspf")]
    return (max(0, p - soften), max(0, sp - soften), max(0, np - soften), *strict)


def in_force(texts: Sequence[str]) -> list[str]:
    """The records whose intent counts: the one valid record receivers apply (near-misses
    beside it are ignored), else every record meant as DMARC."""
    valid = [t for t in texts if is_dmarc(t)]
    return valid if len(valid) == 1 else [t for t in texts if is_dmarc(t) or near_dmarc(t)]


def floor(texts: Sequence[str]) -> tuple[tuple[int, ...], set[str]]:
    """(strength, destinations): the weakest each of p, sp, np and alignment among `texts`, and
    every report destination of any."""
    strengths, where = [], set()
    for text in texts:
        values = reading(text)
        strengths.append(strength_of(values))
        for tag in ("rua", "ruf"):
            for uri in ",".join(values.get(tag, [])).split(","):
                address = re.sub(r"!\d+[kmgt]?$", "", uri.strip()).removeprefix("mailto:")
                if "@" in address:
                    where.add(f"{tag}:{address}")
    return tuple(min(s[i] for s in strengths) for i in range(5)), where


def disagree(texts: Sequence[str]) -> bool:
    """Two records asking for different things, or one tag twice with different values."""
    readings = [reading(t) for t in texts]
    if len({strength_of(r) for r in readings}) > 1:
        return True
    return any(len(set(r.get(tag, []))) > 1 for r in readings for tag in READABLE)


def asked(value: str) -> tuple[tuple[int, ...], set[str]]:
    return floor([value])


@st.composite
def published(draw: st.DrawFn) -> list[str]:
    """What `_dmarc.<domain>` holds: one record, two, a near-miss receivers ignore, or a record
    with a near-miss beside it."""
    first = write(draw(tag_lists(duplicates=True)))
    shape = draw(st.sampled_from(["one", "one", "two", "two", "blank", "case", "order",
                                  "beside"]))
    if shape == "two":
        return [first, write(draw(tag_lists(duplicates=True)))]
    if shape == "blank":
        return [" " + first]
    if shape == "case":
        return [first.replace("DMARC1", "dmarc1", 1)]
    if shape == "order" and ";" in first:
        head, _, rest = first.partition(";")
        return [rest.strip() + "; " + head]
    if shape == "beside":
        return [first, write(draw(tag_lists(duplicates=False))).replace("DMARC1", "dmarc1", 1)]
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
    counted = in_force(texts)
    strength, destinations = floor(counted)
    _, every = floor(meant)
    blockers = ("b: 10 messages",) if blocked else ()
    findings = dmarc_findings(DOMAIN, found, ready=Readiness(considered, ready, blockers))
    planned = list(plan(DOMAIN, found, considered, ready, list(blockers), lists)[2])
    fixes = [f.fix for f in findings if f.fix is not None and f.fix.name == NAME and f.fix.value]
    removed = {t for f in findings if f.fix is not None and f.fix.name == NAME
               and not f.fix.value for t in f.fix.replaces}
    step = 1 if considered and not blocked and ready / considered >= TEST else 0
    for change in planned + fixes:
        assert change.name == NAME and change.type == "TXT"
        gone = set(change.replaces) | (removed if change in fixes else set())
        assert gone >= set(meant), "a second record would be added"
        assert is_dmarc(change.value), change.value
        assert not [f for f in parse_dmarc(change.value).findings if f.level == "error"], (
            change.value)
        new_strength, new_destinations = asked(change.value)
        assert all(a >= b for a, b in zip(new_strength, strength, strict=True)), (
            texts, change.value)
        assert new_destinations >= (every if len(counted) > 1 else destinations), (
            texts, change.value)
        if disagree(counted):  # receivers apply none of them: no silent escalation
            up = step if change in planned else 0
            assert new_strength[0] <= strength[0] + up, (texts, change.value, step)
            for i in (1, 2):
                assert new_strength[i] <= max(strength[i], strength[0]) + up, (
                    texts, change.value, step)
            assert new_strength[3:] <= strength[3:], (texts, change.value)


# -- records that disagree, said plainly --------------------------------------------------------

STRICT, LAX = ("v=DMARC1; p=reject; rua=mailto:a@contoso.example",
               "v=DMARC1; p=none; rua=mailto:b@contoso.example")
BLOCKED = Readiness(1000, 400, ("Mailchimp: 600 messages, not approved yet (needs-dkim); its "
                                "owner must approve or reject it",))


def test_two_records_that_disagree_keep_the_weaker_and_say_what_the_stricter_would_do() -> None:
    found = own([STRICT, LAX])
    (two,) = [f for f in dmarc_findings(DOMAIN, found, ready=BLOCKED)
              if f.code == "dmarc.multiple"]
    assert "record 1 asks for p=reject, record 2 for p=none" in two.text
    assert "today they apply no policy and send no reports" in two.text
    assert "publishing the stricter (p=reject) instead would reject the failing mail of the "\
           "blocker (Mailchimp)" in two.text
    assert two.fix is not None and set(two.fix.replaces) == {STRICT, LAX}
    assert two.fix.value == ("v=DMARC1; p=none; "
                             "rua=mailto:a@contoso.example,mailto:b@contoso.example")
    policy, step, (change,) = plan(DOMAIN, found, 1000, 400, BLOCKED.blockers, 0)
    assert (policy, change.value) == ("none", two.fix.value) and "stay at p=none" in step
    # all the approved mail ready: one step past the weaker, not straight to the stricter
    policy, _, (change,) = plan(DOMAIN, found, 1000, 1000, [], 0)
    assert policy == "quarantine" and "p=quarantine" in change.value
    unready = [f for f in dmarc_findings(DOMAIN, found, ready=Readiness(0, 0, ()))
               if f.code == "dmarc.multiple"]
    assert "no sender is approved" in unready[0].text


def test_a_tag_twice_with_values_that_disagree_is_read_as_the_weaker() -> None:
    text = "v=DMARC1; p=reject; p=none; rua=mailto:d@contoso.example"
    (twice,) = [f for f in dmarc_findings(DOMAIN, own([text]), ready=BLOCKED)
                if f.code == "dmarc.duplicate-tag"]
    assert "values that disagree (p=reject, p=none)" in twice.text
    assert "receivers that follow the standard apply none of it" in twice.text
    assert "the repair keeps the weaker, p=none" in twice.text and "Mailchimp" in twice.text
    assert twice.fix is not None
    assert twice.fix.value == "v=DMARC1; p=none; rua=mailto:d@contoso.example"
    policy, _, (change,) = plan(DOMAIN, own([text]), 1000, 400, BLOCKED.blockers, 0)
    assert (policy, change.value) == ("none", twice.fix.value)
    # equal values are not a disagreement: the repair keeps them
    same = "v=DMARC1; p=reject; p=reject; rua=mailto:d@contoso.example"
    (dup,) = [f for f in dmarc_findings(DOMAIN, own([same])) if f.code == "dmarc.duplicate-tag"]
    assert "disagree" not in dup.text and dup.fix is not None
    assert dup.fix.value == "v=DMARC1; p=reject; rua=mailto:d@contoso.example"


def test_a_near_miss_beside_the_record_neither_raises_nor_lowers_it() -> None:
    for applied, ignored in [(LAX, STRICT.replace("DMARC1", "dmarc1")),
                             (STRICT, LAX.replace("DMARC1", "dmarc1"))]:
        found = own([applied, ignored])
        for change in plan(DOMAIN, found, 0, 0, [], 0)[2]:
            assert asked(change.value)[0] == asked(applied)[0], (applied, change.value)
            assert set(change.replaces) == {applied, ignored}
