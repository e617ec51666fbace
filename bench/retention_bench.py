"""Retention on Table Storage (issue 14): what expiring a month costs, in requests and client CPU.

The tenant of bench/scale_bench.py (40 reporters per domain and day, 15 to 40 records a report),
`--domains` domains over `--days` days, built on Azurite a day at a time with the naming step's
read of every domain after each day (as the timer does). Then:

  expire    the first half of the days expired in one call: requests (reads and writes),
            entities deleted, client CPU, wall time, per report expired (and, for scale,
            ingest's CPU and requests per report stored);
  again     the same horizon again: its requests (target: one);
  project   a 200-domain tenant (~3M reports a year): a month's expiry at these costs.

    .venv/bin/python bench/retention_bench.py [--domains 2] [--days 8]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from scale_bench import DAY0, REPORTERS, write_day  # noqa: E402

from analysis import Limits  # noqa: E402
from function_app.pipeline import ingest_paths  # noqa: E402
from store.tables import TableStore  # noqa: E402
from tests.azurite import running_azurite  # noqa: E402

#: Reports a 200-domain tenant receives in a month (the issue's ~3M a year).
MONTH = 3_000_000 // 12


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=2)
    parser.add_argument("--days", type=int, default=8)
    args = parser.parse_args()
    counts = {"GET": 0, "other": 0}

    def hook(request: Any) -> None:
        method = request.http_request.method
        counts["GET" if method == "GET" else "other"] += 1

    limits = Limits(max_input_bytes=1 << 30, max_decompressed_bytes=1 << 32)
    with tempfile.TemporaryDirectory(prefix="retention-bench-") as work, \
            running_azurite() as azurite, \
            TableStore.from_connection_string(azurite.connection_string, prefix="bench",
                                              raw_request_hook=hook) as store:
        stored, ingest_cpu, ingest_requests = 0, 0.0, 0
        for day in range(args.days):
            folder = Path(work) / f"day{day:03d}"
            write_day(folder, day, range(args.domains), range(REPORTERS))
            before, clock = counts["GET"] + counts["other"], time.process_time()
            stored += len(list(ingest_paths([folder], store, limits)))
            ingest_cpu += time.process_time() - clock
            ingest_requests += counts["GET"] + counts["other"] - before
            for domain in store.domains():
                list(store.sources(domain))
            print(f"day {day + 1} of {args.days} stored", file=sys.stderr)
        rows = sum(1 for _ in store._table("rollups").list_entities(select=["RowKey"]))
        horizon = (dt.datetime.fromtimestamp(DAY0, dt.UTC)
                   + dt.timedelta(days=args.days // 2)).date()
        counts.update(GET=0, other=0)
        store._retention.batches_per_call = 10**6  # one call, to measure every report's cost
        cpu, wall = time.process_time(), time.perf_counter()
        gone = store.expire(horizon)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        reads, writes = counts["GET"], counts["other"]
        left = sum(1 for _ in store._table("rollups").list_entities(select=["RowKey"]))
        counts.update(GET=0, other=0)
        assert store.expire(horizon) == 0
        again = counts["GET"] + counts["other"]
    requests = reads + writes
    per_request = wall / requests
    print(f"| expired | {gone} reports of {args.domains} domains, {rows - left} daily rows "
          f"({(rows - left) / gone:.1f} a report) |")
    print(f"| requests a report expired (reads + writes) | {requests / gone:.3f} "
          f"({reads / gone:.3f} + {writes / gone:.3f}) |")
    print(f"| client CPU a report expired | {cpu / gone * 1000:.2f} ms |")
    print(f"| the same, a report stored (ingest, for scale) | {ingest_cpu / stored * 1000:.2f} ms, "
          f"{ingest_requests / stored:.2f} requests |")
    print(f"| wall a report expired (Azurite, {per_request * 1000:.1f} ms a request) "
          f"| {wall / gone * 1000:.1f} ms |")
    print(f"| requests of the same horizon again | {again} |")
    month_requests = MONTH * requests / gone
    print(f"| 200 domains, a month ({MONTH:,} reports): requests | {month_requests:,.0f} |")
    print(f"| … client CPU | {MONTH * cpu / gone:,.0f} s |")
    print(f"| … at 8.6 ms a request, one at a time | {month_requests * 0.0086:,.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
