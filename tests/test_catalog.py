"""The service catalog: the packaged data is valid, sourced and complete, every fact is
exercised by an evaluation case, and every rule the loader enforces is exercised by a small
broken catalog."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import date
from pathlib import Path

import pytest

from analysis.catalog import CATEGORIES, Catalog, CatalogError, Fact, PublishStep, load_catalog
from analysis.dnsevidence import DnsEvidence, make_resolver
from tests.dnslab.server import KnotServer
from tests.evaluation import load_sources
from tests.evaluation.coverage import Coverage, fact_coverage

SOURCE = "https://example.com/doc"


def fact(
    kind: str = "rdns_suffix",
    value: str = "example-mail.net",
    *,
    confidence: str = "high",
    shared: bool | None = None,
    checked: str = "2026-11-28",
    source: str = SOURCE,
) -> str:
    lines = [
        "[[services.evidence]]",
        f'kind = "{kind}"',
        f'value = "{value}"',
        f'source = "{source}"',
        f"checked = {checked}",
        f'confidence = "{confidence}"',
    ]
    if shared is not None:
        lines.append(f"shared = {'true' if shared else 'false'}")
    return "\n".join(lines) + "\n"


def service(
    key: str = "acme",
    *,
    evidence: str | None = None,
    extra: str = "",
    category: str = "esp",
    doc: str | None = SOURCE,
    name: str | None = "Acme Mail",
    publish: str = "",
) -> str:
    lines = ["[[services]]", f'key = "{key}"']
    if name is not None:
        lines.append(f'name = "{name}"')
    lines.append(f'category = "{category}"')
    if doc is not None:
        lines.append(f'doc = "{doc}"')
    if extra:
        lines.append(extra)
    body = "\n".join(lines) + "\n"
    body += fact() if evidence is None else evidence
    return body + publish + "\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "services.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> Catalog:
    return load_catalog(write(tmp_path, text))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


# --- the packaged catalog ----------------------------------------------------------------


def test_packaged_catalog_loads_and_is_cached(catalog: Catalog) -> None:
    assert load_catalog() is catalog


#: The day the catalog was last re-checked against the sources it cites (issue 12).
REVIEWED = date(2026, 12, 7)


def test_has_at_least_120_services(catalog: Catalog) -> None:
    assert len(catalog.services) >= 120


def test_every_category_is_represented(catalog: Catalog) -> None:
    assert {s.category for s in catalog.services} == CATEGORIES


def test_list_servers_and_forwarders_are_flagged_forwarder(catalog: Catalog) -> None:
    for s in catalog.services:
        if s.category in {"list-server", "forwarder"}:
            assert s.forwarder, s.key
        else:
            assert not s.forwarder, s.key


def test_low_confidence_facts_exist_and_are_marked(catalog: Catalog) -> None:
    low = [f for s in catalog.services for f in s.evidence if f.confidence == "low"]
    high = [f for s in catalog.services for f in s.evidence if f.confidence == "high"]
    assert low and high
    assert all(isinstance(f, Fact) and f.source.startswith("https://") for f in low)
    # Facts whose sources disagree are shipped low, e.g. Mailchimp's return-path seen as
    # mailchimpapp.net by one secondary source only.
    mailchimp = {
        f.value: f.confidence for f in catalog.get("mailchimp").facts("return_path_domain")
    }
    assert mailchimp == {"mcsv.net": "high", "mailchimpapp.net": "low"}


def test_every_fact_and_step_is_dated_and_sourced(catalog: Catalog) -> None:
    for s in catalog.services:
        assert s.doc.startswith("https://"), s.key
        items: list[Fact | PublishStep] = [*s.evidence, *s.publish]
        for item in items:
            assert item.source.startswith("https://") and "example." not in item.source, s.key
            assert date(2026, 11, 28) <= item.checked <= REVIEWED, (s.key, item)


def test_no_value_is_claimed_twice_unless_every_claimant_shares_it(catalog: Catalog) -> None:
    claims: dict[tuple[str, str], list[tuple[str, bool]]] = defaultdict(list)
    for s in catalog.services:
        for f in s.evidence:
            claims[f.kind, f.value].append((s.key, f.shared))
    for (kind, value), claimants in claims.items():
        if len(claimants) > 1:
            assert all(shared for _, shared in claimants), (kind, value, claimants)
        else:
            assert not claimants[0][1], f"{kind} {value!r} marked shared by one service only"
    assert len({k for k, _ in claims}) == 5  # every kind of fact is in use


def coverage_of(catalog: Catalog, dns_server: KnotServer) -> Coverage:
    async def run() -> Coverage:
        dns = DnsEvidence(make_resolver([f"{dns_server.host}:{dns_server.port}"]))
        return await fact_coverage(load_sources(catalog=catalog), catalog, dns)

    return asyncio.run(run())


def test_every_fact_is_used_by_an_evaluation_case(catalog: Catalog, dns_server: KnotServer) -> None:
    """Each fact is reached by some labeled row's own evidence (tests/evaluation/coverage.py)."""
    coverage = coverage_of(catalog, dns_server)
    assert not coverage.problems, coverage.problems
    assert not coverage.unused, "facts no evaluation case uses: " + ", ".join(
        f"{key} {kind} {value}" for key, kind, value in coverage.unused)
    assert len(coverage.used) == sum(len(s.evidence) for s in catalog.services)
    # a DKIM CNAME fact is used through the zone's CNAME, an include through its networks
    assert coverage.used["mailgun", "dkim_cname_suffix", "dkim1.mailgun.com"]
    assert coverage.used["microsoft365", "spf_include", "spf.protection.office365.us"]


def test_coverage_notices_a_fact_no_case_uses(tmp_path: Path, dns_server: KnotServer) -> None:
    packaged = resources_text()
    extra = fact("dkim_cname_suffix", "dkim.nobody-uses-this.net")
    anchor = '[[services]]\nkey = "happyfox"\n'
    text = packaged.replace(anchor, service("unused-esp", evidence=extra) + anchor)
    catalog = load_text(tmp_path, text)
    coverage = coverage_of(catalog, dns_server)
    assert coverage.unused == (("unused-esp", "dkim_cname_suffix", "dkim.nobody-uses-this.net"),)


def resources_text() -> str:
    return (Path(__file__).resolve().parents[1] / "analysis" / "data" / "services.toml").read_text(
        encoding="utf-8")


def test_shared_facts_are_shared_by_every_claimant(catalog: Catalog) -> None:
    matches = catalog.match_suffix("rdns_suffix", "mail-sn1nam02.outbound.protection.outlook.com")
    assert {s.key for s, _ in matches} == {
        "microsoft365",
        "outlook-consumer",
        "microsoft365-forwarding",
    }
    assert all(f.shared for _, f in matches)
    google = catalog.match_suffix("rdns_suffix", "mail-wm1-f41.google.com")
    assert {"google-workspace", "gmail", "google-groups"} <= {s.key for s, _ in google}


def test_platform_points_at_the_service_it_sends_through(catalog: Catalog) -> None:
    relay = catalog.get("microsoft365-forwarding")
    assert relay.platform == "microsoft365"
    assert catalog.get(relay.platform).category == "mailbox"


def test_get_unknown_key_raises_key_error(catalog: Catalog) -> None:
    with pytest.raises(KeyError):
        catalog.get("no-such-service")


# --- the services the reference documents, with the facts it gives ------------------------


def values(catalog: Catalog, key: str, kind: str) -> set[str]:
    return {f.value for f in catalog.get(key).facts(kind)}


def test_microsoft_365(catalog: Catalog) -> None:
    assert {
        "spf.protection.outlook.com",
        "spf.protection.office365.us",
        "spf.protection.partner.outlook.cn",
    } <= values(catalog, "microsoft365", "spf_include")
    assert values(catalog, "microsoft365", "dkim_domain") == {"onmicrosoft.com"}
    assert {"onmicrosoft.com", "dkim.mail.microsoft"} <= values(
        catalog, "microsoft365", "dkim_cname_suffix"
    )
    cnames = [p for p in catalog.get("microsoft365").publish if p.kind == "dkim_cname"]
    assert {p.name for p in cnames} == {"selector1._domainkey", "selector2._domainkey"}
    assert any(p.value.endswith(".onmicrosoft.com") for p in cnames)  # legacy form
    assert any(p.value.endswith("-v1.dkim.mail.microsoft") for p in cnames)  # May 2025 form
    (tenant,) = catalog.match_suffix("dkim_domain", "contoso.onmicrosoft.com")
    assert tenant[0].key == "microsoft365"


def test_google_workspace(catalog: Catalog) -> None:
    assert [s.key for s in catalog.by_spf_include("_spf.google.com")] == ["google-workspace"]
    (match,) = catalog.match_suffix("dkim_domain", "example-test.20230601.gappssmtp.com")
    assert match[0].key == "google-workspace"


def test_sendgrid(catalog: Catalog) -> None:
    assert [s.key for s in catalog.by_spf_include("sendgrid.net")] == ["sendgrid"]
    (match,) = catalog.match_suffix("dkim_cname_suffix", "s1.domainkey.u2744887.wl138.sendgrid.net")
    assert match[0].key == "sendgrid"
    steps = {p.name: p.value for p in catalog.get("sendgrid").publish}
    assert steps["s1._domainkey"] == "s1.domainkey.u{account}.wl{n}.sendgrid.net"


def test_mailchimp(catalog: Catalog) -> None:
    assert [s.key for s in catalog.by_spf_include("servers.mcsv.net")] == ["mailchimp"]
    assert {"mcsv.net", "mcdlv.net", "rsgsv.net"} <= values(catalog, "mailchimp", "rdns_suffix")
    (match,) = catalog.match_suffix("dkim_cname_suffix", "dkim2.mcsv.net")
    assert match[0].key == "mailchimp"


def test_amazon_ses(catalog: Catalog) -> None:
    assert [s.key for s in catalog.by_spf_include("amazonses.com")] == ["amazon-ses"]
    (match,) = catalog.match_suffix("dkim_cname_suffix", "abc123token.dkim.amazonses.com")
    assert match[0].key == "amazon-ses"
    (bounce,) = catalog.match_suffix("return_path_domain", "eu-west-1.amazonses.com")
    assert bounce[0].key == "amazon-ses"


def test_hubspot(catalog: Catalog) -> None:
    (match,) = catalog.match_suffix("return_path_domain", "1axbtx.bf.hubspotemail.net")
    assert match[0].key == "hubspot"
    assert "hubspotemail.net" in values(catalog, "hubspot", "rdns_suffix")


def test_salesforce(catalog: Catalog) -> None:
    (match,) = catalog.match_suffix("dkim_cname_suffix", "sfdkim1.539vtd.custdkim.salesforce.com")
    assert match[0].key == "salesforce"
    assert catalog.get("salesforce").category == "crm"


def test_zendesk(catalog: Catalog) -> None:
    assert [s.key for s in catalog.by_spf_include("mail.zendesk.com")] == ["zendesk"]
    names = {p.name for p in catalog.get("zendesk").publish}
    assert {"zendesk1._domainkey", "zendesk2._domainkey"} <= names


def test_mimecast(catalog: Catalog) -> None:
    assert [s.key for s in catalog.by_spf_include("_netblocks.mimecast.com")] == ["mimecast"]
    assert [s.key for s in catalog.by_spf_include("EU._netblocks.mimecast.com.")] == ["mimecast"]
    assert catalog.get("mimecast").category == "security-gateway"


# --- the mismatches issue 12 found against the vendors' setup pages -----------------------


def cname_owner(catalog: Catalog, target: str) -> tuple[str, str]:
    (match,) = catalog.match_suffix("dkim_cname_suffix", target)
    return match[0].key, match[1].confidence


def test_dkim_cname_targets_of_the_issue(catalog: Catalog) -> None:
    assert cname_owner(catalog, "contoso-com.hs06a.dkim.hubspotemail.net") == ("hubspot", "low")
    assert cname_owner(catalog, "pdk1._domainkey.9d876.dkim1.mailgun.com") == ("mailgun", "high")
    assert cname_owner(catalog, "b1.contoso-com.dkim.brevo.com") == ("brevo", "low")
    assert cname_owner(catalog, "dkim.klaviyomail.com") == ("klaviyo", "high")
    assert cname_owner(catalog, "wl2201s1.domainkey.freshemail.io") == ("freshdesk", "low")
    assert cname_owner(catalog, "atlassian-3cf567.dkim.atlassian.net") == ("atlassian", "low")
    assert cname_owner(catalog, "happyfox1._domainkey.happyfox.com") == ("happyfox", "low")
    assert cname_owner(catalog, "abc.dkim.custom-email-domain.stripe.com") == ("stripe", "low")


def test_includes_and_publish_steps_of_the_issue(catalog: Catalog) -> None:
    for include, key in [("spf.brevo.com", "brevo"), ("_spf.klaviyomail.com", "klaviyo"),
                         ("cust-spf.exacttarget.com", "salesforce-marketing-cloud"),
                         ("_spf.qualtrics.com", "qualtrics"), ("shops.shopify.com", "shopify")]:
        assert [s.key for s in catalog.by_spf_include(include)] == [key]
    steps = {(p.kind, p.name): p.value for p in catalog.get("atlassian").publish}
    assert steps["return_path_cname", "atlassian-bounces"] == "bounces.mail-us.atlassian.net"
    mailgun = {p.name for p in catalog.get("mailgun").publish}
    assert {"pdk1._domainkey.{sending-subdomain}", "pdk2._domainkey.{sending-subdomain}"} <= mailgun
    freshdesk = [p for p in catalog.get("freshdesk").publish if p.kind.endswith("cname")]
    assert len(freshdesk) == 4  # three selectors and the bounce host


def test_zoho_campaigns_is_told_from_zoho_mail_by_its_bounce_domain(catalog: Catalog) -> None:
    (match,) = catalog.match_suffix("return_path_domain", "bounce.zcsend.net")
    assert match[0].key == "zoho-campaigns"
    assert catalog.match_suffix("return_path_domain", "zoho.eu") == ()


def test_ptr_only_facts_are_backed_or_upgraded(catalog: Catalog) -> None:
    # Qualtrics documents qemailserver.com as its sending domain and _spf.qualtrics.com
    assert {(f.kind, f.value, f.confidence) for f in catalog.get("qualtrics").evidence} == {
        ("rdns_suffix", "qemailserver.com", "high"), ("spf_include", "_spf.qualtrics.com", "high")}
    assert {f.kind for f in catalog.get("shopify").evidence} == {"rdns_suffix", "spf_include"}


# --- suffix matching ---------------------------------------------------------------------


def test_suffix_match_respects_label_boundaries(catalog: Catalog) -> None:
    (match,) = catalog.match_suffix("rdns_suffix", "o1.ptr123.sendgrid.net")
    assert match[0].key == "sendgrid"
    assert catalog.match_suffix("rdns_suffix", "notsendgrid.net") == ()
    assert catalog.match_suffix("rdns_suffix", "sendgrid.net.evil.example") == ()
    (exact,) = catalog.match_suffix("rdns_suffix", "SendGrid.NET.")
    assert exact[0].key == "sendgrid"


def test_longest_suffix_wins(tmp_path: Path) -> None:
    text = service("broad", evidence=fact(value="bigmail.net")) + service(
        "narrow", evidence=fact(value="eu.bigmail.net")
    )
    catalog = load_text(tmp_path, text)
    assert [s.key for s, _ in catalog.match_suffix("rdns_suffix", "a.eu.bigmail.net")] == ["narrow"]
    assert [s.key for s, _ in catalog.match_suffix("rdns_suffix", "a.us.bigmail.net")] == ["broad"]
    assert catalog.match_suffix("rdns_suffix", "bigmail.org") == ()


def test_match_suffix_rejects_unknown_kind(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="unknown evidence kind"):
        catalog.match_suffix("mx_host", "example.com")


def test_by_spf_include_is_exact_not_suffix(catalog: Catalog) -> None:
    assert catalog.by_spf_include("x.sendgrid.net") == ()


# --- every validation rule, each by a small broken file ----------------------------------


def test_minimal_valid_catalog_loads(tmp_path: Path) -> None:
    catalog = load_text(tmp_path, service())
    (acme,) = catalog.services
    assert acme.platform is None and acme.forwarder is False and acme.publish == ()
    assert acme.evidence[0].checked == date(2026, 11, 28)
    assert acme.evidence[0].shared is False


BROKEN = {
    "missing name": (service(name=None), r"acme: missing required field 'name'"),
    "missing doc": (service(doc=None), r"acme: missing required field 'doc'"),
    "doc not https": (service(doc="http://example.com"), r"acme: doc must be an https:// URL"),
    "bad category": (service(category="bulk"), r"acme: category 'bulk' is not one of"),
    "bad key": (service(key="Acme Mail"), r"key must be a lowercase slug"),
    "no evidence": (service(evidence=""), r"acme: needs at least one \[\[services.evidence\]\]"),
    "bad fact kind": (
        service(evidence=fact(kind="mx_host")),
        r"acme: evidence\[0\] kind 'mx_host' is not one of",
    ),
    "uppercase domain": (
        service(evidence=fact(value="Example.com")),
        r"acme: evidence\[0\] value 'Example.com' must be a lowercase domain",
    ),
    "scheme in domain": (
        service(evidence=fact(value="https://example.com")),
        r"acme: evidence\[0\] value .* must be a lowercase domain without scheme",
    ),
    "leading dot": (
        service(evidence=fact(value=".example.com")),
        r"acme: evidence\[0\] value '.example.com' must be a lowercase domain",
    ),
    "trailing dot": (
        service(evidence=fact(value="example.com.")),
        r"acme: evidence\[0\] value 'example.com.' must be a lowercase domain",
    ),
    "bare tld": (
        service(evidence=fact(value="com")),
        r"acme: evidence\[0\] value 'com' must be a lowercase domain",
    ),
    "bad confidence": (
        service(evidence=fact(confidence="medium")),
        r"acme: evidence\[0\] confidence must be 'high' or 'low'",
    ),
    "source not https": (
        service(evidence=fact(source="ftp://example.com/x")),
        r"acme: evidence\[0\] source must be an https:// URL",
    ),
    "checked not a date": (
        service(evidence=fact(checked='"2026-11-28"')),
        r"acme: evidence\[0\] checked must be a TOML date",
    ),
    "checked a datetime": (
        service(evidence=fact(checked="2026-11-28T10:00:00Z")),
        r"acme: evidence\[0\] checked must be a TOML date",
    ),
    "duplicate fact": (
        service(evidence=fact() + fact()),
        r"acme: duplicate fact rdns_suffix 'example-mail.net'",
    ),
    "unknown field": (
        service(extra='plattform = "x"'),
        r"acme: service has unknown fields \['plattform'\]",
    ),
    "forwarder not bool": (service(extra='forwarder = "yes"'), r"acme: forwarder must be true"),
    "bad publish kind": (
        service(
            publish='[[services.publish]]\nkind = "mx"\nname = "@"\nvalue = "mx.example.com"\n'
            f'source = "{SOURCE}"\nchecked = 2026-11-28\n'
        ),
        r"acme: publish\[0\] kind 'mx' is not one of",
    ),
    "publish missing value": (
        service(
            publish='[[services.publish]]\nkind = "dkim_cname"\nname = "s1._domainkey"\n'
            f'source = "{SOURCE}"\nchecked = 2026-11-28\n'
        ),
        r"acme: publish\[0\] missing required field 'value'",
    ),
    "duplicate key": (
        service() + service(evidence=fact(value="other-mail.net")),
        r"acme: duplicate key",
    ),
    "unknown platform": (
        service(extra='platform = "sendgrid"'),
        r"acme: platform 'sendgrid' is not a service key",
    ),
    "platform is itself": (
        service(extra='platform = "acme"'),
        r"acme: platform must name another service",
    ),
    "claimed twice, unshared": (
        service("acme", evidence=fact(value="shared-mail.net", shared=True))
        + service("beta", evidence=fact(value="shared-mail.net")),
        r"beta: rdns_suffix 'shared-mail.net' is also claimed by acme; every claimant must mark",
    ),
    "claimed twice, neither shared": (
        service("acme", evidence=fact(value="same-mail.net"))
        + service("beta", evidence=fact(value="same-mail.net")),
        r"acme: rdns_suffix 'same-mail.net' is also claimed by beta",
    ),
    "shared but alone": (
        service(evidence=fact(shared=True)),
        r"acme: rdns_suffix 'example-mail.net' is marked shared but no other service claims it",
    ),
    "no services": ("# nothing here\n", r"needs a non-empty \[\[services\]\] array"),
    "not toml": ("[[services]\nkey = ", r"not valid UTF-8 TOML"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_catalog_is_rejected_with_a_precise_message(tmp_path: Path, case: str) -> None:
    text, message = BROKEN[case]
    with pytest.raises(CatalogError, match=message) as excinfo:
        load_text(tmp_path, text)
    assert "\n" not in str(excinfo.value)


def test_same_value_under_different_kinds_is_not_a_conflict(tmp_path: Path) -> None:
    text = service("acme", evidence=fact("rdns_suffix", "acme-mail.net")) + service(
        "beta", evidence=fact("return_path_domain", "acme-mail.net")
    )
    assert len(load_text(tmp_path, text).services) == 2


def test_shared_by_both_claimants_is_accepted(tmp_path: Path) -> None:
    text = service("acme", evidence=fact(value="pool-mail.net", shared=True)) + service(
        "beta", evidence=fact(value="pool-mail.net", shared=True)
    )
    catalog = load_text(tmp_path, text)
    assert {s.key for s, _ in catalog.match_suffix("rdns_suffix", "x.pool-mail.net")} == {
        "acme",
        "beta",
    }
