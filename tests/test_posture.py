"""DNS posture and the road to enforcement: pure checks, then the whole thing against knot."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from analysis.catalog import load_catalog
from analysis.dnsevidence import (
    DmarcRecord,
    DnsEvidence,
    ReportDestination,
    SpfTree,
    dmarc_tags,
    make_resolver,
)
from analysis.posture import (
    Posture,
    assess,
    dmarc_findings,
    plan,
    proposed_dmarc,
    spf_findings,
)
from analysis.records.dmarc import intent_of, parse_dmarc
from analysis.records.findings import Finding
from function_app.demo_reports import write_demo_reports
from tests.checkdmarc_oracle import OracleDNS, txt
from tests.dnslab.server import KnotServer


def dmarc(record: str | None, found_at: str = "contoso.example", *,
          own: tuple[str, ...] | None = None, apex: tuple[str, ...] = ()) -> DmarcRecord:
    """What the tree walk returns for contoso.example; `own` is what _dmarc.contoso.example
    holds (by default the record itself when it is published there)."""
    if own is None:
        own = (record,) if record and found_at == "contoso.example" else ()
    return DmarcRecord("contoso.example", found_at if record else None, record,
                       dmarc_tags(record) if record else {}, 1, (), own=own, apex=apex)


def codes(findings: list[Finding]) -> set[tuple[str, str]]:
    return {(f.level, f.code) for f in findings}


def spf(record: str | None, *, lookups: int = 3, voids: int = 0, qualifier: str | None = "-",
        errors: tuple[str, ...] = ()) -> SpfTree:
    return SpfTree("contoso.example", record, (), (), lookups, voids, qualifier, errors, False)


@pytest.mark.parametrize(("record", "level", "words"), [
    (None, "error", "no DMARC record"),
    ("v=DMARC1; p=none; pct=50; rua=mailto:a@contoso.example", "warning", "pct is removed"),
    ("v=DMARC1; p=none; rf=afrf; ri=3600; rua=mailto:a@contoso.example", "info", "rf is removed"),
    ("v=DMARC1; rua=mailto:a@contoso.example", "warning", "no p= tag"),
    ("v=DMARC1; p=block", "error", "p=block is not"),
    ("v=DMARC1; p=none", "warning", "no rua="),
    ("v=DMARC1; p=quarantine; t=y; rua=mailto:a@contoso.example", "info", "t=y (test mode)"),
    ("v=DMARC1; p=reject; psd=y; rua=mailto:a@contoso.example", "warning", "psd=y"),
    # issue 15: what the peer checker reports and dmarcbot missed
    ("v=DMARC1; p=reject; sp=block; rua=mailto:a@contoso.example", "error", "sp=block is not"),
    ("v=DMARC1; p=reject; np=maybe; rua=mailto:a@contoso.example", "error", "np=maybe is not"),
    ("v=DMARC1; p=reject; t=yes; rua=mailto:a@contoso.example", "error", "t=yes is not"),
    ("v=DMARC1; p=reject; psd=x; rua=mailto:a@contoso.example", "error", "psd=x is not"),
    ("v=DMARC1; p=reject; fo=2; ruf=mailto:a@contoso.example; rua=mailto:a@contoso.example",
     "warning", "fo=2 is not"),
    ("v=DMARC1; p=reject; fo=0:1; ruf=mailto:a@contoso.example; rua=mailto:a@contoso.example",
     "warning", "fo=0:1 is not"),
    ("v=DMARC1; p=reject; adkim=x; rua=mailto:a@contoso.example", "warning", "adkim=x is not"),
    ("v=DMARC1; rua=mailto:a@contoso.example; p=reject", "warning", "p does not come right"),
    ("v=DMARC1; p=reject; rua=mailto:a@contoso.example; colour=blue", "warning", "unknown tag"),
    ("v=DMARC1; p=reject; rua=dmarc@contoso.example", "error", "has no mailto: scheme"),
    ("v=DMARC1; p=reject; rua=mailto:dmarc@contoso.example!10m", "warning", "!10m is obsolete"),
    ("v=DMARC1; p=reject; rua=mailto:a@contoso.example,mailto:b@contoso.example,"
     "mailto:c@contoso.example", "warning", "lists 3 destinations"),
    ("v=DMARC1; p=reject; p=none; rua=mailto:a@contoso.example", "error", "appears 2 times"),
    ("v=DMARC1; p=reject; rua=https://reports.contoso.example/dmarc", "warning",
     "only support mailto"),
    ("v=DMARC1; p=reject; sp=none; rua=mailto:a@contoso.example", "warning", "sp=none"),
])
def test_dmarc_checks(record: str | None, level: str, words: str) -> None:
    found = dmarc_findings("contoso.example", dmarc(record))
    assert any(f.level == level and words in f.text for f in found), found


@pytest.mark.parametrize(("tree", "level", "words"), [
    (spf(None, qualifier=None), "error", "has no SPF record"),
    (spf("v=spf1 +all", qualifier="+"), "error", "+all authorises every server"),
    (spf("v=spf1 ?all", qualifier="?"), "warning", "?all is neutral"),
    (spf("v=spf1 include:a.example", qualifier=None), "warning", "no 'all'"),
    (spf("v=spf1 -all", lookups=9), "warning", "9 of 10 DNS lookups"),
    (spf("v=spf1 -all", lookups=11, errors=("11 DNS lookups (limit 10): permerror",)), "error",
     "limit 10"),
])
def test_spf_checks(tree: SpfTree, level: str, words: str) -> None:
    found = spf_findings(tree)
    assert any(f.level == level and words in f.text for f in found), found


def test_next_policy_moves_one_level_with_t_y_when_nearly_ready() -> None:
    none = dmarc("v=DMARC1; p=none; pct=100; rua=mailto:r@contoso.example; adkim=s")
    assert plan("contoso.example", none, 1000, 1000, [], 0)[0] == "quarantine"
    policy, step, (change,) = plan("contoso.example", none, 1000, 960, [], 0)
    assert policy == "quarantine" and "t=y" in step
    # tags in one fixed order (policy, alignment, reporting): equal intents, equal records
    assert change.value == "v=DMARC1; p=quarantine; t=y; adkim=s; rua=mailto:r@contoso.example"
    assert "pct" not in change.value
    assert change.replaces == (none.record,)  # replaces the record, never a second one
    stay = plan("contoso.example", none, 1000, 900, [], 0)
    assert stay[0] == "none" and stay[2] == [] and "only 90 %" in stay[1]
    blocked = plan("contoso.example", none, 1000, 1000, ["Mailchimp: pending"], 0)
    assert blocked[0] == "none" and "until the blocker is resolved" in blocked[1]
    two = plan("contoso.example", none, 1000, 1000, ["Mailchimp: pending", "Zoom: pending"], 0)
    assert "until the 2 blockers are resolved" in two[1]
    quarantine = dmarc("v=DMARC1; p=quarantine; rua=mailto:r@contoso.example")
    lists = plan("contoso.example", quarantine, 1000, 1000, [], 50)
    assert lists[0] == "reject" and "mailing lists" in lists[1]
    done = plan("contoso.example", dmarc("v=DMARC1; p=reject; rua=mailto:r@x"), 10, 10, [], 0)
    assert done[0] == "reject" and done[2] == []
    missing = plan("contoso.example", dmarc(None), 0, 0, [], 0)
    assert missing[2][0].value.startswith("v=DMARC1; p=none; rua=mailto:")


def test_proposed_record_keeps_reporting_and_drops_removed_tags() -> None:
    change = proposed_dmarc("contoso.example", dmarc(
        "v=DMARC1; p=none; sp=none; pct=10; rf=afrf; ri=86400; rua=mailto:a@b.example; "
        "ruf=mailto:c@d.example"),
        "quarantine", test=False)
    assert change.name == "_dmarc.contoso.example"
    assert change.value == ("v=DMARC1; p=quarantine; sp=quarantine; rua=mailto:a@b.example; "
                            "ruf=mailto:c@d.example")


def test_posture_of_a_domain_against_real_dns(dns_server: KnotServer, tmp_path: Path) -> None:
    """contoso.com has reports (the demo's), DNS in the test zones, and an external rua."""
    write_demo_reports(tmp_path / "r", last_day=dt.date(2026, 11, 27))
    db = str(tmp_path / "db.sqlite3")
    exe = [sys.executable, "-m", "function_app.cli", "--db", db]
    subprocess.run([*exe, "ingest", str(tmp_path / "r")], check=True, capture_output=True)
    ns = f"{dns_server.host}:{dns_server.port}"
    result = subprocess.run([*exe, "posture", "contoso.com", "--nameserver", ns, "--json"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    posture = json.loads(result.stdout)
    assert posture["policy"] == "none" and posture["dmarc_found_at"] == "contoso.com"
    assert posture["spf_lookups"] == 7
    assert posture["next_policy"] == "none" and posture["blockers"]  # Mailchimp awaits a decision
    assert any(c["name"] == "k1._domainkey.contoso.com" for c in posture["publish"])
    assert 0.95 < posture["readiness"] <= 1.0
    senders = subprocess.run([*exe, "senders", "--nameserver", ns, "--json"],
                             capture_output=True, text=True, timeout=60, check=True)
    rows = [json.loads(line) for line in senders.stdout.splitlines()]
    # a service may have several lines (issue 12): its own account's line, or the largest, first
    by_key = {(r["domain"], r["service_key"]): r for r in reversed(rows)}
    assert by_key["contoso.com", "sendgrid"]["verdict"] == "compliant"
    assert by_key["contoso.com", "sendgrid"]["status"] == "Pending"
    assert by_key["contoso.com", "unknown"]["verdict"] == "impostor"
    assert by_key["contoso.com", "unknown"]["status"] is None
    fabrikam = by_key["fabrikam.com", "microsoft365"]
    assert fabrikam["verdict"] == "needs-dkim" and "DKIM is not enabled" in fabrikam["diagnosis"]
    for row in rows:  # the JSON contract of `senders --json`
        assert {"domain", "service_key", "service_name", "category", "messages", "dmarc_pass",
                "dkim_aligned_pass", "spf_aligned_pass", "verdict", "status", "confidence",
                "sources", "evidence"} <= set(row)
        assert all({"ip", "messages", "ptr", "dns", "dns_note", "verdict"} <= set(s)
                   for s in row["sources"])
        assert all(s["dns"] == "looked up" for s in row["sources"])


def test_external_rua_must_be_authorised(dns_server: KnotServer) -> None:
    async def go() -> bool | None:
        ev = DnsEvidence(make_resolver([f"{dns_server.host}:{dns_server.port}"]))
        return await ev.report_authorised("contoso.com", "unauthorised.example")

    assert asyncio.run(go()) is False


def test_spf_includes_that_would_break_the_limit_are_not_proposed() -> None:
    from analysis.catalog import load_catalog
    from analysis.posture import spf_changes
    from analysis.verdicts import ServiceVerdict

    def needs_spf(key: str) -> ServiceVerdict:
        return ServiceVerdict("contoso.example", key, key, "esp", None, 10, 0, 0, 0, "needs-spf",
                              None, "", 0.9, (), (), (), "2026-11-20", "2026-11-27")

    catalog = load_catalog()
    keys = [s.key for s in catalog.services
            if any(p.kind == "spf_include" for p in s.publish)][:2]
    services = [needs_spf(k) for k in keys]
    roomy = spf("v=spf1 include:a.example -all", lookups=3)
    findings, (change,) = spf_changes("contoso.example", roomy, services, {}, catalog)
    assert not findings and change.value.endswith("-all")
    assert change.value.count("include:") == 3
    full = spf("v=spf1 include:a.example -all", lookups=9)
    findings, changes = spf_changes("contoso.example", full, services, {}, catalog)
    assert changes == [] and "subdomain" in findings[0].text and "limit 10" in findings[0].text
    rejected = {k: "Rejected" for k in keys}
    assert spf_changes("contoso.example", full, services, rejected, catalog) == ([], [])


# -- issue 15: records read by the grammar, advice that only moves forward ---------------------


@pytest.mark.parametrize("record", [
    "V=DMARC1;p=reject;", "v = DMARC1;p=reject;", "v = DMARC1\t;\tp=reject\t;",
    "v = DMARC1\t;\tp\t\t\t=\t\t\treject\t;", "v=DMARC1;p=ReJect",
])
def test_grammar_variants_are_at_enforcement_and_get_no_second_record(record: str) -> None:
    """Case and blanks the ABNF allows: read as p=reject, never as "no record"."""
    found = dmarc(record)
    assert found.parsed is not None and found.parsed.policy == "reject"
    assert not any(f.level == "error" for f in dmarc_findings("contoso.example", found))
    policy, step, changes = plan("contoso.example", found, 10, 10, [], 0)
    assert (policy, changes) == ("reject", []) and step.startswith("at enforcement")


def test_a_duplicated_tag_is_an_error_and_the_fix_keeps_the_weaker() -> None:
    # values that disagree: receivers apply neither, so the repair asks for no more than both
    # do (docs/posture.md, "Two records that disagree"); more is the plan's step to take
    found = dmarc("v=DMARC1; p=reject; p=none; rua=mailto:d@contoso.example")
    (duplicate,) = [f for f in dmarc_findings("contoso.example", found)
                    if f.code == "dmarc.duplicate-tag"]
    assert duplicate.level == "error" and duplicate.rfc == "RFC 6376 §3.2"
    assert duplicate.fix is not None
    assert duplicate.fix.value == "v=DMARC1; p=none; rua=mailto:d@contoso.example"
    assert duplicate.fix.replaces == (found.record,)
    policy, step, (change,) = plan("contoso.example", found, 10, 0, [], 0)
    assert policy == "none" and "at enforcement" not in step and step.startswith("repair")
    assert change.value == duplicate.fix.value


def test_two_records_both_go_and_one_replaces_them() -> None:
    first, second = ("v=DMARC1; p=none; rua=mailto:a@contoso.example",
                     "v=DMARC1; p=quarantine; adkim=s; rua=mailto:b@contoso.example")
    found = DmarcRecord("contoso.example", None, None, {}, 3, (), own=(first, second))
    (two,) = [f for f in dmarc_findings("contoso.example", found) if f.code == "dmarc.multiple"]
    assert two.level == "error" and "all of them must go" in two.text
    assert two.fix is not None and set(two.fix.replaces) == {first, second}
    assert two.fix.value == ("v=DMARC1; p=none; "  # they disagree: the weaker of the two
                             "rua=mailto:a@contoso.example,mailto:b@contoso.example")
    _, step, (change,) = plan("contoso.example", found, 0, 0, [], 0)
    assert set(change.replaces) == {first, second} and change.value == two.fix.value
    assert step.startswith("repair")


def test_near_misses_are_named_and_repaired() -> None:
    for text, why in [(" v=DMARC1; p=reject", "starts with a blank"),
                      ("v=dmarc1; p=reject", "case-sensitive"),
                      ("p=reject; v=DMARC1", "must be the first tag"),
                      ("v=DMARC1 p=reject", "followed by ';'")]:
        found = DmarcRecord("contoso.example", None, None, {}, 2, (), own=(text,))
        (miss,) = [f for f in dmarc_findings("contoso.example", found)
                   if f.code == "dmarc.not-dmarc"]
        assert why in miss.text and miss.level == "error"
        assert miss.fix is not None and miss.fix.value == "v=DMARC1; p=reject"
        assert miss.fix.replaces == (text,)
        _, _, (change,) = plan("contoso.example", found, 0, 0, [], 0)
        assert change.value == "v=DMARC1; p=reject" and change.replaces == (text,)


def test_unrelated_txt_at_dmarc_is_ignored_and_an_apex_record_is_named() -> None:
    record = "v=DMARC1; p=quarantine; rua=mailto:d@contoso.example"
    found = dmarc(record, own=(record, "v=spf1 -all"), apex=("v=DMARC1; p=reject",))
    findings = dmarc_findings("contoso.example", found)
    assert ("info", "dmarc.unrelated") in codes(findings)
    (apex,) = [f for f in findings if f.code == "dmarc.apex"]
    assert apex.level == "warning" and apex.fix is not None
    assert apex.fix.value == "" and apex.fix.replaces == ("v=DMARC1; p=reject",)
    assert not any(f.level == "error" for f in findings)


def test_a_typo_in_p_is_repaired_with_what_it_meant() -> None:
    found = dmarc("v=DMARC1; p=rejct; rua=mailto:d@contoso.example")
    (bad,) = [f for f in dmarc_findings("contoso.example", found) if f.code == "dmarc.bad-value"]
    assert bad.fix is not None and bad.fix.value.startswith("v=DMARC1; p=reject;")
    assert plan("contoso.example", found, 0, 0, [], 0)[2][0].value == bad.fix.value


def test_a_subdomain_gets_its_parents_subdomain_policy_never_less() -> None:
    parent = "v=DMARC1; p=none; sp=reject; rua=mailto:d@contoso.example"
    found = DmarcRecord("sales.contoso.example", "contoso.example", parent, dmarc_tags(parent),
                        2, ())
    policy, _, changes = plan("sales.contoso.example", found, 100, 100, [], 0)
    assert policy == "reject" and changes == []  # sp=reject already applies to it
    for share in (0, 96, 100):
        for change in plan("sales.contoso.example", found, 100, share, [], 0)[2]:
            assert intent_of(parse_dmarc(change.value)).strength()[0] == 2


def test_t_y_is_not_added_where_it_would_soften_sp() -> None:
    found = dmarc("v=DMARC1; p=none; sp=reject; rua=mailto:d@contoso.example")
    policy, step, changes = plan("contoso.example", found, 1000, 960, [], 0)
    assert policy == "none" and changes == [] and "t=y would soften" in step
    policy, _, (change,) = plan("contoso.example", found, 1000, 1000, [], 0)
    assert policy == "quarantine" and "t=y" not in change.value and "sp=reject" in change.value


def test_report_destinations_are_judged_from_dns_values() -> None:
    record = ("v=DMARC1; p=none; rua=mailto:a@contoso.example,mailto:b@vendor.example; "
              "ruf=mailto:f@forensics.example,mailto:x@nomx.example")
    found = dmarc(record)
    destinations = {
        "contoso.example": ReportDestination("contoso.example", "contoso.example", False, None,
                                             True, True),
        "vendor.example": ReportDestination("contoso.example", "vendor.example", True, True,
                                            True, True),
        "forensics.example": ReportDestination("contoso.example", "forensics.example", True,
                                               False, False, False),
        "nomx.example": ReportDestination("contoso.example", "nomx.example", True, True, False,
                                          True),
    }
    findings = dmarc_findings("contoso.example", found, destinations)
    (unauthorised,) = [f for f in findings if f.code == "reports.unauthorised"]
    assert "forensics.example has not authorised ruf reports" in unauthorised.text
    assert unauthorised.fix is not None and unauthorised.fix.name == (
        "contoso.example._report._dmarc.forensics.example")
    assert unauthorised.fix.value == "v=DMARC1" and unauthorised.rfc == "RFC 9990 §3"
    assert ("error", "reports.no-domain") in codes(findings)
    (no_mx,) = [f for f in findings if f.code == "reports.no-mx"]
    assert "nomx.example" in no_mx.text and no_mx.level == "warning"


# -- the same against a real DNS server ----------------------------------------------------------

ZONE = {
    # a subdomain inherits its parent's rua=mailto:dmarc@parent.test: one organisation
    "_dmarc.parent.test": [txt("v=DMARC1; p=reject; rua=mailto:dmarc@parent.test")],
    "parent.test": ["MX 10 mx.parent.test."],
    "mx.parent.test": ["A 192.0.2.1"],
    "sub.parent.test": ["A 192.0.2.2"],
    "deep.sub.parent.test": ["A 192.0.2.3"],
    # an external ruf nobody authorised, an external rua that is authorised
    "_dmarc.ext.test": [txt("v=DMARC1; p=none; rua=mailto:r@vendor.test; "
                            "ruf=mailto:f@forensics.test")],
    "ext.test._report._dmarc.vendor.test": [txt("v=DMARC1")],
    "vendor.test": ["MX 10 mx.parent.test."],
    "forensics.test": ["MX 10 mx.parent.test."],
    # a destination with no MX, one that does not exist
    "_dmarc.nomx.test": [txt("v=DMARC1; p=none; rua=mailto:r@nomx.test,mailto:r@gone.nomx.test")],
    "nomx.test": ["A 192.0.2.4"],
    # two records; a record at the apex too; a stray SPF string beside a good record
    "_dmarc.two.test": [txt("v=DMARC1; p=none; rua=mailto:a@two.test"),
                        txt("v=DMARC1; p=reject; rua=mailto:b@two.test")],
    "two.test": ["MX 10 mx.parent.test."],
    "_dmarc.apex.test": [txt("v=DMARC1; p=quarantine; rua=mailto:d@apex.test")],
    "apex.test": [txt("v=DMARC1; p=reject"), "MX 10 mx.parent.test."],
    "_dmarc.mixed.test": [txt("v=DMARC1; p=quarantine; rua=mailto:d@mixed.test"),
                          txt("v=spf1 -all")],
    "mixed.test": ["MX 10 mx.parent.test."],
    # a department that declares its own Organizational Domain (psd=n): external to its parent
    "_dmarc.corp.test": [txt("v=DMARC1; p=none; rua=mailto:d@dept.corp.test")],
    "_dmarc.dept.corp.test": [txt("v=DMARC1; p=none; psd=n; rua=mailto:d@dept.corp.test")],
    "dept.corp.test": ["MX 10 mx.parent.test."],
}


@pytest.fixture(scope="module")
def cases() -> Iterator[OracleDNS]:
    with OracleDNS(ZONE) as server:
        yield server


def posture_of(server: OracleDNS, domain: str) -> list[Finding]:
    async def go() -> list[Finding]:
        ev = DnsEvidence(make_resolver([f"{server.host}:{server.port}"]))
        try:
            return list((await assess(domain, ev, [], {}, load_catalog())).findings)
        finally:
            ev.close()

    return asyncio.run(go())


def test_inherited_rua_in_the_same_organisation_is_not_external(cases: OracleDNS) -> None:
    for domain in ("sub.parent.test", "deep.sub.parent.test"):
        findings = posture_of(cases, domain)
        assert not [f for f in findings if f.topic == "reports"], findings
        assert ("info", "dmarc.inherited") in codes(findings)


def test_external_destinations_against_dns(cases: OracleDNS) -> None:
    findings = posture_of(cases, "ext.test")
    (unauthorised,) = [f for f in findings if f.code == "reports.unauthorised"]
    assert "forensics.test has not authorised ruf" in unauthorised.text  # vendor.test has
    assert unauthorised.fix is not None
    assert unauthorised.fix.name == "ext.test._report._dmarc.forensics.test"
    nomx = codes(posture_of(cases, "nomx.test"))
    assert ("warning", "reports.no-mx") in nomx and ("error", "reports.no-domain") in nomx
    # psd=n makes dept.corp.test its own organisation: corp.test's reports to it are external
    corp = [f for f in posture_of(cases, "corp.test") if f.code == "reports.unauthorised"]
    assert corp and "dept.corp.test has not authorised rua reports for corp.test" in corp[0].text


def test_records_at_the_dmarc_name_against_dns(cases: OracleDNS) -> None:
    two = [f for f in posture_of(cases, "two.test") if f.code == "dmarc.multiple"]
    assert len(two) == 1 and two[0].fix is not None and len(two[0].fix.replaces) == 2
    assert two[0].fix.value == "v=DMARC1; p=none; rua=mailto:a@two.test,mailto:b@two.test"
    apex = codes(posture_of(cases, "apex.test"))
    assert ("warning", "dmarc.apex") in apex
    assert not any(lv == "error" for lv, code in apex if code.startswith("dmarc"))
    mixed = codes(posture_of(cases, "mixed.test"))
    assert ("info", "dmarc.unrelated") in mixed
    assert not any(lv == "error" for lv, code in mixed if code.startswith("dmarc"))


def test_posture_json_has_the_documented_finding_schema(dns_server: KnotServer,
                                                         tmp_path: Path) -> None:
    """docs/posture.md: every finding has code, severity, topic, text, rfc and fix."""
    write_demo_reports(tmp_path / "r", last_day=dt.date(2026, 11, 27))
    db = str(tmp_path / "db.sqlite3")
    exe = [sys.executable, "-m", "function_app.cli", "--db", db]
    subprocess.run([*exe, "ingest", str(tmp_path / "r")], check=True, capture_output=True)
    ns = f"{dns_server.host}:{dns_server.port}"
    result = subprocess.run([*exe, "posture", "fabrikam.com", "--nameserver", ns, "--json"],
                            capture_output=True, text=True, timeout=60, check=True)
    posture = json.loads(result.stdout)
    assert posture["schema"] == 1
    assert posture["findings"]
    for finding in posture["findings"]:
        assert set(finding) == {"code", "severity", "topic", "text", "rfc", "fix"}
        assert finding["severity"] in ("error", "warning", "info") and finding["code"]
        assert finding["fix"] is None or set(finding["fix"]) == {"name", "type", "value",
                                                                 "replaces", "why"}
    (unauthorised,) = [f for f in posture["findings"] if f["code"] == "reports.unauthorised"]
    assert unauthorised["fix"]["name"] == "fabrikam.com._report._dmarc.unauthorised.example"
    assert unauthorised["rfc"] == "RFC 9990 §3"
    for change in posture["publish"]:
        assert set(change) == {"name", "type", "value", "replaces", "why"}


# -- per line (issue 12): lakeshore.example in tests/dnslab/zones/posture.zone ------------------

LAKESHORE = "lakeshore.example"
OWN_M365 = "Microsoft 365 (Exchange Online)"
OTHER_TENANT = f"{OWN_M365} \u2014 another tenant (evilcorp9.onmicrosoft.com)"
OWN_SENDGRID = "SendGrid (Twilio)"
UNSIGNED_PART = f"{OWN_SENDGRID} \u2014 own account, not signed for {LAKESHORE}"
FREE_ACCOUNT = f"{OWN_SENDGRID} \u2014 not signed for {LAKESHORE}"
LINE_FIELDS = {"line_name", "service_key", "account", "verdict", "status", "messages", "sources",
               "dmarc_pass", "dkim_aligned_pass", "considered", "blocker",
               "stopped_by_enforcement", "question", "part_of"}


def lakeshore_report() -> bytes:
    """One day of lakeshore.example: its own Microsoft 365 tenant (9,000, aligned DKIM), another
    tenant spoofing it (1,200), its own SendGrid account (2,000 signed; 150 bounced through its
    own return path but signed only as sendgrid.net), a free SendGrid account (300), an impostor
    (500), a forwarder (80) and its own relay listed in SPF (400)."""
    from tests.builders import aggregate_xml, record_xml

    def auth(envelope: str, spf: str, *dkim: tuple[str, str, str]) -> str:
        sigs = "".join(f"<dkim><domain>{d}</domain><selector>{s}</selector><result>{r}</result>"
                       "</dkim>" for d, s, r in dkim)
        return (f"{sigs}<spf><domain>{envelope}</domain><scope>mfrom</scope><result>{spf}"
                "</result></spf>")

    d, em, evil = LAKESHORE, f"em7301.{LAKESHORE}", "evilcorp9.onmicrosoft.com"
    rows = [  # ip, count, DMARC dkim, DMARC spf, envelope, auth_results
        ("40.107.150.11", 6000, "pass", "pass", d, auth(d, "pass", (d, "selector1", "pass"))),
        ("52.100.150.12", 3000, "pass", "pass", d, auth(d, "pass", (d, "selector1", "pass"))),
        ("40.107.150.99", 1200, "fail", "fail", evil,
         auth(evil, "pass", (evil, "selector1-evilcorp9-onmicrosoft-com", "pass"))),
        ("149.72.150.20", 2000, "pass", "pass", em, auth(em, "pass", (d, "s1", "pass"))),
        ("167.89.100.21", 150, "fail", "pass", em,
         auth(em, "pass", ("sendgrid.net", "smtpapi", "pass"))),
        ("168.245.100.22", 300, "fail", "fail", "sendgrid.net",
         auth("sendgrid.net", "pass", ("sendgrid.net", "smtpapi", "pass"))),
        ("100.66.150.5", 500, "fail", "fail", d, auth(d, "fail")),
        ("198.18.150.7", 80, "pass", "fail", d, auth(d, "fail", (d, "selector1", "pass"))),
        ("192.0.2.150", 400, "fail", "pass", d, auth(d, "pass")),
    ]
    records = "".join(record_xml(ip, n, dkim=dkim, spf=spf, header_from=d, envelope_from=env,
                                 auth=a) for ip, n, dkim, spf, env, a in rows)
    return aggregate_xml(records, domain=d, report_id="lakeshore-1")


def blocker_names(blockers: list[str] | tuple[str, ...]) -> list[str]:
    return [b.split(":", 1)[0] for b in blockers]


def test_posture_speaks_per_line(dns_server: KnotServer, tmp_path: Path) -> None:
    """Another tenant is stopped by enforcement, never a blocker; the unsigned part of the
    domain's own SendGrid and the free account's failing mail block by their line names;
    readiness counts the domain's own mail only."""
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "lakeshore.xml").write_bytes(lakeshore_report())
    exe = [sys.executable, "-m", "function_app.cli", "--db", str(tmp_path / "db.sqlite3")]
    subprocess.run([*exe, "ingest", str(tmp_path / "r")], check=True, capture_output=True)
    ask = [*exe, "posture", LAKESHORE, "--nameserver", f"{dns_server.host}:{dns_server.port}"]
    posture = json.loads(subprocess.run([*ask, "--json"], capture_output=True, text=True,
                                        timeout=60, check=True).stdout)
    assert posture["schema"] == 1
    lines = {ln["line_name"]: ln for ln in posture["lines"]}
    assert all(set(ln) == LINE_FIELDS for ln in posture["lines"])
    other = lines[OTHER_TENANT]
    assert other["verdict"] == "impostor" and other["messages"] == 1200
    assert other["stopped_by_enforcement"] and not other["blocker"] and not other["considered"]
    assert lines["Unidentified sources \u2014 fails SPF and DKIM"]["stopped_by_enforcement"]
    forwarded = [ln for ln in posture["lines"] if ln["verdict"] == "forwarded"]
    assert forwarded and not any(ln["blocker"] for ln in forwarded)
    # the blockers, by line name: never the service alone, never the impostor
    assert blocker_names(posture["blockers"]) == [UNSIGNED_PART]
    assert [n for n, ln in lines.items() if ln["blocker"]] == [UNSIGNED_PART]
    part = lines[UNSIGNED_PART]
    assert (part["part_of"], part["verdict"], part["messages"]) == (OWN_SENDGRID, "needs-dkim",
                                                                   150)
    assert lines[OWN_SENDGRID]["verdict"] == "compliant" and not lines[OWN_SENDGRID]["blocker"]
    assert lines[FREE_ACCOUNT]["question"] and "Ask:" in lines[FREE_ACCOUNT]["question"]
    # readiness: the domain's own accounts only (9,000 + 2,150), not the other tenant's 1,200
    assert (posture["considered_messages"], posture["ready_messages"]) == (11_150, 11_000)
    assert sum(ln["messages"] for ln in posture["lines"] if ln["considered"]) == 11_150
    assert {n for n, ln in lines.items() if ln["considered"]} == {OWN_M365, OWN_SENDGRID}
    assert posture["next_policy"] == "none"
    assert "until the blocker is resolved" in posture["next_step"]

    text = subprocess.run(ask, capture_output=True, text=True, timeout=60, check=True).stdout
    stops = text.split("enforcement stops", 1)[1].split("to answer", 1)[0]
    assert f"{OTHER_TENANT}: 1 source, 1,200 messages" in stops
    assert "fails SPF and DKIM: 1 source, 500 messages" in stops
    assert "SendGrid" not in stops  # the free account is a question, not an accusation
    asked = text.split("to answer", 1)[1].split("next step", 1)[0]
    assert f"listed in {LAKESHORE}'s SPF: 1 source, 400 messages." in asked
    assert f"{FREE_ACCOUNT}: 1 source, 300 messages." in asked  # a question, not a blocker
    assert f"blocker    {UNSIGNED_PART}: 1 of its 2 sources, 150 messages" in text
    assert f"blocker    {FREE_ACCOUNT}" not in text
    assert not any(line.startswith(f"  blocker    {OWN_SENDGRID}:") for line in text.splitlines())
    assert text.count("never a blocker") == 1  # forwarded mail, said once
    assert "(11,000 of 11,150 messages)" in text


def test_decisions_move_lines_in_and_out_of_readiness(dns_server: KnotServer) -> None:
    """An approved account's failing part still blocks; a rejected account leaves readiness,
    and its part blocks nothing; another tenant never counts, whatever is decided."""
    from analysis.reader import read_reports
    from analysis.senders import analyse_rollups
    from store.sqlite import SqliteStore

    async def go(statuses: dict[str, str]) -> Posture:
        store = SqliteStore(":memory:")
        for report in read_reports(lakeshore_report()):
            store.add_report(report)
        ev = DnsEvidence(make_resolver([f"{dns_server.host}:{dns_server.port}"]))
        try:
            _, lines, _ = await analyse_rollups(store.rollups(), load_catalog(), ev)
            return await assess(LAKESHORE, ev, lines, statuses, load_catalog())
        finally:
            ev.close()

    approved = asyncio.run(go({"microsoft365": "Approved", "sendgrid": "Approved"}))
    assert blocker_names(approved.blockers) == [UNSIGNED_PART]
    assert approved.considered_messages == 11_150
    rejected = asyncio.run(go({"microsoft365": "Approved", "sendgrid": "Rejected"}))
    assert (rejected.considered_messages, rejected.ready_messages) == (9_000, 9_000)
    assert rejected.blockers == ()
    assert not [ln for ln in rejected.lines if ln.part_of]
    (own,) = [ln for ln in rejected.lines if ln.line_name == OWN_SENDGRID]
    assert own.status == "Rejected" and not own.considered and not own.stopped_by_enforcement
    for posture in (approved, rejected):
        (other,) = [ln for ln in posture.lines if ln.line_name == OTHER_TENANT]
        assert other.stopped_by_enforcement and not other.considered and not other.blocker


def test_counts_of_sources_read_as_english() -> None:
    from analysis.readiness import sources

    assert [sources(n) for n in (0, 1, 2, 1204)] == ["0 sources", "1 source", "2 sources",
                                                      "1,204 sources"]
