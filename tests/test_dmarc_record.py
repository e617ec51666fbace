"""DMARC records read by RFC 9989's ABNF (analysis/records/dmarc.py): no DNS here."""

from __future__ import annotations

import pytest

from analysis.records.dmarc import (
    Intent,
    intent_of,
    is_dmarc,
    merge,
    near_dmarc,
    parse_dmarc,
    parse_uri,
    render,
)


def codes(text: str) -> set[str]:
    return {f.code for f in parse_dmarc(text).findings}


@pytest.mark.parametrize("text", [
    "v=DMARC1", "v=DMARC1;", "V=DMARC1; p=none", "v = DMARC1 ; p = none", "v\t=\tDMARC1\t;p=none",
    "v=DMARC1;p=none;",
])
def test_the_version_as_the_grammar_allows_it(text: str) -> None:
    assert is_dmarc(text) and not near_dmarc(text)


@pytest.mark.parametrize("text", [
    "v=dmarc1; p=none", " v=DMARC1; p=none", "p=none; v=DMARC1", "v=DMARC1 p=none",
    "v=DMARC10; p=none",
])
def test_near_misses_are_not_dmarc_but_are_recognised(text: str) -> None:
    assert not is_dmarc(text)
    assert near_dmarc(text) or text.startswith("v=DMARC10")


def test_unrelated_text_is_neither() -> None:
    for text in ("v=spf1 -all", "google-site-verification=abc", ""):
        assert not is_dmarc(text) and not near_dmarc(text)


def test_tags_values_and_policy() -> None:
    policy = parse_dmarc("V = DMARC1 ;P=ReJect; SP=quarantine;rua=mailto:A@Example.COM!10m")
    assert policy.valid and policy.policy == "reject" and policy.choice("sp") == "quarantine"
    (uri,) = policy.uris("rua")
    assert (uri.scheme, uri.address, uri.host, uri.size) == (
        "mailto", "A@Example.COM", "example.com", "10m")
    assert uri.destination == "mailto:A@Example.COM"


@pytest.mark.parametrize(("text", "code"), [
    ("v=DMARC1; p=reject; p=none", "dmarc.duplicate-tag"),
    ("v=DMARC1; p=reject; P=none", "dmarc.duplicate-tag"),  # names are caseless
    ("v=DMARC1; p=reject; junk", "dmarc.syntax"),
    ("v=DMARC1;; p=reject", "dmarc.empty-tag"),
    ("v=DMARC1; p=reject; x=1", "dmarc.unknown-tag"),
    ("v=DMARC1; p=reject; pct=20", "dmarc.removed-pct"),
    ("v=DMARC1; p=reject; fo=1:0", "dmarc.bad-value"),
    ("v=DMARC1; p=reject; fo=d:d", "dmarc.bad-value"),
    ("v=DMARC1; p=", "dmarc.bad-value"),
    ("v=DMARC1; aspf=r; p=reject", "dmarc.p-not-second"),
    ("v=DMARC1; p=none; rua=mailto:", "reports.bad-uri"),
    ("v=DMARC1; p=none; rua=mailto:no-at-sign", "reports.bad-uri"),
    ("v=DMARC1; p=none; rua=not a uri", "reports.bad-uri"),
    ("v=DMARC1; p=none; rua=a@b.example", "reports.no-scheme"),
])
def test_problems_by_code(text: str, code: str) -> None:
    assert code in codes(text), parse_dmarc(text).findings


def test_a_clean_record_has_only_facts() -> None:
    findings = parse_dmarc("v=DMARC1; p=reject; rua=mailto:d@contoso.example").findings
    assert findings == ()
    monitoring = parse_dmarc("v=DMARC1; p=none; rua=mailto:d@contoso.example").findings
    assert [f.level for f in monitoring] == ["info"]


def test_every_finding_names_its_rule() -> None:
    for text in ("v=DMARC1; p=reject; p=none; sp=x; junk; pct=1; rua=a@b.example,mailto:x@y!1k,"
                 "mailto:c@d.example,https://e.example/r; colour=red", "v=dmarc1; p=reject"):
        for finding in parse_dmarc(text, lenient=True).findings:
            assert finding.rfc and finding.code and finding.text


def test_intent_reads_broken_records_for_what_they_meant() -> None:
    assert intent_of(parse_dmarc("v=DMARC1; p=none; p=reject")).p == "none"  # disagree: weaker
    assert intent_of(parse_dmarc("v=DMARC1; p=rejct")).p == "reject"
    assert intent_of(parse_dmarc("v=DMARC1; p=block")).p == "none"  # no guess: what applies
    assert intent_of(parse_dmarc("v=DMARC1; p=reject; t=yes")).t == "n"  # a bad t is t=n
    assert intent_of(parse_dmarc("v=DMARC1; p=reject; t=y; t=n")).t == "y"  # the weaker
    assert intent_of(parse_dmarc("v=DMARC1; p=reject; rua=a@b.example!5m")).rua == (
        "mailto:a@b.example",)
    assert intent_of(parse_dmarc("v=dmarc1 p=quarantine", lenient=True)).p == "quarantine"


def test_render_writes_one_order_and_drops_what_receivers_ignore() -> None:
    text = "v=DMARC1; rua=mailto:d@x.example; adkim=s; pct=50; p=quarantine; colour=red; t=y"
    assert render(intent_of(parse_dmarc(text))) == (
        "v=DMARC1; p=quarantine; t=y; adkim=s; rua=mailto:d@x.example")
    assert [f.code for f in parse_dmarc(render(intent_of(parse_dmarc(text)))).findings] == [
        "dmarc.testing"]  # a fact, not a problem


def test_strength_counts_test_mode_as_one_level_less() -> None:
    assert Intent(p="reject", t="y").strength()[0] == Intent(p="quarantine").strength()[0]
    assert Intent(p="quarantine", t="y").strength()[0] == 0
    assert Intent(p="none", sp="reject").strength()[:3] == (0, 2, 2)
    assert Intent(p="reject").covers(Intent(p="quarantine", adkim="r"))
    assert not Intent(p="reject").covers(Intent(p="reject", adkim="s"))
    assert not Intent(p="reject").covers(Intent(p="none", rua=("mailto:a@b.example",)))


def test_merging_two_records_keeps_what_both_ask_for() -> None:
    # receivers apply neither of two records (RFC 9989 §4.10): the merge asks for no more than
    # each does, and reports to every destination of either
    a = intent_of(parse_dmarc("v=DMARC1; p=quarantine; rua=mailto:a@x.example"))
    b = intent_of(parse_dmarc("v=DMARC1; p=none; sp=reject; aspf=s; ruf=mailto:f@x.example"))
    merged = merge([a, b])
    assert all(m <= min(x, y) for m, x, y in zip(merged.strength(), a.strength(), b.strength(),
                                                   strict=True))
    assert render(merged) == ("v=DMARC1; p=none; sp=quarantine; "
                              "rua=mailto:a@x.example; ruf=mailto:f@x.example")
    soft = intent_of(parse_dmarc("v=DMARC1; p=reject; t=y"))
    hard = intent_of(parse_dmarc("v=DMARC1; p=none; sp=reject"))
    assert render(merge([soft, hard])) == "v=DMARC1; p=none; sp=quarantine"
    same = intent_of(parse_dmarc("v=DMARC1; p=reject; rua=mailto:b@x.example"))
    agreed = merge([intent_of(parse_dmarc("v=DMARC1; p=reject; rua=mailto:a@x.example")), same])
    assert render(agreed) == "v=DMARC1; p=reject; rua=mailto:a@x.example,mailto:b@x.example"


@pytest.mark.parametrize(("text", "scheme", "host"), [
    ("mailto:dmarc@Reports.Example", "mailto", "reports.example"),
    ("MAILTO:dmarc@example.com", "mailto", "example.com"),
    ("https://collector.example:8443/dmarc?x=1", "https", "collector.example"),
    ("mailto:a%2Cb@example.com", "mailto", "example.com"),
    ("dmarc@example.com", None, None),
])
def test_reporting_uris(text: str, scheme: str | None, host: str | None) -> None:
    uri = parse_uri(text)
    assert (uri.scheme, uri.host) == (scheme, host)
