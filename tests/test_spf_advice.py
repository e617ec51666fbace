"""SPF trees counted as a receiver counts (RFC 7208 §4.6.4) and advice that only moves forward.

Against the real DNS server (knot on loopback): tests/dnslab/zones/spf-rfc.zone and spf-cases.zone.
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.dnsevidence import DnsEvidence, make_resolver
from analysis.posture import spf_changes, spf_findings
from analysis.records.findings import Finding
from analysis.spf import parse_spf
from analysis.spfadvice import STRICTNESS
from analysis.spftree import Network, SpfTree
from tests.checkdmarc_oracle import OracleDNS, txt
from tests.dnslab.server import KnotServer
from tests.test_checkdmarc_spf import BASE, ZONE_SUFFIX


def tree_of(server: KnotServer | OracleDNS, domain: str) -> SpfTree:
    async def go() -> SpfTree:
        evidence = DnsEvidence(make_resolver([f"{server.host}:{server.port}"]))
        try:
            return await evidence.spf_tree(domain, full=True)
        finally:
            evidence.close()

    return asyncio.run(go())


def finding(tree: SpfTree, code: str) -> Finding:
    found = [f for f in spf_findings(tree) if f.code == code]
    assert found, (code, spf_findings(tree))
    return found[0]


@pytest.mark.parametrize(("domain", "code", "level", "fix"), [
    ("mx11.rfc.spf.test", "spf.mx-limit", "error", None),
    ("mxvoid.rfc.spf.test", "spf.void-limit", "error", None),
    ("mxvoid.rfc.spf.test", "spf.void", "warning", None),
    ("v6void.rfc.spf.test", "spf.void-limit", "warning", None),
    ("expnone.rfc.spf.test", "spf.exp-missing", "warning", None),
    ("exptwo.rfc.spf.test", "spf.exp-multiple", "warning", None),
    ("senderid.rfc.spf.test", "spf.sender-id", "warning", ""),
    ("type99.rfc.spf.test", "spf.type-spf", "warning", ""),
    ("binary.rfc.spf.test", "spf.undecodable-txt", "warning", None),
    ("lookalike.rfc.spf.test", "spf.lookalike", "warning", None),
    ("lookalike.rfc.spf.test", "spf.none", "error", None),
    ("big.rfc.spf.test", "spf.size", "warning", None),
    ("afterall.rfc.spf.test", "spf.after-all", "warning", "v=spf1 ip4:198.51.100.7 -all"),
    ("glued.rfc.spf.test", "spf.syntax", "error", "v=spf1 ip4:198.51.100.6 ~all"),
    ("dupover.rfc.spf.test", "spf.lookup-limit", "error",
     "v=spf1 include:cost3.rfc.spf.test -all"),
    ("deadinc.rfc.spf.test", "spf.target-missing", "error", "v=spf1 ip4:198.51.100.8 ~all"),
    ("mxcover.rfc.spf.test", "spf.lookup-limit", "error",
     "v=spf1 include:range.rfc.spf.test include:cost3.rfc.spf.test "
     "include:cost3b.rfc.spf.test include:cost3c.rfc.spf.test -all"),
    ("plusall.rfc.spf.test", "spf.plus-all", "error", "v=spf1 include:range.rfc.spf.test ~all"),
    ("toomany.spf.test", "spf.lookup-limit", "error",
     "v=spf1 a include:_i1.toomany.spf.test include:_i2.toomany.spf.test -all"),
    ("void.spf.test", "spf.void-limit", "error", "v=spf1 ip4:203.0.113.0/24 -all"),
    ("bloated.example", "spf.lookup-limit", "error", None),
    ("exists-static.spf.test", "spf.exists-matches-all", "error", None),
    ("redirect-with-all.spf.test", "spf.redirect-ignored", "warning", "v=spf1 -all"),
])
def test_findings_against_real_dns(dns_server: KnotServer, domain: str, code: str, level: str,
                                   fix: str | None) -> None:
    tree = tree_of(dns_server, domain)
    found = finding(tree, code)
    assert found.level == level and found.rfc and found.rfc.startswith("RFC")
    assert (found.fix.value if found.fix else None) == fix, found
    if found.fix is not None and found.fix.value:
        assert found.fix.replaces == (tree.record,) and found.fix.name == domain


def test_counts_follow_the_rfc(dns_server: KnotServer) -> None:
    mx11 = tree_of(dns_server, "mx11.rfc.spf.test")
    assert mx11.lookups == 1 and mx11.errors  # the 11 hosts are not resolved
    mxvoid = tree_of(dns_server, "mxvoid.rfc.spf.test")
    assert (mxvoid.void4, mxvoid.void6) == (3, 3) and mxvoid.lookups == 1
    v6 = tree_of(dns_server, "v6void.rfc.spf.test")
    assert (v6.void4, v6.void6) == (0, 3) and not v6.errors  # IPv4 mail is fine
    dup = tree_of(dns_server, "dupover.rfc.spf.test")
    assert dup.lookups == 12  # a repeated include is evaluated (and counted) again
    after = tree_of(dns_server, "afterall.rfc.spf.test")
    assert after.lookups == 0 and after.includes == ()  # never tested after -all
    contoso = tree_of(dns_server, "contoso.com")
    assert contoso.lookups == 7 and not contoso.problems
    assert [c.lookups for c in contoso.terms] == [0, 2, 4, 1, 0]


def test_two_records_are_merged_into_one(dns_server: KnotServer) -> None:
    tree = tree_of(dns_server, "tworec.rfc.spf.test")
    fix = finding(tree, "spf.multiple-records").fix
    assert fix is not None and len(fix.replaces) == 2
    merged = parse_spf(fix.value)
    assert merged.all_qualifier == "-"  # the stricter of ~all and -all
    assert sorted(str(t) for t in merged.mechanisms) == [
        "-all", "include:range.rfc.spf.test", "ip4:198.51.100.9"]


def test_include_proposals_build_on_the_repair_and_stay_within_ten(dns_server: KnotServer
                                                                   ) -> None:
    from analysis.catalog import load_catalog
    from analysis.verdicts import ServiceVerdict

    catalog = load_catalog()
    key = next(s.key for s in catalog.services if any(p.kind == "spf_include" and
                                                      p.value == "sendgrid.net"
                                                      for p in s.publish))
    service = ServiceVerdict("x.example", key, key, "esp", None, 10, 0, 0, 0, "needs-spf", None,
                             "", 0.9, (), (), (), "2026-11-20", "2026-11-27")
    tree = tree_of(dns_server, "dupover.rfc.spf.test")
    _, (change,) = spf_changes(tree.domain, tree, [service], {}, catalog, {"sendgrid.net": 2})
    assert change.value == ("v=spf1 include:cost3.rfc.spf.test include:sendgrid.net -all")
    assert change.replaces == (tree.record,)
    notes, changes = spf_changes(tree.domain, tree, [service], {}, catalog, {"sendgrid.net": 7})
    assert changes == [] and "11 lookups" in notes[0].text
    broken = tree_of(dns_server, "mx11.rfc.spf.test")
    notes, changes = spf_changes(broken.domain, broken, [service], {}, catalog,
                                 {"sendgrid.net": 2})
    assert changes == [] and notes[0].code == "spf.include-blocked"


# -- advice only moves forward: a property over generated records -----------------------------

_POOL = ["ip4:192.0.2.50", "ip4:198.51.100.0/24", "a:host.spf.oracle.test",
         "a:v4only.spf.oracle.test", "a:nx1.spf.oracle.test", "mx:mail.spf.oracle.test",
         "mx:deadmx.spf.oracle.test", "include:inc.spf.oracle.test",
         "include:inc2.spf.oracle.test", "include:deep.spf.oracle.test",
         "include:cost3.spf.oracle.test", "include:gone.spf.oracle.test",
         "exists:%{i}.x.spf.oracle.test", "-ip4:192.0.2.60", "~a:host2.spf.oracle.test"]
_fixable = st.builds(
    lambda terms, end, after: " ".join(["v=spf1", *terms, *end, *after]),
    st.lists(st.sampled_from(_POOL), max_size=7),
    st.sampled_from([[], ["-all"], ["~all"], ["?all"], ["+all"], ["redirect=inc.spf.oracle.test"]]),
    st.lists(st.sampled_from(["a:host.spf.oracle.test", "include:inc.spf.oracle.test",
                              "redirect=inc2.spf.oracle.test", "exp=explain.spf.oracle.test"]),
             max_size=2),
)


def _authorised(tree: SpfTree) -> list[Network]:
    """Networks the domain's own record passes for sure: '+' terms whose matches are known."""
    return [n for c in tree.terms if c.term.qualifier == "+" and c.networks and not c.dead
            for n in c.networks]


def _covered(net: Network, nets: list[Network]) -> bool:
    return any(net.version == o.version and net.subnet_of(o)  # type: ignore[arg-type]
               for o in nets)


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(record=_fixable)
def test_a_fix_never_weakens_never_drops_a_sender_and_stays_within_the_limits(
        record: str) -> None:
    domain = f"prop.{ZONE_SUFFIX}"
    with OracleDNS({**BASE, domain: [txt(record)]}) as server:
        tree = tree_of(server, domain)
    fixes = {f.fix.value for f in spf_findings(tree)
             if f.fix is not None and f.fix.type == "TXT" and f.fix.value}
    before = parse_spf(record).all_qualifier
    for fixed in fixes:
        with OracleDNS({**BASE, domain: [txt(fixed)]}) as server:
            after = tree_of(server, domain)
        assert not after.errors, (record, fixed, after.errors)
        assert after.lookups <= 10 and after.void4 <= 2
        qualifier = parse_spf(fixed).all_qualifier
        if before is not None:
            assert qualifier is not None and STRICTNESS[qualifier] >= STRICTNESS[before]
        assert qualifier not in ("+", "?")
        kept = _authorised(after)
        assert all(_covered(n, kept) for n in _authorised(tree)), (record, fixed)


@given(st.sampled_from(["v=spf1 ip4:192.0.2.1 a:x.example/24 -all include:y.example",
                        "v=spf1 include:%{z}.x.example ptr ~all",
                        "v=spf1 mx ra=postmaster rp=10 redirect=x.example ?all foo",
                        "v=spf1 exists:%{ir}.%{v}._spf.%{d} ip6:2001:db8::/32 -all exp="]),
       st.lists(st.booleans(), min_size=12, max_size=12), st.integers(1, 3))
def test_equivalent_spellings_give_the_same_findings(record: str, upper: list[bool],
                                                     spaces: int) -> None:
    """Mechanism and modifier names are case-insensitive and terms take any number of spaces."""
    tokens = record.split()
    variant = (" " * spaces).join(
        [tokens[0].upper() if upper[0] else tokens[0]]
        + [_upper_name(t) if flag else t for t, flag in zip(tokens[1:], upper[1:], strict=False)])
    assert [(p.code, p.level) for p in parse_spf(variant).problems] == [
        (p.code, p.level) for p in parse_spf(record).problems]


def _upper_name(token: str) -> str:
    for separator in (":", "=", "/"):
        name, found, rest = token.partition(separator)
        if found:
            return name.upper() + found + rest
    return token.upper()


def test_networks_of_a_known_include_are_its_pass_set(dns_server: KnotServer) -> None:
    """An include matches only where its record passes: '-' terms inside it authorise nothing."""
    tree = tree_of(dns_server, "mxcover.rfc.spf.test")
    include = next(c for c in tree.terms if c.term.text == "include:range.rfc.spf.test")
    assert include.networks == (ipaddress.ip_network("203.0.113.0/24"),
                                ipaddress.ip_network("2001:db8::/32"))
    cost3 = next(c for c in tree.terms if c.term.text == "include:cost3.rfc.spf.test")
    assert cost3.networks is not None  # '+' terms and a final ~all: its pass set is known
    assert ipaddress.ip_network("203.0.113.21/32") in cost3.networks
    blurred = tree_of(dns_server, "ten.spf.test")  # _i3 ... end in ~all: known as well
    assert all(c.networks is not None for c in blurred.terms if c.term.name == "include")
