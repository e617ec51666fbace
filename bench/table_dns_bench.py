"""The DNS cache on Table Storage (issue 14): requests and time of a run that names sources with
the store as its cache, cold (every answer new) and warm (a new process, every answer cached).

identify_bench's generated sources (`--sources`, seed fixed) are named against a loopback knot
server (no added delay: the cache's own cost shows) with a `TableStore` on Azurite as the
`DnsCache`, every request counted (`raw_request_hook`); the store is closed after the run (which
writes what it kept back). Each tree (this one and, with `--baseline REV`, that revision in a
`git worktree`) runs in its own processes, one after the other, on one Azurite.

    .venv/bin/python bench/table_dns_bench.py [--sources 10000] [--baseline a30257b]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import identify_bench as ib  # noqa: E402
import revisions  # noqa: E402

from tests.azurite import running_azurite  # noqa: E402
from tests.dnslab.server import KnotServer  # noqa: E402

SEED = 7

CHILD = r"""
import asyncio, json, sys, time
from analysis.catalog import load_catalog
from analysis.dnsevidence import DnsBudget, DnsEvidence, make_resolver
from analysis.senders import analyse_activities
from store.tables import TableStore
sys.path.insert(0, sys.argv[4])
import identify_bench as ib

conn, prefix, knot, _, data = sys.argv[1:6]
requests = [0]
store = TableStore.from_connection_string(
    conn, prefix=prefix, raw_request_hook=lambda r: requests.__setitem__(0, requests[0] + 1))
activities, catalog = ib.load_activities(data), load_catalog()
dns = DnsEvidence(make_resolver([knot]), cache=store,
                  budget=DnsBudget(max_sources=len(activities), seconds=3600))
wall, cpu = time.perf_counter(), time.process_time()
asyncio.run(analyse_activities(activities, catalog, dns))
store.close()
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "requests": requests[0], "queries": dns.queries}))
"""


def run(tree: Path, conn: str, prefix: str, knot: str, data: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, conn, prefix, knot, str(ROOT / "bench"), str(data)],
        cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, default=10_000)
    parser.add_argument("--baseline", help="also run this revision (a git worktree)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dmarcbot-table-dns-") as tmp:
        work = Path(tmp)
        sources, zone = ib.generate(args.sources, SEED)
        zones = work / "zones"
        zones.mkdir()
        for path in ib.ZONES_DIR.glob("*.zone"):
            shutil.copy(path, zones / path.name)
        (zones / "zz-bench.zone").write_text(zone)
        data = work / "activities.json"
        data.write_text(json.dumps(ib.activity_rows(sources, SEED)))
        knot = KnotServer(zones, ipv6=False, start_timeout=30).start()
        try:
            with revisions.trees(args.baseline, work, "now") as trees, \
                    running_azurite() as azurite:
                rows = []
                for label, tree in trees.items():
                    prefix = "b" + uuid.uuid4().hex[:12]
                    server = f"127.0.0.1:{knot.port}"
                    cold = run(tree, azurite.connection_string, prefix, server, data)
                    warm = run(tree, azurite.connection_string, prefix, server, data)
                    rows.append((label, cold, warm))
        finally:
            knot.stop()
    print(f"{args.sources:,} sources, knot on loopback (no added delay), Table Storage on "
          "Azurite as the DNS cache\n")
    print("| tree | cold: DNS questions | cold: requests | cold: wall s | cold: CPU s "
          "| warm: DNS questions | warm: requests | warm: wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, cold, warm in rows:
        print(f"| {label} | {cold['queries']:,} | {cold['requests']:,} | {cold['wall']:.2f} "
              f"| {cold['cpu']:.2f} | {warm['queries']:,} | {warm['requests']:,} "
              f"| {warm['wall']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
