"""DNS posture and the road to enforcement: pure checks, then the whole thing against knot."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.dnsevidence import DmarcRecord, DnsEvidence, SpfTree, dmarc_tags, make_resolver
from analysis.posture import dmarc_findings, plan, proposed_dmarc, spf_findings
from function_app.demo_reports import write_demo_reports
from tests.dnslab.server import KnotServer


def dmarc(record: str | None, found_at: str = "contoso.example") -> DmarcRecord:
    return DmarcRecord("contoso.example", found_at if record else None, record,
                       dmarc_tags(record) if record else {}, 1, ())


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
    assert change.value == "v=DMARC1; p=quarantine; t=y; rua=mailto:r@contoso.example; adkim=s"
    assert "pct" not in change.value
    stay = plan("contoso.example", none, 1000, 900, [], 0)
    assert stay[0] == "none" and stay[2] == [] and "only 90 %" in stay[1]
    blocked = plan("contoso.example", none, 1000, 1000, ["Mailchimp: pending"], 0)
    assert blocked[0] == "none" and "1 blocker" in blocked[1]
    quarantine = dmarc("v=DMARC1; p=quarantine; rua=mailto:r@contoso.example")
    lists = plan("contoso.example", quarantine, 1000, 1000, [], 50)
    assert lists[0] == "reject" and "mailing lists" in lists[1]
    done = plan("contoso.example", dmarc("v=DMARC1; p=reject; rua=mailto:r@x"), 10, 10, [], 0)
    assert done[0] == "reject" and done[2] == []
    missing = plan("contoso.example", dmarc(None), 0, 0, [], 0)
    assert missing[2][0].value.startswith("v=DMARC1; p=none; rua=mailto:")


def test_proposed_record_keeps_reporting_and_drops_removed_tags() -> None:
    change = proposed_dmarc("contoso.example", dmarc(
        "v=DMARC1; p=none; sp=none; pct=10; rf=afrf; ri=86400; rua=mailto:a@b; ruf=mailto:c@d"),
        "quarantine", test=False)
    assert change.name == "_dmarc.contoso.example"
    assert change.value == "v=DMARC1; p=quarantine; sp=quarantine; rua=mailto:a@b; ruf=mailto:c@d"


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
    by_key = {(r["domain"], r["service_key"]): r for r in rows}
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
        assert all(set(s) == {"ip", "messages", "ptr", "dns", "dns_note"}
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
