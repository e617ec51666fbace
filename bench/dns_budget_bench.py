"""DNS budget benchmark: a hostile report against a silent resolver and a 20-name PTR fan-out.

Two reports, each stored by `dmarcbot ingest` in a fresh SQLite store:

  v6   one aggregate report (gzip) naming 65,536 distinct IPv6 sources, each in its own /64
       (2001:db8:0:N::1, so grouping by /64 does not help: the source cap has to)
  v4   one aggregate report naming 20,000 distinct IPv4 sources (198.18.0.0/15)

Two resolvers on loopback:

  silent   tests/dnslab/blackhole.py: reads every question, never answers
  fanout   a tiny UDP responder (this file, its own process): every PTR answer holds 20 names
           unique to the address; their A/AAAA lead elsewhere (nothing confirms); `. NS` is
           answered (the breaker's probe); anything else is NXDOMAIN

Two contenders, each a subprocess on a fresh copy of the store (cold DNS cache), wall time
taken around it:

  senders   `dmarcbot --db COPY senders --nameserver 127.0.0.1:PORT --json`
  timer     `function_app.pipeline.identify_domains(store, load_catalog(),
             DnsEvidence(make_resolver([server]), cache=store), domains)`, as the timer's
             `schedule.name_and_notify` calls it

each run by the current tree and by the code before the budget (`--base`, a `git worktree` of
the earlier commit), the latter with a timeout (default 300 s) so its failure to finish shows.

    git worktree add /tmp/dmarcbot-base <commit before the budget>
    .venv/bin/python bench/dns_budget_bench.py --base /tmp/dmarcbot-base
"""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYTHON = REPO / ".venv" / "bin" / "python"
DOMAIN = "contoso.com"
REPORTER = "dmarc@receiver.example"
TARGET_S = 180.0

TIMER_SNIPPET = """
import asyncio, json, sys
from analysis.catalog import load_catalog
from analysis.dnsevidence import DnsEvidence, make_resolver
from function_app.pipeline import identify_domains
from store import SqliteStore
store = SqliteStore(sys.argv[1])
dns = DnsEvidence(make_resolver([sys.argv[2]]), cache=store)
verdicts = asyncio.run(identify_domains(store, load_catalog(), dns, [sys.argv[3]]))
sources = sum(s.source_count for s in verdicts)
states = {"looked up": sources}
for s in verdicts:
    for state, n in s.dns_statuses:
        states[state] = states.get(state, 0) + n
        states["looked up"] -= n
print(json.dumps({"services": len(verdicts), "sources": sources, "queries": dns.queries,
                  "dns": states}))
"""


# --------------------------------------------------------------------------- the reports


def report(kind: str) -> bytes:
    """The gzip of one aggregate report: every source fails DMARC; volumes 1..1000."""
    if kind == "v6":
        ips = [f"2001:db8:0:{n:x}::1" for n in range(65536)]
    else:
        base = int(ipaddress.ip_address("198.18.0.1"))
        ips = [str(ipaddress.ip_address(base + n)) for n in range(20000)]
    rows = []
    for n, ip in enumerate(ips):
        count = 1 + (n * 7919) % 1000
        rows.append(
            f"<record><row><source_ip>{ip}</source_ip><count>{count}</count><policy_evaluated>"
            "<disposition>none</disposition><dkim>fail</dkim><spf>fail</spf>"
            "</policy_evaluated></row><identifiers><envelope_from>contoso.com</envelope_from>"
            "<header_from>contoso.com</header_from></identifiers><auth_results><spf><domain>"
            "contoso.com</domain><scope>mfrom</scope><result>fail</result></spf></auth_results>"
            "</record>")
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<feedback><version>1.0</version>'
           f"<report_metadata><org_name>Bench Receiver</org_name><email>{REPORTER}</email>"
           f"<report_id>budget-{kind}</report_id><date_range><begin>1764288000</begin>"
           "<end>1764374399</end></date_range></report_metadata><policy_published>"
           f"<domain>{DOMAIN}</domain><p>none</p></policy_published>{''.join(rows)}"
           "</feedback>\n")
    return gzip.compress(xml.encode(), 9)


# --------------------------------------------------------------------------- the fan-out responder


def _qname(data: bytes) -> tuple[str, int]:
    labels, at = [], 12
    while data[at]:
        length = data[at]
        labels.append(data[at + 1:at + 1 + length].decode("ascii", "replace"))
        at += 1 + length
    return ".".join(labels).lower(), at + 1


def _answer(query: bytes) -> bytes:
    qname, end = _qname(query)
    qtype = struct.unpack("!H", query[end:end + 2])[0]
    question = query[12:end + 4]
    flags = 0x8180  # response, recursion desired and available
    records = b""
    count = 0
    if qtype == 12:  # PTR: 20 names, compressed against a shared suffix
        tag = f"{zlib.crc32(qname.encode()):08x}"
        suffix_at = None
        for k in range(20):
            if suffix_at is None:
                name_offset = 12 + len(question) + len(records) + 12
                rdata = bytes([2]) + b"h0" + bytes([8]) + tag.encode() + b"\x02fo\x07example\x00"
                suffix_at = name_offset + 3
            else:
                label = f"h{k}".encode()
                rdata = bytes([len(label)]) + label + struct.pack("!H", 0xC000 | suffix_at)
            records += struct.pack("!HHHIH", 0xC00C, 12, 1, 3600, len(rdata)) + rdata
            count += 1
    elif qtype in (1, 28) and qname.endswith(".fo.example"):  # leads elsewhere
        rdata = (socket.inet_pton(socket.AF_INET, "192.0.2.1") if qtype == 1
                 else socket.inet_pton(socket.AF_INET6, "2001:db8:ffff::1"))
        records = struct.pack("!HHHIH", 0xC00C, qtype, 1, 3600, len(rdata)) + rdata
        count = 1
    elif qname == "" and qtype == 2:  # `. NS`: the probe
        rdata = b"\x02ns\x04test\x00"
        records = struct.pack("!HHHIH", 0xC00C, 2, 1, 3600, len(rdata)) + rdata
        count = 1
    else:
        flags |= 3  # NXDOMAIN
    return query[:2] + struct.pack("!HHHHH", flags, 1, count, 0, 0) + question + records


def serve_fanout(port_file: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(sock.getsockname()[1]))
    while True:
        data, addr = sock.recvfrom(4096)
        try:
            sock.sendto(_answer(data), addr)
        except (IndexError, struct.error, OSError):
            continue


class Fanout:
    def __init__(self) -> None:
        self.port_file = Path(tempfile.mkstemp(prefix="fanout-port-")[1])
        self.port_file.write_text("")
        self.proc = subprocess.Popen([str(PYTHON), __file__, "--serve-fanout",
                                      str(self.port_file)])
        for _ in range(200):
            if self.port_file.read_text().strip():
                break
            time.sleep(0.05)
        self.port = int(self.port_file.read_text())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self.port_file.unlink(missing_ok=True)


class Silent:
    def __init__(self) -> None:
        sys.path.insert(0, str(REPO))
        from tests.dnslab.blackhole import BlackHole

        self.hole = BlackHole().start()
        self.port = self.hole.port

    def stop(self) -> None:
        self.hole.stop()


# --------------------------------------------------------------------------- the runs


def run(tree: Path, cmd: list[str], timeout: float, out: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(tree), "DMARCBOT_TRUSTED_REPORTERS": REPORTER}
    started = time.perf_counter()
    with open(out, "wb") as stdout:
        proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=stdout, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"wall": None, "status": f"did not finish in {timeout:.0f} s"}
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        return {"wall": wall, "status": f"exit {proc.returncode}: "
                f"{err.decode(errors='replace').strip().splitlines()[-1:]}"}
    return {"wall": wall, "status": "ok", "stderr": err.decode(errors="replace")}


def senders_summary(out: Path) -> str:
    states: dict[str, int] = {}
    sources = 0
    for line in out.read_text().splitlines():
        row = json.loads(line)
        for s in row["sources"]:
            sources += 1
            state = s.get("dns", "n/a (before the budget)")
            states[state] = states.get(state, 0) + 1
    return f"{sources:,} sources; " + ", ".join(f"{v:,} {k}" for k, v in sorted(states.items()))


def timer_summary(out: Path) -> str:
    r = json.loads(out.read_text().strip().splitlines()[-1])
    return (f"{r['sources']:,} sources; {r['queries']:,} queries sent; "
            + ", ".join(f"{v:,} {k}" for k, v in sorted(r["dns"].items())))


def one(label: str, tree: Path, db: Path, kind: str, resolver: str, contender: str,
        timeout: float, work: Path) -> dict[str, object]:
    copy = work / f"{label}-{kind}-{resolver}-{contender}.sqlite3"
    shutil.copy(db, copy)
    server = Fanout() if resolver == "fanout" else Silent()
    ns = f"127.0.0.1:{server.port}"
    out = work / f"{copy.stem}.out"
    try:
        if contender == "senders":
            cmd = [str(PYTHON), "-m", "function_app.cli", "--db", str(copy), "senders",
                   "--nameserver", ns, "--json"]
        else:
            cmd = [str(PYTHON), "-c", TIMER_SNIPPET, str(copy), ns, DOMAIN]
        result = run(tree, cmd, timeout, out)
    finally:
        server.stop()
    if result["status"] == "ok":
        try:
            result["detail"] = (senders_summary(out) if contender == "senders"
                                else timer_summary(out))
        except (ValueError, KeyError, IndexError) as exc:
            result["detail"] = f"unreadable output ({type(exc).__name__})"
    return {"code": label, "report": kind, "resolver": resolver, "contender": contender,
            **result}


def ingest(tree: Path, gz: Path, db: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "DMARCBOT_TRUSTED_REPORTERS": REPORTER}
    subprocess.run([str(PYTHON), "-m", "function_app.cli", "--db", str(db), "ingest", str(gz)],
                   cwd=tree, env=env, check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="a worktree of the code before the budget")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds per run before it counts as not finished")
    parser.add_argument("--jobs", type=int, default=1, help="baseline runs at a time")
    parser.add_argument("--reports", default="v6,v4")
    parser.add_argument("--resolvers", default="silent,fanout")
    parser.add_argument("--serve-fanout", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_fanout:
        serve_fanout(args.serve_fanout)
        return 0
    work = Path(tempfile.mkdtemp(prefix="dns-budget-bench-"))
    trees = [("now", REPO)] + ([("before", args.base.resolve())] if args.base else [])
    began = time.perf_counter()
    try:
        dbs: dict[tuple[str, str], Path] = {}
        sizes = {}
        for kind in args.reports.split(","):
            gz = work / f"{kind}.xml.gz"
            gz.write_bytes(report(kind))
            sizes[kind] = gz.stat().st_size
            for label, tree in trees:  # each code stores it in its own schema
                dbs[label, kind] = work / f"{label}-{kind}.sqlite3"
                ingest(tree, gz, dbs[label, kind])
        plan = [(label, tree, kind, resolver, contender)
                for label, tree in trees for kind in args.reports.split(",")
                for resolver in args.resolvers.split(",") for contender in ("senders", "timer")]
        results = []
        for label, tree, kind, resolver, contender in [p for p in plan if p[0] == "now"]:
            print(f"now: {kind} {resolver} {contender}", file=sys.stderr, flush=True)
            results.append(one(label, tree, dbs[label, kind], kind, resolver, contender,
                                args.timeout, work))
        base = [p for p in plan if p[0] == "before"]
        if base:
            print(f"before: {len(base)} runs, {args.jobs} at a time", file=sys.stderr,
                  flush=True)
            with ThreadPoolExecutor(args.jobs) as pool:
                results += list(pool.map(
                    lambda p: one(p[0], p[1], dbs[p[0], p[2]], p[2], p[3], p[4], args.timeout,
                                  work), base))
        print(table(results, sizes, args, time.perf_counter() - began))
        failed = [r for r in results if r["code"] == "now" and
                  (r["wall"] is None or r["status"] != "ok" or float(r["wall"]) >= TARGET_S)]
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(results: list[dict[str, object]], sizes: dict[str, int], args: argparse.Namespace,
          elapsed: float) -> str:
    names = {"v6": "65,536 IPv6 sources (one per /64)", "v4": "20,000 IPv4 sources"}
    out = [f"Command: `.venv/bin/python bench/dns_budget_bench.py {' '.join(sys.argv[1:])}` · "
           f"{time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} CPUs · run took "
           f"{elapsed:.0f} s · reports: "
           + ", ".join(f"{k} {v / 1e6:.2f} MB gzip" for k, v in sizes.items()), "",
           "| report | resolver | contender | now: wall s | before: wall s | ratio | now: "
           "what happened | before |", "|---|---|---|---:|---:|---:|---|---|"]
    keyed = {(r["code"], r["report"], r["resolver"], r["contender"]): r for r in results}
    for (code, kind, resolver, contender), r in keyed.items():
        if code != "now":
            continue
        b = keyed.get(("before", kind, resolver, contender))
        now_wall = f"{r['wall']:.1f}" if r["wall"] is not None else "DNF"
        if b is None:
            before_wall, ratio, before_note = "-", "-", "-"
        elif b["wall"] is None or b["status"] != "ok":
            before_wall, before_note = "did not finish", str(b["status"])
            ratio = f"> {args.timeout / r['wall']:.0f}x" if r["wall"] else "-"
        else:
            before_wall, before_note = f"{b['wall']:.1f}", str(b.get("detail", ""))
            ratio = f"{float(b['wall']) / float(r['wall']):.1f}x" if r["wall"] else "-"
        note = r.get("detail") or r["status"]
        out.append(f"| {names[str(kind)]} | {resolver} | {contender} | {now_wall} | "
                   f"{before_wall} | {ratio} | {note} | {before_note} |")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
