"""Scale benchmark (issue 14): the scheduled step, `senders` and ingest as history grows.

A generated tenant: 20 policy domains, 40 reporters per domain and day, 15 to 40 records a report
(26 on average, the issue's shape). Each domain sends from a pool of 400 addresses, busiest
first (Zipf), and `--fresh` of the records (default one in twenty) from an address never seen
before (spoofers, forwarders), so a domain's distinct sources keep growing, as real ones do.

  run       a scheduled run: 50 new reports of the next day ingested, then the senders of their
            two domains named (`identify_domains`, offline), on a store of 1,000 reports and on
            one of 20,000, in fresh processes, alternately; SQLite, and Table Storage on Azurite
            (requests counted). Each SQLite store has every domain named once after it is
            built, as the daily timer leaves it. The ratio is the point (target: at most 1.5).
  senders   `dmarcbot senders --offline --json` over all domains of the 20,000-report SQLite
            store in a child process: its peak RSS (target: under 250 MB).
  ingest    CPU per report while building the stores, and Table Storage requests per report.
  project   the daily naming step of a 200-domain tenant after a year on Table Storage, from
            the measured cost per kept and per changed source and per request, and the measured
            growth of a domain's sources per day (target: under 2 minutes).

With `--baseline REV` the SQLite part runs for that revision too (a `git worktree` in a
temporary folder, its own stores), side by side.

    .venv/bin/python bench/scale_bench.py [--baseline d6ec647] [--rounds 3] [--skip-tables]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import revisions  # bench/revisions.py: run as a script, bench/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
DOMAINS, REPORTERS, POOL = 20, 40, 400
BIG, SMALL, NEW = 20_000, 1_000, 50
DAY0 = 1764288000  # 2025-11-28T00:00:00Z
FRESH = 0.05  # records from an address never seen before (--fresh)

CHILD = r"""
import asyncio, json, os, resource, sys, time
from pathlib import Path
from analysis import Limits, read_reports
from analysis.catalog import load_catalog
from function_app.pipeline import identify_domains, ingest_paths

mode, backend, target, *folders = sys.argv[1:]
requests = [0]

def open_store():
    if backend == "sqlite":
        from store import SqliteStore
        return SqliteStore(target)
    from store.tables import TableStore
    conn, prefix = target.split("|")
    return TableStore.from_connection_string(
        conn, prefix=prefix, raw_request_hook=lambda r: requests.__setitem__(0, requests[0] + 1))

limits = Limits(max_input_bytes=1 << 30, max_decompressed_bytes=1 << 32)
out = {}
with open_store() as store:
    if mode == "daily":  # what each naming recalls, counted
        import datetime
        from store import tables
        # days follow each other within seconds here, hours apart in a tenant: the overlap
        # after a naming's clock would count a whole day's writes as changed twice
        tables.NAMING_OVERLAP = datetime.timedelta(0)
        recall, seen = store.recall_naming, {}
        def counted(domain, **kw):
            got = recall(domain, **kw)
            seen["kept"] += len(got.kept)
            seen["changed"] += len({r.key.source_ip for r in got.changed})
            seen["whole"] += got.context is None
            return got
        store.recall_naming = counted
    cpu, wall = time.process_time(), time.perf_counter()
    outcomes, days = [], []
    for folder in folders:
        before_ingest, clock = requests[0], time.process_time()
        found = list(ingest_paths([folder], store, limits))
        outcomes += found
        if mode == "daily":  # the timer's naming step for each domain with reports that day
            day = {"reports": len(found), "ingest_requests": requests[0] - before_ingest,
                   "ingest_cpu": time.process_time() - clock, "domains": 0}
            # the step after the day's reports, then again with nothing new: what keeping costs
            for step in ("new", "same"):
                seen.update(kept=0, changed=0, whole=0)
                c, w, r = time.process_time(), time.perf_counter(), requests[0]
                async def name():
                    await identify_domains(store, load_catalog(), None,
                                           sorted({o.domain for o in found if o.domain}))
                asyncio.run(name())
                day.update({f"{step}_{k}": v for k, v in seen.items()})
                day[f"{step}_cpu"] = time.process_time() - c
                day[f"{step}_wall"] = time.perf_counter() - w
                day[f"{step}_requests"] = requests[0] - r
            day["domains"] = len({o.domain for o in found if o.domain})
            days.append(day)
    out["ingest_cpu"], out["ingest_wall"] = time.process_time() - cpu, time.perf_counter() - wall
    if days:  # without the naming steps between the days
        out["ingest_cpu"] = sum(d["ingest_cpu"] for d in days)
    out["reports"] = len(outcomes)
    out["statuses"] = sorted({o.status for o in outcomes})
    out["ingest_requests"] = sum(d["ingest_requests"] for d in days) if days else requests[0]
    out["days"] = days
    if mode == "build":  # as the daily timer leaves a store: every domain named since its reports
        async def prime():
            await identify_domains(store, load_catalog(), None,
                                   sorted({o.domain for o in outcomes if o.domain}))
        asyncio.run(prime())
    if mode == "run":
        domains = {o.domain for o in outcomes if o.domain}
        cpu, wall, before = time.process_time(), time.perf_counter(), requests[0]
        # As the command line runs it (function_app/aio.py, inlined: the baseline tree has
        # no such module): Python 3.11's asyncio.run formats its result, a third of naming.
        verdicts = []
        async def keep():
            verdicts.extend(await identify_domains(store, load_catalog(), None, domains))
        asyncio.run(keep())
        out["name_cpu"] = time.process_time() - cpu
        out["name_wall"] = time.perf_counter() - wall
        out["name_requests"] = requests[0] - before
        out["verdicts"] = len(verdicts)
print(json.dumps(out))
"""


# -- the tenant ---------------------------------------------------------------------------------


def _profiles(domain: str, rng: random.Random) -> list[tuple[str, str, str, str, bool, bool]]:
    """Per pool address: (ip, DKIM d=, selector, SPF domain, DKIM aligned, SPF aligned)."""
    senders = [(domain, "s1", domain, True, True), (domain, "s2", f"bounce.{domain}", True, True),
               ("sendgrid.net", "s1", "sendgrid.net", False, False),
               (domain, "google", domain, True, True),
               ("mcsv.net", "k1", "mcsv.net", False, False)]
    out = []
    for n in range(POOL):
        d, sel, spf, da, sa = senders[n % len(senders)]
        ip = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{n % 250 + 1}"
        out.append((ip, d, sel, spf, da, sa))
    return out


def _record(domain: str, profile: tuple[str, str, str, str, bool, bool], count: int,
            rng: random.Random) -> str:
    ip, d, sel, spf, da, sa = profile
    header = domain if rng.random() < 0.9 else f"news.{domain}"
    dkim = "pass" if rng.random() < 0.95 else "fail"
    aligned_dkim = da and dkim == "pass"
    disposition = "none" if (aligned_dkim or sa) else rng.choice(["none", "quarantine"])
    return (f"<record><row><source_ip>{ip}</source_ip><count>{count}</count><policy_evaluated>"
            f"<disposition>{disposition}</disposition><dkim>{'pass' if aligned_dkim else 'fail'}"
            f"</dkim><spf>{'pass' if sa else 'fail'}</spf></policy_evaluated></row><identifiers>"
            f"<envelope_from>{spf}</envelope_from><header_from>{header}</header_from>"
            f"</identifiers><auth_results><dkim><domain>{d}</domain><selector>{sel}</selector>"
            f"<result>{dkim}</result></dkim><spf><domain>{spf}</domain><result>"
            f"{'pass' if sa or spf.endswith('.net') else 'softfail'}</result></spf>"
            "</auth_results></record>")


def write_day(folder: Path, day: int, domains: range, reporters: range) -> int:
    """One day's reports of these domains and reporters, as XML files; returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for n in domains:
        domain = f"d{n:02d}.example"
        pool = _profiles(domain, random.Random(n))
        weights = [1 / (i + 1) for i in range(POOL)]
        for r in reporters:
            rng = random.Random(f"{n}-{r}-{day}")
            records = []
            for _ in range(rng.randint(15, 40)):
                if rng.random() < FRESH:  # an address never seen before
                    fresh = (f"{rng.randrange(1, 224)}.{rng.randrange(256)}."
                             f"{rng.randrange(256)}.{rng.randrange(1, 255)}", "evil.example",
                             "x", "evil.example", False, False)
                    records.append(_record(domain, fresh, rng.randint(1, 3), rng))
                else:
                    profile = rng.choices(pool, weights)[0]
                    records.append(_record(domain, profile, rng.randint(1, 500), rng))
            begin = DAY0 + day * 86400
            (folder / f"{domain}-r{r:02d}-{day:03d}.xml").write_text(
                '<?xml version="1.0"?><feedback><report_metadata><org_name>Receiver '
                f"{r}</org_name><email>dmarc@r{r:02d}.example</email><report_id>{n}-{r}-{day}"
                f"</report_id><date_range><begin>{begin}</begin><end>{begin + 86399}</end>"
                f"</date_range></report_metadata><policy_published><domain>{domain}</domain>"
                f"<p>none</p></policy_published>{''.join(records)}</feedback>\n")
            written += 1
    return written


def make_tenant(work: Path, rounds: int) -> dict[str, list[Path]]:
    """Folders: the 20,000-report history (25 days), the 1,000-report one (its first 25
    domain-days), per round 50 reports of a later day (all of one domain's reporters and ten
    of another's), and a last day of every domain's reports."""
    days = BIG // (DOMAINS * REPORTERS)
    big = [work / f"day{d:03d}" for d in range(days)]
    for d, folder in enumerate(big):
        write_day(folder, d, range(DOMAINS), range(REPORTERS))
    small_extra = work / "small-day001"
    write_day(small_extra, 1, range(SMALL // REPORTERS - DOMAINS), range(REPORTERS))
    new = []
    for r in range(rounds):
        folder = work / f"new{r}"
        write_day(folder, days + r, range(1), range(REPORTERS))
        write_day(folder, days + r, range(1, 2), range(NEW - REPORTERS))
        new.append(folder)
    day = work / "day-all"
    write_day(day, days + rounds, range(DOMAINS), range(REPORTERS))
    return {"big": big, "small": [big[0], small_extra], "new": new, "day": [day]}


# -- running ----------------------------------------------------------------------------------


def child(tree: Path, *args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=tree,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin",
                               "PYTHONDONTWRITEBYTECODE": "1"},
                          capture_output=True, text=True, check=False, timeout=7200)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def peak_rss(tree: Path, db: Path) -> tuple[float, float]:
    """`dmarcbot senders --offline --json` over every domain: (peak RSS MB, seconds)."""
    started = time.perf_counter()
    with open(os.devnull, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", "from function_app.cli import main; raise SystemExit(main())",
             "--db", str(db), "senders", "--offline", "--json"], cwd=tree, stdout=sink,
            stderr=subprocess.PIPE, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin",
                                         "PYTHONDONTWRITEBYTECODE": "1"})
        _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"senders failed: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    return usage.ru_maxrss / 1024, time.perf_counter() - started


def sqlite_part(label: str, tree: Path, data: dict[str, list[Path]], work: Path, rounds: int,
                results: dict[str, object]) -> None:
    for size in ("small", "big"):
        db = work / f"{label}-{size}.sqlite3"
        built = child(tree, "build", "sqlite", str(db), *map(str, data[size]))
        results[f"{label} sqlite {size} build"] = built
        print(f"{label}: {size} SQLite store built: {built['reports']} reports, "
              f"{1000 * built['ingest_cpu'] / built['reports']:.2f} ms CPU each", file=sys.stderr)
    runs: dict[str, list[dict[str, object]]] = {"small": [], "big": []}
    for r in range(rounds):
        for size in ("small", "big"):
            got = child(tree, "run", "sqlite", str(work / f"{label}-{size}.sqlite3"),
                        str(data["new"][r]))
            runs[size].append(got)
            print(f"{label}: round {r + 1} {size}: ingest {got['ingest_cpu']:.2f} s, naming "
                  f"{got['name_cpu']:.2f} s CPU", file=sys.stderr)
    results[f"{label} sqlite runs"] = runs
    rss, seconds = peak_rss(tree, work / f"{label}-big.sqlite3")
    results[f"{label} senders"] = {"peak_rss_mb": rss, "seconds": seconds}
    print(f"{label}: senders over all domains: {rss:.0f} MB peak, {seconds:.1f} s",
          file=sys.stderr)


def tables_part(data: dict[str, list[Path]], rounds: int, results: dict[str, object]) -> None:
    """Each store is built a day at a time, each day followed by the naming step's read of the
    domains that had reports (as the daily timer does), then the rounds as on SQLite."""
    sys.path.insert(0, str(ROOT))
    from tests.azurite import running_azurite  # only this part needs Azurite

    with running_azurite() as azurite:
        conn = azurite.connection_string
        for size in ("small", "big"):
            started = time.perf_counter()
            built = child(ROOT, "daily", "tables", f"{conn}|bench{size}", *map(str, data[size]))
            results[f"tables {size} build"] = built
            print(f"tables: {size} store built in {time.perf_counter() - started:.0f} s: "
                  f"{built['ingest_requests'] / built['reports']:.2f} requests a report",
                  file=sys.stderr)
        runs: dict[str, list[dict[str, object]]] = {"small": [], "big": []}
        for r in range(rounds):
            for size in ("small", "big"):
                got = child(ROOT, "run", "tables", f"{conn}|bench{size}", str(data["new"][r]))
                runs[size].append(got)
                print(f"tables: round {r + 1} {size}: naming {got['name_cpu']:.2f} s CPU, "
                      f"{got['name_wall']:.2f} s, {got['name_requests']} requests",
                      file=sys.stderr)
        results["tables runs"] = runs


def median(rows: list[dict[str, object]], key: str) -> float:
    return statistics.median(float(r[key]) for r in rows)  # type: ignore[arg-type]


def report(results: dict[str, object], labels: list[str]) -> None:
    print("# Scale: the scheduled step, `senders` and ingest as history grows\n")
    print("| store | run on 1,000 reports (s CPU) | run on 20,000 reports (s CPU) | ratio |"
          " naming alone: 1,000 / 20,000 (s CPU) |")
    print("|---|---:|---:|---:|---:|")
    for label in labels:
        runs = results[f"{label} sqlite runs"]
        assert isinstance(runs, dict)
        s, b = (median(runs[k], "ingest_cpu") + median(runs[k], "name_cpu")
                for k in ("small", "big"))
        ns, nb = (median(runs[k], "name_cpu") for k in ("small", "big"))
        print(f"| SQLite ({label}) | {s:.3f} | {b:.3f} | {b / s:.2f} | {ns:.3f} / {nb:.3f} |")
    if "tables runs" in results:
        runs = results["tables runs"]
        assert isinstance(runs, dict)
        s, b = (median(runs[k], "ingest_cpu") + median(runs[k], "name_cpu")
                for k in ("small", "big"))
        ns, nb = (median(runs[k], "name_cpu") for k in ("small", "big"))
        ws, wb = (median(runs[k], "ingest_wall") + median(runs[k], "name_wall")
                  for k in ("small", "big"))
        rs, rb = (median(runs[k], "name_requests") for k in ("small", "big"))
        print(f"| Table Storage (Azurite), CPU | {s:.3f} | {b:.3f} | {b / s:.2f} |"
              f" {ns:.3f} / {nb:.3f} |")
        print(f"| Table Storage (Azurite), wall | {ws:.3f} | {wb:.3f} | {wb / ws:.2f} |"
              f" requests naming: {rs:.0f} / {rb:.0f} |")
    print("\n| `senders --offline` over all domains, 20,000 reports | peak RSS | seconds |")
    print("|---|---:|---:|")
    for label in labels:
        got = results[f"{label} senders"]
        assert isinstance(got, dict)
        print(f"| {label} | {got['peak_rss_mb']:.0f} MB | {got['seconds']:.1f} |")
    print("\n| ingest while building | reports | ms CPU a report | requests a report |")
    print("|---|---:|---:|---:|")
    for key, value in results.items():
        if key.endswith("build") and isinstance(value, dict):
            req = (f"{value['ingest_requests'] / value['reports']:.2f}"
                   if value["ingest_requests"] else "-")
            print(f"| {key.removesuffix(' build')} | {value['reports']} |"
                  f" {1000 * value['ingest_cpu'] / value['reports']:.2f} | {req} |")
    if "tables big build" in results:
        project(results)


def project(results: dict[str, object]) -> None:
    """The daily naming step of 200 domains after a year on Table Storage, from the costs
    measured while the 20,000-report store was built a day at a time, each day named twice (the
    timer's step after the day's reports, then again with nothing new): per request (on the
    small store, where Azurite's scan of the whole table per query costs least), client CPU per
    kept source (the second naming: reading, decoding and judging what was kept) and per
    changed source (the first naming's CPU beyond the second's), and the sources a domain keeps
    and changes a day, first day against the last."""
    built = results["tables big build"]
    small = results["tables small build"]
    assert isinstance(built, dict) and isinstance(small, dict)
    days = [d for d in built["days"][1:] if not d["new_whole"]]  # the first names everything
    per_request = (sum(d["new_wall"] - d["new_cpu"] for d in small["days"])
                   / sum(d["new_requests"] for d in small["days"]))
    per_kept = sum(d["same_cpu"] for d in days) / sum(d["same_kept"] for d in days)
    per_changed = (sum(d["new_cpu"] - d["same_cpu"] for d in days)
                   / sum(d["new_changed"] for d in days))
    first, last = days[0], days[-1]

    def per_domain(day: dict[str, float], key: str) -> float:
        return day[key] / day["domains"]

    growth = (per_domain(last, "same_kept") - per_domain(first, "same_kept")) / (
        len(days) - 1)
    year = {"kept": per_domain(first, "same_kept") + growth * 364,
            "changed": per_domain(last, "new_changed"),
            "requests": per_domain(last, "new_requests")}
    one = (year["requests"] * per_request + year["kept"] * per_kept
           + year["changed"] * per_changed)
    total = 200 * one
    results["projection"] = {"per_request_ms": per_request * 1e3, "per_kept_us":
                             per_kept * 1e6, "per_changed_us": per_changed * 1e6,
                             "year": year, "seconds": total}
    print("\n| daily naming step, 200 domains after a year (Table Storage) | value |")
    print("|---|---:|")
    print(f"| per request (Azurite, small store) | {per_request * 1e3:.1f} ms |")
    print(f"| per kept source (client CPU: read, decoded, judged) | {per_kept * 1e6:.0f} µs |")
    print(f"| per changed source (client CPU: read whole, named) | {per_changed * 1e6:.0f} µs |")
    print(f"| requests per domain's step: day 2, day {len(days) + 1} | "
          f"{per_domain(first, 'new_requests'):,.1f}, {year['requests']:,.1f} |")
    print(f"| sources kept per domain: day 2, day {len(days) + 1}, a year (projected) | "
          f"{per_domain(first, 'same_kept'):,.0f}, {per_domain(last, 'same_kept'):,.0f}, "
          f"{year['kept']:,.0f} |")
    print(f"| sources changed per domain and day: day 2, day {len(days) + 1} | "
          f"{per_domain(first, 'new_changed'):,.0f}, {year['changed']:,.0f} |")
    print(f"| **200 domains, one naming step after a year** | **{total:,.0f} s** |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="also run the SQLite part for this revision")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-tables", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--fresh", type=float, default=FRESH,
                        help="share of records from an address never seen before")
    args = parser.parse_args()
    globals()["FRESH"] = args.fresh
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="dmarcbot-scale-bench-") as tmp:
        work = Path(tmp)
        data = make_tenant(work / "data", args.rounds)
        print(f"generated {sum(len(list(f.iterdir())) for f in data['big'])} reports",
              file=sys.stderr)
        with revisions.trees(args.baseline, work) as trees:
            labels = list(trees)
            for label in labels:
                sqlite_part(label, trees[label], data, work, args.rounds, results)
            if not args.skip_tables:
                tables_part(data, args.rounds, results)
            report(results, labels)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
