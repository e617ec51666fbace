"""Naming sources and judging them, from evidence the tests set out (pure: no DNS here)."""

from __future__ import annotations

import ipaddress

import pytest

from analysis.catalog import load_catalog
from analysis.dnsevidence import Reverse
from analysis.identify import (
    UNKNOWN,
    EvidenceBundle,
    Identifier,
    NetworkIndex,
    SourceActivity,
    activities_from_rollups,
)
from analysis.rollup import RollupKey
from analysis.verdicts import service_verdicts, source_verdict

CATALOG = load_catalog()
NETWORKS = {
    "sendgrid": (ipaddress.ip_network("167.89.0.0/17"),),
    "microsoft365": (ipaddress.ip_network("40.107.0.0/16"),
                     ipaddress.ip_network("2a01:111:f403::/49")),
    "google-workspace": (ipaddress.ip_network("209.85.128.0/17"),),
}


def activity(ip: str, *, domain: str = "contoso.example", messages: int = 10,
             dkim: tuple[tuple[str, str, str], ...] = (), spf: tuple[tuple[str, str], ...] = (),
             dkim_aligned: int = 0, spf_aligned: int = 0,
             reasons: tuple[str, ...] = ()) -> SourceActivity:
    return SourceActivity(
        domain=domain, ip=ip, messages=messages,
        dmarc_pass=max(dkim_aligned, spf_aligned), dkim_aligned_pass=dkim_aligned,
        spf_aligned_pass=spf_aligned,
        dkim=tuple(((d, s, r), messages) for d, s, r in dkim),
        spf=tuple(((d, "mfrom", r), messages) for d, r in spf),
        reasons=tuple((r, messages) for r in reasons), header_from=(domain,),
        first_day="2026-11-20", last_day="2026-11-27",
    )


def judge(a: SourceActivity, **bundle: object) -> tuple[str, str, str | None]:
    evidence = EvidenceBundle(bundle.get("reverse", {}), bundle.get("targets", {}),  # type: ignore[arg-type]
                              NETWORKS)
    ident = Identifier(CATALOG, evidence).identify(a)
    m365 = NetworkIndex({"microsoft365": NETWORKS["microsoft365"]})
    verdict = source_verdict(ident, CATALOG, m365)
    return ident.service_key, verdict.verdict, verdict.diagnosis


def test_network_index_finds_every_service_holding_an_ip() -> None:
    index = NetworkIndex({"a": (ipaddress.ip_network("10.0.0.0/8"),),
                          "b": (ipaddress.ip_network("10.1.0.0/16"),),
                          "c": (ipaddress.ip_network("2001:db8::/32"),)})
    assert index.services("10.1.2.3") == {"a", "b"}
    assert index.services("10.2.0.1") == {"a"}
    assert index.services("2001:db8::1") == {"c"} and index.services("192.0.2.1") == set()


def test_sendgrid_with_own_dkim_is_compliant() -> None:
    a = activity("167.89.1.2", dkim=(("contoso.example", "s1", "pass"),),
                 spf=(("em1.contoso.example", "pass"),), dkim_aligned=10, spf_aligned=10)
    targets = {("s1", "contoso.example"): "s1.domainkey.u1.wl1.sendgrid.net"}
    assert judge(a, targets=targets)[:2] == ("sendgrid", "compliant")


def test_sendgrid_signing_only_as_itself_needs_dkim() -> None:
    a = activity("167.89.1.2", dkim=(("sendgrid.net", "smtpapi", "pass"),),
                 spf=(("sendgrid.net", "pass"),))
    assert judge(a)[:2] == ("sendgrid", "needs-dkim")


def test_microsoft_365_without_custom_dkim_is_diagnosed() -> None:
    a = activity("40.107.5.6", dkim=(("contoso.onmicrosoft.com", "selector1", "pass"),),
                 spf=(("contoso.example", "pass"),), spf_aligned=10)
    key, verdict, diagnosis = judge(a)
    assert (key, verdict) == ("microsoft365", "needs-dkim")
    assert diagnosis is not None and "DKIM is not enabled for contoso.example" in diagnosis


def test_microsoft_365_relay_pool_is_forwarding() -> None:
    reverse = {"52.96.1.1": Reverse("52.96.1.1", ("mail-x.outbound.protection.outlook.com",),
                                    ("mail-x.outbound.protection.outlook.com",))}
    a = activity("52.96.1.1", dkim=(("contoso.example", "selector1", "pass"),),
                 spf=(("fwd.example", "pass"),), dkim_aligned=10)
    key, verdict, diagnosis = judge(a, reverse=reverse)
    assert key in ("microsoft365", "microsoft365-forwarding") and verdict == "forwarded"
    assert diagnosis is not None and "relay pool" in diagnosis


def test_microsoft_365_srs_forwarding() -> None:
    a = activity("40.107.9.9", dkim=(("contoso.example", "selector1", "pass"),),
                 spf=(("other-tenant.example", "pass"),), dkim_aligned=10)
    targets = {("selector1", "contoso.example"):
               "selector1-contoso-example._domainkey.contoso.onmicrosoft.com"}
    key, verdict, diagnosis = judge(a, targets=targets)
    assert (key, verdict) == ("microsoft365", "forwarded")
    assert diagnosis is not None and "SRS" in diagnosis


def test_forwarding_through_google_names_google_not_the_original_sender() -> None:
    a = activity("209.85.130.1", dkim=(("contoso.example", "s1", "pass"),),
                 spf=(("gmail.com", "pass"),), dkim_aligned=10)
    targets = {("s1", "contoso.example"): "s1.domainkey.u1.wl1.sendgrid.net"}
    key, verdict, _ = judge(a, targets=targets)
    assert key in ("google-workspace", "google-forwarding") and verdict == "forwarded"


def test_receiver_reasons_mean_forwarded() -> None:
    a = activity("198.51.100.40", reasons=("mailing_list",))
    assert judge(a)[1] == "forwarded"
    arc = activity("198.51.100.41", reasons=("local_policy:arc=pass",))
    assert judge(arc)[1] == "forwarded"


def test_unknown_failing_source_is_an_impostor_even_with_a_brand_ptr() -> None:
    # The PTR claims Google but does not resolve back: it must not name anyone.
    reverse = {"192.0.2.66": Reverse("192.0.2.66", ("mail-sor-f66.google.com",), ())}
    a = activity("192.0.2.66", spf=(("contoso.example", "fail"),))
    assert judge(a, reverse=reverse) == (UNKNOWN, "impostor", None)


def test_platform_is_told_from_the_product() -> None:
    a = activity("167.89.3.3", dkim=(("hubspot.example", "hs1", "pass"),),
                 spf=(("bounce.hubspotemail.net", "pass"),))
    ident = Identifier(CATALOG, EvidenceBundle({}, {}, NETWORKS)).identify(a)
    assert ident.service_key == "hubspot" and ident.platform_key == "sendgrid"


def test_unknown_but_passing_source_stays_unknown() -> None:
    a = activity("198.51.100.99", spf=(("contoso.example", "pass"),), spf_aligned=10)
    assert judge(a)[:2] == (UNKNOWN, "unknown")


def test_low_confidence_facts_weigh_less() -> None:
    high = Identifier(CATALOG, EvidenceBundle({}, {}, NETWORKS)).identify(
        activity("167.89.1.1", spf=(("sendgrid.net", "pass"),)))
    assert high.confidence >= 0.75
    lows = [(s, f) for s in CATALOG.services for f in s.evidence
            if f.confidence == "low" and f.kind == "return_path_domain"]
    _, fact = lows[0]
    low = Identifier(CATALOG, EvidenceBundle({}, {}, {})).identify(
        activity("198.51.100.5", spf=((f"x.{fact.value}", "pass"),)))
    assert low.confidence < high.confidence
    assert any("low-confidence" in e for e in low.evidence) or low.service_key == UNKNOWN


def test_activities_fold_rollups_per_domain_and_ip() -> None:
    def key(day: str, ip: str, aligned: bool) -> RollupKey:
        return RollupKey("contoso.example", day, ip, "contoso.example", "",
                         (("contoso.example", "s1", "pass"),),
                         (("contoso.example", "mfrom", "pass"),), aligned, aligned, "none", "")

    rows = [(key("2026-11-20", "192.0.2.1", True), 5), (key("2026-11-21", "192.0.2.1", False), 3),
            (key("2026-11-21", "192.0.2.2", True), 1)]
    first, second = activities_from_rollups(rows)
    assert (first.ip, first.messages, first.dkim_aligned_pass) == ("192.0.2.1", 8, 5)
    assert (first.first_day, first.last_day) == ("2026-11-20", "2026-11-21")
    assert first.dkim == ((("contoso.example", "s1", "pass"), 8),)
    assert second.messages == 1


@pytest.mark.parametrize("verdicts", [("impostor", "impostor"), ("compliant", "needs-dkim")])
def test_service_verdict_follows_the_bulk_of_the_mail(verdicts: tuple[str, str]) -> None:
    a = activity("167.89.1.2", messages=90, dkim=(("contoso.example", "s1", "pass"),),
                 spf=(("em1.contoso.example", "pass"),), dkim_aligned=90, spf_aligned=90)
    b = activity("167.89.1.3", messages=10, dkim=(("sendgrid.net", "smtpapi", "pass"),),
                 spf=(("sendgrid.net", "pass"),))
    targets = {("s1", "contoso.example"): "s1.domainkey.u1.wl1.sendgrid.net"}
    bundle = EvidenceBundle({}, targets, NETWORKS)
    ids = [Identifier(CATALOG, bundle).identify(x) for x in (a, b)]
    (service,) = service_verdicts([source_verdict(i, CATALOG) for i in ids], CATALOG)
    assert service.verdict == "compliant" and service.messages == 100
    assert service.first_day == "2026-11-20" and len(service.sources) == 2
