"""The MTA-STS policy file fetched over real HTTPS on loopback (issue 15, RFC 8461 §3.3).

knot serves the `_mta-sts` records, the policy hosts' addresses (127.0.0.1) and the MX hosts; one
HTTPS server with certificates from a test CA serves every policy host, told apart by SNI and the
Host header, so the fetcher (graph.mta_sts) runs exactly as in production: the address from the
posture's resolver, the certificate checked against `mta-sts.<domain>`, no redirect followed.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from analysis.catalog import load_catalog
from analysis.dnsevidence import DnsEvidence, make_resolver
from analysis.posture import assess, transport_findings
from analysis.records.findings import Finding
from analysis.records.mtasts import (
    MAX_POLICY_BYTES,
    PolicyResponse,
    mx_covered,
    policy_findings,
)
from graph.mta_sts import HttpsPolicyFetcher
from tests.checkdmarc_oracle import OracleDNS, txt
from tests.fakes.server import LoopbackServer, Request, Response
from tests.fakes.tls import TestCA

GOOD = ("version: STSv1\r\nmode: enforce\r\nmx: mx1.good.test\r\nmx: *.good.test\r\n"
        "max_age: 1209600\r\n")  # CRLF, as RFC 8461's prose has it


def policy(mode: str, *mx: str, max_age: int = 1209600) -> bytes:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return ("\n".join(lines) + "\n").encode()


PLAIN = {"Content-Type": "text/plain; charset=utf-8"}
#: host -> what its server answers: (status, body, headers)
SITES: dict[str, tuple[int, bytes, dict[str, str]]] = {
    "good.test": (200, GOOD.encode(), PLAIN),
    "partial.test": (200, policy("enforce", "mx1.partial.test", "*.partial.test"), PLAIN),
    "uncovered.test": (200, policy("enforce", "mail.elsewhere.test"), PLAIN),
    "testing.test": (200, policy("testing", "mail.elsewhere.test"), PLAIN),
    "short.test": (200, policy("enforce", "mx.short.test", max_age=3600), PLAIN),
    "broken.test": (200, b"version: STSv2\nmode: strict\nmax_age: 99999999999\n", PLAIN),
    "redirect.test": (301, b"", {"Location": "https://www.redirect.test/mta-sts.txt"}),
    "missing.test": (404, b"not here", PLAIN),
    "html.test": (200, policy("enforce", "mx.html.test"), {"Content-Type": "text/html"}),
    "big.test": (200, b"mx: x.big.test\n" * (MAX_POLICY_BYTES // 15 + 10), PLAIN),
    "bomb.test": (200, gzip.compress(b"#" * (MAX_POLICY_BYTES * 8)),
                  {**PLAIN, "Content-Encoding": "gzip"}),
    "zipped.test": (200, gzip.compress(policy("enforce", "mx.zipped.test")),
                    {**PLAIN, "Content-Encoding": "gzip"}),
    "latin.test": (200, "mode: enforce\nmx: mx.latin.test # ünïcode\n".encode("latin-1"), PLAIN),
    "wronghost.test": (200, policy("enforce", "mx.wronghost.test"), PLAIN),
    "untrusted.test": (200, policy("enforce", "mx.untrusted.test"), PLAIN),
    "slow.test": (200, policy("enforce", "mx.slow.test"), PLAIN),
    "notxt.test": (200, policy("enforce", "mx.notxt.test"), PLAIN),
}
STS = txt("v=STSv1; id=20260101T1200")


def _zone() -> dict[str, list[str]]:
    zone: dict[str, list[str]] = {}
    for domain in SITES:
        zone[f"mta-sts.{domain}"] = ["A 127.0.0.1"]
        zone[f"_mta-sts.{domain}"] = [STS]
        zone[domain] = [f"MX 10 mx.{domain}."]
    zone["good.test"] = ["MX 10 mx1.good.test.", "MX 20 mx2.good.test."]
    zone["partial.test"] = ["MX 10 mx1.partial.test.", "MX 20 mx2.backup.partial.test."]
    zone["uncovered.test"] = ["MX 10 mail.uncovered.test."]
    zone["testing.test"] = ["MX 10 mail.testing.test."]
    zone["_mta-sts.notxt.test"] = [txt("v=STSv1;")]  # no id: senders fetch nothing
    zone["_mta-sts.noaddr.test"] = [STS]  # announced, but mta-sts.noaddr.test has no address
    zone["noaddr.test"] = ["MX 10 mx.noaddr.test."]
    return zone


class World:
    """knot, the HTTPS server and what it was asked."""

    def __init__(self, dns: OracleDNS, server: LoopbackServer, ca: TestCA) -> None:
        self.dns = dns
        self.server = server
        self.ca = ca
        self.asked: list[tuple[str, str]] = []  # (Host, path)

    def fetcher(self, **kwargs: float) -> HttpsPolicyFetcher:
        return HttpsPolicyFetcher(verify=self.ca.client_context(), port=self.server.port,
                                  **kwargs)  # type: ignore[arg-type]

    def findings(self, domain: str, fetcher: HttpsPolicyFetcher | None = None) -> list[Finding]:
        async def go() -> list[Finding]:
            ev = DnsEvidence(make_resolver([f"{self.dns.host}:{self.dns.port}"]))
            try:
                found = await transport_findings(ev, domain, fetcher or self.fetcher())
            finally:
                ev.close()
            return [f for f in found if f.topic == "mta-sts"]

        return asyncio.run(go())


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    release = threading.Event()
    with TestCA() as ca, TestCA() as stranger, OracleDNS(_zone()) as dns:
        names = [f"mta-sts.{d}" for d in SITES if d not in ("wronghost.test", "untrusted.test")]
        context = ca.server_context_for(*names)
        by_sni = {"mta-sts.wronghost.test": ca.server_context_for("mta-sts.elsewhere.test"),
                  "mta-sts.untrusted.test": stranger.server_context_for("mta-sts.untrusted.test")}

        def pick(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None,
                 _: ssl.SSLContext) -> None:
            if name in by_sni:
                sock.context = by_sni[name]

        context.sni_callback = pick  # type: ignore[assignment]
        holder: list[World] = []

        def app(request: Request) -> Response:
            host = (request.headers.get("Host") or "").lower()
            holder[0].asked.append((host, request.raw_path))
            domain = host.removeprefix("mta-sts.")
            if domain == "slow.test":
                release.wait(10)
            if request.raw_path != "/.well-known/mta-sts.txt" or domain not in SITES:
                return Response(404, b"no such file", PLAIN)
            status, body, headers = SITES[domain]
            return Response(status, body, headers)

        server = LoopbackServer(app, context)
        server.start()
        holder.append(World(dns, server, ca))
        try:
            yield holder[0]
        finally:
            release.set()
            server.stop()
        assert not server.errors


def codes(findings: list[Finding]) -> set[tuple[str, str]]:
    return {(f.level, f.code) for f in findings}


def test_a_good_policy_covering_every_mx_has_no_findings(world: World) -> None:
    assert world.findings("good.test") == []
    assert ("mta-sts.good.test", "/.well-known/mta-sts.txt") in world.asked


def test_mx_patterns_must_cover_the_mx_hosts(world: World) -> None:
    (partial,) = world.findings("partial.test")  # *.partial.test is one label, not two
    assert (partial.level, partial.code) == ("warning", "mta-sts.mx-uncovered")
    assert "mx2.backup.partial.test" in partial.text and "mx1" not in partial.text.split(":")[0]
    assert "change the id in _mta-sts.partial.test" in partial.text
    assert partial.rfc == "RFC 8461 §4.1"
    (none,) = world.findings("uncovered.test")
    assert (none.level, none.code) == ("error", "mta-sts.mx-uncovered")
    assert "deliver no mail" in none.text and "mx: mail.uncovered.test" in none.text
    testing = codes(world.findings("testing.test"))
    assert testing == {("warning", "mta-sts.mx-uncovered"), ("info", "mta-sts.policy-testing")}


def test_policy_fields_are_checked(world: World) -> None:
    (short,) = world.findings("short.test")
    assert (short.level, short.code) == ("warning", "mta-sts.policy-max-age-short")
    assert "3600" in short.text
    broken = codes(world.findings("broken.test"))
    assert {("error", "mta-sts.policy-version"), ("error", "mta-sts.policy-mode"),
            ("error", "mta-sts.policy-max-age")} <= broken


@pytest.mark.parametrize(("domain", "code", "words"), [
    ("redirect.test", "mta-sts.fetch-redirect", "301 Moved Permanently (a redirect to "
                                                "https://www.redirect.test/mta-sts.txt)"),
    ("missing.test", "mta-sts.fetch-status", "404 Not Found"),
    ("html.test", "mta-sts.fetch-type", "served as text/html, not text/plain"),
    ("big.test", "mta-sts.fetch-size", f"limit {MAX_POLICY_BYTES:,} bytes"),
    ("bomb.test", "mta-sts.fetch-size", "decoded, it goes past the limit"),
    ("latin.test", "mta-sts.fetch-encoding", "not UTF-8"),
    ("wronghost.test", "mta-sts.fetch-certificate", "mta-sts.wronghost.test"),
    ("untrusted.test", "mta-sts.fetch-certificate", "certificate is not accepted"),
    ("noaddr.test", "mta-sts.no-policy-host", "mta-sts.noaddr.test has no A or AAAA record"),
])
def test_each_failed_fetch_is_one_finding_naming_what_failed(world: World, domain: str,
                                                             code: str, words: str) -> None:
    (finding,) = world.findings(domain)
    assert finding.code == code and finding.level == "error", finding
    assert words in finding.text, finding.text
    assert finding.text.startswith(f"https://mta-sts.{domain}/.well-known/mta-sts.txt: ")
    assert finding.rfc in ("RFC 8461 §3.3", "RFC 8461 §3.2")
    assert "\n" not in finding.text


def test_a_redirect_is_never_followed(world: World) -> None:
    world.findings("redirect.test")
    assert not [a for a in world.asked if a[0] == "www.redirect.test" or a[1] == "/mta-sts.txt"]


def test_a_body_without_a_length_is_cut_at_the_limit(world: World) -> None:
    """No Content-Length, the body runs until the server closes: reading stops at the limit."""
    context = world.ca.server_context_for("mta-sts.good.test")
    sent: list[int] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            raw, _ = listener.accept()
            with context.wrap_socket(raw, server_side=True) as tls:
                tls.recv(65536)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                            b"Connection: close\r\n\r\n")
                try:
                    for _ in range(1024):  # 64 MiB (more than socket buffers hold) unless
                        # the client hangs up first
                        tls.sendall(b"#" * 65536)
                        sent.append(65536)
                except OSError:
                    pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        fetcher = HttpsPolicyFetcher(verify=world.ca.client_context(),
                                     port=listener.getsockname()[1])
        (finding,) = world.findings("good.test", fetcher)
        thread.join(10)
    assert finding.code == "mta-sts.fetch-size" and "goes on past the limit" in finding.text
    assert sum(sent) < 1024 * 65536  # the client stopped reading; it did not take it all


def test_a_gzip_body_within_the_limit_is_read(world: World) -> None:
    assert world.findings("zipped.test") == []


def test_a_silent_server_or_a_closed_port_is_named(world: World) -> None:
    (slow,) = world.findings("slow.test", world.fetcher(timeout=0.3))
    assert (slow.level, slow.code) == ("warning", "mta-sts.fetch-timeout")
    assert "within 0.3 s" in slow.text
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    fetcher = HttpsPolicyFetcher(verify=world.ca.client_context(), port=closed)
    (refused,) = world.findings("good.test", fetcher)
    assert (refused.level, refused.code) == ("error", "mta-sts.fetch-connect")
    assert "127.0.0.1 refused" in refused.text


def test_nothing_is_fetched_without_a_valid_record_or_without_a_fetcher(world: World) -> None:
    before = len(world.asked)
    assert [f.code for f in world.findings("notxt.test")] == ["mta-sts.no-id"]
    assert len(world.asked) == before  # v=STSv1 without id: senders fetch nothing, nor do we

    async def without(domain: str) -> list[Finding]:
        ev = DnsEvidence(make_resolver([f"{world.dns.host}:{world.dns.port}"]))
        try:
            posture = await assess(domain, ev, [], {}, load_catalog())
        finally:
            ev.close()
        return [f for f in posture.findings if f.topic == "mta-sts"]

    assert asyncio.run(without("uncovered.test")) == []  # the TXT record is fine; no fetch
    assert len(world.asked) == before


def test_assess_hands_the_fetcher_through(world: World) -> None:
    async def go() -> list[Finding]:
        ev = DnsEvidence(make_resolver([f"{world.dns.host}:{world.dns.port}"]))
        try:
            posture = await assess("uncovered.test", ev, [], {}, load_catalog(),
                                   sts_fetcher=world.fetcher())
        finally:
            ev.close()
        return list(posture.findings)

    assert ("error", "mta-sts.mx-uncovered") in codes(asyncio.run(go()))


# -- the rules alone, without the network ------------------------------------------------------


def test_mx_patterns_match_one_label_only() -> None:
    assert mx_covered("mail.contoso.example", "*.contoso.example")
    assert mx_covered("MAIL.contoso.example.", "mail.contoso.example")
    assert not mx_covered("a.b.contoso.example", "*.contoso.example")
    assert not mx_covered("contoso.example", "*.contoso.example")
    assert not mx_covered("mail.contoso.example", "mail.contoso.example.evil")


def test_unknown_mx_and_fetch_failures_without_the_network() -> None:
    url = "https://mta-sts.contoso.example/.well-known/mta-sts.txt"
    fine = PolicyResponse(url, status=200, reason="OK", content_type="text/plain",
                          body=policy("enforce", "mx.contoso.example"))
    assert [f.code for f in policy_findings("contoso.example", fine, None)] == [
        "mta-sts.mx-unknown"]
    assert policy_findings("contoso.example", fine, ["mx.contoso.example"]) == []
    assert policy_findings("contoso.example", fine, []) == []  # no MX: nothing to cover
    untyped = PolicyResponse(url, status=200, reason="OK", body=b"")
    (finding,) = policy_findings("contoso.example", untyped, [])
    assert finding.code == "mta-sts.fetch-type" and "no Content-Type" in finding.text
    withdrawn = PolicyResponse(url, status=200, reason="OK", content_type="TEXT/PLAIN",
                               body=policy("none"))
    assert [f.code for f in policy_findings("contoso.example", withdrawn, ["x.example"])] == [
        "mta-sts.policy-none"]


def test_the_fetcher_refuses_bad_settings() -> None:
    for kwargs in ({"port": 0}, {"timeout": 0.0}, {"max_bytes": 0}):
        with pytest.raises(ValueError, match="MTA-STS fetch"):
            HttpsPolicyFetcher(**kwargs)  # type: ignore[arg-type]
