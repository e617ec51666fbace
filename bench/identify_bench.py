"""Identification benchmark: dmarcbot's concurrent DNS evidence against a sequential resolver.

10,000 distinct source IPs are identified against a loopback knot server behind a proxy that adds
20 ms to every answer (`bench/delay_dns.py`), so the wait for answers dominates, as it does with a
real recursive resolver. Every contender runs alone in its own subprocess; the harness takes wall
time around it and peak RSS from `os.wait4`:

  dmarcbot c=N   `analyse_activities(activities, load_catalog(), DnsEvidence(make_resolver(
                 ["127.0.0.1:PROXY"]), concurrency=N))`, cold cache, alone in its process; then
                 another process runs it cold and then again with the same `MemoryCache` ("warm")
  dmarcbot sqlite  the same, with the store's SQLite DNS cache; then a NEW process runs warm on it
  sequential     what parsedmarc does: one synchronous `dns.resolver.Resolver` query at a time,
                 the same questions (PTR, then A/AAAA of each PTR name, the passing DKIM
                 selectors, every catalog SPF include tree), each asked once

The sequential baseline needs ~6 minutes for 10k IPs, so by default it runs on two seeded random
samples (250 and 500 IPs) and is extrapolated linearly to 10k; `--sequential-full` runs it on all.

    .venv/bin/python bench/identify_bench.py
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PROJECT_PYTHON = REPO / ".venv" / "bin" / "python"
ZONES_DIR = REPO / "tests" / "dnslab" / "zones"
POLICY_DOMAIN = "contoso.com"
DEFAULT_IPS = 10_000
DEFAULT_CONCURRENCY = "64,256"  # 64 is DnsEvidence's default
DEFAULT_SAMPLES = "250,500"
DELAY_MS = 20.0
TARGET_SPEEDUP = 50.0
TARGET_WARM_S = 1.0
SEED = 20261128


# --------------------------------------------------------------------------- test data


@dataclasses.dataclass(frozen=True)
class Source:
    ip: str
    kind: str  # "confirmed", "unconfirmed", "none"
    service: str  # who really sends from it ("spoofer" for the unidentifiable ones)
    ptrs: tuple[str, ...]
    confirmed: tuple[str, ...]


def _existing_names() -> set[str]:
    """Owner names of the test zones: generated names must not collide with any of them."""
    names = set()
    for path in ZONES_DIR.glob("*.zone"):
        for line in path.read_text().splitlines():
            if line and not line[0].isspace() and not line.startswith((";", "$")):
                names.add(line.split()[0].lower().rstrip("."))
    return names


class _Gen:
    def __init__(self, rng: random.Random, taken: set[str]) -> None:
        self.rng = rng
        self.taken = taken  # owner names already in use (existing zones + generated)
        self.ips: set[str] = set()
        self.records: list[str] = []
        self.counter = 0

    def ip_in(self, network: str) -> str:
        net = ipaddress.ip_network(network)
        for _ in range(1000):
            ip = str(net[self.rng.randrange(1, net.num_addresses - 1)])
            if ip not in self.ips and self._rev(ip) not in self.taken:
                self.ips.add(ip)
                return ip
        raise RuntimeError(f"no free address left in {network}")

    @staticmethod
    def _rev(ip: str) -> str:
        return ipaddress.ip_address(ip).reverse_pointer

    def name(self, pattern: str) -> str:
        for _ in range(1000):
            self.counter += 1
            name = pattern.format(n=self.counter, r=self.rng.randrange(10, 99)).lower()
            if name not in self.taken:
                self.taken.add(name)
                return name
        raise RuntimeError(f"no free name for {pattern}")

    def ptr(self, ip: str, name: str) -> None:
        self.taken.add(self._rev(ip))
        self.records.append(f"{self._rev(ip)}. PTR {name}.")

    def address(self, name: str, ip: str) -> None:
        kind = "AAAA" if ":" in ip else "A"
        self.records.append(f"{name}. {kind} {ip}")


#: service -> (weight, IPv4 range, IPv6 range or None, PTR name pattern); ranges inside the
#: service's published SPF networks, names under its catalog rdns suffix.
SERVICES = {
    "sendgrid": (0.22, "149.72.0.0/16", None, "o1.ptr{n}.sendgrid.net"),
    "microsoft365": (0.25, "40.107.0.0/16", "2a01:111:f403::/49",
                     "mail-{r}eur05on2{n}.outbound.protection.outlook.com"),
    "google": (0.20, "209.85.128.0/17", "2607:f8b0:4864::/48", "mail-sor-f{n}.google.com"),
    "amazon-ses": (0.13, "54.240.0.0/18", None, "a{r}-{n}.smtp-out.amazonses.com"),
    "mandrill": (0.08, "198.2.128.0/18", None, "mail{n}-{r}.suw21.mandrillapp.com"),
    "own": (0.12, "198.18.0.0/15", "2001:db8:5100::/48", "mta{n}.out.contoso.com"),
}


def generate(count: int, seed: int) -> tuple[list[Source], str]:
    """`count` distinct sources and the zone text publishing their PTR and A/AAAA records.

    About 30 % have no PTR, 45 % a forward-confirmed one under a real service suffix (some with a
    second PTR, confirmed or not), 25 % a PTR that does not confirm (the name resolves to another
    address, does not exist, or has no address of that family). ~10 % are IPv6.
    """
    rng = random.Random(seed)
    gen = _Gen(rng, _existing_names())
    services = list(SERVICES)
    weights = [SERVICES[s][0] for s in services]
    sources = []
    for _ in range(count):
        roll = rng.random()
        v6 = rng.random() < 0.10
        if roll < 0.30:  # no PTR at all: spoofers and residential hosts
            ip = gen.ip_in("2a02:8100::/32" if v6 else rng.choice(
                ("91.0.0.0/10", "185.0.0.0/10", "103.0.0.0/10", "177.0.0.0/10")))
            sources.append(Source(ip, "none", "spoofer", (), ()))
            continue
        service = rng.choices(services, weights)[0]
        _, net4, net6, pattern = SERVICES[service]
        if roll < 0.75:  # forward-confirmed
            ip = gen.ip_in(net6 if v6 and net6 else net4)
            names = [gen.name(pattern)]
            confirmed = list(names)
            gen.address(names[0], ip)
            if rng.random() < 0.06:  # a second PTR: confirmed too, or stale (NXDOMAIN)
                extra = gen.name(pattern)
                names.append(extra)
                if rng.random() < 0.5:
                    gen.address(extra, ip)
                    confirmed.append(extra)
            for name in names:
                gen.ptr(ip, name)
            sources.append(Source(ip, "confirmed", service, tuple(sorted(names)),
                                  tuple(sorted(confirmed))))
            continue
        # not confirming: a generic ISP name with another address, a service-looking name that
        # does not exist (an impostor), or a name without an address record
        ip = gen.ip_in("2a02:8100::/32" if v6 else rng.choice(("91.0.0.0/10", "185.0.0.0/10")))
        how = rng.random()
        if how < 0.4:
            name = gen.name("host-{n}.static.isp-bench.example")
            gen.address(name, gen.ip_in("100.64.0.0/10"))
        elif how < 0.8:
            name = gen.name(pattern)  # claims to be the service; no such name
        else:
            name = gen.name("relay{n}.nodata.isp-bench.example")
            gen.records.append(f"{name}. TXT \"no address here\"")
        gen.ptr(ip, name)
        sources.append(Source(ip, "unconfirmed", "spoofer", (name,), ()))
    header = ("; generated by bench/identify_bench.py: PTR and forward records of the bench IPs\n"
              "; (never part of tests/dnslab/zones)\n$TTL 3600\n")
    return sources, header + "\n".join(gen.records) + "\n"


#: service -> DKIM results ((d=, selector), ...) and the SPF (return-path) domain of its mail
MAIL = {
    "sendgrid": ((("contoso.com", "s1"), ("sendgrid.net", "smtpapi")), "em1234.contoso.com"),
    "microsoft365": ((("contoso.com", "selector1"),), "contoso.com"),
    "google": ((("contoso.com", "google"),), "contoso.com"),
    "amazon-ses": ((("contoso.com", "q5wuhxq2ywbd4sbhkz6mm5bhbaxcssvl"),
                    ("amazonses.com", "224i4yxa5dv7c2xz3womw6peuasteono")), "amazonses.com"),
    "mandrill": ((("contoso.com", "k1"), ("mandrillapp.com", "mte1")), "mandrillapp.com"),
    "own": ((("contoso.com", "selector1"),), "contoso.com"),
}


def activity_rows(sources: list[Source], seed: int) -> list[dict[str, object]]:
    """One activity per IP for one policy domain: a couple of DKIM and SPF results each."""
    rng = random.Random(seed + 1)
    rows = []
    for s in sources:
        n = rng.randint(1, 500)
        reasons: list[tuple[str, int]] = []
        if s.service in MAIL:
            signatures, return_path = MAIL[s.service]
            dkim = [((d, sel, "pass"), n) for d, sel in signatures]
            spf = [((return_path, "mfrom", "pass"), n)]
            aligned_spf = n if return_path.endswith(POLICY_DOMAIN) else 0
            row = (n, n, aligned_spf)
        else:
            forwarded = rng.random() < 0.2  # forwarded mail keeps a passing contoso.com DKIM
            dkim = [((POLICY_DOMAIN, "selector1", "pass" if forwarded else "fail"), n)]
            spf = [((rng.choice(("contoso.com", "mail.example.net")), "mfrom", "fail"), n)]
            row = (n if forwarded else 0, n if forwarded else 0, 0)
            if forwarded:
                reasons.append(("forwarded", n))
        rows.append({"domain": POLICY_DOMAIN, "ip": s.ip, "messages": n, "dmarc_pass": row[0],
                     "dkim_aligned_pass": row[1], "spf_aligned_pass": row[2],
                     "dkim": dkim, "spf": spf, "reasons": reasons,
                     "header_from": [POLICY_DOMAIN]})
    return rows


def load_activities(path: str, ips: set[str] | None = None) -> list[object]:
    from analysis.identify import SourceActivity

    def pairs(items: list[list[object]]) -> tuple[tuple[object, ...], ...]:
        return tuple((tuple(key) if isinstance(key, list) else key, n) for key, n in items)

    rows = json.loads(Path(path).read_text())
    return [SourceActivity(
        domain=r["domain"], ip=r["ip"], messages=r["messages"], dmarc_pass=r["dmarc_pass"],
        dkim_aligned_pass=r["dkim_aligned_pass"], spf_aligned_pass=r["spf_aligned_pass"],
        dkim=pairs(r["dkim"]), spf=pairs(r["spf"]), reasons=pairs(r["reasons"]),
        header_from=tuple(r["header_from"]))
        for r in rows if ips is None or r["ip"] in ips]


# --------------------------------------------------------------------------- workers
# Each runs in a fresh interpreter (repo root on sys.path) and prints one JSON line.


def worker_dmarcbot(args: argparse.Namespace) -> None:
    import asyncio

    sys.path.insert(0, str(REPO))
    from analysis.catalog import load_catalog
    from analysis.dnsevidence import DnsBudget, DnsEvidence, MemoryCache, make_resolver
    from analysis.identify import UNKNOWN
    from analysis.senders import analyse_activities

    activities = load_activities(args.data)
    catalog = load_catalog()
    server = f"127.0.0.1:{args.port}"
    store = None
    if args.sqlite:
        from store.sqlite import SqliteStore

        store = SqliteStore(args.sqlite)
    cache = store if store is not None else MemoryCache()
    out: dict[str, object] = {"ips": len({a.ip for a in activities})}

    async def one(label: str) -> None:
        # every IP is a contender here: the per-domain DNS budget is raised to cover them all
        dns = DnsEvidence(make_resolver([server], timeout=args.dns_timeout), cache=cache,
                          concurrency=args.concurrency,
                          budget=DnsBudget(max_sources=len(activities), seconds=3600))
        started = time.perf_counter()
        sources, _services, bundle = await analyse_activities(activities, catalog, dns)
        out[f"{label}_s"] = time.perf_counter() - started
        out[f"{label}_queries"] = dns.queries
        out[f"{label}_with_ptr"] = sum(1 for r in bundle.reverse.values() if r.names)
        out[f"{label}_confirmed"] = sum(1 for r in bundle.reverse.values() if r.confirmed)
        out[f"{label}_temporary"] = len(bundle.temporary)
        out[f"{label}_named"] = sum(1 for s in sources
                                    if s.identification.service_key != UNKNOWN)
        out[f"{label}_networks"] = sum(len(v) for v in bundle.service_networks.values())

    for label in args.phases.split(","):
        asyncio.run(one(label))
    if store is not None:
        store.close()
    print(json.dumps(out))


def worker_sequential(args: argparse.Namespace) -> None:
    """One synchronous query at a time; every distinct question asked once, like dmarcbot."""
    sys.path.insert(0, str(REPO))
    import dns.exception
    import dns.resolver
    import dns.reversename

    from analysis.catalog import load_catalog
    from analysis.spf import is_spf, parse_spf

    sample = set(json.loads(Path(args.sample).read_text())) if args.sample else None
    activities = load_activities(args.data, sample)
    catalog = load_catalog()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = args.port
    resolver.cache = None
    resolver.timeout = resolver.lifetime = args.dns_timeout
    memo: dict[tuple[str, str], list[str]] = {}
    counts = {"queries": 0, "errors": 0}

    def ask(name: str, rdtype: str) -> list[str]:
        key = (name.lower().rstrip("."), rdtype)
        if key not in memo:
            counts["queries"] += 1
            try:
                answer = resolver.resolve(key[0], rdtype, raise_on_no_answer=False)
                memo[key] = [b"".join(r.strings).decode() if rdtype == "TXT"
                             else r.to_text().rstrip(".") for r in answer.rrset or ()]
            except dns.resolver.NXDOMAIN:
                memo[key] = []
            except (dns.exception.Timeout, dns.resolver.NoNameservers):
                counts["errors"] += 1
                memo[key] = []
        return memo[key]

    def expand(domain: str, chain: tuple[str, ...], networks: list[str]) -> None:
        records = [r for r in ask(domain, "TXT") if is_spf(r)]
        if len(records) != 1:
            return
        spf = parse_spf(records[0])
        redirect = spf.modifier("redirect") if spf.all_qualifier is None else None
        for term in spf.mechanisms:
            if term.name in ("ip4", "ip6"):
                networks.append(term.value)
            elif term.name == "include" and "%" not in term.value:
                target = term.value.lower().rstrip(".")
                if target not in chain:
                    expand(target, (*chain, target), networks)
            elif term.name in ("a", "mx"):
                hosts = [term.value or domain]
                if term.name == "mx":
                    hosts = [r.split()[-1] for r in ask(hosts[0], "MX")][:10]
                for host in hosts:
                    networks.extend(ask(host, "A") + ask(host, "AAAA"))
        if redirect and "%" not in redirect and redirect.lower() not in chain:
            expand(redirect.lower(), (*chain, redirect.lower()), networks)

    started = time.perf_counter()
    networks: list[str] = []
    for include in sorted({f.value for s in catalog.services for f in s.facts("spf_include")}):
        expand(include, (include,), networks)
    selectors = sorted({(sel, d) for a in activities for (d, sel, result), _ in a.dkim
                        if sel and result == "pass"})
    for sel, d in selectors:
        name = f"{sel}._domainkey.{d}"
        if not ask(name, "TXT"):
            ask(name, "CNAME")
    fixed_s = time.perf_counter() - started
    fixed_queries = counts["queries"]
    with_ptr = confirmed = 0
    for ip in sorted({a.ip for a in activities}):
        names = ask(dns.reversename.from_address(ip).to_text(), "PTR")
        with_ptr += bool(names)
        address = ipaddress.ip_address(ip)
        family = "AAAA" if address.version == 6 else "A"
        forward = [ask(n, family) for n in names]  # every name, as dmarcbot does: no short cut
        confirmed += any(ipaddress.ip_address(a) == address for f in forward for a in f)
    print(json.dumps({
        "ips": len({a.ip for a in activities}), "fixed_s": fixed_s,
        "fixed_queries": fixed_queries, "per_ip_s": time.perf_counter() - started - fixed_s,
        "total_s": time.perf_counter() - started, "queries": counts["queries"],
        "errors": counts["errors"], "with_ptr": with_ptr, "confirmed": confirmed,
        "networks": len(networks)}))


# --------------------------------------------------------------------------- harness


@dataclasses.dataclass
class Run:
    wall: float
    rss_mb: float
    cpu: float  # user + system seconds of the child
    returncode: int
    timed_out: bool
    result: dict[str, object]
    stderr_tail: str
    proxy_queries: int


def run_child(cmd: list[str], timeout: float, proxy: Proxy) -> Run:
    """Run cmd alone; wall time around the whole process, peak RSS from its own rusage."""
    before = proxy.queries()
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        err.seek(max(0, os.fstat(err.fileno()).st_size - 1500))
        tail = err.read().decode(errors="replace")
    lines = out.decode(errors="replace").strip().splitlines()
    result = json.loads(lines[-1]) if proc.returncode == 0 and lines else {}
    return Run(wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, proc.returncode,
               timed_out.is_set(), result, tail, proxy.queries() - before)


class Proxy:
    """`bench/delay_dns.py` in its own process, talked to over stdin/stdout."""

    def __init__(self, upstream_port: int, delay_ms: float, max_seconds: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "delay_dns.py"), "--upstream",
             f"127.0.0.1:{upstream_port}", "--delay-ms", str(delay_ms),
             "--max-seconds", str(max_seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the delay proxy did not start")
        self.port = int(json.loads(line)["port"])

    def stats(self) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def queries(self) -> int:
        stats = self.stats()
        return stats["udp_queries"] + stats["tcp_queries"]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def proxy_rtt(port: int, rounds: int = 20) -> float:
    """Median seconds of one sequential query through the proxy (should be ~20 ms)."""
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.cache = None
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        resolver.resolve(POLICY_DOMAIN, "TXT")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _worker_cmd(kind: str, args: argparse.Namespace, port: int, data: Path,
                *extra: str) -> list[str]:
    python = str(PROJECT_PYTHON if PROJECT_PYTHON.exists() else sys.executable)
    return [python, str(Path(__file__).resolve()), "--worker", kind, "--port", str(port),
            "--data", str(data), "--dns-timeout", str(args.dns_timeout), *extra]


def _failed(run: Run) -> str | None:
    if run.timed_out:
        return "timeout"
    if run.returncode != 0 or not run.result:
        last = run.stderr_tail.strip().splitlines()[-1:] or ["?"]
        return f"failed (exit {run.returncode}: {last[0][:120]})"
    return None


def harness(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO))
    from tests.dnslab.server import KnotServer

    began = time.perf_counter()
    # SIGTERM -> SystemExit, so the `finally` below still stops knot and the proxy
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="dmarcbot-identify-bench-"))
    knot: KnotServer | None = None
    proxy: Proxy | None = None
    try:
        _progress(f"generating {args.ips} sources (seed {args.seed}) in {work}")
        sources, zone = generate(args.ips, args.seed)
        zones = work / "zones"
        zones.mkdir()
        for path in ZONES_DIR.glob("*.zone"):
            shutil.copy(path, zones / path.name)
        (zones / "zz-identify-bench.zone").write_text(zone)
        data = work / "activities.json"
        data.write_text(json.dumps(activity_rows(sources, args.seed)))
        load = os.getloadavg()[0]
        knot = KnotServer(zones, ipv6=False, start_timeout=30).start()
        proxy = Proxy(knot.port, args.delay_ms, args.max_seconds)
        rtt = proxy_rtt(proxy.port)
        _progress(f"knot on 127.0.0.1:{knot.port}, delay proxy on 127.0.0.1:{proxy.port}, "
                  f"one query through it: {rtt * 1000:.1f} ms")
        expected_ptr = sum(1 for s in sources if s.ptrs)
        expected_confirmed = sum(1 for s in sources if s.confirmed)
        rows: list[dict[str, object]] = []
        problems: list[str] = []

        # -- sequential --------------------------------------------------------------------
        rng = random.Random(args.seed + 2)
        sizes = [int(n) for n in args.samples.split(",") if n]
        if args.sequential_full:
            sizes.append(args.ips)
        seq_runs = []
        for size in sizes:
            sample = rng.sample(sources, size) if size < len(sources) else sources
            sample_file = work / f"sample-{size}.json"
            sample_file.write_text(json.dumps([s.ip for s in sample]))
            _progress(f"sequential on {size} IPs (~{size * 1.75 * args.delay_ms / 1000:.0f} s)")
            run = run_child(_worker_cmd("sequential", args, proxy.port, data, "--sample",
                                        str(sample_file)), args.timeout, proxy)
            failure = _failed(run)
            if failure:
                problems.append(f"sequential {size}: {failure}")
                continue
            r = run.result
            want_c = sum(1 for s in sample if s.confirmed)
            want_p = sum(1 for s in sample if s.ptrs)
            if (r["confirmed"], r["with_ptr"]) != (want_c, want_p) or r["errors"]:
                problems.append(f"sequential {size}: confirmed {r['confirmed']}/{want_c}, "
                                f"with PTR {r['with_ptr']}/{want_p}, errors {r['errors']}")
            seq_runs.append((size, run))
        if not seq_runs:
            raise SystemExit("the sequential baseline did not run: " + "; ".join(problems))
        # extrapolate: wall = start-up + fixed part (SPF trees, DKIM) + per-IP part, linear in IPs
        samples = [x for x in seq_runs if x[0] < args.ips] or seq_runs
        size, run = max(samples, key=lambda x: x[0])
        full = next((x[1] for x in seq_runs if x[0] >= args.ips), None)
        r = run.result
        per_ip = float(r["per_ip_s"]) / size  # type: ignore[arg-type]
        seq_wall = run.wall + per_ip * (args.ips - size)
        per_ip_q = (int(r["queries"]) - int(r["fixed_queries"])) / size  # type: ignore[call-overload]
        seq_queries = round(int(r["fixed_queries"]) + per_ip_q * args.ips)  # type: ignore[call-overload]
        for s, sr in seq_runs:
            q = sr.result
            rows.append({"name": (f"**sequential, measured on all {s}**" if s >= args.ips
                                  else f"sequential, measured on a sample of {s}"), "ips": s,
                         "queries": q["queries"], "proxy": sr.proxy_queries, "wall": sr.wall,
                         "inproc": q["total_s"], "cpu": sr.cpu, "rss": sr.rss_mb,
                         "ratio": 1.0 if s >= args.ips else None,
                         "note": f"{float(q['per_ip_s']) / s * 1000:.1f} ms per IP, "  # type: ignore[arg-type]
                                 f"fixed part {float(q['fixed_s']):.2f} s / "  # type: ignore[arg-type]
                                 f"{q['fixed_queries']} queries"})
        extrapolated = size < args.ips
        if extrapolated:
            note = "start-up + fixed part + per-IP cost x IPs"
            if full is not None:
                note += (f"; the measured full run took {full.wall:.1f} s "
                         f"({(seq_wall / full.wall - 1) * 100:+.1f} % off)")
            rows.append({"name": (f"sequential, extrapolated to {args.ips} from {size}"
                                  if full else
                                  f"**sequential, extrapolated to {args.ips}** from {size}"),
                         "ips": args.ips, "queries": f"≈{seq_queries}", "proxy": "",
                         "wall": seq_wall, "inproc": None, "cpu": None, "rss": None,
                         "ratio": None if full else 1.0, "note": note})
        if full is not None:  # the ratios are taken against the measured full run
            seq_wall = full.wall
        fit = None
        if len(samples) >= 2:
            (s1, a), (s2, b) = sorted(samples, key=lambda x: x[0])[:2]
            slope = (b.wall - a.wall) / (s2 - s1)
            fit = (a.wall - slope * s1 + slope * args.ips, slope)

        # -- dmarcbot ------------------------------------------------------------------------
        targets: list[tuple[str, bool, str]] = []
        for concurrency in [int(c) for c in args.concurrency.split(",") if c]:
            label = f"dmarcbot c={concurrency}" + (" (default)" if concurrency == 64 else "")
            _progress(f"{label}: cold alone, then cold + warm in another process")
            cold = run_child(_worker_cmd("dmarcbot", args, proxy.port, data, "--concurrency",
                                         str(concurrency), "--phases", "cold"),
                             args.timeout, proxy)
            both = run_child(_worker_cmd("dmarcbot", args, proxy.port, data, "--concurrency",
                                         str(concurrency), "--phases", "cold,warm"),
                             args.timeout, proxy)
            failure = _failed(cold) or _failed(both)
            if failure:
                problems.append(f"{label}: {failure}")
                continue
            r, w = cold.result, both.result
            _check(problems, label, r, "cold", expected_ptr, expected_confirmed)
            _check(problems, label + " (2nd process)", w, "cold", expected_ptr,
                   expected_confirmed)
            _check(problems, label + " warm", w, "warm", expected_ptr, expected_confirmed)
            ratio = seq_wall / cold.wall
            rows.append({"name": f"**{label}, cold**", "ips": r["ips"],
                         "queries": r["cold_queries"], "proxy": cold.proxy_queries,
                         "wall": cold.wall, "inproc": r["cold_s"], "cpu": cold.cpu,
                         "rss": cold.rss_mb, "ratio": ratio,
                         "note": f"{r['cold_named']} sources named"})
            rows.append({"name": f"{label}, warm (after a cold run, same process and "
                                 "MemoryCache)",
                         "ips": w["ips"], "queries": w["warm_queries"], "proxy": "",
                         "wall": None, "inproc": w["warm_s"], "cpu": None, "rss": both.rss_mb,
                         "ratio": None,
                         "note": f"its process: cold {float(w['cold_s']):.2f} s + warm, "  # type: ignore[arg-type]
                                 f"{both.wall:.2f} s wall, {both.cpu:.1f} s CPU"})
            targets.append((f"{label}: cold ≥ {TARGET_SPEEDUP:.0f}x sequential "
                            f"(wall {seq_wall:.1f} / {cold.wall:.2f} s)",
                            ratio >= TARGET_SPEEDUP, f"{ratio:.1f}x"))
            targets.append((f"{label}: warm run < {TARGET_WARM_S:.0f} s",
                            float(w["warm_s"]) < TARGET_WARM_S, f"{w['warm_s']:.3f} s"))
        if args.no_delay:  # what the same work costs with answers at loopback speed: the CPU floor
            label = "dmarcbot c=64, NO added delay (straight to knot; diagnostic)"
            _progress(label)
            run = run_child(_worker_cmd("dmarcbot", args, knot.port, data, "--phases", "cold"),
                            args.timeout, proxy)
            failure = _failed(run)
            if failure:
                problems.append(f"{label}: {failure}")
            else:
                r = run.result
                _check(problems, label, r, "cold", expected_ptr, expected_confirmed)
                rows.append({"name": label, "ips": r["ips"], "queries": r["cold_queries"],
                             "proxy": run.proxy_queries, "wall": run.wall, "inproc": r["cold_s"],
                             "cpu": run.cpu, "rss": run.rss_mb, "ratio": None,
                             "note": "not a contender: no 20 ms; shows the CPU cost alone"})
        if args.sqlite:
            db = work / "store.sqlite"
            label = "dmarcbot c=64 + SQLite store cache"
            _progress(f"{label}: cold in one process, warm in a new one")
            cold = run_child(_worker_cmd("dmarcbot", args, proxy.port, data, "--worker-sqlite",
                                         str(db), "--phases", "cold"), args.timeout, proxy)
            warm = run_child(_worker_cmd("dmarcbot", args, proxy.port, data, "--worker-sqlite",
                                         str(db), "--phases", "warm"), args.timeout, proxy)
            for phase, run in (("cold", cold), ("warm", warm)):
                failure = _failed(run)
                if failure:
                    problems.append(f"{label} {phase}: {failure}")
                    continue
                r = run.result
                _check(problems, f"{label} {phase}", r, phase, expected_ptr, expected_confirmed)
                rows.append({"name": f"{label}, {phase}" + (" (new process)" * (phase == "warm")),
                             "ips": r["ips"], "queries": r[f"{phase}_queries"],
                             "proxy": run.proxy_queries, "wall": run.wall,
                             "inproc": r[f"{phase}_s"], "cpu": run.cpu, "rss": run.rss_mb,
                             "ratio": seq_wall / run.wall if phase == "cold" else None,
                             "note": ""})
                if phase == "warm":
                    targets.append((f"{label}: warm run in a new process < "
                                    f"{TARGET_WARM_S:.0f} s (in-process)",
                                    float(r["warm_s"]) < TARGET_WARM_S, f"{r['warm_s']:.3f} s"))
        stats = proxy.stats()
        harness_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(_report(args, rows, targets, problems, rtt, seq_runs, fit, extrapolated, stats,
                      harness_mb, expected_ptr, expected_confirmed, time.perf_counter() - began,
                      (load, os.getloadavg()[0])))
        return 1 if problems else 0
    finally:
        if proxy is not None:
            proxy.stop()
        if knot is not None:
            knot.stop()
        shutil.rmtree(work, ignore_errors=True)


def _check(problems: list[str], label: str, r: dict[str, object], phase: str,
           expected_ptr: int, expected_confirmed: int) -> None:
    got = (r.get(f"{phase}_with_ptr"), r.get(f"{phase}_confirmed"), r.get(f"{phase}_temporary"))
    if got != (expected_ptr, expected_confirmed, 0):
        problems.append(f"{label}: with PTR {got[0]}/{expected_ptr}, confirmed "
                        f"{got[1]}/{expected_confirmed}, temporary failures {got[2]}")


def _fmt(value: object, spec: str = ".2f") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _report(args: argparse.Namespace, rows: list[dict[str, object]],
            targets: list[tuple[str, bool, str]], problems: list[str], rtt: float,
            seq_runs: list[tuple[int, Run]], fit: tuple[float, float] | None,
            extrapolated: bool, stats: dict[str, int], harness_mb: float, expected_ptr: int,
            expected_confirmed: int, elapsed: float, load: tuple[float, float]) -> str:
    out = [f"# Identification benchmark: {args.ips} distinct source IPs, "
           f"{args.delay_ms:g} ms added per DNS answer", "",
           f"Command: `{' '.join(['.venv/bin/python', 'bench/identify_bench.py', *sys.argv[1:]])}`"
           f" · {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} CPUs · "
           f"one query through the proxy: {rtt * 1000:.1f} ms (median of 20) · "
           f"{expected_ptr} IPs with PTR, {expected_confirmed} forward-confirmed · "
           f"run took {elapsed:.0f} s · load average {load[0]:.2f} before, {load[1]:.2f} after",
           "",
           "| contender | IPs | queries sent | seen by proxy | wall s | in-process s | CPU s "
           "| peak RSS MB | ratio vs sequential | note |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        ratio = row["ratio"]
        out.append(
            f"| {row['name']} | {row['ips']} | {_fmt(row['queries'])} | {_fmt(row['proxy'])} "
            f"| {_fmt(row['wall'])} | {_fmt(row['inproc'], '.3f')} | {_fmt(row['cpu'], '.1f')} "
            f"| {_fmt(row['rss'], '.0f')} "
            f"| {'-' if ratio is None else format(ratio, '.1f') + 'x'} | {row['note']} |")
    out.append("")
    if extrapolated and fit is not None:
        samples = [x for x in seq_runs if x[0] < args.ips]
        (s1, a), (s2, b) = sorted(samples, key=lambda x: x[0])[:2]
        rate1 = float(a.result["per_ip_s"]) / s1 * 1000  # type: ignore[arg-type]
        rate2 = float(b.result["per_ip_s"]) / s2 * 1000  # type: ignore[arg-type]
        out.append(f"Linearity of the sequential baseline: {rate1:.2f} ms per IP at {s1} IPs, "
                   f"{rate2:.2f} ms at {s2}; a straight line through the two wall times "
                   f"({a.wall:.2f} s, {b.wall:.2f} s) predicts {fit[0]:.1f} s at {args.ips} "
                   f"({fit[1] * 1000:.2f} ms per IP).")
        out.append("")
    out += ["| target | result | |", "|---|---:|---|"]
    out += [f"| {name} | {value} | {'PASS' if ok else 'FAIL'} |" for name, ok, value in targets]
    out.append("")
    out.append(f"Proxy totals: {json.dumps(stats)} · harness peak RSS {harness_mb:.0f} MB.")
    if problems:
        out += ["", "**PROBLEMS:**", *[f"- {p}" for p in problems]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ips", type=int, default=DEFAULT_IPS)
    parser.add_argument("--concurrency", default=DEFAULT_CONCURRENCY,
                        help="DnsEvidence concurrency values to run, comma-separated")
    parser.add_argument("--samples", default=DEFAULT_SAMPLES,
                        help="sequential sample sizes (the largest is extrapolated)")
    parser.add_argument("--sequential-full", action="store_true",
                        help="run the sequential baseline on every IP (~6 min at 10k)")
    parser.add_argument("--no-sqlite", dest="sqlite", action="store_false",
                        help="skip the SQLite-cache contender")
    parser.add_argument("--no-diagnostic", dest="no_delay", action="store_false",
                        help="skip the run straight to knot without the added delay")
    parser.add_argument("--delay-ms", type=float, default=DELAY_MS)
    parser.add_argument("--dns-timeout", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per contender")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="the proxy stops after this long, whatever happens")
    parser.add_argument("--seed", type=int, default=SEED)
    # worker mode (internal)
    parser.add_argument("--worker", choices=("dmarcbot", "sequential"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--sample", help=argparse.SUPPRESS)
    parser.add_argument("--phases", default="cold,warm", help=argparse.SUPPRESS)
    parser.add_argument("--worker-sqlite", dest="sqlite_path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return _run_worker(args) if args.worker else harness(args)


def _run_worker(args: argparse.Namespace) -> int:
    args.concurrency = int(args.concurrency) if str(args.concurrency).isdigit() else 64
    args.sqlite = args.sqlite_path
    if args.worker == "dmarcbot":
        worker_dmarcbot(args)
    else:
        worker_sequential(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
