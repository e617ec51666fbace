"""The loopback DNS test server (knotd + tests/dnslab/zones) answers every case as intended.

Queries go through plain dnspython (async resolver, or dns.query for wire-level facts such as
the TC bit); nothing is patched. The SPF walkers below are test-only helpers that prove the
zone data has the intended shape (lookup counts, ranges); they are not the product's code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from tests.dnslab import server as knot
from tests.dnslab.blackhole import BlackHole
from tests.dnslab.server import KnotServer

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def txt(r: dns.asyncresolver.Resolver, name: str) -> list[str]:
    """Each TXT record of ``name`` with its character-strings joined (RFC 7208 3.3)."""
    answer = await r.resolve(name, "TXT")
    return sorted(b"".join(rd.strings).decode() for rd in answer)


async def spf(r: dns.asyncresolver.Resolver, name: str) -> str:
    records = [t for t in await txt(r, name) if t.lower().split(" ")[0] == "v=spf1"]
    assert len(records) == 1, (name, records)
    return records[0]


def _terms(record: str) -> list[tuple[str, str]]:
    """(mechanism or modifier name, argument) for each term after v=spf1."""
    out = []
    for term in record.split()[1:]:
        term = term.lstrip("+-~?")
        name, _sep, arg = term.partition("=") if "=" in term.split(":")[0] else term.partition(":")
        out.append((name.split("/")[0].lower(), arg))
    return out


async def count_lookups(r: dns.asyncresolver.Resolver, domain: str) -> int:
    """DNS-querying terms of the whole tree (RFC 7208 4.6.4), for an IP that matches nothing."""
    total = 0
    for name, arg in _terms(await spf(r, domain)):
        if name in ("include", "redirect"):
            total += 1 + await count_lookups(r, arg)
        elif name in ("a", "mx", "ptr", "exists"):
            total += 1
    return total


async def networks(r: dns.asyncresolver.Resolver, domain: str) -> list[Network]:
    """ip4/ip6 networks of the include/redirect tree (strict: no host bits set)."""
    nets: list[Network] = []
    for name, arg in _terms(await spf(r, domain)):
        if name in ("ip4", "ip6"):
            nets.append(ipaddress.ip_network(arg, strict=True))
        elif name in ("include", "redirect"):
            nets += await networks(r, arg)
    return nets


async def addresses(r: dns.asyncresolver.Resolver, name: str) -> set[str]:
    found: set[str] = set()
    for rdtype in ("A", "AAAA"):
        with contextlib.suppress(dns.resolver.NoAnswer):
            found |= {rd.address for rd in await r.resolve(name, rdtype)}
    return found


async def fcrdns(r: dns.asyncresolver.Resolver, ip: str) -> dict[str, bool | str]:
    """PTR name -> forward-confirmed? (or the exception name of the forward lookup)."""
    out: dict[str, bool | str] = {}
    for rd in await r.resolve_address(ip):
        name = rd.target.to_text()
        try:
            out[name] = ipaddress.ip_address(ip).compressed in await addresses(r, name)
        except dns.resolver.NXDOMAIN:
            out[name] = "NXDOMAIN"
    return out


@pytest.fixture
def r(dns_server: KnotServer) -> dns.asyncresolver.Resolver:
    return dns_server.resolver()


# -- the server itself -----------------------------------------------------------------------


def test_server_answers_on_loopback_over_udp_and_tcp(dns_server: KnotServer) -> None:
    assert dns_server.host == "127.0.0.1" and dns_server.port > 0
    assert all(ipaddress.ip_address(h).is_loopback for h in dns_server.hosts)
    assert dns_server.pid is not None  # started, and answering below (how fast is bench's)
    query = dns.message.make_query(".", "SOA")
    for host in dns_server.hosts:  # 127.0.0.1 and, when available, ::1
        for send in (dns.query.udp, dns.query.tcp):
            reply = send(query, host, port=dns_server.port, timeout=2.0)
            assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA


def test_resolver_helper_is_plain_and_uncached(dns_server: KnotServer) -> None:
    r = dns_server.resolver(lifetime=1.5)
    assert isinstance(r, dns.asyncresolver.Resolver)
    assert r.nameservers == ["127.0.0.1"] and r.port == dns_server.port
    assert r.lifetime == 1.5 and r.cache is None and r.edns == -1  # no EDNS by default
    if dns_server.ipv6_host:
        v6 = dns_server.resolver(host=dns_server.ipv6_host)
        assert run(txt(v6, "_dmarc.contoso.com"))[0].startswith("v=DMARC1; p=none")


def test_nxdomain_versus_noanswer(r: dns.asyncresolver.Resolver) -> None:
    async def check() -> None:
        with pytest.raises(dns.resolver.NXDOMAIN):
            await r.resolve("does-not-exist.example", "TXT")
        with pytest.raises(dns.resolver.NXDOMAIN):  # unknown TLDs too: one root zone
            await r.resolve("anything.invalid", "A")
        with pytest.raises(dns.resolver.NoAnswer):  # name exists, type does not
            await r.resolve("www.contoso.com", "AAAA")
        with pytest.raises(dns.resolver.NoAnswer):
            await r.resolve("notxt.void.spf.test", "TXT")
        with pytest.raises(dns.resolver.NoAnswer):  # empty non-terminal
            await r.resolve("eu.contoso.com", "A")

    run(check())


def test_second_instance_starts_and_stops_cleanly(dns_server: KnotServer) -> None:
    with KnotServer(ipv6=False) as other:
        assert other.port != dns_server.port
        workdir, proc = other.workdir, other._proc
        assert workdir is not None and proc is not None and proc.poll() is None
        assert run(txt(other.resolver(), "mail.zendesk.com"))[0].startswith("v=spf1 ")
    assert proc.poll() is not None and not workdir.exists()


def test_missing_knotd_fails_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knot.shutil, "which", lambda _name: None)
    monkeypatch.setattr(knot, "_KNOTD_CANDIDATES", ("/nonexistent/sbin/knotd",))
    with pytest.raises(knot.KnotNotInstalledError) as info:
        KnotServer().start()
    message = str(info.value)
    assert "\n" not in message and "install Debian's knot: apt-get install knot" in message


def test_broken_zone_file_fails_fast_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.zone").write_text("ok.example. A 192.0.2.1\nbad.example. A 192.0.2\n")
    server = KnotServer(tmp_path, ipv6=False)
    with pytest.raises(knot.KnotStartError, match=r"bad\.zone', line 2") as info:
        server.start()
    # Failed fast: on the zone's load error, not by waiting out the start timeout.
    assert str(info.value).startswith("the root zone did not load") or \
        str(info.value).startswith("knotd exited"), str(info.value).splitlines()[0]
    server.stop()  # removes the work dir kept for inspection


# -- faults -----------------------------------------------------------------------------------


def test_servfail_zone_raises_no_nameservers(dns_server: KnotServer) -> None:
    r = dns_server.resolver()
    for name in ("_spf.servfail.test", "_dmarc.servfail.test", "servfail.test"):
        with pytest.raises(dns.resolver.NoNameservers, match="SERVFAIL"):
            run(r.resolve(name, "TXT"))
    query = dns.message.make_query("_spf.servfail.test", "TXT")
    reply = dns.query.udp(query, dns_server.host, port=dns_server.port, timeout=2.0)
    assert reply.rcode() == dns.rcode.SERVFAIL
    # an SPF include pointing into it (temperror for the product)
    assert "include:_spf.servfail.test" in run(spf(r, "tempfail.spf.test"))


def test_blackhole_times_out_within_lifetime(dns_blackhole: BlackHole) -> None:
    assert ipaddress.ip_address(dns_blackhole.host).is_loopback
    r = dns_blackhole.resolver(lifetime=0.3)
    for tcp in (False, True):
        with pytest.raises(dns.resolver.LifetimeTimeout) as info:
            run(r.resolve("contoso.com", "TXT", tcp=tcp))
        # Gave up by its lifetime, after a bounded number of tries, each one timing out.
        tries = info.value.kwargs["errors"]
        assert 1 <= len(tries) <= 10, tries
        assert all(isinstance(t[3], dns.exception.Timeout) for t in tries), tries
    assert dns_blackhole.udp_datagrams >= 1
    assert dns_blackhole.tcp_connections >= 1 and dns_blackhole.tcp_bytes > 0


def test_blackhole_stops_and_frees_its_port() -> None:
    hole = BlackHole().start()
    port = hole.port
    hole.stop()
    assert knot._port_free("127.0.0.1", port)


def test_truncated_udp_answer_falls_back_to_tcp(dns_server: KnotServer) -> None:
    host, port = dns_server.host, dns_server.port
    query = dns.message.make_query("bigtxt.faults.test", "TXT")  # no EDNS: 512-byte UDP limit
    assert query.edns < 0
    over_udp = dns.query.udp(query, host, port=port, timeout=2.0, ignore_trailing=True)
    assert over_udp.flags & dns.flags.TC
    assert sum(len(rrset) for rrset in over_udp.answer) < 9
    over_tcp = dns.query.tcp(query, host, port=port, timeout=2.0)
    assert not over_tcp.flags & dns.flags.TC and len(over_tcp.answer[0]) == 9
    assert len(over_tcp.to_wire()) > 512

    r = dns_server.resolver()  # no EDNS: dnspython sees TC=1 over UDP and retries over TCP
    records = run(txt(r, "bigtxt.faults.test"))
    assert len(records) == 9
    assert "v=spf1 include:spf.protection.outlook.com include:_spf.google.com -all" in records


def test_answer_too_big_even_for_edns_1232(dns_server: KnotServer) -> None:
    host, port = dns_server.host, dns_server.port
    query = dns.message.make_query("hugetxt.faults.test", "TXT", use_edns=0, payload=1232)
    assert dns.query.udp(query, host, port=port, timeout=2.0).flags & dns.flags.TC
    query = dns.message.make_query("bigtxt.faults.test", "TXT", use_edns=0, payload=1232)
    assert not dns.query.udp(query, host, port=port, timeout=2.0).flags & dns.flags.TC
    r = dns_server.resolver()
    r.use_edns(0, 0, 1232)
    assert len(run(txt(r, "hugetxt.faults.test"))) == 15


# -- SPF ----------------------------------------------------------------------------------------


def test_spf_include_loops(r: dns.asyncresolver.Resolver) -> None:
    async def check() -> None:
        assert "include:loop-b.spf.test" in await spf(r, "loop-a.spf.test")
        assert "include:loop-a.spf.test" in await spf(r, "loop-b.spf.test")
        assert "include:self-loop.spf.test" in await spf(r, "self-loop.spf.test")
        assert "redirect=redirect-loop.spf.test" in await spf(r, "redirect-loop.spf.test")

    run(check())


@pytest.mark.parametrize(
    ("domain", "lookups"),
    [
        ("toomany.spf.test", 11),
        ("ten.spf.test", 10),
        ("chain.spf.test", 11),
        ("bloated.example", 14),
        ("contoso.com", 7),
        ("northwind.example", 4),
    ],
)
def test_spf_lookup_counts(r: dns.asyncresolver.Resolver, domain: str, lookups: int) -> None:
    assert run(count_lookups(r, domain)) == lookups


def test_spf_void_lookup_targets(r: dns.asyncresolver.Resolver) -> None:
    async def check() -> None:
        assert (
            "include:nx1.void.spf.test include:notxt.void.spf.test include:nx2.void.spf.test"
            in (await spf(r, "void.spf.test"))
        )
        assert "exists:nx3.void.spf.test" in await spf(r, "void-a.spf.test")
        for name in ("nx1.void.spf.test", "nx2.void.spf.test", "nx3.void.spf.test"):
            for rdtype in ("TXT", "A"):
                with pytest.raises(dns.resolver.NXDOMAIN):
                    await r.resolve(name, rdtype)
        with pytest.raises(dns.resolver.NoAnswer):
            await r.resolve("notxt.void.spf.test", "TXT")
        with pytest.raises(dns.resolver.NoAnswer):
            await r.resolve("noaddr.void.spf.test", "A")

    run(check())


def test_spf_record_split_into_two_strings(r: dns.asyncresolver.Resolver) -> None:
    async def check() -> None:
        answer = await r.resolve("split.spf.test", "TXT")
        assert len(answer) == 1 and len(answer[0].strings) == 2
        assert await spf(r, "split.spf.test") == (
            "v=spf1 ip4:198.51.100.0/24 include:_spf.google.com "
            "include:spf.protection.outlook.com -all"
        )
        assert await spf(r, "split-mid.spf.test") == "v=spf1 ip4:198.51.100.0/24 -all"
        # long real records are multi-string too
        outlook = await r.resolve("spf.protection.outlook.com", "TXT")
        assert len(outlook[0].strings) > 1

    run(check())


def test_spf_two_records_and_no_record(r: dns.asyncresolver.Resolver) -> None:
    records = run(txt(r, "twospf.spf.test"))
    assert len([t for t in records if t.startswith("v=spf1 ")]) == 2
    assert not [t for t in run(txt(r, "nospf.spf.test")) if t.startswith("v=spf1")]
    # SPF next to unrelated TXT records
    assert len(run(txt(r, "contoso.com"))) == 3


def test_spf_all_qualifiers_redirect_exists_ptr(r: dns.asyncresolver.Resolver) -> None:
    async def check() -> None:
        assert (await spf(r, "plusall.spf.test")).endswith(" +all")
        assert (await spf(r, "neutral.spf.test")).endswith(" ?all")
        assert (await spf(r, "softfail.spf.test")).endswith(" ~all")
        assert "all" not in await spf(r, "noall.spf.test")
        assert await spf(r, "redirect.spf.test") == "v=spf1 redirect=_spf.northwind.example"
        assert (await spf(r, "_spf.northwind.example")).startswith("v=spf1 ip4:198.51.100.0/24")
        assert "redirect=nospf.spf.test" in await spf(r, "redirect-none.spf.test")
        assert (await spf(r, "redirect-with-all.spf.test")).startswith("v=spf1 -all redirect=")
        assert "exists:%{i}._spf.exists.spf.test" in await spf(r, "exists.spf.test")
        listed = await r.resolve("198.51.100.50._spf.exists.spf.test", "A")
        assert [rd.address for rd in listed] == ["127.0.0.2"]
        nibbles = ".".join(ipaddress.ip_address("2001:db8:5100::50").exploded.replace(":", ""))
        assert await r.resolve(f"{nibbles}._spf.exists.spf.test", "A")
        with pytest.raises(dns.resolver.NXDOMAIN):
            await r.resolve("198.51.100.51._spf.exists.spf.test", "A")
        assert await r.resolve("allowed.exists.spf.test", "A")
        assert "ptr:northwind.example" in await spf(r, "ptr.spf.test")
        assert "ip4:300.1.2.3" in await spf(r, "syntax.spf.test")

    run(check())


def test_spf_a_and_mx_mechanisms_resolve(r: dns.asyncresolver.Resolver) -> None:
    async def check() -> None:
        record = await spf(r, "northwind.example")
        assert record.startswith("v=spf1 a mx ")
        assert await addresses(r, "northwind.example") == {"198.51.100.20", "2001:db8:5100::20"}
        mx = sorted(
            (rd.preference, rd.exchange.to_text())
            for rd in await r.resolve("northwind.example", "MX")
        )
        assert mx == [(10, "mx1.northwind.example."), (20, "mx2.northwind.example.")]
        assert await addresses(r, "mx2.northwind.example") == {"198.51.100.26", "2001:db8:5100::26"}
        cidr = await spf(r, "cidr.spf.test")
        assert "a:relay.cidr.spf.test/28" in cidr and "mx/24//64" in cidr
        assert await addresses(r, "relay.cidr.spf.test") == {"203.0.113.130"}
        assert await addresses(r, "mx.cidr.spf.test") == {"203.0.113.200", "2001:db8:113:1::200"}
        nets = await networks(r, "cidr.spf.test")
        assert ipaddress.ip_network("203.0.113.64/26") in nets
        assert ipaddress.ip_network("2001:db8:113::/48") in nets

    run(check())


# -- catalog services -------------------------------------------------------------------------

SERVICES = {
    "spf.protection.outlook.com": ["40.107.22.52", "2a01:111:f403:2612::700", "51.4.72.10"],
    "_spf.google.com": ["209.85.220.41", "2607:f8b0:4864:20::d33", "35.191.1.1"],
    "sendgrid.net": ["149.72.126.143", "167.89.123.58"],
    "servers.mcsv.net": ["205.201.130.1"],
    "amazonses.com": ["54.240.8.10"],
    "mailgun.org": ["159.135.224.10", "141.193.32.10"],
    "spf.mandrillapp.com": ["198.2.180.1"],
    "mail.zendesk.com": ["192.161.150.1"],
    "_spf.salesforce.com": ["136.147.176.1"],
    "spf.mtasv.net": ["50.31.156.100"],
    "mktomail.com": ["199.15.214.45"],
    "spf.brevo.com": ["77.32.148.10"],
    "spf.constantcontact.com": ["208.75.123.10"],
}
IMPOSTOR_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "2001:db8::/32")]


def test_service_include_trees(r: dns.asyncresolver.Resolver) -> None:
    async def check() -> None:
        trees = await asyncio.gather(*(networks(r, root) for root in SERVICES))
        for (root, sample_ips), nets in zip(SERVICES.items(), trees, strict=True):
            assert nets, root
            for ip in map(ipaddress.ip_address, sample_ips):
                assert any(ip in net for net in nets), (root, ip)
            assert not any(
                n.overlaps(i) for n in nets for i in IMPOSTOR_NETS if n.version == i.version
            ), root
        assert "include:spfd.protection.outlook.com" in await spf(r, "spf.protection.outlook.com")
        assert "include:_netblocks3.google.com" in await spf(r, "_spf.google.com")
        mailgun = await spf(r, "mailgun.org")
        assert "include:_spf.mailgun.org include:_spf.eu.mailgun.org" in mailgun
        assert await count_lookups(r, "_spf.google.com") == 3
        assert await count_lookups(r, "spf.sendinblue.com") == 1

    run(check())


# -- reverse DNS ----------------------------------------------------------------------------------


def test_reverse_dns_forward_confirmed(r: dns.asyncresolver.Resolver) -> None:
    expected = {
        "209.85.220.41": {"mail-sor-f41.google.com.": True},
        "40.107.22.52": {"mail-am6eur05on2052.outbound.protection.outlook.com.": True},
        "2a01:111:f403:2612::700": {"mail-db8eur05on20700.outbound.protection.outlook.com.": True},
        "2607:f8b0:4864:20::d33": {"mail-io1-xd33.google.com.": True},
        "149.72.126.143": {"wrqvbnbv.outbound-mail.sendgrid.net.": True},
        "54.240.8.10": {"a8-10.smtp-out.amazonses.com.": True},
        "198.2.180.1": {"mail180-1.suw21.mandrillapp.com.": True},
        "198.51.100.10": {"mail.contoso.com.": True},
        "2001:db8:5100::10": {"mail.contoso.com.": True},
        "2001:db8:5100::26": {"mx2.northwind.example.": True},
        # two PTRs, both confirmed / only one confirmed
        "198.51.100.25": {"mx1.northwind.example.": True, "mail.northwind.example.": True},
        "198.51.100.26": {"smtp.northwind.example.": True, "stale.northwind.example.": "NXDOMAIN"},
        # not forward-confirmed
        "192.0.2.66": {"mail-sor-f66.google.com.": False},
        "192.0.2.67": {"mail-am6eur05on2999.outbound.protection.outlook.com.": "NXDOMAIN"},
        "192.0.2.68": {"noaddr.impostor.example.": False},
        "2001:db8:1::66": {"mail-io1-xd33.google.com.": False},
    }

    async def check() -> dict[str, dict[str, bool | str]]:
        results = await asyncio.gather(*(fcrdns(r, ip) for ip in expected))
        return dict(zip(expected, results, strict=True))

    assert run(check()) == expected


def test_reverse_dns_without_ptr(r: dns.asyncresolver.Resolver) -> None:
    for ip in ("192.0.2.99", "2001:db8:1::99"):
        with pytest.raises(dns.resolver.NXDOMAIN):
            run(r.resolve_address(ip))


# -- DKIM --------------------------------------------------------------------------------------


def _key_bits(record: str) -> int:
    tags = dict(t.strip().split("=", 1) for t in record.split(";") if t.strip())
    return len(base64.b64decode(tags["p"])) * 8 if tags["p"] else 0


@pytest.mark.parametrize(
    ("qname", "target", "min_bits"),
    [
        (
            "selector1._domainkey.contoso.com",
            "selector1-contoso-com._domainkey.contoso.onmicrosoft.com.",
            2048,
        ),
        (
            "selector1._domainkey.fabrikam.com",
            "selector1-fabrikam-com._domainkey.fabrikam.n-v1.dkim.mail.microsoft.",
            2048,
        ),
        ("s1._domainkey.contoso.com", "s1.domainkey.u1234.wl001.sendgrid.net.", 1024),
        ("k1._domainkey.contoso.com", "dkim.mcsv.net.", 1024),
        (
            "q5wuhxq2ywbd4sbhkz6mm5bhbaxcssvl._domainkey.contoso.com",
            "q5wuhxq2ywbd4sbhkz6mm5bhbaxcssvl.dkim.amazonses.com.",
            1024,
        ),
        ("google._domainkey.contoso.com", "google._domainkey.contoso.com.", 1024),
    ],
)
def test_dkim_selectors(
    r: dns.asyncresolver.Resolver, qname: str, target: str, min_bits: int
) -> None:
    answer = run(r.resolve(qname, "TXT"))
    assert answer.canonical_name.to_text() == target
    (record,) = (b"".join(rd.strings).decode() for rd in answer)
    assert "p=" in record and _key_bits(record) >= min_bits + 100  # SPKI DER > modulus


def test_dkim_dangling_and_revoked(r: dns.asyncresolver.Resolver) -> None:
    with pytest.raises(dns.resolver.NXDOMAIN):  # CNAME published, target not (yet)
        run(r.resolve("selector2._domainkey.contoso.com", "TXT"))
    cname = run(r.resolve("selector2._domainkey.contoso.com", "CNAME"))
    assert cname[0].target.to_text().endswith(".contoso.onmicrosoft.com.")
    assert run(txt(r, "old._domainkey.contoso.com")) == ["v=DKIM1; k=rsa; p="]


# -- DMARC -------------------------------------------------------------------------------------


def test_dmarc_records(r: dns.asyncresolver.Resolver) -> None:
    async def check() -> None:
        (contoso,) = await txt(r, "_dmarc.contoso.com")
        assert contoso.startswith("v=DMARC1; p=none; rua=mailto:dmarc-rua@contoso.com,")
        (legacy,) = await txt(r, "_dmarc.legacy.example")
        assert all(tag in legacy for tag in ("pct=50", "rf=afrf", "ri=86400"))
        (psd,) = await txt(r, "_dmarc.bank.test")
        assert "psd=y" in psd
        assert "psd=n" in (await txt(r, "_dmarc.brand.bank.test"))[0]
        assert "t=y" in (await txt(r, "_dmarc.testing.example"))[0]
        hosted = await r.resolve("_dmarc.bloated.example", "TXT")
        assert hosted.canonical_name.to_text() == "bloated-example.hosted.dmarcvendor.example."
        assert len(await txt(r, "_dmarc.twodmarc.example")) == 2
        assert await txt(r, "_dmarc.notdmarc.example") == ["v=spf1 -all"]

    run(check())


@pytest.mark.parametrize(
    ("domain", "walk"),
    [
        # (queried names in order; the last one holds the record, or None if nothing found)
        (
            "sales.eu.contoso.com",
            ["_dmarc.sales.eu.contoso.com", "_dmarc.eu.contoso.com", "_dmarc.contoso.com"],
        ),
        ("marketing.contoso.com", ["_dmarc.marketing.contoso.com"]),
        ("firstbank.bank.test", ["_dmarc.firstbank.bank.test", "_dmarc.bank.test"]),
        ("mail.brand.bank.test", ["_dmarc.mail.brand.bank.test", "_dmarc.brand.bank.test"]),
        ("nodmarc.example", ["_dmarc.nodmarc.example", "_dmarc.example", None]),
    ],
)
def test_dmarc_tree_walk(
    r: dns.asyncresolver.Resolver, domain: str, walk: list[str | None]
) -> None:
    async def check() -> list[str | None]:
        labels = domain.split(".")
        seen: list[str | None] = []
        for i in range(len(labels)):  # up to and including the TLD (DMARCbis)
            name = "_dmarc." + ".".join(labels[i:])
            seen.append(name)
            try:
                await r.resolve(name, "TXT")
                return seen
            except dns.resolver.NXDOMAIN:
                continue
        return [*seen, None]

    assert run(check()) == walk


def test_dmarc_external_destination_authorisation(r: dns.asyncresolver.Resolver) -> None:
    async def check() -> None:
        assert await txt(r, "contoso.com._report._dmarc.rua.dmarcbot.example") == ["v=DMARC1"]
        wildcard = "northwind.example._report._dmarc.reports.dmarcvendor.example"
        assert await txt(r, wildcard) == ["v=DMARC1"]
        assert "rua=mailto:dmarc@unauthorised.example" in (await txt(r, "_dmarc.fabrikam.com"))[0]
        with pytest.raises(dns.resolver.NXDOMAIN):
            await r.resolve("fabrikam.com._report._dmarc.unauthorised.example", "TXT")

    run(check())
