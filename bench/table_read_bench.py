"""Reading a domain's sources on Table Storage (issue 14): client CPU of `TableStore.sources`, the
read the naming step makes of every domain it names, side by side with another revision.

The scale bench's tenant (its generator, `--days` days of two domains, 40 reporters a day) is
stored once on Azurite; then each tree (this one and, with `--baseline REV`, that revision in a
`git worktree`) reads both domains' sources `--rounds` times in a child process of its own,
alternately, on the same tables. The first read of each child settles nothing (the store was
read once after it was built) and is not counted. Client CPU is compared: Azurite's own time
grows with its table whatever the client asks.

    .venv/bin/python bench/table_read_bench.py --baseline a32561d [--days 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import revisions  # noqa: E402
import scale_bench as sb  # noqa: E402

from tests.azurite import running_azurite  # noqa: E402

DOMAINS = ("d00.example", "d01.example")

BUILD = r"""
import sys
from analysis import Limits
from function_app.pipeline import ingest_paths
from store.tables import TableStore
conn, prefix, *folders = sys.argv[1:]
with TableStore.from_connection_string(conn, prefix=prefix) as store:
    list(ingest_paths(folders, store, Limits(max_input_bytes=1 << 30,
                                             max_decompressed_bytes=1 << 32)))
    for domain in ("d00.example", "d01.example"):
        list(store.sources(domain))  # settle what ingest left for the reader
"""

READ = r"""
import json, sys, time
from store.tables import TableStore
conn, prefix, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {"cpu": [], "rows": 0}
with TableStore.from_connection_string(conn, prefix=prefix) as store:
    for n in range(rounds + 1):
        started = time.process_time()
        rows = [r for d in ("d00.example", "d01.example") for r in store.sources(d)]
        if n:  # the first read warms the client up
            out["cpu"].append(time.process_time() - started)
        out["rows"] = len(rows)
print(json.dumps(out))
"""


def child(tree: Path, script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=tree,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="also read with this revision")
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dmarcbot-table-read-bench-") as tmp:
        work = Path(tmp)
        folders = []
        for day in range(args.days):
            folder = work / f"day{day:03d}"
            sb.write_day(folder, day, range(len(DOMAINS)), range(sb.REPORTERS))
            folders.append(str(folder))
        with revisions.trees(args.baseline, work) as trees, running_azurite() as azurite:
            conn = azurite.connection_string
            child(ROOT, BUILD, conn, "readbench", *folders)
            results: dict[str, list[float]] = {label: [] for label in trees}
            rows: dict[str, int] = {}
            for _ in range(args.rounds):
                for label, tree in trees.items():
                    got = json.loads(child(tree, READ, conn, "readbench", "1"))
                    results[label] += got["cpu"]
                    rows[label] = got["rows"]
    print(f"# Reading two domains' sources on Table Storage ({args.days} days, "
          f"{args.rounds} rounds, client CPU)\n")
    print("| tree | rows read | median s | best s | ratio to current (median) |")
    print("|---|---:|---:|---:|---:|")
    current = statistics.median(results["current"])
    for label, cpu in results.items():
        median = statistics.median(cpu)
        print(f"| {label} | {rows[label]:,} | {median:.3f} | {min(cpu):.3f} | "
              f"{median / current:.2f} |")
    if len(set(rows.values())) != 1:
        print("\nthe trees read different numbers of rows", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
