"""dmarcbot's SPF findings against checkdmarc's (the reference open-source checker), over real DNS.

Every record is served by knotd on loopback (tests/checkdmarc_oracle.py) and read by both checkers
from there. A case agrees when both say the same about validity (permerror-class or not) and
report the same shared finding codes. Every disagreement must be explained by one of the rules
below, each decided by RFC 7208 (docs/posture.md, "SPF: where dmarcbot and checkdmarc differ");
anything else fails the test.

| rule                | what differs                                                  | decided by |
|---------------------|---------------------------------------------------------------|------------|
| first-error-only    | both see a permerror; checkdmarc names the first error it     | §4.6       |
|                     | meets, dmarcbot every problem (e.g. `v=spf1` with bytes that  |            |
|                     | are not text: "no record" there, non-ASCII permerror here)    |            |
| modifier-after-all  | `-all VERIFY=x` is an unknown modifier, ignored anywhere;     | §6         |
|                     | checkdmarc calls it text after all                            |            |
| version-case        | `V=SPF1`: ABNF strings are case-insensitive; checkdmarc's     | §12,       |
|                     | grammar rejects it                                            | RFC 5234   |
| macro-cidr          | `a:%{i}.x.example/33`: checkdmarc checks prefix lengths only  | §12        |
|                     | without macros                                                |            |
| toplabel            | `a:foo`, `include:x.123`: checkdmarc warns, dmarcbot calls it | §12, §4.6  |
|                     | a syntax error (domain-end must be a toplabel): permerror     |            |
| junk-after-all      | `-all foo`: checkdmarc warns and ignores it; a syntax error   | §4.6, §12  |
|                     | anywhere makes the record a permerror                         |            |
| mx-host-void        | an MX host without addresses: dmarcbot counts a void lookup   | §4.6.4     |
|                     | (as the RFC authors' pyspf does); checkdmarc only warns       |            |
| exists-void         | `exists:` of a fixed name without A: dmarcbot asks and counts | §5.7,      |
|                     | a void lookup; checkdmarc does not ask                        | §4.6.4     |
| ptr-void            | checkdmarc asks A of the ptr domain and counts a void; a      | §5.5       |
|                     | receiver asks PTR of the client, unknown before mail comes    |            |
| family-void         | dmarcbot counts void lookups per address family (A for IPv4,  | §5.3, §5.4,|
|                     | AAAA for IPv6 connections); checkdmarc counts A+AAAA together | §4.6.4     |
| duplicate-term      | dmarcbot flags any repeated mechanism; checkdmarc only a      | §4.6.2,    |
|                     | repeated include                                              | §4.6.4     |
| separator           | tabs between terms: dmarcbot warns (the grammar has spaces);  | §12        |
|                     | checkdmarc accepts silently                                   |            |
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.dnsevidence import DnsEvidence, make_resolver
from analysis.posture import spf_findings
from analysis.spftree import SpfTree
from tests.checkdmarc_oracle import OracleDNS, Verdict, check, txt

#: Codes both checkers can report; dmarcbot-only advice (+all, ~all, limits close) is left out.
SHARED = frozenset({
    "spf.none", "spf.multiple-records", "spf.target-missing", "spf.loop", "spf.lookup-limit",
    "spf.mx-limit", "spf.void-limit", "spf.macro", "spf.duplicate-modifier", "spf.syntax",
    "spf.after-all", "spf.unknown-modifier", "spf.ptr", "spf.redirect-ignored",
    "spf.duplicate-term", "spf.void", "spf.type-spf", "spf.sender-id", "spf.lookalike",
    "spf.undecodable-txt", "spf.size", "spf.exp-missing", "spf.exp-multiple",
    "spf.report-modifier", "spf.non-ascii", "spf.separator", "spf.temporary",
})

#: checkdmarc's texts (6.0.x) -> dmarcbot's codes; the first pattern that matches wins.
_ERRORS = [
    (r"include target .* has no SPF record", "spf.target-missing"),
    (r"(include|redirect) loop", "spf.loop"),
    (r"multiple SPF TXT records", "spf.multiple-records"),
    (r"more than 10 MX records", "spf.mx-limit"),
    (r"maximum DNS lookups", "spf.lookup-limit"),
    (r"void DNS lookups", "spf.void-limit"),
    (r"macro syntax|only allowed in exp", "spf.macro"),
    (r"Multiple (redirect|exp)", "spf.duplicate-modifier"),
    (r"SPF record does not exist|domain does not exist", "spf.none"),
    (r".", "spf.syntax"),
]
_WARNINGS = [
    (r"text after the all mechanism|multiple all mechanisms", "spf.after-all"),
    (r"unknown modifier", "spf.unknown-modifier"),
    (r"ptr mechanism points to", "spf.void"),
    (r"ptr mechanism should not be used", "spf.ptr"),
    (r"redirect modifier was ignored", "spf.redirect-ignored"),
    (r"Duplicate include", "spf.duplicate-term"),
    (r"does not have any (A/AAAA|MX) records", "spf.void"),
    (r"SPF type DNS records", "spf.type-spf"),
    (r"Sender ID", "spf.sender-id"),
    (r"resembles an SPF record", "spf.lookalike"),
    (r"undecodable characters", "spf.undecodable-txt"),
    (r"over 512|under about 450", "spf.size"),
    (r"No TXT records at exp|Failed to get TXT records at exp", "spf.exp-missing"),
    (r"Too many TXT records at exp", "spf.exp-multiple"),
    (r"top-level label", "toplabel-warning"),
    (r"\b(ra|rp|rr) modifier|rp and rr modifiers", "spf.report-modifier"),
    (r"Error when processing .*does not exist", "spf.void"),
    (r"Error when processing", "spf.temporary"),
]


def classify(text: str, table: list[tuple[str, str]]) -> str:
    return next((code for pattern, code in table if re.search(pattern, text, re.I)),
                f"unclassified: {text}")


@dataclasses.dataclass(frozen=True)
class Side:
    valid: bool
    codes: frozenset[str]


def theirs(verdict: Verdict, record: str = "") -> Side:
    codes = {classify(w, _WARNINGS) for w in verdict.warnings}
    redirects = re.findall(r"redirect=(\S+)", record, re.I)
    if any(f"processing {target.lower()}:" in w.lower() for w in verdict.warnings
           for target in redirects):
        codes.add("spf.target-missing")  # checkdmarc words a missing redirect target so
        codes.discard("spf.void")
    if verdict.error is not None:
        code = classify(verdict.error, _ERRORS)
        if code == "spf.none" and verdict.raw.get("record"):
            code = "spf.target-missing"  # a redirect target without a record
        codes.add(code)
    return Side(verdict.valid, frozenset(codes))


def ours(tree: SpfTree) -> Side:
    codes = {f.code for f in spf_findings(tree)} & SHARED
    return Side(tree.record is not None and not tree.errors, frozenset(codes))


@dataclasses.dataclass(frozen=True)
class Context:
    record: str
    tree: SpfTree
    verdict: Verdict
    us: Side
    them: Side


def _texts(ctx: Context, code: str) -> list[str]:
    return [p.text for p in ctx.tree.problems if p.code == code]


def _first_error_only(ctx: Context) -> set[str]:
    """Both see a permerror. checkdmarc reports the first error it meets and stops, dmarcbot
    every problem, so the reasons and warnings each lists depend on the order of reading."""
    if ctx.them.valid or ctx.us.valid:
        return set()
    return ({f"+{c}" for c in ctx.us.codes - ctx.them.codes}
            | {f"-{c}" for c in ctx.them.codes - ctx.us.codes})


def _modifier_after_all(ctx: Context) -> set[str]:
    """`-all VERIFY=x`: a name=value after all is an unknown modifier, ignored wherever it is;
    checkdmarc calls it text after all."""
    if "spf.unknown-modifier" not in ctx.us.codes or "spf.after-all" in ctx.us.codes:
        return set()
    return {"+spf.unknown-modifier", "-spf.after-all"}


def _macro_cidr(ctx: Context) -> set[str]:
    """`a:%{i}.example/33`: checkdmarc checks a/mx prefix lengths only without macros."""
    if not any("%" in t and ("prefix length" in t or "out of range" in t)
               for t in _texts(ctx, "spf.syntax")):
        return set()
    return {"validity", "+spf.syntax"}


def _version_case(ctx: Context) -> set[str]:
    """`V=SPF1`: ABNF strings are case-insensitive; checkdmarc's grammar is not (its record
    selection is)."""
    if ctx.record.startswith("v=spf1") or not ctx.us.valid:
        return set()
    return {"validity", "-spf.syntax"}


def _toplabel(ctx: Context) -> set[str]:
    """checkdmarc warns and then asks DNS about the name (NXDOMAIN: a void lookup, or a missing
    include target); the grammar makes it a syntax error, so a receiver never asks."""
    if not any("top-level label" in t for t in _texts(ctx, "spf.syntax")):
        return set()
    moot = ("void", "void-limit", "target-missing", "redirect-ignored", "duplicate-term",
            "exp-missing", "exp-multiple", "duplicate-modifier")
    return {"validity", "+spf.syntax", "-toplabel-warning", *(f"-spf.{c}" for c in moot)}


def _junk_after_all(ctx: Context) -> set[str]:
    if "spf.syntax" not in ctx.us.codes or "spf.after-all" not in ctx.them.codes:
        return set()
    return {"validity", "+spf.syntax", "-spf.after-all"}


def _mx_host_void(ctx: Context) -> set[str]:
    if not any("MX host" in t for t in _texts(ctx, "spf.void")):
        return set()
    return {"validity", "+spf.void-limit", "+spf.void"}


def _exists_void(ctx: Context) -> set[str]:
    if not any("exists:" in t for t in _texts(ctx, "spf.void")):
        return set()
    return {"validity", "+spf.void-limit", "+spf.void"}


def _ptr_void(ctx: Context) -> set[str]:
    their_void = {"spf.void", "spf.void-limit"} & ctx.them.codes
    if "spf.ptr" not in ctx.us.codes or not (their_void or any(
            "ptr mechanism points to" in w for w in ctx.verdict.warnings)):
        return set()
    stopped = {f"+{c}" for c in ctx.us.codes} if "spf.void-limit" in ctx.them.codes else set()
    return {"validity", "-spf.void", "-spf.void-limit", "+spf.ptr", "+spf.void"} | stopped


def _family_void(ctx: Context) -> set[str]:
    if ctx.tree.void4 == ctx.tree.void6:
        return set()
    return {"+spf.void-limit"} | ({"validity"} if ctx.tree.void4 > 2 else set())


def _duplicate_term(ctx: Context) -> set[str]:
    repeated = [t for t in _texts(ctx, "spf.duplicate-term") if "'include:" not in t]
    return {"+spf.duplicate-term"} if repeated else set()


def _separator(ctx: Context) -> set[str]:
    return {"+spf.separator"} if "spf.separator" in ctx.us.codes else set()


RULES: dict[str, tuple[str, Callable[[Context], set[str]]]] = {
    "first-error-only": ("RFC 7208 §4.6", _first_error_only),
    "modifier-after-all": ("RFC 7208 §6", _modifier_after_all),
    "version-case": ("RFC 7208 §12, RFC 5234 §2.3", _version_case),
    "macro-cidr": ("RFC 7208 §12", _macro_cidr),
    "toplabel": ("RFC 7208 §12, §4.6", _toplabel),
    "junk-after-all": ("RFC 7208 §4.6, §12", _junk_after_all),
    "mx-host-void": ("RFC 7208 §4.6.4", _mx_host_void),
    "exists-void": ("RFC 7208 §5.7, §4.6.4", _exists_void),
    "ptr-void": ("RFC 7208 §5.5", _ptr_void),
    "family-void": ("RFC 7208 §5.3, §5.4, §4.6.4", _family_void),
    "duplicate-term": ("RFC 7208 §4.6.2, §4.6.4", _duplicate_term),
    "separator": ("RFC 7208 §12", _separator),
}


def differences(us: Side, them: Side) -> set[str]:
    out = {f"+{c}" for c in us.codes - them.codes} | {f"-{c}" for c in them.codes - us.codes}
    return out | ({"validity"} if us.valid != them.valid else set())


def compare(record: str, tree: SpfTree, verdict: Verdict) -> tuple[set[str], list[str]]:
    """(unexplained differences, names of the rules that explained the others)."""
    ctx = Context(record, tree, verdict, ours(tree), theirs(verdict, record))
    left = differences(ctx.us, ctx.them)
    used = []
    for name, (_, rule) in RULES.items():
        explained = rule(ctx) & left
        if explained:
            used.append(name)
            left -= explained
    return left, used


def our_tree(server: OracleDNS, domain: str) -> SpfTree:
    async def go() -> SpfTree:
        evidence = DnsEvidence(make_resolver([f"{server.host}:{server.port}"]))
        try:
            return await evidence.spf_tree(domain, full=True)
        finally:
            evidence.close()

    return asyncio.run(go())


# -- the cases ------------------------------------------------------------------------------

ZONE_SUFFIX = "spf.oracle.test"
#: Names the records below point at (addresses from the documentation ranges).
BASE: dict[str, list[str]] = {
    f"host.{ZONE_SUFFIX}": ["A 192.0.2.10", "AAAA 2001:db8::10"],
    f"host2.{ZONE_SUFFIX}": ["A 192.0.2.11", "AAAA 2001:db8::11"],
    f"v4only.{ZONE_SUFFIX}": ["A 192.0.2.12"],
    f"v4only2.{ZONE_SUFFIX}": ["A 192.0.2.13"],
    f"v4only3.{ZONE_SUFFIX}": ["A 192.0.2.14"],
    f"deadmx3.{ZONE_SUFFIX}": ["MX 10 nx1.spf.oracle.test.", "MX 20 nx2.spf.oracle.test.",
                               "MX 30 nx3.spf.oracle.test.", "MX 40 host.spf.oracle.test."],
    f"noaddr.{ZONE_SUFFIX}": [txt("a name with no address records")],
    f"mail.{ZONE_SUFFIX}": ["MX 10 host.spf.oracle.test.", "MX 20 host2.spf.oracle.test."],
    f"deadmx.{ZONE_SUFFIX}": ["MX 10 noaddr.spf.oracle.test.", "MX 20 host.spf.oracle.test."],
    f"manymx.{ZONE_SUFFIX}": [f"MX {i} host.spf.oracle.test." if i % 2 else
                              f"MX {i} host2.spf.oracle.test." for i in range(1, 3)]
    + [f"MX {i} mx{i}.spf.oracle.test." for i in range(3, 14)],
    f"inc.{ZONE_SUFFIX}": [txt("v=spf1 ip4:198.51.100.0/24 -all")],
    f"inc2.{ZONE_SUFFIX}": [txt("v=spf1 ip4:203.0.113.0/25 ip6:2001:db8:2::/48 ~all")],
    f"deep.{ZONE_SUFFIX}": [txt("v=spf1 include:inc.spf.oracle.test a:host.spf.oracle.test "
                                "mx:mail.spf.oracle.test -all")],
    f"loop1.{ZONE_SUFFIX}": [txt("v=spf1 include:loop2.spf.oracle.test -all")],
    f"loop2.{ZONE_SUFFIX}": [txt("v=spf1 include:loop1.spf.oracle.test -all")],
    f"notspf.{ZONE_SUFFIX}": [txt("site-verification=0123456789")],
    f"explain.{ZONE_SUFFIX}": [txt("You are not allowed to send as %{d}")],
    f"twoexp.{ZONE_SUFFIX}": [txt("first explanation"), txt("second explanation")],
    f"cost3.{ZONE_SUFFIX}": [txt("v=spf1 a:host.spf.oracle.test a:host2.spf.oracle.test "
                                 "a:v4only.spf.oracle.test -all")],
}
for _i in range(3, 14):
    BASE[f"mx{_i}.{ZONE_SUFFIX}"] = [f"A 192.0.2.{100 + _i}", f"AAAA 2001:db8::{100 + _i:x}"]


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    rdatas: tuple[str, ...]  # the rdata lines at the case's own name
    extra: tuple[tuple[str, str], ...] = ()  # (name relative to the case, rdata) beside it

    @property
    def domain(self) -> str:
        return f"{self.id}.{ZONE_SUFFIX}"


def spf(*texts: str | bytes) -> tuple[str, ...]:
    return tuple(txt(t) for t in texts)


#: (a) The SPF cases of checkdmarc's own test suite, rewritten with our own names and addresses.
PEER_CASES = [
    Case("upper", spf("v=spf1 IP4:192.0.2.20 -ALL")),
    Case("split", (txt("v=spf1 ip4:192.0.2.21 ", "include:inc.spf.oracle.test -all"),)),
    Case("junk-token", spf("v=spf1 ip4:192.0.2.22 -all VERIFY=4F1C7A03D2")),
    Case("include-missing", spf("v=spf1 include:gone.spf.oracle.test ~all")),
    Case("include-no-spf", spf("v=spf1 include:notspf.spf.oracle.test ~all")),
    Case("too-many", spf("v=spf1 a:host.spf.oracle.test " + " ".join(
        ["include:cost3.spf.oracle.test"] * 2) + " include:deep.spf.oracle.test ~all")),
    Case("too-many-void", spf("v=spf1 a:nx1.spf.oracle.test mx:nx2.spf.oracle.test "
                              "a:nx3.spf.oracle.test ~all")),
    Case("space-after-colon", spf("v=spf1 mx:mail.spf.oracle.test include: "
                                  "inc.spf.oracle.test ~all")),
    Case("ip4-hostname", spf("v=spf1 ip4:192.0.2.23 +a:host.spf.oracle.test "
                             "+ip4:relay.spf.oracle.test ~all")),
    Case("ip4-holds-ip6", spf("v=spf1 ip4:2001:db8:0:1::1 ~all")),
    Case("ip4-bad-prefix", spf("v=spf1 ip4:192.0.2.24/99 ~all")),
    Case("ip6-letter-o", spf("v=spf1 ip6:2001:db8:O::1 ~all")),
    Case("ip6-holds-ip4", spf("v=spf1 ip6:192.0.2.25 ~all")),
    Case("ip6-bad-prefix", spf("v=spf1 ip6:2001:db8::/130 ~all")),
    Case("glued-all", spf("v=spf1 ip4:192.0.2.26~all")),
    Case("self-include", spf("v=spf1 include:self-include.spf.oracle.test")),
    Case("mx-without-mx", spf("v=spf1 mx ~all")),
    Case("a-without-a", spf("v=spf1 a ~all")),
    Case("mx-elsewhere", spf("v=spf1 mx:mail.spf.oracle.test ~all")),
    Case("exists-macro", spf("v=spf1 exists:%{i}.lookup.spf.oracle.test ~all")),
    Case("include-macros", spf("v=spf1 include:%{ir}.%{v}.%{d}.spf.oracle.test ~all")),
    Case("a-macro", spf("v=spf1 a:%{l}.spf.oracle.test -all")),
    *(Case(f"bad-macro-{kind}", spf(record)) for kind, record in (
        ("a", "v=spf1 a:%{?} -all"), ("mx", "v=spf1 mx:%{?} -all"),
        ("ptr", "v=spf1 ptr:%{?} -all"), ("include", "v=spf1 include:%{?}.x.spf.oracle.test -all"),
        ("exists", "v=spf1 exists:%{?}.x.spf.oracle.test -all"),
        ("redirect", "v=spf1 redirect=%{?}.x.spf.oracle.test"),
        ("exp", "v=spf1 -all exp=%{?}"), ("letter", "v=spf1 -all exp=%{z}"),
        ("c-outside-exp", "v=spf1 exists:%{c}.x.spf.oracle.test -all"),
        ("r-outside-exp", "v=spf1 a:%{r}.x.spf.oracle.test -all"),
        ("t-outside-exp", "v=spf1 include:%{t}.x.spf.oracle.test -all"),
        ("zero-digits", "v=spf1 exists:%{d0}.x.spf.oracle.test -all"),
        ("lone-percent", "v=spf1 exists:50%.x.spf.oracle.test -all"))),
    Case("mx-macro", spf("v=spf1 mx:%{d} -all")),
    Case("ptr-macro", spf("v=spf1 ptr:%{d} -all")),
    Case("include-macro", spf("v=spf1 include:%{d}.inc.spf.oracle.test -all")),
    Case("redirect-macro", spf("v=spf1 redirect=%{d}.inc.spf.oracle.test")),
    Case("exp-macro", spf("v=spf1 -all exp=%{d}")),
    Case("exp-upper-macro", spf("v=spf1 -all exp=%{S}.explain.spf.oracle.test")),
    Case("exp-crt", spf("v=spf1 -all exp=%{c}.%{iR}.explain.spf.oracle.test")),
    Case("undecodable-other", (txt(b"\xff\xfe not text"), txt("v=spf1 -all"))),
    Case("two-records", spf("v=spf1 -all", "v=spf1 ip4:192.0.2.27 ~all")),
    Case("sender-id", spf("v=spf1 -all", "v=spf2.0/pra ip4:192.0.2.0/24 ~all")),
    Case("sender-id-mfrom", spf("v=spf1 -all", "v=spf2.0/mfrom,pra ip4:192.0.2.0/24 ~all")),
    Case("version-10", spf("v=spf10 -all")),
    Case("version-glued", spf("v=spf1foo -all")),
    Case("version-upper", spf("V=SPF1 -all")),
    Case("leading-space", spf(" v=spf1 -all")),
    Case("trailing-space", spf("v=spf1 -all  ")),
    Case("lookalike-beside", spf("v=spf10 -all", "v=spf1 -all")),
    Case("type-spf", (txt("v=spf1 -all"), 'SPF "v=spf1 -all"')),
    Case("over-512", spf("v=spf1 " + " ".join(f"ip4:192.0.2.{i}" for i in range(40)) + " -all")),
    Case("over-450", spf("v=spf1 " + " ".join(f"ip4:192.0.2.{i}" for i in range(30)) + " -all")),
    Case("redirect", spf("v=spf1 redirect=inc.spf.oracle.test")),
    Case("redirect-gone", spf("v=spf1 ip4:192.0.2.28 redirect=gone.spf.oracle.test")),
    Case("redirect-void-limit", spf("v=spf1 a:nx1.spf.oracle.test a:nx2.spf.oracle.test "
                                    "redirect=gone.spf.oracle.test")),
    Case("redirect-with-all", spf("v=spf1 ip4:192.0.2.29 redirect=inc.spf.oracle.test -all")),
    Case("all-kinds", spf("v=spf1 ~all")),
    Case("neutral", spf("v=spf1 ?all")),
    Case("ip6", spf("v=spf1 ip6:2001:db8::1 -all")),
    Case("exp-after-all", spf("v=spf1 -all exp=explain.spf.oracle.test")),
    Case("exp-upper-name", spf("v=spf1 -all EXP=explain.spf.oracle.test")),
    Case("exp-missing", spf("v=spf1 -all exp=noexp.spf.oracle.test")),
    Case("exp-two", spf("v=spf1 -all exp=twoexp.spf.oracle.test")),
    Case("exp-then-junk", spf("v=spf1 -all exp=explain.spf.oracle.test extra")),
    Case("exp-twice", spf("v=spf1 -all exp=explain.spf.oracle.test exp=twoexp.spf.oracle.test")),
    Case("exp-before-all", spf("v=spf1 exp=explain.spf.oracle.test -all")),
    Case("exp-both-sides", spf("v=spf1 exp=explain.spf.oracle.test -all "
                               "exp=twoexp.spf.oracle.test")),
    Case("exp-empty", spf("v=spf1 -all exp=")),
    Case("ip4-macro", spf("v=spf1 ip4:%{i} -all")),
    Case("ip6-macro", spf("v=spf1 ip6:%{i} -all")),
    Case("mx-too-many", spf("v=spf1 mx:manymx.spf.oracle.test -all")),
    Case("mx-host-no-address", spf("v=spf1 mx:deadmx.spf.oracle.test -all")),
    Case("a-cidr", spf("v=spf1 a/24 -all"), (("", "A 192.0.2.30"), ("", "AAAA 2001:db8::30"))),
    Case("unknown-modifier", spf("v=spf1 tracking=xyz ip4:192.0.2.31 -all")),
    Case("report-modifiers", spf("v=spf1 ip4:192.0.2.32 -all ra=postmaster rp=10 rr=e")),
    Case("report-before-all", spf("v=spf1 ra=postmaster -all")),
    Case("ra-address", spf("v=spf1 ra=postmaster@example.com -all")),
    Case("rp-range", spf("v=spf1 ra=postmaster rp=101 -all")),
    Case("rr-token", spf("v=spf1 ra=postmaster rr=e:x -all")),
    Case("rp-without-ra", spf("v=spf1 rp=10 rr=e ip4:192.0.2.33 -all")),
    Case("qualified-modifier", spf("v=spf1 +redirect=inc.spf.oracle.test")),
    Case("qualified-exp", spf("v=spf1 ~exp=explain.spf.oracle.test")),
    Case("multiple-all", spf("v=spf1 ~all -all")),
    Case("macro-charset", spf("v=spf1 exists:%{ir=}.x.spf.oracle.test -all")),
    Case("bang-literal", spf("v=spf1 exists:foo!bar.x.spf.oracle.test -all")),
    Case("empty-after-colon-a", spf("v=spf1 a: -all")),
    Case("empty-after-colon-mx", spf("v=spf1 mx: -all")),
    Case("empty-after-colon-ptr", spf("v=spf1 ptr: -all")),
    Case("empty-after-colon-cidr", spf("v=spf1 a:/24 -all")),
    *(Case(f"dual-cidr-{i}", spf(record)) for i, record in enumerate((
        "v=spf1 a:host.spf.oracle.test/33 -all", "v=spf1 mx/129 -all",
        "v=spf1 a:host.spf.oracle.test//129 -all", "v=spf1 a:host.spf.oracle.test/016 -all",
        "v=spf1 a:host.spf.oracle.test/24/64 -all"))),
    Case("dual-cidr-ok", spf("v=spf1 a:host.spf.oracle.test/24//64 -all")),
    Case("macro-cidr", spf("v=spf1 a:%{i}.x.spf.oracle.test/33 -all")),
    Case("mx-cidr", spf("v=spf1 mx:mail.spf.oracle.test/24 -all")),
    Case("ip-leading-zero", spf("v=spf1 ip4:192.0.2.0/016 -all")),
    Case("ip6-leading-zero", spf("v=spf1 ip6:2001:db8::/064 -all")),
    Case("one-label", spf("v=spf1 a:localhost -all")),
    Case("numeric-tld", spf("v=spf1 a:host.123 -all")),
    Case("duplicate-include", spf("v=spf1 include:cost3.spf.oracle.test "
                                  "include:cost3.spf.oracle.test -all")),
    Case("duplicate-over-limit", spf("v=spf1 " + "include:cost3.spf.oracle.test " * 4 + "-all")),
    Case("eleven-a", spf("v=spf1 " + " ".join(["a:host.spf.oracle.test",
                                               "a:host2.spf.oracle.test"] * 5)
                         + " a:mx3.spf.oracle.test -all")),
    Case("eleven-macro-includes", spf("v=spf1 " + " ".join(
        f"include:%{{i}}.x{i}.spf.oracle.test" for i in range(11)) + " -all")),
    Case("garbage-term", spf("v=spf1 a+mx -all")),
    Case("redirect-empty", spf("v=spf1 redirect=")),
    Case("unknown-mechanism", spf("v=spf1 foo:bar -all")),
    Case("all-with-value", spf("v=spf1 all:x")),
    Case("bare-ip4", spf("v=spf1 ip4 -all")),
    Case("ptr-cidr", spf("v=spf1 ptr/24 -all")),
    Case("ptr", spf("v=spf1 ptr -all"), (("", "A 192.0.2.34"),)),
    Case("ptr-elsewhere", spf("v=spf1 ptr:host.spf.oracle.test -all")),
    Case("ptr-no-address", spf("v=spf1 ptr:noaddr.spf.oracle.test -all")),
    Case("after-all-include", spf("v=spf1 -all include:inc.spf.oracle.test")),
    Case("include-loop", spf("v=spf1 include:loop1.spf.oracle.test -all")),
    Case("none", ()),
]

#: (c) Records shaped like real ones: common services, the mistakes admins make with them.
REAL_CASES = [
    Case("m365", spf("v=spf1 include:spf.protection.outlook.com -all")),
    Case("m365-sendgrid-mailchimp", spf("v=spf1 include:spf.protection.outlook.com "
                                        "include:sendgrid.net include:servers.mcsv.net ~all")),
    Case("google-m365", spf("v=spf1 include:_spf.google.com include:spf.protection.outlook.com "
                            "ip4:192.0.2.40 -all")),
    Case("everything", spf("v=spf1 mx a include:spf.protection.outlook.com include:_spf.google."
                           "com include:sendgrid.net include:servers.mcsv.net include:amazonses."
                           "com include:mailgun.org ~all"),
         (("", "MX 10 host.spf.oracle.test."), ("", "A 192.0.2.41"))),
    Case("salesforce-zendesk", spf("v=spf1 include:_spf.salesforce.com include:mail.zendesk.com "
                                   "include:spf.protection.outlook.com -all")),
    Case("two-vendors-two-records", spf("v=spf1 include:spf.protection.outlook.com -all",
                                        "v=spf1 include:sendgrid.net ~all")),
    Case("typo-include", spf("v=spf1 include:spf.protection.outlok.com -all")),
    Case("plus-all", spf("v=spf1 include:sendgrid.net +all")),
    Case("mailchimp-glued", spf("v=spf1 include:servers.mcsv.net~all")),
    Case("brevo-constant", spf("v=spf1 include:spf.brevo.com include:spf.constantcontact.com "
                               "include:spf.mtasv.net include:mktomail.com -all")),
    Case("mx-and-m365", spf("v=spf1 mx include:spf.protection.outlook.com -all"),
         (("", "MX 0 host.spf.oracle.test."),)),
    Case("tab-separated", spf("v=spf1 ip4:192.0.2.42\t-all")),
    Case("non-ascii-spf", spf(b"v=spf1 ip4:192.0.2.43 \xe2\x80\x93all")),
    Case("undecodable-spf", spf(b"v=spf1 ip4:192.0.2.44 \xff-all")),
    Case("repeated-ip4", spf("v=spf1 ip4:192.0.2.45 a:host.spf.oracle.test ip4:192.0.2.45 -all")),
    Case("mx-hosts-void", spf("v=spf1 mx:deadmx3.spf.oracle.test -all")),
    Case("verification-beside", spf("v=spf1 include:sendgrid.net -all",
                                    "google-site-verification=abcdef")),
    Case("ipv4-only-hosts", spf("v=spf1 a:v4only.spf.oracle.test mx:mail.spf.oracle.test "
                                "a:v4only2.spf.oracle.test a:v4only3.spf.oracle.test "
                                "include:inc.spf.oracle.test -all")),
]

ALL_CASES = PEER_CASES + REAL_CASES


def _zone(cases: list[Case]) -> dict[str, list[str]]:
    zone = {name: list(rdatas) for name, rdatas in BASE.items()}
    for case in cases:
        if case.rdatas:
            zone.setdefault(case.domain, []).extend(case.rdatas)
        for name, rdata in case.extra:
            zone.setdefault(f"{name}.{case.domain}" if name else case.domain, []).append(rdata)
        if not case.rdatas and not case.extra:
            zone.setdefault(f"exists.{case.domain}", []).append("A 192.0.2.99")
    return zone


@pytest.fixture(scope="module")
def oracle() -> Iterator[OracleDNS]:
    with OracleDNS(_zone(ALL_CASES), include_lab_zones=True) as server:
        yield server


def _record(case: Case) -> str:
    return next((r for r in case.rdatas if r.startswith("TXT")), "")


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_dmarcbot_and_checkdmarc_agree_or_the_difference_is_documented(
        oracle: OracleDNS, case: Case) -> None:
    tree = our_tree(oracle, case.domain)
    verdict = check("spf", case.domain, oracle)
    unexplained, _ = compare(tree.record or "", tree, verdict)
    assert not unexplained, (case.id, unexplained, ours(tree), theirs(verdict), tree.problems,
                             verdict.error, verdict.warnings)


def test_the_comparison_is_not_vacuous(oracle: OracleDNS) -> None:
    """Most cases agree outright, each rule is needed by some case, and a planted difference
    (a code checkdmarc reports that dmarcbot drops) is caught."""
    agree = 0
    used: set[str] = set()
    for case in ALL_CASES:
        tree = our_tree(oracle, case.domain)
        verdict = check("spf", case.domain, oracle)
        left, rules = compare(tree.record or "", tree, verdict)
        assert not left
        used.update(rules)
        agree += not rules
    assert agree >= len(ALL_CASES) * 2 // 3, agree
    assert used == set(RULES), set(RULES) - used
    case = next(c for c in ALL_CASES if c.id == "ptr")
    tree = our_tree(oracle, case.domain)
    dropped = dataclasses.replace(tree, problems=tuple(p for p in tree.problems
                                                       if p.code != "spf.ptr"))
    left, _ = compare(tree.record or "", dropped, check("spf", case.domain, oracle))
    assert left == {"-spf.ptr"}


# -- (b) records generated from the RFC 7208 grammar ------------------------------------------

_NAMES = ["host.spf.oracle.test", "host2.spf.oracle.test", "v4only.spf.oracle.test",
          "noaddr.spf.oracle.test", "mail.spf.oracle.test", "deadmx.spf.oracle.test",
          "gone.spf.oracle.test", "inc.spf.oracle.test", "inc2.spf.oracle.test",
          "notspf.spf.oracle.test", "deep.spf.oracle.test"]
_MACROS = ["%{i}", "%{ir}", "%{d}", "%{l}", "%{o}", "%{s}", "%{h}", "%{v}", "%{p}", "%{d2}",
           "%{ir.}", "%{l-}", "%{S}", "%%", "%_", "%-"]
_BAD_MACROS = ["%{z}", "%{?}", "%{d0}", "%{c}", "%x", "%{", "%{i!}"]
_qualifier = st.sampled_from(["", "+", "-", "~", "?"])
_cidr4 = st.sampled_from(["", "/24", "/32", "/0", "/33", "/016"])
_cidr6 = st.sampled_from(["", "//64", "//128", "//129"])


@st.composite
def _domain_spec(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["name", "name", "macro", "bad-macro", "one-label"]))
    if kind == "name":
        return draw(st.sampled_from(_NAMES))
    if kind == "macro":
        return draw(st.sampled_from(_MACROS)) + ".x.spf.oracle.test"
    if kind == "bad-macro":
        return draw(st.sampled_from(_BAD_MACROS)) + ".x.spf.oracle.test"
    return "localhost"


@st.composite
def _term(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["ip4", "ip4", "ip6", "a", "mx", "include", "include",
                                 "exists", "ptr", "modifier", "junk"]))
    q = draw(_qualifier)
    if kind == "ip4":
        octets = draw(st.lists(st.integers(0, 255), min_size=4, max_size=4))
        return f"{q}ip4:{'.'.join(map(str, octets))}{draw(_cidr4)}"
    if kind == "ip6":
        return f"{q}ip6:2001:db8:{draw(st.integers(0, 0xffff)):x}::" + draw(
            st.sampled_from(["", "/48", "/128", "/129"]))
    if kind in ("a", "mx"):
        spec = draw(st.one_of(st.just(""), _domain_spec().map(lambda s: ":" + s)))
        return f"{q}{kind}{spec}{draw(_cidr4)}{draw(_cidr6)}"
    if kind in ("include", "exists"):
        return f"{q}{kind}:{draw(_domain_spec())}"
    if kind == "ptr":
        return f"{q}ptr"
    if kind == "modifier":
        name = draw(st.sampled_from(["redirect", "exp", "tracking", "ra", "x-id"]))
        value = draw(_domain_spec()) if name in ("redirect", "exp") else draw(
            st.sampled_from(["abc", "postmaster", "50%", "%{d}"]))
        return f"{name}={value}"
    return draw(st.sampled_from(["foo", "a+mx", "all:x", "ip4", "=x", "include:"]))


_record_strategy = st.builds(
    lambda terms, end, tail: " ".join(["v=spf1", *terms, *end, *tail]),
    st.lists(_term(), max_size=6),
    st.sampled_from([[], ["-all"], ["~all"], ["?all"], ["+all"]]),
    st.lists(st.sampled_from(["exp=explain.spf.oracle.test", "include:inc.spf.oracle.test",
                              "junk!", "ra=postmaster"]), max_size=1),
)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(record=_record_strategy)
def test_records_from_the_grammar(record: str) -> None:
    domain = f"gen.{ZONE_SUFFIX}"
    with OracleDNS({**BASE, domain: [txt(record)]}) as server:
        tree = our_tree(server, domain)
        verdict = check("spf", domain, server)
    unexplained, _ = compare(record, tree, verdict)
    assert not unexplained, (record, unexplained, ours(tree), theirs(verdict),
                             [p.text for p in tree.problems], verdict.error, verdict.warnings)
