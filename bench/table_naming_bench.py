"""The daily naming step on Table Storage (issue 14), projected to 200 domains after a year.

The scale bench's tenant generator, two of its domains for `--days` days (40 reporters a day),
is stored on Azurite a day at a time; each day the timer's naming step runs for both domains,
then again with nothing new, in the scale bench's child (`scale_bench.CHILD`, "daily"). Its
`project` turns the costs measured (client CPU per kept and per changed source, requests) into
the step for 200 domains after a year. Two domains keep Azurite's whole-table scans short: the
full scale bench builds twenty.

    .venv/bin/python bench/table_naming_bench.py [--days 12]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import scale_bench as sb  # noqa: E402

from tests.azurite import running_azurite  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=12)
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dmarcbot-table-naming-bench-") as tmp:
        folders = []
        for day in range(args.days):
            folder = Path(tmp) / f"day{day:03d}"
            sb.write_day(folder, day, range(2), range(sb.REPORTERS))
            folders.append(folder)
        with running_azurite() as azurite:
            started = time.perf_counter()
            built = sb.child(ROOT, "daily", "tables", f"{azurite.connection_string}|naming",
                             *map(str, folders))
    print(f"# Naming on Table Storage: 2 domains, {args.days} days, each named twice a day "
          f"({time.perf_counter() - started:.0f} s)")
    print("\n| day | kept | changed | step CPU s | requests | again: CPU s | requests |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, day in enumerate(built["days"], 1):  # type: ignore[arg-type]
        print(f"| {n} | {day['new_kept']:,} | {day['new_changed']:,} | {day['new_cpu']:.3f} |"
              f" {day['new_requests']} | {day['same_cpu']:.3f} | {day['same_requests']} |")
    # the small store's requests stand for the per-request time, as in the scale bench
    results: dict[str, object] = {"tables big build": built, "tables small build": built}
    sb.project(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
