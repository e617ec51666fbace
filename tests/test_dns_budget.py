"""The DNS budget (issue 13): a hostile report cannot make identification ask without end.

Real parts: knot on loopback (answers, NXDOMAIN, SERVFAIL, a PTR answer with 20 names) and the
black hole (a resolver that never answers). Work is bounded by counting the questions sent
(`DnsEvidence.queries`, the black hole's datagrams), never by the clock; deadlines are measured in
steps (questions sent).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from analysis import Limits
from analysis.catalog import load_catalog
from analysis.dnsevidence import (
    BREAKER_TIMEOUTS,
    MAX_PTR_NAMES,
    RESOLVER_DOWN,
    DnsBudget,
    DnsEvidence,
    DnsTemporaryError,
    MemoryCache,
    make_resolver,
)
from analysis.identify import (
    DNS_BUDGET,
    DNS_DOWN,
    DNS_LOOKED_UP,
    SourceActivity,
    gather_evidence,
    plan_lookups,
)
from analysis.senders import analyse_activities
from tests.builders import aggregate_xml, record_xml
from tests.dnslab.blackhole import BlackHole
from tests.dnslab.server import KnotServer

T = TypeVar("T")
CATALOG = load_catalog()
#: The IPv6 /64 of the flood tests, and the IPv4 /16 of the others (documentation space)
FLOOD_64 = ipaddress.ip_network("2001:db8:77:1::/64")
SPREAD_V4 = ipaddress.ip_network("198.18.0.0/16")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def evidence(server: KnotServer | BlackHole, *, timeout: float = 2.0,
             cache: MemoryCache | None = None) -> DnsEvidence:
    return DnsEvidence(make_resolver([f"{server.host}:{server.port}"], timeout=timeout),
                       cache=cache)


def activity(ip: str, messages: int = 1, domain: str = "contoso.com") -> SourceActivity:
    return SourceActivity(domain=domain, ip=ip, messages=messages, dmarc_pass=0,
                          dkim_aligned_pass=0, spf_aligned_pass=0, dkim=(), spf=(), reasons=(),
                          header_from=(domain,))


def spread(count: int, domain: str = "contoso.com") -> list[SourceActivity]:
    """`count` IPv4 sources with distinct volumes: the one at index i sends i + 1 messages."""
    return [activity(str(SPREAD_V4[i + 1]), i + 1, domain) for i in range(count)]


async def warmed(ev: DnsEvidence) -> int:
    """Ask the catalog's SPF trees once, and the policy domains' own SPF records (a report's SPF
    claims are checked against them, issue 12), so the counts below are the sources' alone."""
    await gather_evidence([], ev, CATALOG)
    await asyncio.gather(*(ev.spf_tree(domain) for domain in (
        "contoso.com", "a-hostile.example", "b-quiet.example")))
    return ev.queries


# -- which sources are looked up -------------------------------------------------------------


def test_a_flood_from_one_64_cannot_crowd_out_other_networks(dns_server: KnotServer) -> None:
    """3,000 addresses of one /64 (NXDOMAIN at knot) and 60 IPv4 sources, a cap of 50: the /64
    counts once, so 49 of the IPv4 sources are asked, not 50 addresses of the flood."""
    flood = [activity(str(FLOOD_64[i + 1]), 1 + (i == 1234)) for i in range(3000)]
    others = [activity(str(SPREAD_V4[i + 1]), 10 + i) for i in range(60)]

    async def go() -> tuple[int, Any]:
        ev = evidence(dns_server)
        before = await warmed(ev)
        ev.budget = DnsBudget(max_sources=50)
        sources, _, bundle = await analyse_activities(flood + others, CATALOG, ev)
        return ev.queries - before, (sources, bundle)

    sent, (sources, bundle) = run(go())
    assert sent == 50
    busiest = str(FLOOD_64[1235])  # the flood's address with the most mail is the one asked
    assert set(bundle.reverse) - {a.ip for a in others} == {busiest}
    states = {s.identification.activity.ip: s.identification for s in sources}
    assert states[busiest].dns == DNS_LOOKED_UP
    assert sum(states[a.ip].dns == DNS_LOOKED_UP for a in others) == 49
    flooded = [i for ip, i in states.items() if ip in {a.ip for a in flood} and ip != busiest]
    assert len(flooded) == 2999 and all(i.dns == DNS_BUDGET for i in flooded)
    assert all(f"{busiest} was looked up" in i.dns_note and i.ptr is None for i in flooded)


def test_room_left_under_the_cap_goes_to_more_of_a_64(dns_server: KnotServer) -> None:
    flood = [activity(str(FLOOD_64[i + 1]), 1 + i) for i in range(300)]

    async def go() -> tuple[int, Any]:
        ev = evidence(dns_server)
        before = await warmed(ev)
        ev.budget = DnsBudget(max_sources=40)
        sources, _, _ = await analyse_activities(flood, CATALOG, ev)
        return ev.queries - before, sources

    sent, sources = run(go())
    assert sent == 40
    asked = sorted(s.identification.activity.messages for s in sources
                   if s.identification.dns == DNS_LOOKED_UP)
    assert asked == list(range(261, 301))


def test_only_the_sources_with_the_most_mail_are_looked_up(dns_server: KnotServer) -> None:
    async def go() -> tuple[int, Any]:
        ev = evidence(dns_server)
        before = await warmed(ev)
        ev.budget = DnsBudget(max_sources=50)
        sources, _, _ = await analyse_activities(spread(500), CATALOG, ev)
        return ev.queries - before, sources

    sent, sources = run(go())
    assert sent == 50  # one PTR question (NXDOMAIN) per source looked up
    asked = sorted(s.identification.activity.messages for s in sources
                   if s.identification.dns == DNS_LOOKED_UP)
    assert asked == list(range(451, 501))
    skipped = [s.identification for s in sources if s.identification.dns != DNS_LOOKED_UP]
    assert len(skipped) == 450
    assert all(i.dns == DNS_BUDGET and "beyond the 50 sources" in i.dns_note for i in skipped)


def test_plan_ranks_a_64_by_its_whole_volume_and_caps_selectors() -> None:
    acts = [activity("2001:db8:9::1", 5), activity("2001:db8:9::2", 5),
            activity("192.0.2.7", 8), activity("192.0.2.8", 1)]
    acts.append(SourceActivity(
        domain="contoso.com", ip="192.0.2.9", messages=3, dmarc_pass=3, dkim_aligned_pass=3,
        spf_aligned_pass=0, reasons=(), header_from=("contoso.com",), spf=(),
        dkim=tuple(((d, f"s{i}", "pass"), 10 - i) for i, d in enumerate(
            ["contoso.com", "mail.contoso.com", "vendor.example", "contoso.com"]))))
    plan = plan_lookups(acts, 2)
    # the /64 sends 10 in all, more than 192.0.2.7's 8
    assert plan.ips == ("2001:db8:9::1", "192.0.2.7")
    assert set(plan.skipped) == {"2001:db8:9::2", "192.0.2.8", "192.0.2.9"}
    # room left under the cap goes to the /64's next address
    assert plan_lookups(acts, 4).ips == ("2001:db8:9::1", "192.0.2.7", "192.0.2.9", "192.0.2.8")
    assert plan_lookups(acts, 5).ips[-1] == "2001:db8:9::2"
    # own selectors only (anyone can point theirs at a vendor), the busiest two
    assert plan.selectors == (("s0", "contoso.com"), ("s1", "mail.contoso.com"))


# -- the PTR fan-out -------------------------------------------------------------------------

FANOUT_IP = "192.0.2.200"


@pytest.fixture(scope="module")
def fanout_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    """knot serving one PTR answer with 20 names; only the last (by name) leads back."""
    zones = tmp_path_factory.mktemp("fanout-zones")
    rev = ipaddress.ip_address(FANOUT_IP).reverse_pointer
    lines = [f"{rev}. PTR n{i:02d}.fanout.example." for i in range(20)]
    lines += [f"n{i:02d}.fanout.example. A 192.0.2.{i + 1}" for i in range(19)]
    lines.append(f"n19.fanout.example. A {FANOUT_IP}")
    (zones / "fanout.zone").write_text("\n".join(lines) + "\n")
    with KnotServer(zones) as server:
        yield server


def test_a_ptr_answer_of_twenty_names_is_followed_a_few_names_deep(
        fanout_server: KnotServer) -> None:
    async def go() -> tuple[int, Any, Any]:
        ev = evidence(fanout_server)
        plain = await ev.reverse(FANOUT_IP)
        first = ev.queries
        ev2 = evidence(fanout_server)
        preferred = await ev2.reverse(FANOUT_IP, prefer=lambda n: n.startswith("n19."))
        return first, plain, (ev2.queries, preferred)

    sent, plain, (sent2, preferred) = run(go())
    assert sent == 1 + MAX_PTR_NAMES  # the PTR, then A of the first names only
    assert len(plain.names) == 10 and plain.confirmed == ()
    # a name that could name a service is followed first, and it leads back
    assert sent2 == 1 + MAX_PTR_NAMES and preferred.confirmed == ("n19.fanout.example",)


# -- a resolver that never answers -----------------------------------------------------------


@pytest.mark.parametrize("count", [300, 1200])
def test_a_silent_resolver_is_given_up_after_one_wave(dns_blackhole: BlackHole,
                                                      count: int) -> None:
    """However many sources, the questions sent stay under two in-flight windows."""
    async def go() -> tuple[DnsEvidence, Any]:
        ev = evidence(dns_blackhole, timeout=0.2)
        return ev, await analyse_activities(spread(count), CATALOG, ev)

    ev, (sources, _, bundle) = run(go())
    assert ev.queries <= 2 * 64 + 1 and ev.probes == 1
    assert all(s.identification.dns == DNS_DOWN for s in sources)
    assert len(bundle.not_looked_up) == count


def test_the_next_run_asks_a_silent_resolver_once(dns_blackhole: BlackHole) -> None:
    cache = MemoryCache()

    async def once() -> DnsEvidence:
        ev = evidence(dns_blackhole, timeout=0.2, cache=cache)
        await analyse_activities(spread(100), CATALOG, ev)
        return ev

    first = run(once())
    assert first.probes == 1 and first.queries > BREAKER_TIMEOUTS
    assert any(rdtype == RESOLVER_DOWN for _, rdtype in cache._answers)
    second = run(once())
    assert second.queries == 1 and second.probes == 1  # the probe, and nothing after it


def test_a_resolver_that_answers_the_probe_is_kept(dns_server: KnotServer,
                                                   dns_blackhole: BlackHole) -> None:
    """Timeouts from hostile zones behind a working resolver do not stop the run: the probe
    (asked of the same servers) answers. Here knot is the second server, so each question
    times out at the black hole, then knot answers."""
    resolver = make_resolver([f"{dns_blackhole.host}:{dns_blackhole.port}"], timeout=0.2)
    ev = DnsEvidence(resolver)
    assert run(ev._probe()) is False and ev._down  # the silent one alone: down
    both = DnsEvidence(make_resolver([f"{dns_server.host}:{dns_server.port}"], timeout=0.5))
    assert run(both._probe()) is True and not both._down


# -- failures are remembered, never as answers -----------------------------------------------


def test_a_servfail_is_remembered_for_minutes_but_never_cached(dns_server: KnotServer) -> None:
    now = [1_000_000.0]
    cache = MemoryCache()
    resolver = make_resolver([f"{dns_server.host}:{dns_server.port}"])
    ev = DnsEvidence(resolver, cache=cache, clock=lambda: now[0])

    async def ask() -> str:
        with pytest.raises(DnsTemporaryError) as info:
            await ev.lookup("_spf.servfail.test", "TXT")
        return str(info.value)

    assert "SERVFAIL" in run(ask()) and ev.queries == 1
    assert "remembered" in run(ask()) and ev.queries == 1  # not asked again
    assert cache.get_answer("_spf.servfail.test", "TXT", 0) is None
    now[0] += 301
    run(ask())
    assert ev.queries == 2


# -- the deadline, in steps ------------------------------------------------------------------


def test_the_deadline_stops_questions_and_says_so(dns_server: KnotServer) -> None:
    async def go() -> tuple[int, Any]:
        ev = evidence(dns_server)
        before = await warmed(ev)
        ev.budget = DnsBudget(seconds=40, clock=lambda: ev.queries - before)
        sources, _, _ = await analyse_activities(spread(200), CATALOG, ev)
        return ev.queries - before, sources

    sent, sources = run(go())
    assert sent == 40
    late = [s.identification for s in sources if s.identification.dns != DNS_LOOKED_UP]
    assert len(late) == 160 and all(i.dns == DNS_BUDGET for i in late)
    assert all("time for DNS ran out" in i.dns_note for i in late)
    asked = sorted(s.identification.activity.messages for s in sources
                   if s.identification.dns == DNS_LOOKED_UP)
    assert asked == list(range(161, 201))  # the busiest first


def test_one_hostile_domain_cannot_starve_the_others(dns_server: KnotServer) -> None:
    """The run's 60 steps: the first (hostile) domain gets half, the quiet one what is left."""
    hostile = spread(300, "a-hostile.example")
    quiet = [activity(f"203.0.113.{i}", 5, "b-quiet.example") for i in range(1, 11)]

    async def go() -> tuple[int, Any]:
        ev = evidence(dns_server)
        before = await warmed(ev)
        ev.budget = DnsBudget(seconds=60, clock=lambda: ev.queries - before)
        sources, _, _ = await analyse_activities(hostile + quiet, CATALOG, ev)
        return ev.queries - before, sources

    sent, sources = run(go())
    by_domain: dict[str, list[str]] = {}
    for s in sources:
        by_domain.setdefault(s.identification.activity.domain, []).append(s.identification.dns)
    assert by_domain["b-quiet.example"] == [DNS_LOOKED_UP] * 10
    assert by_domain["a-hostile.example"].count(DNS_LOOKED_UP) == 30
    assert sent == 40


def test_the_pipeline_takes_the_budget_from_the_settings(tmp_path: Path) -> None:
    from function_app.pipeline import identify_domains
    from store import SqliteStore

    ev = DnsEvidence(None)
    with SqliteStore(tmp_path / "db.sqlite3") as store:
        run(identify_domains(store, CATALOG, ev, ["contoso.com", "fabrikam.com"],
                             limits=Limits(max_dns_sources=7, dns_budget_seconds=9)))
    assert ev.budget is not None
    assert (ev.budget.max_sources, ev.budget.seconds, ev.budget.domains_left) == (7, 9, 0)


# -- what the command line says --------------------------------------------------------------


def test_senders_says_what_was_not_looked_up(dns_server: KnotServer, tmp_path: Path) -> None:
    records = "".join(record_xml(str(SPREAD_V4[i + 1]), count=i + 1, dkim="fail", spf="fail",
                                 header_from="contoso.com", envelope_from="contoso.com")
                      for i in range(30))
    (tmp_path / "r.xml").write_bytes(aggregate_xml(records, domain="contoso.com"))
    db = str(tmp_path / "db.sqlite3")
    exe = [sys.executable, "-m", "function_app.cli", "--db", db]
    subprocess.run([*exe, "ingest", str(tmp_path / "r.xml")], check=True, capture_output=True)
    ns = ["--nameserver", f"{dns_server.host}:{dns_server.port}", "--max-dns-sources", "5"]
    out = subprocess.run([*exe, "senders", *ns, "--json"], capture_output=True, text=True,
                         timeout=120, check=True)
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    # the line shows its ten largest sources (the five looked up are the busiest) and counts all
    assert [s["dns"] for s in row["sources"]] == ["looked up"] * 5 + [DNS_BUDGET] * 5
    assert row["source_count"] == 30 and row["dns_not_looked_up"] == 25
    assert "ptr" in row["sources"][0]
    assert "sources not looked up in DNS" in out.stderr
    # The next run keeps the five looked up (analysis.remembered) and spends its budget on the
    # busiest five of the others: a domain beyond the cap is covered over successive runs.
    text = subprocess.run([*exe, "senders", *ns, "--evidence"], capture_output=True, text=True,
                          timeout=120, check=True).stdout
    assert "20 of 30 sources: reverse DNS not looked up (budget)" in text
