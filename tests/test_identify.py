"""Naming sources and judging them, from evidence the tests set out (pure: no DNS here)."""

from __future__ import annotations

import ipaddress

from analysis.catalog import load_catalog
from analysis.dnsevidence import Reverse
from analysis.identify import (
    UNKNOWN,
    EvidenceBundle,
    Identifier,
    NetworkIndex,
    SourceActivity,
    activities_from_rollups,
    own,
)
from analysis.rollup import RollupKey
from analysis.verdicts import (
    SHOWN_SOURCES,
    ServiceVerdict,
    SetAside,
    SourceVerdict,
    judge_sources,
    service_verdicts,
    source_verdict,
)

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


def lines_for(*activities: SourceActivity, targets: dict[tuple[str, str], str] | None = None,
              reverse: dict[str, Reverse] | None = None,
              domain_networks: dict[str, tuple[ipaddress.IPv4Network, ...]] | None = None,
              ) -> tuple[list[SourceVerdict], list[ServiceVerdict]]:
    """Judge every source of a run on its own evidence, then group (as `analyse_activities`)."""
    bundle = EvidenceBundle(reverse or {}, targets or {}, NETWORKS,
                            domain_networks=dict(domain_networks or {}))
    identifier = Identifier(CATALOG, bundle)
    m365 = NetworkIndex({"microsoft365": NETWORKS["microsoft365"]})
    sources = judge_sources([identifier.identify(a) for a in activities], CATALOG, m365,
                            bundle.dkim_targets)
    return sources, service_verdicts(sources, CATALOG)


CONTOSO_TENANT = {("selector1", "contoso.example"):
                  "selector1-contoso-example._domainkey.contosoex.onmicrosoft.com"}
OWN_M365 = activity("40.107.1.1", messages=900, dkim=(("contoso.example", "selector1", "pass"),),
                    spf=(("contoso.example", "pass"),), dkim_aligned=900, spf_aligned=900)


def test_the_own_account_is_one_line_and_its_minority_is_not_outvoted() -> None:
    a = activity("167.89.1.2", messages=90, dkim=(("contoso.example", "s1", "pass"),),
                 spf=(("em1.contoso.example", "pass"),), dkim_aligned=90, spf_aligned=90)
    b = activity("167.89.1.3", messages=10, dkim=(("sendgrid.net", "smtpapi", "pass"),),
                 spf=(("sendgrid.net", "pass"),))
    targets = {("s1", "contoso.example"): "s1.domainkey.u1.wl1.sendgrid.net"}
    sources, lines = lines_for(a, b, targets=targets)
    assert [s.verdict for s in sources] == ["compliant", "unknown"]
    own_line, other = lines
    assert (own_line.line_name, own_line.verdict, own_line.messages) == (
        "SendGrid (Twilio)", "compliant", 90)
    assert own_line.needs_decision and other.line_name.endswith("not signed for contoso.example")
    assert not other.needs_decision and other.verdict == "unknown" and other.records == ()
    assert "second" in other.advice and "someone else's" in other.advice
    assert own_line.set_aside == (SetAside(other.line_name, "unknown", 1, 10),)


def test_without_an_own_account_the_vendor_signed_mail_is_the_one_to_approve() -> None:
    b = activity("167.89.1.3", dkim=(("sendgrid.net", "smtpapi", "pass"),),
                 spf=(("sendgrid.net", "pass"),))
    _, (line,) = lines_for(b)
    assert (line.verdict, line.account, line.needs_decision) == ("needs-dkim", "", True)


def test_another_tenant_of_microsoft_365_is_an_impostor_on_its_own_line() -> None:
    spoof = activity("40.107.2.2", messages=1240,
                     dkim=(("evilcorp7.onmicrosoft.com", "selector1-evilcorp7-onmicrosoft-com",
                            "pass"),), spf=(("evilcorp7.onmicrosoft.com", "pass"),))
    sources, lines = lines_for(OWN_M365, spoof, targets=CONTOSO_TENANT)
    assert [s.verdict for s in sources] == ["compliant", "impostor"]
    own_line, other = lines
    assert own_line.messages == 900 and own_line.needs_decision
    assert other.line_name == ("Microsoft 365 (Exchange Online) \u2014 another tenant "
                               "(evilcorp7.onmicrosoft.com)")
    assert other.verdict == "impostor" and other.messages == 1240


def test_another_tenant_passing_spf_through_shared_servers_is_asked_about_not_accused() -> None:
    shared = activity("40.107.2.3", dkim=(("evilcorp7.onmicrosoft.com", "selector1", "pass"),),
                      spf=(("contoso.example", "pass"),), spf_aligned=10)
    sources, lines = lines_for(OWN_M365, shared, targets=CONTOSO_TENANT)
    assert sources[1].verdict == "unknown" and "evilcorp7.onmicrosoft.com" in sources[1].account
    assert not lines[1].needs_decision


def test_a_tenant_tied_to_the_domain_is_its_own() -> None:
    # DKIM not enabled: the tenant's aligned-SPF mail names it; its unaligned mail is the same
    aligned = activity("40.107.3.1", messages=50, spf=(("contoso.example", "pass"),),
                       dkim=(("contosoex.onmicrosoft.com", "selector1", "pass"),),
                       spf_aligned=50)
    unaligned = activity("40.107.3.2", messages=5, spf=(("contoso.example", "softfail"),),
                         dkim=(("contosoex.onmicrosoft.com", "selector1", "pass"),))
    sources, lines = lines_for(aligned, unaligned)
    assert [s.account for s in sources] == ["", ""]
    assert [s.verdict for s in sources] == ["needs-dkim", "needs-dkim"]
    assert len(lines) == 1 and lines[0].needs_decision


def test_the_domains_own_server_passing_spf_is_never_an_impostor() -> None:
    relay = activity("198.51.100.25", spf=(("contoso.example", "pass"),), spf_aligned=10)
    own_spf = {"contoso.example": (ipaddress.ip_network("198.51.100.25/32"),)}
    (source,), (line,) = lines_for(relay, domain_networks=own_spf)
    assert source.verdict == "unknown" and source.identification.in_domain_spf
    assert line.line_name == "Unidentified sources \u2014 listed in contoso.example's SPF"
    assert "your own server" in source.advice


def test_low_confidence_evidence_asks_instead_of_accusing() -> None:
    low = next(f for s in CATALOG.services for f in s.facts("spf_include")
               if f.confidence == "low" and s.key == "freshdesk")
    networks = {**NETWORKS, "freshdesk": (ipaddress.ip_network("103.248.240.0/22"),)}
    a = activity("103.248.241.19", spf=(("contoso.example", "softfail"),))
    ident = Identifier(CATALOG, EvidenceBundle({}, {}, networks)).identify(a)
    assert low and ident.service_key == UNKNOWN and ident.candidate == "freshdesk"
    verdict = source_verdict(ident, CATALOG)
    assert verdict.verdict == "unknown" and verdict.account.startswith("maybe Freshdesk")
    assert "Ask: does anyone here send through Freshdesk" in verdict.advice


def test_an_spf_pass_dns_does_not_back_names_nobody() -> None:
    # selector1 points at Microsoft 365, but the address is neither the domain's nor Microsoft's
    a = activity("198.51.100.77", dkim=(("contoso.example", "selector1", "pass"),),
                 spf=(("contoso.example", "pass"),), dkim_aligned=10, spf_aligned=10)
    own_spf = {"contoso.example": (ipaddress.ip_network("192.0.2.0/24"),)}
    (source,), _ = lines_for(a, targets=CONTOSO_TENANT, domain_networks=own_spf)
    ident = source.identification
    assert ident.service_key == UNKNOWN and ident.spf_disputed == "contoso.example"
    assert source.verdict == "unknown" and "(not counted)" in " ".join(ident.evidence)


def test_a_forwarder_keeping_dkim_is_not_the_signers_sender() -> None:
    # a university alias: Microsoft 365 signed it (selector1), the alias host passed it on
    a = activity("198.18.44.10", dkim=(("contoso.example", "selector1", "pass"),),
                 spf=(("contoso.example", "fail"),), dkim_aligned=10)
    (source,), (line,) = lines_for(a, targets=CONTOSO_TENANT)
    assert source.identification.service_key == UNKNOWN
    assert source.identification.forwarded_from == "microsoft365"
    assert source.verdict == "forwarded" and not line.needs_decision


def test_a_service_holding_the_domains_key_and_its_own_bounce_domain_sent_directly() -> None:
    a = activity("198.51.100.240", dkim=(("contoso.example", "ns1", "pass"),),
                 spf=(("bounces.niche-saas.test", "pass"),), dkim_aligned=10)
    targets = {("ns1", "contoso.example"): "ns1.contoso-example.dkim.niche-saas.test"}
    (source,), _ = lines_for(a, targets=targets)
    assert source.identification.delegated == "niche-saas.test"
    assert source.verdict == "unknown"


def test_a_parent_domain_is_the_subdomains_own() -> None:
    assert own("news.contoso.example", "contoso.example")
    assert own("contoso.example", "mail.contoso.example")
    assert not own("contoso.example", "example") and not own("contoso.example", "ntoso.example")


def test_a_line_is_compliant_only_when_nearly_all_its_mail_is() -> None:
    signed = activity("167.89.1.2", messages=80, dkim=(("contoso.example", "s1", "pass"),),
                      spf=(("em1.contoso.example", "pass"),), dkim_aligned=80, spf_aligned=80)
    unsigned = activity("167.89.1.4", messages=20, spf=(("em1.contoso.example", "pass"),),
                        spf_aligned=20)
    targets = {("s1", "contoso.example"): "s1.domainkey.u1.wl1.sendgrid.net"}
    sources, (line,) = lines_for(signed, unsigned, targets=targets)
    assert [s.verdict for s in sources] == ["compliant", "needs-dkim"]
    assert line.verdict == "needs-dkim" and line.dkim_aligned_pass == 80


def test_a_line_shows_its_largest_sources_and_counts_every_one() -> None:
    """Twenty-five sources of the domain's own SendGrid account, three of them not signed for
    it: the line carries its ten largest in full, and sums, splits by verdict, counts the DNS
    statuses of and gathers the selectors of all twenty-five."""
    signed = [activity(f"167.89.1.{n}", messages=100 + n,
                       dkim=(("contoso.example", f"s{n % 3}", "pass"),),
                       spf=(("em1.contoso.example", "pass"),), dkim_aligned=100 + n,
                       spf_aligned=100 + n) for n in range(22)]
    unsigned = [activity(f"167.89.2.{n}", messages=1 + n, spf=(("contoso.example", "pass"),),
                         spf_aligned=1 + n) for n in range(3)]
    reverse = {a.ip: Reverse(a.ip, (), (), ("timeout",)) for a in unsigned}
    _, (line,) = lines_for(*signed, *unsigned, reverse=reverse)
    assert line.service_key == "sendgrid" and line.needs_decision
    assert line.source_count == 25 and len(line.sources) == SHOWN_SOURCES
    assert [v.identification.activity.messages for v in line.sources] == list(
        range(121, 111, -1))
    assert line.messages == sum(a.messages for a in [*signed, *unsigned])
    parts = {p.verdict: (p.sources, p.messages) for p in line.parts}
    assert parts == {"compliant": (22, sum(a.messages for a in signed)),
                     "needs-dkim": (3, 6)}
    assert dict(line.dns_statuses) == {"failed for now": 3}
    assert line.selectors == (("s0", "contoso.example"), ("s1", "contoso.example"),
                              ("s2", "contoso.example"))


def test_the_domains_tenant_signature_relayed_by_google_is_forwarded() -> None:
    # DKIM not enabled: the tenant's aligned-SPF mail ties contosoex to the domain; a Gmail user
    # forwarding it keeps only that (unaligned) tenant signature
    aligned = activity("40.107.3.1", messages=50, spf=(("contoso.example", "pass"),),
                       dkim=(("contosoex.onmicrosoft.com", "selector1", "pass"),),
                       spf_aligned=50)
    relayed = activity("209.85.130.9", messages=4, spf=(("contoso.example", "softfail"),),
                       dkim=(("contosoex.onmicrosoft.com", "selector1", "pass"),))
    sources, lines = lines_for(aligned, relayed)
    assert sources[1].identification.service_key == "google-workspace"
    assert sources[1].verdict == "forwarded"
    assert [(s.service_key, s.needs_decision) for s in lines] == [
        ("google-workspace", False), ("microsoft365", True)]
    # without the tie (no aligned mail of that tenant) it stays a candidate to ask about
    (alone,), _ = lines_for(relayed)
    assert alone.verdict != "forwarded"
