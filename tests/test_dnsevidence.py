"""DNS evidence against a real DNS server (knot on loopback): no resolver is patched."""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import sys
from collections.abc import Collection, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from analysis.dnsevidence import (
    Answer,
    DnsEvidence,
    DnsTemporaryError,
    MemoryCache,
    heap_frozen,
    make_resolver,
)
from tests.dnslab.blackhole import BlackHole
from tests.dnslab.server import KnotServer

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def evidence(server: KnotServer | BlackHole, timeout: float = 2.0,
             cache: MemoryCache | None = None) -> DnsEvidence:
    resolver = make_resolver([f"{server.host}:{server.port}"], timeout=timeout)
    return DnsEvidence(resolver, cache=cache)


def test_reverse_dns_is_forward_confirmed(dns_server: KnotServer) -> None:
    async def go() -> None:
        ev = evidence(dns_server)
        both = await ev.reverse("198.51.100.25")
        assert len(both.names) == 2 and set(both.confirmed) == set(both.names)
        liar = await ev.reverse("192.0.2.66")  # claims a google.com name it does not own
        assert liar.names and liar.confirmed == ()
        nothing = await ev.reverse("192.0.2.99")
        assert nothing.names == () and nothing.errors == ()
        half = await ev.reverse("198.51.100.26")
        assert len(half.names) == 2 and len(half.confirmed) == 1

    run(go())


def test_spf_tree_of_a_customer(dns_server: KnotServer) -> None:
    tree = run(evidence(dns_server).spf_tree("contoso.com"))
    assert tree.errors == () and not tree.temporary
    assert tree.lookups == 7 and tree.all_qualifier == "-"
    assert "spf.protection.outlook.com" in tree.includes
    assert "_netblocks.google.com" in tree.includes
    assert tree.contains("198.51.100.10")
    assert not tree.contains("203.0.113.9")
    assert all(isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network)
               for n in tree.networks)


@pytest.mark.parametrize(("domain", "words"), [
    ("loop-a.spf.test", "include loop"),
    ("self-loop.spf.test", "include loop"),
    ("toomany.spf.test", "11 DNS lookups (limit 10)"),
    ("chain.spf.test", "11 DNS lookups (limit 10)"),
    ("void.spf.test", "3 void lookups (limit 2)"),
    ("twospf.spf.test", "publishes 2 SPF records"),
])
def test_spf_problems_are_named(dns_server: KnotServer, domain: str, words: str) -> None:
    tree = run(evidence(dns_server).spf_tree(domain))
    assert any(words in e for e in tree.errors), tree.errors


def test_spf_limits_that_hold(dns_server: KnotServer) -> None:
    ev = evidence(dns_server)
    ten = run(ev.spf_tree("ten.spf.test"))
    assert ten.lookups == 10 and not any("limit" in e for e in ten.errors)
    two = run(ev.spf_tree("void-two.spf.test"))
    assert two.void_lookups == 2 and not any("void lookups" in e for e in two.errors)
    split = run(ev.spf_tree("split.spf.test"))
    assert split.record is not None and split.networks


def test_truncated_udp_answer_falls_back_to_tcp(dns_server: KnotServer) -> None:
    record, problem = run(evidence(dns_server).spf_record("bigtxt.faults.test"))
    assert problem is None and record is not None and record.startswith("v=spf1")


def test_servfail_is_temporary_and_never_cached(dns_server: KnotServer) -> None:
    async def go() -> None:
        cache = MemoryCache()
        ev = evidence(dns_server, cache=cache)
        with pytest.raises(DnsTemporaryError, match="SERVFAIL"):
            await ev.lookup("_spf.servfail.test", "TXT")
        assert cache.get_answer("_spf.servfail.test", "TXT", 0) is None
        tree = await ev.spf_tree("tempfail.spf.test")
        assert tree.temporary

    run(go())


def test_timeout_is_temporary_and_never_cached(dns_blackhole: BlackHole) -> None:
    async def go() -> None:
        cache = MemoryCache()
        ev = evidence(dns_blackhole, timeout=0.3, cache=cache)
        with pytest.raises(DnsTemporaryError, match="timed out"):
            await ev.lookup("contoso.com", "TXT")
        assert cache.get_answer("contoso.com", "TXT", 0) is None
        reverse = await ev.reverse("192.0.2.1")
        assert reverse.names == () and reverse.errors

    run(go())


def test_answers_and_nxdomain_are_cached(dns_server: KnotServer) -> None:
    async def go() -> None:
        ev = evidence(dns_server)
        first = await ev.lookup("contoso.com", "TXT")
        missing = await ev.lookup("nothing-here.contoso.com", "TXT")
        sent = ev.queries
        again = await ev.lookup("contoso.com", "TXT")
        missing_again = await ev.lookup("nothing-here.contoso.com", "TXT")
        assert ev.queries == sent  # both answered from the cache
        assert again == first and missing_again.nxdomain and missing.negative

    run(go())


def test_concurrent_identical_questions_share_one_query(dns_server: KnotServer) -> None:
    async def go() -> int:
        ev = evidence(dns_server)
        await asyncio.gather(*(ev.lookup("contoso.com", "MX") for _ in range(20)))
        return ev.queries

    assert run(go()) == 1


def test_dkim_selector_cname_names_the_vendor(dns_server: KnotServer) -> None:
    async def go() -> None:
        ev = evidence(dns_server)
        m365 = await ev.dkim_key("selector1", "contoso.com")
        assert m365.target is not None and m365.target.endswith("onmicrosoft.com")
        assert m365.record is not None and "p=" in m365.record
        sendgrid = await ev.dkim_key("s1", "contoso.com")
        assert sendgrid.target is not None and sendgrid.target.endswith("sendgrid.net")
        dangling = await ev.dkim_key("selector2", "contoso.com")
        assert dangling.record is None and dangling.target is not None

    run(go())


def test_dmarc_tree_walk(dns_server: KnotServer) -> None:
    async def go() -> None:
        ev = evidence(dns_server)
        direct = await ev.dmarc("contoso.com")
        assert direct.found_at == "contoso.com" and direct.tags["p"] == "none"
        walked = await ev.dmarc("sales.eu.contoso.com")
        # the walk goes on to _dmarc.com: the record with the fewest labels applies (§4.10.2)
        assert walked.found_at == "contoso.com" and walked.queries == 4
        psd = await ev.dmarc("firstbank.bank.test")
        assert psd.found_at == "bank.test" and psd.tags.get("psd") == "y"
        none = await ev.dmarc("nodmarc.example")
        assert none.found_at is None
        assert await ev.report_authorised("contoso.com", "rua.dmarcbot.example") is True
        assert await ev.report_authorised("contoso.com", "unauthorised.example") is False
        assert await ev.report_authorised("contoso.com", "reports.dmarcvendor.example") is True

    run(go())


@pytest.mark.parametrize(("text", "error"), [
    ("dns.example", "not an IP address"), ("127.0.0.1:port", "port is not a number"),
])
def test_bad_nameserver_is_named(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        make_resolver([text])


def test_no_nameserver_means_the_systems_as_dnspython_reads_it() -> None:
    import dns.resolver

    system = dns.resolver.Resolver(configure=True)
    got = make_resolver(timeout=1.5)
    assert got.nameservers == tuple(str(s) for s in system.nameservers) != ()
    assert (got.port, got.timeout) == (system.port, 1.5)


def test_naming_does_not_load_dnspythons_resolver_or_dns_over_https() -> None:
    """A tenth of a second at every start (issue 12's cold run, each `dmarcbot` command)."""
    code = ("import sys\nimport analysis.dnsevidence, analysis.senders, function_app.pipeline\n"
            "print(sorted(m for m in ('dns.resolver', 'dns.asyncresolver', 'dns.query',"
            " 'dns.asyncquery', 'httpx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_naming_runs_with_the_heap_frozen_and_gives_it_back() -> None:
    """Objects alive when a naming step starts are left in the garbage collector's permanent
    generation until the last of any nested (or concurrent) steps ends."""
    import gc

    assert gc.get_freeze_count() == 0
    # (a frozen object that dies while frozen leaves the count: compare with a floor, not
    # with the count on entry)
    with heap_frozen():
        assert gc.get_freeze_count() > 1000  # the modules, the test's objects: everything alive
        with heap_frozen():
            assert gc.get_freeze_count() > 1000
        assert gc.get_freeze_count() > 1000  # the outer step still runs
    assert gc.get_freeze_count() == 0
    with pytest.raises(LookupError), heap_frozen():
        raise LookupError
    assert gc.get_freeze_count() == 0


def test_a_naming_step_reads_its_evidence_with_the_heap_frozen() -> None:
    import gc

    from analysis.catalog import load_catalog
    from analysis.identify import SourceActivity
    from analysis.senders import analyse_activities

    frozen: list[int] = []

    class Watching(MemoryCache):
        def get_answers(self, keys: Collection[tuple[str, str]], now: float
                        ) -> dict[tuple[str, str], Answer]:
            frozen.append(gc.get_freeze_count())
            return super().get_answers(keys, now)

    source = SourceActivity("contoso.com", "192.0.2.7", 3, 0, 0, 0, (), (), (),
                            ("contoso.com",), "2025-12-01", "2025-12-01")
    sources, _, _ = run(analyse_activities([source], load_catalog(),
                                           DnsEvidence(None, cache=Watching())))
    assert [s.identification.activity for s in sources] == [source]
    assert frozen and all(count > 1000 for count in frozen)
    assert gc.get_freeze_count() == 0


def test_the_store_keeps_answers_across_runs_until_their_ttl(dns_server: KnotServer,
                                                             tmp_path: object) -> None:
    from pathlib import Path

    from store import SqliteStore

    db = Path(str(tmp_path)) / "cache.sqlite3"
    now = [1_000_000.0]

    def run_once() -> int:
        async def go() -> int:
            with SqliteStore(db) as store:
                resolver = make_resolver([f"{dns_server.host}:{dns_server.port}"])
                ev = DnsEvidence(resolver, cache=store, clock=lambda: now[0])
                await ev.lookup("contoso.com", "TXT")
                await ev.lookup("nothing-here.contoso.com", "TXT")
                with pytest.raises(DnsTemporaryError):
                    await ev.lookup("_spf.servfail.test", "TXT")
                return ev.queries

        return run(go())

    assert run_once() == 3
    assert run_once() == 1  # answer and NXDOMAIN from the store; SERVFAIL asked again
    now[0] += 10 * 86400  # past every TTL in the test zones
    assert run_once() == 3
