"""The SPF grammar (RFC 7208 §12) and its macros (§7), without DNS."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.spf import (
    AFTER_ALL,
    DUPLICATE_MODIFIER,
    DUPLICATE_TERM,
    MACRO,
    NON_ASCII,
    PTR,
    REDIRECT_IGNORED,
    REPORT_MODIFIER,
    SEPARATOR,
    SYNTAX,
    UNKNOWN_MODIFIER,
    is_sender_id,
    is_spf,
    macro_problem,
    parse_spf,
    repair_syntax,
    resembles_spf,
)

#: Every place a domain-spec may stand, with {} for the domain-spec.
PLACES = ["a:{}", "mx:{}", "ptr:{}", "include:{}", "exists:{}", "redirect={}", "exp={}",
          "-a:{}/24", "~mx:{}//64"]


def codes(record: str) -> list[str]:
    return [p.code for p in parse_spf(record).problems]


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("spec", ["%{s}.x.example", "%{l}.x.example", "%{o}.x.example",
                                  "%{d}", "%{i}.x.example", "%{p}.x.example", "%{h}.x.example",
                                  "%{v}.x.example", "%{ir}.%{v}._spf.%{d}", "%{d2}",
                                  "%{l1r-}.x.example", "%{S}.x.example", "%{iR}.x.example",
                                  "%{d}.%%.x.example", "x%_y.example.org", "x.%-",
                                  "%{ir=}.x.example", "foo!bar.x.example"])
def test_macros_are_accepted_wherever_a_domain_spec_is(place: str, spec: str) -> None:
    record = parse_spf(f"v=spf1 {place.format(spec)} -all")
    assert not record.errors, record.problems
    assert len(record.terms) == 2


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize(("spec", "words"), [
    ("%{?}.x.example", "not a macro letter"), ("%{z}.x.example", "not a macro letter"),
    ("%{}.x.example", "no macro letter"), ("%{d0}.x.example", "must not be zero"),
    ("%{i!}.x.example", "only a transformer or a delimiter"),
    ("50%.x.example", "must start"), ("%x.example", "must start"),
    ("%{d.x.example", "without '}'"),
])
def test_invalid_macros_are_a_permerror_wherever_they_are(place: str, spec: str,
                                                          words: str) -> None:
    record = parse_spf(f"v=spf1 {place.format(spec)} -all")
    problems = [p for p in record.problems if p.code == MACRO]
    assert problems and problems[0].permerror and problems[0].level == "error"
    assert words in problems[0].text and problems[0].section == "RFC 7208 §7.1"


@pytest.mark.parametrize("letter", ["c", "r", "t", "C"])
def test_c_r_t_only_in_explanations(letter: str) -> None:
    assert not parse_spf(f"v=spf1 -all exp=%{{{letter}}}.why.example").errors
    for place in ("a:{}", "include:{}", "exists:{}", "redirect={}"):
        found = parse_spf(f"v=spf1 {place.format('%{' + letter + '}.x.example')} -all")
        assert [p.code for p in found.problems] == [MACRO]
        assert "RFC 7208 §7.2" in found.problems[0].text


@pytest.mark.parametrize(("record", "words"), [
    ("v=spf1 a:foo -all", "top-level label"), ("v=spf1 include:example.123 -all", "top-level"),
    ("v=spf1 a: -all", "needs a domain"), ("v=spf1 a:/24 -all", "top-level label"),
    ("v=spf1 mx/33 -all", "/33"), ("v=spf1 a//129 -all", "//129"),
    ("v=spf1 a:x.example/016 -all", "/016"), ("v=spf1 ip4:192.0.2.0/016 -all", "leading zeros"),
    ("v=spf1 ip4:192.0.2.1/33 -all", "0 to 32"), ("v=spf1 ip6:2001:db8::/129 -all", "0 to 128"),
    ("v=spf1 ip4:2001:db8::1 -all", "use ip6:"), ("v=spf1 ip6:192.0.2.1 -all", "use ip4:"),
    ("v=spf1 ip4:192.0.2.256 -all", "not an IPv4"), ("v=spf1 ip4:%{i} -all", "not a macro"),
    ("v=spf1 ip4 -all", "needs ':'"), ("v=spf1 all:x", "takes no value"),
    ("v=spf1 ptr/24 -all", "ptr takes only"), ("v=spf1 foo:bar -all", "not an SPF mechanism"),
    ("v=spf1 a+mx -all", "not a valid a mechanism"), ("v=spf1 +redirect=x.example", "qualifier"),
    ("v=spf1 redirect=", "needs a domain"), ("v=spf1 -all exp=", "needs a domain"),
    ("v=spf1 include:x..example -all", "empty label"), ("v=spf1 ip4:192.0.2.1~all", "IPv4"),
    ("v=spf1 -all foo", "not an SPF mechanism"),
])
def test_syntax_errors_anywhere_are_a_permerror(record: str, words: str) -> None:
    found = [p for p in parse_spf(record).problems if p.permerror]
    assert found and found[0].code == SYNTAX and words in found[0].text, found


@pytest.mark.parametrize(("record", "code", "level"), [
    ("v=spf1 -all include:x.example", AFTER_ALL, "warning"),
    ("v=spf1 ~all -all", AFTER_ALL, "warning"),
    ("v=spf1 -all redirect=x.example", REDIRECT_IGNORED, "warning"),
    ("v=spf1 redirect=x.example redirect=y.example", DUPLICATE_MODIFIER, "error"),
    ("v=spf1 exp=x.example -all exp=y.example", DUPLICATE_MODIFIER, "error"),
    ("v=spf1 tracking=1 -all", UNKNOWN_MODIFIER, "info"),
    ("v=spf1 -all MS=A1B2C3", UNKNOWN_MODIFIER, "info"),
    ("v=spf1 tag=50% -all", UNKNOWN_MODIFIER, "warning"),
    ("v=spf1 ptr -all", PTR, "warning"),
    ("v=spf1 ip4:192.0.2.1 a ip4:192.0.2.1/32 -all", DUPLICATE_TERM, "warning"),
    ("v=spf1 rp=10 -all", REPORT_MODIFIER, "warning"),
    ("v=spf1 ra=a@b.example -all", REPORT_MODIFIER, "warning"),
    ("v=spf1 ra=a ra=b -all", REPORT_MODIFIER, "warning"),
    ("v=spf1 ip4:192.0.2.1\t-all", SEPARATOR, "warning"),
    ("v=spf1 ip4:192.0.2.1 \u2013all", NON_ASCII, "error"),
])
def test_what_a_reader_sees_without_dns(record: str, code: str, level: str) -> None:
    found = [p for p in parse_spf(record).problems if p.code == code]
    assert found and found[0].level == level, parse_spf(record).problems
    assert found[0].permerror == (level == "error")


def test_clean_records_have_no_problems() -> None:
    for record in ("v=spf1 -all", "V=SPF1 IP4:192.0.2.1 -ALL", "v=spf1", "v=spf1 -all  ",
                   "v=spf1 a mx a:x.example/24//64 mx:y.example//0 -all",
                   "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.x.example ~all",
                   "v=spf1 redirect=_spf.x.example", "v=spf1 ra=postmaster rp=10 rr=e:f -all",
                   "v=spf1 exists:%{i}._spf.x.example -all exp=explain._spf.%{d}"):
        assert parse_spf(record).problems == (), record


def test_terms_keep_their_meaning() -> None:
    record = parse_spf("v=spf1 -a:Mail.X.Example./24//64 ~ip4:192.0.2.7/24 redirect=R.example "
                       "?all include:later.example")
    a, ip4, redirect, all_, later = record.terms
    assert (a.name, a.qualifier, a.target, a.cidr4, a.cidr6) == ("a", "-", "mail.x.example",
                                                                 24, 64)
    assert str(a) == "-a:Mail.X.Example./24//64" and ip4.qualifier == "~"
    assert redirect.is_modifier and record.redirect is None  # an all is in the record
    assert record.all_qualifier == "?" and [t.name for t in record.evaluated] == [
        "a", "ip4", "all"]
    assert later not in record.evaluated and all_.name == "all"


def test_record_selection() -> None:
    assert is_spf("v=spf1") and is_spf("V=SPF1 -all") and not is_spf(" v=spf1 -all")
    assert not is_spf("v=spf10 -all") and resembles_spf("v=spf10 -all")
    assert resembles_spf("v=spf1,-all") and not resembles_spf("v=spf1 -all")
    assert is_sender_id("v=spf2.0/pra ip4:192.0.2.0/24 -all")
    assert is_sender_id("v=spf2.0/mfrom,pra -all") and not is_sender_id("v=spf2.0/x -all")


@pytest.mark.parametrize(("record", "repaired"), [
    ("v=spf1 ip4:192.0.2.1~all", "v=spf1 ip4:192.0.2.1 ~all"),
    ("v=spf1 a:x.example/24~all", "v=spf1 a:x.example/24 ~all"),
    ("v=spf1 mx include: _spf.x.example ~all", "v=spf1 mx include:_spf.x.example ~all"),
    ("v=spf1 ip4:2001:db8::1 -all", "v=spf1 ip6:2001:db8::1 -all"),
    ("v=spf1 ip6:192.0.2.0/24 -all", "v=spf1 ip4:192.0.2.0/24 -all"),
    ("v=spf1 ip4:192.0.2.0/024 a:x.example/024 -all", "v=spf1 ip4:192.0.2.0/24 a:x.example/24 "
     "-all"),
    ("v=spf1 -all exp=a.example exp=b.example", "v=spf1 -all exp=a.example"),
    ("v=spf1 ip4:192.0.2.1\t-all", "v=spf1 ip4:192.0.2.1 -all"),
])
def test_syntax_slips_with_one_meaning_are_repaired(record: str, repaired: str) -> None:
    assert repair_syntax(record) == repaired
    assert not parse_spf(repaired).errors


@pytest.mark.parametrize("record", ["v=spf1 -all", "v=spf1 include -all", "v=spf1 a:%{z} -all",
                                    "v=spf1 redirect=a.example redirect=b.example",
                                    "v=spf1 ip4:192.0.2.999 -all", "v=spf1 foo -all"])
def test_nothing_is_guessed(record: str) -> None:
    assert repair_syntax(record) is None


_LETTER = st.sampled_from(list("slodiphvSLODIPHV"))
_MACRO = st.builds(lambda letter, digits, rev, delims: f"%{{{letter}{digits}{rev}{delims}}}",
                   _LETTER, st.sampled_from(["", "1", "2", "12"]), st.sampled_from(["", "r", "R"]),
                   st.text(alphabet=".-+,/_=", max_size=3))


@given(st.lists(st.one_of(_MACRO, st.sampled_from(["%%", "%_", "%-", "abc", "a.b", "x-y"])),
                min_size=1, max_size=5))
def test_macro_strings_from_the_grammar_are_valid(parts: list[str]) -> None:
    text = "".join(parts)
    assert macro_problem(text, explanation=False) is None
    record = parse_spf(f"v=spf1 exists:{text}.x.example -all")
    assert not record.errors, (text, record.problems)


@given(st.text(alphabet="%{}sdz0.?r", min_size=1, max_size=8))
def test_a_macro_string_is_valid_exactly_when_every_percent_starts_a_macro(text: str) -> None:
    """An independent reading of §7.1 by regular expression agrees with the parser."""
    import re

    macro = r"%\{[slodiphcrtvSLODIPHCRTV](?:[1-9][0-9]*|0*[1-9][0-9]*)?[rR]?[.\-+,/_=]*\}"
    expand = rf"(?:{macro}|%%|%_|%-)"
    literal = r"[\x21-\x24\x26-\x7e]"
    valid = re.fullmatch(rf"(?:{expand}|{literal})*", text) is not None
    has_crt = re.search(r"%\{[crtCRT]", text) is not None
    assert (macro_problem(text, explanation=True) is None) == valid, text
    if valid and not has_crt:
        assert macro_problem(text, explanation=False) is None
