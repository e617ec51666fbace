"""The daily naming step on Table Storage (issue 14), projected to 200 domains after a year.

The scale bench's tenant generator, two of its domains on Azurite, each day's timer step run
for both (`identify_domains`, offline), then again with nothing new, in the scale bench's child
(`scale_bench.CHILD`, "daily"). Two builds, in one run:

- **a year**: each domain first gets `--history` distinct sources (a year's worth at the scale
  bench's shape: one record in twenty from a new address), named once; then `--days` days of
  reports. The steps of those days are measured as they are, at a year's size: client CPU and
  requests per domain and step.
- **plain**: the same days without the history, on a small table: the time a request waits
  (Azurite scans the whole table on each query, so the year's table would overstate it).

The projection is 200 times a domain's step (its CPU, and its requests at the plain build's
wait). Two domains keep Azurite's whole-table scans short.

    .venv/bin/python bench/table_naming_bench.py [--days 6] [--history 23000]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import scale_bench as sb  # noqa: E402

from tests.azurite import running_azurite  # noqa: E402

DOMAINS = range(2)


def write_history(folder: Path, sources: int) -> None:
    """A day before the bench's first of reports from `sources` addresses per domain never
    seen since, as the scale bench's new addresses are: what a year leaves to keep."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in DOMAINS:
        domain = f"d{n:02d}.example"
        rng = random.Random(f"history-{n}")
        per_report = -(-sources // sb.REPORTERS)
        for r in range(sb.REPORTERS):
            records = []
            for i in range(r * per_report, min(sources, (r + 1) * per_report)):
                ip = f"{10 + n}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
                records.append(sb._record(domain, (ip, "evil.example", "x", "evil.example",
                                                   False, False), rng.randint(1, 3), rng))
            begin = sb.DAY0 - 86400
            (folder / f"{domain}-history-r{r:02d}.xml").write_text(
                '<?xml version="1.0"?><feedback><report_metadata><org_name>Receiver '
                f"{r}</org_name><email>dmarc@r{r:02d}.example</email><report_id>history-{n}-{r}"
                f"</report_id><date_range><begin>{begin}</begin><end>{begin + 86399}</end>"
                f"</date_range></report_metadata><policy_published><domain>{domain}</domain>"
                f"<p>none</p></policy_published>{''.join(records)}</feedback>\n")


def build(azurite: str, prefix: str, folders: list[Path]) -> dict[str, object]:
    started = time.perf_counter()
    built = sb.child(ROOT, "daily", "tables", f"{azurite}|{prefix}", *map(str, folders))
    built["seconds"] = time.perf_counter() - started
    return built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--history", type=int, default=23_000,
                        help="distinct sources per domain before the first day")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dmarcbot-table-naming-bench-") as tmp:
        folders = []
        for day in range(args.days):
            folder = Path(tmp) / f"day{day:03d}"
            sb.write_day(folder, day, DOMAINS, range(sb.REPORTERS))
            folders.append(folder)
        history = Path(tmp) / "history"
        write_history(history, args.history)
        with running_azurite() as azurite:
            plain = build(azurite.connection_string, "plain", folders)
            year = build(azurite.connection_string, "year", [history, *folders])
    results: dict[str, object] = {"plain": plain, "year": year}
    days: list[dict[str, float]] = year["days"][1:]  # type: ignore[index] # the first: history
    print(f"# Naming on Table Storage: 2 domains, {args.history:,} sources each before "
          f"{args.days} days, each day named twice ({year['seconds']:.0f} s; without the "
          f"history {plain['seconds']:.0f} s)")
    print("\n| day | kept | changed | step CPU s | requests | again: CPU s | requests |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, day in enumerate(days, 1):
        print(f"| {n} | {day['new_kept']:,} | {day['new_changed']:,} | {day['new_cpu']:.3f} |"
              f" {day['new_requests']} | {day['same_cpu']:.3f} | {day['same_requests']} |")
    plain_days: list[dict[str, float]] = plain["days"]  # type: ignore[assignment]
    wait = (sum(d["new_wall"] - d["new_cpu"] for d in plain_days)
            / sum(d["new_requests"] for d in plain_days))
    cpu = statistics.mean(d["new_cpu"] / d["domains"] for d in days)
    requests = statistics.mean(d["new_requests"] / d["domains"] for d in days)
    kept = statistics.mean(d["new_kept"] / d["domains"] for d in days)
    changed = statistics.mean(d["new_changed"] / d["domains"] for d in days)
    step = cpu + requests * wait
    results["projection"] = {"wait_ms": wait * 1e3, "cpu_s": cpu, "requests": requests,
                             "kept": kept, "changed": changed, "seconds": 200 * step}
    print("\n| daily naming step, 200 domains after a year (Table Storage) | value |")
    print("|---|---:|")
    print(f"| a domain's sources kept, changed (mean of the days) | {kept:,.0f}, {changed:,.0f} |")
    print(f"| a domain's step: client CPU | {cpu:.3f} s |")
    print(f"| a domain's step: requests, at {wait * 1e3:.1f} ms each (plain build) | "
          f"{requests:.1f}, {requests * wait:.3f} s |")
    print(f"| **200 domains, one naming step after a year** | **{200 * step:,.0f} s** |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
