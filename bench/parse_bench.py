"""Parse benchmark: dmarcbot's engine and CLI against a bare lxml floor and parsedmarc.

For each size and each of .xml / .xml.gz, every contender runs alone in its own subprocess; the
harness takes wall time around the subprocess and peak RSS from `os.wait4`'s rusage, so imports
and interpreter start-up count, the harness does not, and nothing runs concurrently. Contenders:

  engine      dmarcbot in-process API: `analysis.read_reports(path, limits=...)`
  cli         `dmarcbot parse FILE > /dev/null`
  floor       `lxml.etree.iterparse(tag="{*}record")` + clear: records only, no field read
  floor-all   bare `lxml.etree.iterparse(f)` (default arguments: every element) + clear
  parsedmarc  `parsedmarc.parse_report_file(path, offline=True)` in bench/.venv-parsedmarc

    bash bench/setup_parsedmarc.sh && .venv/bin/python bench/parse_bench.py
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / "data"
PROJECT_PYTHON = REPO / ".venv" / "bin" / "python"
PARSEDMARC_PYTHON = BENCH_DIR / ".venv-parsedmarc" / "bin" / "python"
DMARCBOT_SCRIPT = REPO / ".venv" / "bin" / "dmarcbot"
BIG_LIMIT = 8 << 30  # 8 GiB: lifts dmarcbot's and parsedmarc's input-size guards for the bench
CONTENDERS = ("engine", "cli", "floor", "floor-all", "parsedmarc")
DEFAULT_SIZES = "1000,10000,100000,1000000"
REPEAT_UP_TO = 100_000  # best of --repeat runs up to here: the targets are judged at 100k
PARSEDMARC_REPEAT_UP_TO = 10_000  # parsedmarc takes ~40 s at 100k; once is enough there
TARGET_SIZE = 100_000
TARGET_SPEEDUP = 20.0  # dmarcbot throughput vs parsedmarc
TARGET_FLOOR_RATIO = 2.0  # dmarcbot time vs floor
TARGET_RSS_MB = 150.0


# --------------------------------------------------------------------------- workers
# Each worker runs in a fresh interpreter and prints one JSON line: records seen and the
# in-process parse time (imports excluded), so start-up cost can be told apart from parsing.


def _emit(records: int, started: float, **extra: object) -> None:
    print(json.dumps({"records": records, "parse_s": time.perf_counter() - started, **extra}))


def worker_engine(path: str) -> None:
    """dmarcbot's reader as the working tree has it (repo root first on sys.path)."""
    sys.path.insert(0, str(REPO))
    from analysis import Limits, read_reports

    started = time.perf_counter()
    limits = Limits(max_input_bytes=BIG_LIMIT, max_decompressed_bytes=BIG_LIMIT)
    n = 0
    for report in read_reports(path, limits=limits):
        if report.kind == "aggregate":
            n += sum(1 for _ in report.records)
    _emit(n, started)


def worker_floor(path: str) -> None:
    """The least any streaming lxml reader can do: find each record end tag and free it."""
    import gzip

    from lxml import etree

    started = time.perf_counter()
    n = 0
    opener: Callable[..., object] = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:  # type: ignore[attr-defined]
        for _, el in etree.iterparse(f, events=("end",), tag="{*}record"):
            n += 1
            el.clear()
            while el.getprevious() is not None:
                del el.getparent()[0]
    _emit(n, started)


def worker_floor_all(path: str) -> None:
    """Bare `iterparse(f)`, default arguments: every element's end event reaches Python, as a
    reader built on events that looks at every field needs. Each record is freed when it ends."""
    import gzip

    from lxml import etree

    started = time.perf_counter()
    n = 0
    opener: Callable[..., object] = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:  # type: ignore[attr-defined]
        for _, el in etree.iterparse(f):
            if el.tag == "record":
                n += 1
                el.clear()
                while el.getprevious() is not None:
                    del el.getparent()[0]
    _emit(n, started)


def worker_parsedmarc(path: str) -> None:
    """parsedmarc with every lookup off; any socket use is recorded and refused."""
    attempts: list[str] = []

    def no_network(event: str, args: tuple[object, ...]) -> None:
        if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
                     "socket.gethostbyaddr", "socket.sendto", "urllib.Request"):
            attempts.append(f"{event}{args!r:.80}")
            raise OSError(f"network use refused by the benchmark: {event}")

    sys.addaudithook(no_network)
    import parsedmarc

    # Its 100 MiB cap on inflated .gz would refuse the 1M file; lift it like dmarcbot's limits.
    parsedmarc.MAX_DECOMPRESSED_REPORT_SIZE = BIG_LIMIT
    started = time.perf_counter()
    result = parsedmarc.parse_report_file(
        path, offline=True, always_use_local_files=True,
        nameservers=["127.0.0.1"], dns_timeout=0.001, dns_retries=0,
    )
    n = len(result["report"]["records"]) if result["report_type"] == "aggregate" else 0
    _emit(n, started, network_attempts=attempts)


WORKERS: dict[str, Callable[[str], None]] = {
    "engine": worker_engine, "floor": worker_floor, "floor-all": worker_floor_all,
    "parsedmarc": worker_parsedmarc,
}


# --------------------------------------------------------------------------- harness


@dataclasses.dataclass
class Result:
    """One contender on one file: the best of its runs, or why there is none."""

    size: int
    file: str
    contender: str
    status: str = "ok"  # ok | timeout | failed | skipped | not run
    wall_s: float | None = None
    parse_s: float | None = None
    rss_mb: float | None = None
    records: int | None = None
    note: str = ""

    @property
    def rate(self) -> float | None:
        """Generated records per second of wall time (a wrong count is flagged apart)."""
        return self.size / self.wall_s if self.wall_s else None


@dataclasses.dataclass
class Run:
    """Outcome of one subprocess."""

    wall_s: float
    rss_mb: float
    returncode: int
    timed_out: bool
    stdout: str
    stderr_tail: str


def run_child(cmd: list[str], timeout: float, mem_limit: int | None,
              env: dict[str, str] | None = None, devnull_stdout: bool = False,
              count_stdout: Callable[[bytes], None] | None = None) -> Run:
    """Run cmd alone; wall time around the whole process, peak RSS from its own rusage.

    The child gets a new session so a timeout can kill it with everything it started. stdout is
    captured (a worker's JSON line), sent to /dev/null, or streamed to count_stdout.
    """
    err_path = DATA_DIR / ".bench-stderr"

    def limit_memory() -> None:
        if mem_limit:
            resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))

    out_target: int | None = subprocess.DEVNULL if devnull_stdout else subprocess.PIPE
    with open(err_path, "w+b") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out_target, stderr=err, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, preexec_fn=limit_memory)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        chunks: list[bytes] = []
        if proc.stdout is not None:  # drain while it runs so a full pipe never stalls it
            while block := proc.stdout.read(1 << 16):
                if count_stdout is not None:
                    count_stdout(block)
                else:
                    chunks.append(block)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait() again
        err.seek(max(0, os.fstat(err.fileno()).st_size - 2000))
        tail = err.read().decode(errors="replace")
    if proc.stdout is not None:
        proc.stdout.close()
    return Run(wall, usage.ru_maxrss / 1024, proc.returncode, timed_out.is_set(),
               b"".join(chunks).decode(errors="replace"), tail)


class RecordCounter:
    """Counts `"source_ip":` keys in the CLI's output: one per record, whatever the layout.

    `dmarcbot parse` writes one JSON line per report with its records inside, so at 1M records
    a line is hundreds of MB. The count is taken from the byte stream in constant memory,
    because a big harness would raise every later child's measured peak RSS.
    """

    KEY = b'"source_ip":'

    def __init__(self) -> None:
        self.records = 0
        self._tail = b""

    def __call__(self, block: bytes) -> None:
        data = self._tail + block
        self.records += data.count(self.KEY)
        # Keep just enough to catch a key split across blocks, never a whole one twice.
        self._tail = data[-(len(self.KEY) - 1):]


def contender_cmd(contender: str, path: Path) -> tuple[list[str], str]:
    """Command line for one contender, and a note when a fallback had to be used."""
    me = str(Path(__file__).resolve())
    if contender == "parsedmarc":
        return [str(PARSEDMARC_PYTHON), me, "--worker", contender, str(path)], ""
    if contender == "cli":
        if DMARCBOT_SCRIPT.exists():
            return [str(DMARCBOT_SCRIPT), "parse", str(path)], ""
        # Not installed into the venv yet: same entry point, started the way the script would.
        code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                "from function_app.cli import main; sys.argv[0] = 'dmarcbot'; sys.exit(main())")
        return ([str(PROJECT_PYTHON), "-c", code, "parse", str(path)],
                "console script missing; ran function_app.cli:main")
    return [str(PROJECT_PYTHON), me, "--worker", contender, str(path)], ""


def cli_env() -> dict[str, str]:
    """The CLI takes its limits from the environment; lift them to the bench's 8 GiB."""
    env = dict(os.environ)
    env["DMARCBOT_MAX_INPUT_BYTES"] = str(BIG_LIMIT)
    env["DMARCBOT_MAX_DECOMPRESSED_BYTES"] = str(BIG_LIMIT)
    return env


def describe_failure(run: Run) -> str:
    """Short cause for a failed cell: the signal, or the last line of stderr."""
    if run.returncode < 0:
        name = signal.Signals(-run.returncode).name
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    last = [line for line in run.stderr_tail.strip().splitlines() if line.strip()]
    return f"exit {run.returncode}: {last[-1][:160] if last else 'no stderr'}"


def measure(contender: str, size: int, path: Path, args: argparse.Namespace) -> Result:
    """Best of the runs for one contender and file; the CLI also gets one counting run."""
    result = Result(size, path.name.removeprefix(f"agg-{size}"), contender)
    cmd, result.note = contender_cmd(contender, path)
    if contender == "parsedmarc" and not PARSEDMARC_PYTHON.exists():
        result.status, result.note = "skipped", "run bench/setup_parsedmarc.sh"
        return result
    repeat_up_to = PARSEDMARC_REPEAT_UP_TO if contender == "parsedmarc" else REPEAT_UP_TO
    repeats = args.repeat if size <= repeat_up_to else 1
    env = cli_env() if contender == "cli" else None
    for _ in range(repeats):
        run = run_child(cmd, args.timeout, args.mem_limit, env, devnull_stdout=contender == "cli")
        if run.timed_out:
            result.status, result.note = "timeout", f"> {args.timeout:g} s"
            return result
        if run.returncode != 0:
            result.status, result.note = "failed", describe_failure(run)
            return result
        if result.wall_s is None or run.wall_s < result.wall_s:
            result.wall_s = run.wall_s
            if contender != "cli":
                try:
                    payload = json.loads(run.stdout.strip().splitlines()[-1])
                except (IndexError, ValueError):
                    result.status, result.note = "failed", "worker printed no result line"
                    return result
                result.parse_s, result.records = payload["parse_s"], payload["records"]
                if payload.get("network_attempts"):
                    result.note = f"NETWORK USE: {payload['network_attempts'][:3]}"
        result.rss_mb = max(result.rss_mb or 0.0, run.rss_mb)
    if contender == "cli" and not args.no_cli_count:
        counter = RecordCounter()
        run = run_child(cmd, args.timeout, args.mem_limit, env, count_stdout=counter)
        if run.returncode == 0 and not run.timed_out:
            result.records = counter.records
        else:
            result.note = (result.note + "; " if result.note else "") + "counting run failed"
    return result


def project_parsedmarc(done: list[Result], size: int) -> tuple[float, float] | None:
    """Projected (seconds, MB) for parsedmarc at `size` from its two largest measured sizes.

    Time grows with the measured exponent between them (never less than linear); memory
    linearly, as parsedmarc holds the whole document, its dict tree and every record's result.
    """
    by_size: dict[int, Result] = {}
    for r in done:
        if r.contender == "parsedmarc" and r.status == "ok" and r.size < size and r.wall_s:
            prev = by_size.get(r.size)
            if prev is None or (r.wall_s or 0) > (prev.wall_s or 0):
                by_size[r.size] = r  # the slower of .xml / .xml.gz
    if not by_size:
        return None
    sizes = sorted(by_size)
    big = by_size[sizes[-1]]
    assert big.wall_s is not None and big.rss_mb is not None
    exponent = 1.0
    if len(sizes) > 1:
        small = by_size[sizes[-2]]
        if small.wall_s and small.wall_s > 0:
            exponent = max(1.0, math.log(big.wall_s / small.wall_s) /
                           math.log(sizes[-1] / sizes[-2]))
    factor = size / sizes[-1]
    return big.wall_s * factor ** exponent, big.rss_mb * factor


# --------------------------------------------------------------------------- report


def fmt(value: float | None, spec: str) -> str:
    """Blank-safe number formatting for table cells."""
    return "" if value is None else format(value, spec)


def size_label(n: int) -> str:
    """1000 -> 1k, 1000000 -> 1M, to keep the table narrow."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def cell_time(r: Result) -> str:
    """Wall seconds, or the reason there are none."""
    if r.status == "ok":
        return f"{r.wall_s:.3f}" if (r.wall_s or 0) < 10 else f"{r.wall_s:.1f}"
    return r.status if r.status != "not run" else f"not run ({r.note})"


def results_table(results: list[Result]) -> str:
    """One Markdown row per contender and file."""
    rows = ["| records | file | contender | wall s | parse s | records/s | peak RSS MB | "
            "count | note |", "|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        note = r.note if r.status != "not run" else ""
        rows.append(
            f"| {size_label(r.size)} | {r.file} | {r.contender} | {cell_time(r)} | "
            f"{fmt(r.parse_s, '.3f')} | {fmt(r.rate, ',.0f')} | {fmt(r.rss_mb, '.0f')} | "
            f"{'' if r.records is None else r.records} | {note} |")
    return "\n".join(rows)


def ratio(num: Result | None, den: Result | None) -> float | None:
    """num.wall / den.wall when both ran."""
    if num and den and num.status == den.status == "ok" and num.wall_s and den.wall_s:
        return num.wall_s / den.wall_s
    return None


def ratio_cell(value: float | None, projected: float | None = None) -> str:
    """A ratio, or a projected one marked with ~ when the contender was not run."""
    if value is not None:
        return f"{value:.2f}x"
    return f"~{projected:.0f}x (projected)" if projected is not None else ""


def ratios_table(results: list[Result], projections: dict[int, tuple[float, float]]) -> str:
    """Per size and file: engine/floor, CLI/floor and parsedmarc/engine wall-time ratios."""
    index = {(r.size, r.file, r.contender): r for r in results}
    rows = ["| records | file | dmarcbot / floor | dmarcbot / bare floor | dmarcbot CLI / floor | "
            "parsedmarc / dmarcbot |", "|---:|---|---:|---:|---:|---:|"]
    for size, file in dict.fromkeys((r.size, r.file) for r in results):
        engine, floor = index.get((size, file, "engine")), index.get((size, file, "floor"))
        cli, pdm = index.get((size, file, "cli")), index.get((size, file, "parsedmarc"))
        projected = None
        if size in projections and engine and engine.status == "ok" and engine.wall_s:
            projected = projections[size][0] / engine.wall_s
        bare = index.get((size, file, "floor-all"))
        rows.append(f"| {size_label(size)} | {file} | {ratio_cell(ratio(engine, floor))} | "
                    f"{ratio_cell(ratio(engine, bare))} | {ratio_cell(ratio(cli, floor))} | "
                    f"{ratio_cell(ratio(pdm, engine), projected)} |")
    return "\n".join(rows)


def targets(results: list[Result]) -> list[str]:
    """The three acceptance targets, each with its measured value and a verdict."""
    index = {(r.size, r.file, r.contender): r for r in results}
    lines = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    for file in (".xml", ".xml.gz"):
        engine = index.get((TARGET_SIZE, file, "engine"))
        speed = ratio(index.get((TARGET_SIZE, file, "parsedmarc")), engine)
        bare = ratio(engine, index.get((TARGET_SIZE, file, "floor-all")))
        floor = ratio(engine, index.get((TARGET_SIZE, file, "floor")))
        lines.append(f"- {size_label(TARGET_SIZE)} {file}: parsedmarc / dmarcbot = "
                     f"{ratio_cell(speed) or 'n/a'} (target ≥ {TARGET_SPEEDUP:.0f}x) "
                     f"{verdict(None if speed is None else speed >= TARGET_SPEEDUP)}; "
                     f"dmarcbot / bare iterparse floor = {ratio_cell(bare) or 'n/a'} (target ≤ "
                     f"{TARGET_FLOOR_RATIO:.0f}x) "
                     f"{verdict(None if bare is None else bare <= TARGET_FLOOR_RATIO)}; "
                     f"against the records-only floor {ratio_cell(floor) or 'n/a'}")
    ours = [r for r in results if r.contender in ("engine", "cli")]
    measured = [r for r in ours if r.rss_mb is not None]
    worst = max(measured, key=lambda r: r.rss_mb or 0.0, default=None)
    complete = bool(ours) and all(r.status == "ok" for r in ours)
    ok = None if worst is None else (worst.rss_mb or 0.0) < TARGET_RSS_MB
    mark = verdict(ok) if complete or not ours or ok is False else "INCOMPLETE"
    lines.append(
        f"- dmarcbot peak RSS, every size: max {fmt(worst.rss_mb if worst else None, '.0f')} MB"
        f"{f' ({worst.contender}, {size_label(worst.size)}{worst.file})' if worst else ''} "
        f"(target < {TARGET_RSS_MB:.0f} MB) {mark}"
        f"{'' if complete or not ours else ' (some dmarcbot runs did not finish)'}")
    return lines


def check_counts(results: list[Result]) -> list[str]:
    """Every contender must have seen the generated number of records."""
    problems = []
    for r in results:
        if r.status == "ok" and r.records is not None and r.records != r.size:
            problems.append(f"{r.contender} saw {r.records} records in agg-{r.size}{r.file}, "
                            f"expected {r.size}")
    return problems


def warm(path: Path) -> None:
    """Read the file once so every contender finds it in the page cache.

    One small reused buffer: the harness's peak RSS must stay below any child's (see README).
    """
    buf = bytearray(1 << 16)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def main(argv: list[str] | None = None) -> int:
    """Run every contender on every file, one at a time, and print the Markdown report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="comma list, e.g. 1k,10k,100k,1M")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per contender run")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--formats", default="xml,xml.gz")
    ap.add_argument("--repeat", type=int, default=3,
                    help=f"runs per cell for sizes <= {REPEAT_UP_TO:,} "
                         f"({PARSEDMARC_REPEAT_UP_TO:,} for parsedmarc); the best is kept")
    ap.add_argument("--mem-limit-gb", type=float, default=20.0,
                    help="address-space cap per child, so a runaway child fails instead of "
                         "taking the machine")
    ap.add_argument("--no-cli-count", action="store_true",
                    help="skip the CLI's extra untimed run that counts its output lines")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--worker", nargs=2, metavar=("CONTENDER", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        WORKERS[args.worker[0]](args.worker[1])
        return 0
    args.mem_limit = int(args.mem_limit_gb * (1 << 30)) if args.mem_limit_gb > 0 else None

    sys.path.insert(0, str(BENCH_DIR))
    from make_reports import parse_sizes  # stdlib only; keeps the harness small

    sizes = sorted(parse_sizes(args.sizes))
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    formats = [f".{f.strip().lstrip('.')}" for f in args.formats.split(",")]
    # Generate in a child too: the harness's own peak RSS stays a few MB, and an exec'd child
    # can inherit its parent's high-water mark.
    subprocess.run([sys.executable, str(BENCH_DIR / "make_reports.py"), "--sizes",
                    ",".join(map(str, sizes))], check=True)
    # Byte-compile the working tree as an install would (pip compiles parsedmarc's), so no run
    # pays for compiling dmarcbot's modules (PYTHONDONTWRITEBYTECODE would make every run do it).
    subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(REPO / package) for package
                    in ("analysis", "cards", "function_app", "graph", "store"))], check=True)

    results: list[Result] = []
    projections: dict[int, tuple[float, float]] = {}
    for size in sizes:
        for fmt_ in formats:
            path = DATA_DIR / f"agg-{size}{fmt_}"
            warm(path)
            for contender in contenders:
                if contender == "parsedmarc":
                    proj = project_parsedmarc(results, size)
                    if proj is not None and (proj[0] > args.timeout or
                                             (args.mem_limit and proj[1] * (1 << 20) >
                                              args.mem_limit)):
                        projections[size] = proj
                        note = f"projected {proj[0]:,.0f} s, {proj[1] / 1024:.1f} GB"
                        results.append(Result(size, fmt_, contender, "not run", note=note))
                        print(f"  {size_label(size):>4} {fmt_:<7} {contender:<10} not run "
                              f"({note})", file=sys.stderr, flush=True)
                        continue
                r = measure(contender, size, path, args)
                results.append(r)
                unit = " s" if r.status == "ok" else "  "
                print(f"  {size_label(size):>4} {fmt_:<7} {contender:<10} {cell_time(r):>9}{unit} "
                      f"{fmt(r.rss_mb, '7.0f'):>7} MB {'' if r.records is None else r.records:>8}"
                      f" rec  {r.note}",
                      file=sys.stderr, flush=True)

    harness_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n## Parse benchmark ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]})\n")
    print(results_table(results))
    print("\nWall-time ratios (lower first column is better; higher last column is better):\n")
    print(ratios_table(results, projections))
    print("\nTargets:\n")
    print("\n".join(targets(results)))
    print(f"\nHarness peak RSS {harness_mb:.0f} MB (a child's RSS can never read below it).")
    problems = check_counts(results)
    if problems:
        print("\n**RECORD COUNT MISMATCH**\n")
        for p in problems:
            print(f"- {p}")
        print(f"\n!!! RECORD COUNT MISMATCH in {len(problems)} cell(s) !!!", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
