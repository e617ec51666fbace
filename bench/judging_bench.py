"""Per-source judging (issue 12) against the code before it, side by side in one run.

Each source is now judged on its own evidence (its account at the service, the domain's own SPF
record, the domain's own accounts) before lines are grouped. This bench measures what that
costs against another checkout of the code (`--base`, e.g. a worktree of the commit before),
on the same 10,000 sources and the same knot server:

  warm   `analyse_activities(activities, load_catalog(), dns)` with every DNS answer already in
         the `MemoryCache` (a cold run first fills it): DNS costs nothing, judging is the work
  judge  naming, verdicts and grouping alone, from the evidence bundle of the cold run
         (`Identifier.identify` per source, then the verdicts and `service_verdicts`)

The sources and zone are those of `bench/identify_bench.py` (same generator, same seed). Each
contender runs in its own interpreter with its tree first on `sys.path`; the two alternate for
`--rounds` rounds, and the medians are compared. Target: "now" costs at most 1.20 x "before".

    git worktree add /tmp/dmarcbot-before HEAD && ln -s "$PWD/.venv" /tmp/dmarcbot-before/.venv
    .venv/bin/python bench/judging_bench.py --base /tmp/dmarcbot-before
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
TARGET_RATIO = 1.20
DEFAULT_IPS = 10_000
DEFAULT_ROUNDS = 5
REPEATS = 3  # timed runs per contender and round (the best one counts)


def _identify_bench() -> object:
    spec = importlib.util.spec_from_file_location("identify_bench", BENCH_DIR /
                                                  "identify_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["identify_bench"] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- worker


def worker(args: argparse.Namespace) -> None:
    """Runs inside one tree: cold once, then the warm and the judging-only timings."""
    import asyncio

    sys.path.insert(0, str(Path(args.tree).resolve()))
    from analysis import verdicts
    from analysis.catalog import load_catalog
    from analysis.dnsevidence import DnsBudget, DnsEvidence, MemoryCache, make_resolver
    from analysis.identify import Identifier, NetworkIndex, SourceActivity
    from analysis.senders import analyse_activities

    def pairs(items: list[list[object]]) -> tuple[tuple[object, ...], ...]:
        return tuple((tuple(key) if isinstance(key, list) else key, n) for key, n in items)

    rows = json.loads(Path(args.data).read_text())
    activities = [SourceActivity(
        domain=r["domain"], ip=r["ip"], messages=r["messages"], dmarc_pass=r["dmarc_pass"],
        dkim_aligned_pass=r["dkim_aligned_pass"], spf_aligned_pass=r["spf_aligned_pass"],
        dkim=pairs(r["dkim"]), spf=pairs(r["spf"]), reasons=pairs(r["reasons"]),
        header_from=tuple(r["header_from"])) for r in rows]
    catalog = load_catalog()
    cache = MemoryCache()

    def evidence() -> DnsEvidence:
        return DnsEvidence(make_resolver([f"127.0.0.1:{args.port}"]), cache=cache,
                           budget=DnsBudget(max_sources=len(activities), seconds=3600))

    cold = asyncio.run(analyse_activities(activities, catalog, evidence()))
    bundle = cold[2]
    warm: list[float] = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        asyncio.run(analyse_activities(activities, catalog, evidence()))
        warm.append(time.perf_counter() - started)
    m365 = bundle.service_networks.get("microsoft365")
    m365_index = NetworkIndex({"microsoft365": m365}) if m365 else None
    judge: list[float] = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        identifier = Identifier(catalog, bundle)
        idents = [identifier.identify(a) for a in activities]
        if hasattr(verdicts, "judge_sources"):  # per-source judging (issue 12)
            sources = verdicts.judge_sources(idents, catalog, m365_index, bundle.dkim_targets)
        else:  # the code before it
            sources = [verdicts.source_verdict(i, catalog, m365_index) for i in idents]
        lines = verdicts.service_verdicts(sources, catalog)
        judge.append(time.perf_counter() - started)
    print(json.dumps({"tree": args.tree, "module": verdicts.__file__, "warm_s": min(warm),
                      "judge_s": min(judge), "sources": len(sources), "lines": len(lines)}))


# --------------------------------------------------------------------------- harness


def run_contender(tree: Path, data: Path, port: int) -> dict[str, object]:
    python = REPO / ".venv" / "bin" / "python"
    done = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--worker", "--tree", str(tree),
         "--data", str(data), "--port", str(port)],
        cwd=tree, capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "PYTHONPATH": str(tree)})
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: worker failed:\n{done.stderr[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    if not str(result["module"]).startswith(str(tree.resolve())):
        raise RuntimeError(f"{tree}: imported {result['module']}, not the tree's own code")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, help="checkout of the code before (required)")
    parser.add_argument("--ips", type=int, default=DEFAULT_IPS)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.base is None or not (args.base / "analysis" / "verdicts.py").exists():
        parser.error("--base must be a checkout of dmarcbot (analysis/verdicts.py missing)")
    sys.path.insert(0, str(REPO))
    from tests.dnslab.server import KnotServer

    bench = _identify_bench()
    sources, zone = bench.generate(args.ips, args.seed)  # type: ignore[attr-defined]
    work = Path(tempfile.mkdtemp(prefix="dmarcbot-judging-bench-"))
    try:
        data = work / "activities.json"
        data.write_text(json.dumps(bench.activity_rows(sources, args.seed)))  # type: ignore[attr-defined]
        zones = work / "zones"
        zones.mkdir()
        for path in sorted((REPO / "tests" / "dnslab" / "zones").glob("*.zone")):
            shutil.copy(path, zones / path.name)
        (zones / "zz-judging-bench.zone").write_text(zone)
        load = os.getloadavg()[0]
        started = time.time()
        results: dict[str, list[dict[str, object]]] = {"before": [], "now": []}
        with KnotServer(zones, ipv6=False, start_timeout=30) as knot:
            for round_ in range(args.rounds):
                order = [("before", args.base), ("now", REPO)]
                for label, tree in order if round_ % 2 == 0 else order[::-1]:
                    print(f"round {round_ + 1}: {label}", file=sys.stderr, flush=True)
                    results[label].append(run_contender(Path(tree), data, knot.port))
        print(report(results, args, load, time.time() - started))
        ratio = _ratio(results, "judge_s")
        return 0 if ratio <= TARGET_RATIO else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _median(results: list[dict[str, object]], key: str) -> float:
    return statistics.median(float(r[key]) for r in results)  # type: ignore[arg-type]


def _best(results: list[dict[str, object]], key: str) -> float:
    return min(float(r[key]) for r in results)  # type: ignore[arg-type]


def _ratio(results: dict[str, list[dict[str, object]]], key: str) -> float:
    return _median(results["now"], key) / _median(results["before"], key)


def report(results: dict[str, list[dict[str, object]]], args: argparse.Namespace, load: float,
           took: float) -> str:
    before, now = results["before"], results["now"]
    lines = [
        f"Command: `.venv/bin/python bench/judging_bench.py --base {args.base}` · "
        f"{time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} CPUs · {args.ips} sources · "
        f"{args.rounds} rounds, best of {REPEATS} per round · load {load:.2f} before · "
        f"took {took:.0f} s",
        "",
        "| contender | warm run s: median (best) | judging alone s: median (best) | lines |",
        "|---|---:|---:|---:|",
        f"| before ({args.base}) | {_median(before, 'warm_s'):.3f} ({_best(before, 'warm_s'):.3f})"
        f" | {_median(before, 'judge_s'):.3f} ({_best(before, 'judge_s'):.3f}) | "
        f"{before[0]['lines']} |",
        f"| now | {_median(now, 'warm_s'):.3f} ({_best(now, 'warm_s'):.3f}) | "
        f"{_median(now, 'judge_s'):.3f} ({_best(now, 'judge_s'):.3f}) | {now[0]['lines']} |",
        "",
        f"now / before, medians: warm run {_ratio(results, 'warm_s'):.2f}x, judging alone "
        f"{_ratio(results, 'judge_s'):.2f}x (target <= {TARGET_RATIO:.2f}x: "
        f"{'PASS' if _ratio(results, 'judge_s') <= TARGET_RATIO else 'MISSED'}); best of all "
        f"rounds: warm run {_best(now, 'warm_s') / _best(before, 'warm_s'):.2f}x, judging alone "
        f"{_best(now, 'judge_s') / _best(before, 'judge_s'):.2f}x",
        "",
        "rounds (warm s / judging s): before "
        + ", ".join(f"{r['warm_s']:.3f}/{r['judge_s']:.3f}" for r in before)
        + "; now " + ", ".join(f"{r['warm_s']:.3f}/{r['judge_s']:.3f}" for r in now),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
