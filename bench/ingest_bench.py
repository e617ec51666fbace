"""Ingest benchmark: what storing one report costs now, side by side with an earlier revision.

Issue 13 added checks to ingest (authenticated e-mail, ledger conflicts compared by content,
structured DKIM/SPF results, cross-checked `policy_evaluated`, dates within reason) and asks
that ingest stay within 10 % of its cost before them. Both revisions ingest the same inputs in
one run, in fresh processes, alternately:

  mix     the demo's reports (e-mails from Google and Microsoft, gzip and XML files from Yahoo,
          GMX and a small receiver: 44 reports, ~10 records each), for `--weeks` weeks with
          other dates and ids: what a tenant's mailbox brings every day;
  large   bench/data/agg-10000.xml.gz (10,000 records) under `--large` different report ids
          and days: the heavy end.

Each process reads and stores its inputs into a fresh SQLite file; the clock covers
`ingest_paths` only (not the interpreter's start-up or imports). The baseline is checked out
with `git worktree` into a temporary folder (nothing of it is committed or kept).

CPU time moves with the machine's other load (two cores shared): besides the median and best of
each revision, the median of the rounds' own ratios is shown (each round runs both revisions
back to back). `--instructions` also counts the instructions each revision executes per report,
once, under valgrind's callgrind (a run with no input is subtracted: start-up and imports),
which other load does not move.

    .venv/bin/python bench/ingest_bench.py [--baseline 0d4a6a0] [--rounds 5] [--instructions]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

import revisions  # bench/revisions.py: run as a script, bench/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"

CHILD = r"""
import json, sys, time
from pathlib import Path
from analysis import Limits
from function_app.pipeline import ingest_paths
from store import SqliteStore

folder, db = sys.argv[1], sys.argv[2]
limits = Limits(max_input_bytes=1 << 30, max_decompressed_bytes=1 << 32)
with SqliteStore(db) as store:
    wall, cpu = time.perf_counter(), time.process_time()
    outcomes = list(ingest_paths([folder], store, limits))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
statuses = {}
for o in outcomes:
    statuses[o.status] = statuses.get(o.status, 0) + 1
print(json.dumps({"wall": wall, "cpu": cpu, "reports": len(outcomes), "statuses": statuses}))
"""


def make_mix(folder: Path, weeks: int) -> None:
    from function_app.demo_reports import write_demo_reports

    last = date(2026, 11, 27)
    for week in range(weeks):
        write_demo_reports(folder / f"w{week:02d}", last_day=last - timedelta(weeks=week))


def make_large(folder: Path, copies: int) -> None:
    source = DATA / "agg-10000.xml.gz"
    if not source.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_reports.py"), "--sizes",
                        "10000"], check=True)
    xml = gzip.decompress(source.read_bytes()).decode()
    begin = int(re.search(r"<begin>(\d+)</begin>", xml).group(1))  # type: ignore[union-attr]
    end = int(re.search(r"<end>(\d+)</end>", xml).group(1))  # type: ignore[union-attr]
    folder.mkdir(parents=True)
    for n in range(copies):
        shift = 86400 * (n + 1)
        text = re.sub(r"<report_id>[^<]*</report_id>", f"<report_id>bench-{n}</report_id>", xml,
                      count=1)
        text = text.replace(f"<begin>{begin}</begin>", f"<begin>{begin - shift}</begin>", 1)
        text = text.replace(f"<end>{end}</end>", f"<end>{end - shift}</end>", 1)
        (folder / f"large-{n}.xml.gz").write_bytes(gzip.compress(text.encode(), 6, mtime=0))


def run(tree: Path, folder: Path, work: Path, *, callgrind: bool = False) -> dict[str, float]:
    from function_app.demo_reports import DEMO_AUTHSERV_ID

    db = work / f"s-{tree.name}.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    under = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] if callgrind else []
    done = subprocess.run([*under, sys.executable, "-c", CHILD, str(folder), str(db)], cwd=tree,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin",
                               "PYTHONDONTWRITEBYTECODE": "1",
                               # the demo's mail is stamped by this gateway: trusted, its
                               # reports are believed and measured, as in a real deployment
                               "DMARCBOT_TRUSTED_AUTHSERV_IDS": DEMO_AUTHSERV_ID},
                          capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr.strip().splitlines()[-1]}")
    out: dict[str, float] = json.loads(done.stdout)
    if callgrind:
        found = re.search(r"I\s+refs:\s*([\d,]+)", done.stderr)
        if found is None:
            raise SystemExit(f"{tree}: no instruction count in valgrind's output")
        out["instructions"] = int(found.group(1).replace(",", ""))
    return out


def instructions(tree: Path, folder: Path, empty: Path, work: Path) -> tuple[float, int]:
    """Instructions per report ingesting `folder`, start-up and imports (`empty`) taken off."""
    whole = run(tree, folder, work, callgrind=True)
    bare = run(tree, empty, work, callgrind=True)
    return (whole["instructions"] - bare["instructions"]) / whole["reports"], int(whole["reports"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="0d4a6a0",
                        help="the revision to compare with (default: before issue 13)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--weeks", type=int, default=8, help="weeks of the demo mix")
    parser.add_argument("--large", type=int, default=5, help="copies of the 10k-record report")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per report, once, under valgrind")
    args = parser.parse_args()
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind (Debian package valgrind) on PATH")

    with tempfile.TemporaryDirectory(prefix="dmarcbot-ingest-bench-") as tmp:
        work = Path(tmp)
        with revisions.trees(args.baseline, work) as trees:
            base = trees[args.baseline]
            inputs = {"mix": work / "mix", "large": work / "large"}
            make_mix(inputs["mix"], args.weeks)
            make_large(inputs["large"], args.large)
            results: dict[tuple[str, str], list[dict[str, float]]] = {}
            for n in range(args.rounds):
                for name, folder in inputs.items():
                    for label, tree in (("baseline", base), ("current", ROOT)):
                        print(f"round {n + 1}/{args.rounds}: {name}, {label}", file=sys.stderr)
                        results.setdefault((name, label), []).append(run(tree, folder, work))
            counted: dict[tuple[str, str], tuple[float, int]] = {}
            if args.instructions:
                (work / "empty").mkdir()
                for name, folder in inputs.items():
                    for label, tree in (("baseline", base), ("current", ROOT)):
                        print(f"instructions: {name}, {label}", file=sys.stderr)
                        counted[name, label] = instructions(tree, folder, work / "empty", work)
    print(f"# Ingest: per-report cost, `{args.baseline}` against the working tree\n")
    print("| input | reports | statuses (current) | baseline ms/report (median, best) |"
          " current ms/report (median, best) | ratio (median, best) | ratio per round (median)"
          " |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name in ("mix", "large"):
        old, new = results[name, "baseline"], results[name, "current"]
        count = new[0]["reports"]
        per = [[r["cpu"] * 1000 / r["reports"] for r in rows] for rows in (old, new)]
        med = [statistics.median(p) for p in per]
        best = [min(p) for p in per]
        paired = statistics.median(b / a for a, b in zip(*per, strict=True))
        print(f"| {name} | {count} | {new[0]['statuses']} | {med[0]:.2f}, {best[0]:.2f} | "
              f"{med[1]:.2f}, {best[1]:.2f} | {med[1] / med[0]:.3f}, {best[1] / best[0]:.3f} | "
              f"{paired:.3f} |")
    print("\nCPU time in the child process per report stored (the machine's other load moves"
          " wall time more than CPU time).")
    if counted:
        print("\n| input | reports | baseline M instructions/report | current M instructions/report"
              " | ratio |\n|---|---:|---:|---:|---:|")
        for name in ("mix", "large"):
            (old_n, count), (new_n, _) = counted[name, "baseline"], counted[name, "current"]
            print(f"| {name} | {count} | {old_n / 1e6:.2f} | {new_n / 1e6:.2f} |"
                  f" {new_n / old_n:.3f} |")
        print("\nInstructions executed in `ingest_paths` and everything it calls, per report"
              " (callgrind, once; a run with no input subtracted).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
