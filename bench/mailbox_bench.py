"""Mailbox benchmark: dmarcbot's concurrent Graph ingestion against a sequential reader.

One run measures two things:

1. Ingestion. N report e-mails (default 1,000), each with one gzip attachment holding a distinct
   small aggregate report, wait in a fake Microsoft Graph (`tests/fakes/graph.py`, HTTPS on
   loopback, the route table of the installed msgraph-sdk, 4 concurrent requests per mailbox
   allowed like Outlook's limit) that adds `--latency` (50 ms) to every request. The fake runs in
   its own process (spawned), so its threads never take the client's GIL; the harness tells it
   over a pipe to seed a fresh mailbox for each contender and reads its counters afterwards.
   Every contender runs `function_app.mailjob.run_mailbox` in this process on a fresh SQLite
   store, timed from `connect(...)` to the connection closed; imports are warmed first by an
   untimed run on a small mailbox (the cold start is measured apart, below):

     dmarcbot     `connect(...)` with its default 4 connections, `run_mailbox(workers=8)`
     sequential   one request at a time, as parsedmarc's IMAP/Graph reader does: the same code
                  with `connect(max_concurrent=1)` and `run_mailbox(workers=1)`
     floor        the requests dmarcbot made x latency / 4: what Graph's limit of 4 concurrent
                  requests per mailbox allows at best

2. Cold start. In a fresh interpreter with an empty environment (PATH only, PYTHONPATH = repo
   root), time `import functions_entry` plus `app.get_functions()` (the Functions worker's
   indexing), 7 times, and check that the Graph SDK is not imported by it.

The run fails (exit status 1) unless every contender stored all N reports and moved all N
messages to `Processed` with one `run_mailbox` call; `--until-empty` calls it again until a call
finds nothing, as successive timer runs would.

    .venv/bin/python bench/mailbox_bench.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PROJECT_PYTHON = REPO / ".venv" / "bin" / "python"
MAILBOX = "dmarc@contoso.com"
DEFAULT_MAILS = 1000
DEFAULT_LATENCY = 0.050
GRAPH_LIMIT = 4  # Outlook's concurrent requests per app per mailbox
WARMUP_MAILS = 20
COLD_RUNS = 7
TARGET_FLOOR_RATIO = 1.5  # dmarcbot wall / floor
TARGET_COLD_S = 1.0  # import + indexing, median


# --------------------------------------------------------------------------- the fake Graph
# Runs in a spawned child. Commands arrive on the pipe as tuples, each answered with one dict:
#   ("reset", mails, latency, tag)  a new fake Graph (new port) with a fresh mailbox of `mails`
#                                   report e-mails; answers its base URL and the CA file
#   ("stats",)                      counters of the current fake since its reset
#   ("quit",)                       stop serving and exit


def serve_fake_graph(conn: Connection) -> None:
    """The child's main loop: one fake Graph at a time, reseeded on every `reset`."""
    sys.path.insert(0, str(REPO))
    import threading
    from datetime import UTC, datetime, timedelta

    from tests.builders import aggregate_xml, gzipped, record_xml
    from tests.fakes.graph import FakeGraph
    from tests.fakes.mailbox import FileAttachment
    from tests.fakes.tls import TestCA

    class TimedGraph(FakeGraph):
        """FakeGraph that also sums how long its handlers hold a request, and the statuses."""

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.busy_s = 0.0
            self.statuses: Counter[int] = Counter()
            self._timing = threading.Lock()

        def _handle(self, request: Any) -> Any:
            started = time.perf_counter()
            response = None
            try:
                response = super()._handle(request)
                return response
            finally:
                elapsed = time.perf_counter() - started
                with self._timing:
                    self.busy_s += elapsed
                    self.statuses[response.status if response is not None else 0] += 1

    def seed(graph: FakeGraph, mails: int, tag: str) -> None:
        box = graph.add_mailbox(MAILBOX)
        begin = 1764288000  # 2025-11-28T00:00:00Z
        received = datetime(2025, 11, 29, tzinfo=UTC)
        for i in range(mails):
            records = "".join(
                record_xml(f"198.51.{100 + i // 250}.{i % 250 + 1}", 1 + i % 7)
                if r == 0 else
                record_xml(f"203.0.113.{(i + r) % 250 + 1}", r * 3, dkim="fail", spf="fail",
                           disposition="quarantine", header_from="contoso.com")
                for r in range(3))
            xml = aggregate_xml(records, report_id=f"{tag}-{i:06d}", domain="contoso.com",
                                org="Receiver Example", begin=begin, end=begin + 86399)
            box.add_message(
                internet_message_id=f"<{tag}-{i:06d}@receiver.example>",
                received=received + timedelta(seconds=i),
                subject=f"Report Domain: contoso.com Submitter: receiver.example "
                        f"Report-ID: {tag}-{i:06d}",
                attachments=[FileAttachment(
                    f"receiver.example!contoso.com!{begin}!{begin + 86399}.xml.gz",
                    gzipped(xml), "application/gzip")])

    def kind(method: str, path: str) -> str:
        if path.endswith("/$value"):
            return "download"
        if method == "POST" and path.endswith("/move"):
            return "move"
        if method == "PATCH":
            return "patch"
        if method == "GET" and "/mailFolders/" in path and path.endswith("/messages"):
            return "list page"
        if "/mailFolders" in path:
            return "folder"
        return f"{method} other"

    def count(box: Any, folder: str) -> int:
        try:
            return len(box.messages_in(folder))
        except KeyError:  # no such folder (yet)
            return 0

    ca = TestCA()
    graph: TimedGraph | None = None
    cpu_at_reset = 0.0
    try:
        while True:
            command = conn.recv()
            if command[0] == "reset":
                _, mails, latency, tag = command
                if graph is not None:
                    graph.stop()
                started = time.perf_counter()
                graph = TimedGraph(tls=ca)
                graph.latency = latency
                graph.mailbox_concurrency_limit = GRAPH_LIMIT  # over it: 429, as Outlook
                seed(graph, mails, tag)
                graph.start()
                cpu_at_reset = time.process_time()
                conn.send({"base_url": graph.base_url, "ca_pem": str(ca.ca_pem),
                           "seed_s": time.perf_counter() - started})
            elif command[0] == "stats":
                assert graph is not None
                box = graph.mailbox(MAILBOX)
                assert box is not None
                with graph._timing:
                    busy, statuses = graph.busy_s, dict(graph.statuses)
                conn.send({
                    "requests": len(graph.requests),
                    "max_in_flight": max(graph.max_in_flight.values(), default=0),
                    "kinds": dict(Counter(kind(r.method, r.path) for r in graph.requests)),
                    "statuses": statuses,
                    "busy_s": busy,
                    "cpu_s": time.process_time() - cpu_at_reset,
                    "rejected": [f"{r.method} {r.path}: {r.reason}" for r in graph.rejected[:3]],
                    "unimplemented": len(graph.unimplemented),
                    "errors": [e.strip().splitlines()[-1] for e in graph.errors[:3]],
                    "deleted": len(graph.deleted),
                    "processed": count(box, "Processed"),
                    "failed": count(box, "Failed"),
                    "inbox": count(box, "inbox"),
                })
            elif command[0] == "quit":
                return
    except EOFError:  # the harness went away
        return
    finally:
        if graph is not None:
            graph.stop()
        ca.close()


class FakeGraphProcess:
    """The spawned fake Graph, driven over a pipe."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=serve_fake_graph, args=(child,), name="fake-graph",
                                daemon=True)
        self.proc.start()
        child.close()

    def _ask(self, *command: object, timeout: float = 120.0) -> dict[str, Any]:
        self._conn.send(command)
        if not self._conn.poll(timeout):
            raise RuntimeError(f"the fake Graph did not answer {command[0]!r} in {timeout:g} s")
        return self._conn.recv()

    def reset(self, mails: int, latency: float, tag: str) -> dict[str, Any]:
        return self._ask("reset", mails, latency, tag)

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(("quit",))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self._conn.close()


# --------------------------------------------------------------------------- the contenders


class StaticCredential:
    """A token that never expires: no identity provider in the measurement."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("bench-static-token", int(time.time()) + 3600)

    def invalidate(self) -> None:
        pass


@dataclasses.dataclass
class Contender:
    name: str
    connections: int
    workers: int


@dataclasses.dataclass
class Outcome:
    contender: Contender
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process's user + system CPU during the run
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    stored: int = 0
    passes: list[int] = dataclasses.field(default_factory=list)  # messages per run_mailbox call
    stalls: int = 0  # times the event loop woke more than STALL_S late
    stalled_s: float = 0.0  # how late, summed: the loop was busy and no socket was served
    longest_stall_s: float = 0.0
    server: dict[str, Any] = dataclasses.field(default_factory=dict)


LAG_TICK_S = 0.010
STALL_S = 0.020


async def _watch_loop(o: Outcome) -> None:
    """Wake every 10 ms; a late wake-up means something held the event loop that long."""
    last = time.perf_counter()
    while True:
        await asyncio.sleep(LAG_TICK_S)
        now = time.perf_counter()
        late = now - last - LAG_TICK_S
        if late > STALL_S:
            o.stalls += 1
            o.stalled_s += late
            o.longest_stall_s = max(o.longest_stall_s, late)
        last = now


async def _ingest(o: Outcome, base_url: str, ca_pem: str, db: Path, timeout: float,
                  until_empty: bool) -> None:
    from analysis import Limits
    from function_app.mailjob import run_mailbox
    from graph.client import RetryPolicy, connect
    from graph.mailbox import Folders, Mailbox
    from store import SqliteStore

    c = o.contender
    with SqliteStore(db) as store:
        watcher = asyncio.create_task(_watch_loop(o))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        results = []
        async with connect(StaticCredential(), base_url=base_url, ca_bundle=Path(ca_pem),
                           retry=RetryPolicy(max_retries=3, delay=0),
                           max_concurrent=c.connections) as graph:
            mailbox = Mailbox(graph, MAILBOX, Folders())
            while True:  # one call; with --until-empty, again until a call finds nothing
                left = timeout - (time.perf_counter() - started)
                handled = await asyncio.wait_for(
                    run_mailbox(mailbox, store, Limits(), workers=c.workers), max(left, 1.0))
                results += handled
                o.passes.append(len(handled))
                if not until_empty or not handled:
                    break
        o.wall_s = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        watcher.cancel()
        o.cpu_s = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
        o.statuses = dict(Counter(r.status for r in results))
        o.stored = sum(1 for _ in store.reports())


def run_contender(fake: FakeGraphProcess, c: Contender, mails: int, latency: float,
                  work: Path, timeout: float, tag: str, until_empty: bool) -> Outcome:
    seed = fake.reset(mails, latency, tag)
    o = Outcome(c)
    asyncio.run(_ingest(o, seed["base_url"], seed["ca_pem"], work / f"{tag}.sqlite3", timeout,
                        until_empty))
    o.server = fake.stats()
    return o


def check(o: Outcome, mails: int, problems: list[str]) -> None:
    """Every report stored, every message moved to Processed, nothing refused or deleted."""
    s, name = o.server, o.contender.name
    if o.stored != mails:
        problems.append(f"{name}: {o.stored} reports stored, expected {mails} (run_mailbox "
                        f"calls handled {o.passes} messages)")
    if o.statuses != {"processed": mails}:
        problems.append(f"{name}: run_mailbox results {o.statuses}, expected all {mails} "
                        "processed")
    if s["processed"] != mails or s["inbox"] or s["failed"]:
        problems.append(f"{name}: fake mailbox has {s['processed']} in Processed, {s['inbox']} "
                        f"left in the inbox, {s['failed']} in Failed (expected {mails}/0/0)")
    if s["rejected"] or s["unimplemented"] or s["errors"] or s["deleted"]:
        problems.append(f"{name}: fake Graph refused {s['rejected']}, unimplemented "
                        f"{s['unimplemented']}, fake errors {s['errors']}, deleted "
                        f"{s['deleted']}")
    # 409 is expected: workers racing to create `Processed` (mailjob looks it up again)
    not_ok = {k: v for k, v in s["statuses"].items() if int(k) >= 300 and int(k) != 409}
    if not_ok:
        problems.append(f"{name}: non-2xx answers {not_ok}")
    if s["max_in_flight"] > o.contender.connections:
        problems.append(f"{name}: {s['max_in_flight']} requests in flight, more than its "
                        f"{o.contender.connections} connection(s)")


# --------------------------------------------------------------------------- cold start

PROBE = """
import json, sys, time
started = time.perf_counter()
import functions_entry
imported = time.perf_counter()
functions = functions_entry.app.get_functions()
done = time.perf_counter()
mods = list(sys.modules)
print(json.dumps({
    "import_s": imported - started, "index_s": done - imported, "total_s": done - started,
    "functions": sorted(f.get_function_name() for f in functions),
    "msgraph": sorted(m for m in mods if m == "msgraph" or m.startswith(("msgraph.",
                                                                          "msgraph_core"))),
    "kiota": any(m.startswith("kiota") for m in mods),
    "msal": "msal" in sys.modules,
    "httpx": "httpx" in sys.modules,
    "modules": len(mods),
}))
"""


@dataclasses.dataclass
class ColdStart:
    in_process: list[float]  # import + get_functions, inside the child
    wall: list[float]  # the whole `python -c`, interpreter start-up and exit included
    last: dict[str, Any]


def cold_start(runs: int) -> ColdStart:
    python = str(PROJECT_PYTHON if PROJECT_PYTHON.exists() else sys.executable)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)}
    inside, wall, last = [], [], {}
    for _ in range(runs):
        started = time.perf_counter()
        run = subprocess.run([python, "-c", PROBE], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=120, check=False)
        wall.append(time.perf_counter() - started)
        if run.returncode != 0:
            tail = run.stderr.strip().splitlines()[-1:] or ["no stderr"]
            raise RuntimeError(f"importing functions_entry failed: {tail[0]}")
        last = json.loads(run.stdout.strip().splitlines()[-1])
        inside.append(float(last["total_s"]))
    return ColdStart(inside, wall, last)


# --------------------------------------------------------------------------- report


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _kinds(kinds: dict[str, int]) -> str:
    order = ["list page", "download", "move", "folder", "patch"]
    keys = sorted(kinds, key=lambda k: (order.index(k) if k in order else len(order), k))
    return ", ".join(f"{kinds[k]} {k}" for k in keys)


def _note(o: Outcome) -> str:
    s = o.server
    note = f"{_kinds(s['kinds'])}; {o.stored} reports stored, {s['processed']} moved"
    if len(o.passes) > 1:
        note += f"; {len(o.passes)} run_mailbox calls handled {'+'.join(map(str, o.passes))}"
    other = {k: v for k, v in s["statuses"].items() if int(k) >= 300}
    if other:
        note += "; answers " + ", ".join(f"{v}x {k}" for k, v in sorted(other.items()))
    return note


def report(args: argparse.Namespace, a: Outcome, b: Outcome, cold: ColdStart,
           problems: list[str], elapsed: float, load: tuple[float, float],
           warmup_s: float) -> str:
    floor = a.server["requests"] * args.latency / GRAPH_LIMIT
    a_floor, b_a = a.wall_s / floor, b.wall_s / a.wall_s
    b_floor = b.server["requests"] * args.latency
    out = [f"# Mailbox benchmark: {args.mails} report e-mails, {args.latency * 1000:g} ms added "
           "per Graph request", "",
           f"Command: `{' '.join(['.venv/bin/python', 'bench/mailbox_bench.py', *sys.argv[1:]])}`"
           f" · {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} CPUs · Python "
           f"{sys.version.split()[0]} · fake Graph over HTTPS in its own process, at most "
           f"{GRAPH_LIMIT} requests in flight per mailbox (more: 429) · run took {elapsed:.0f} s"
           f" · load average {load[0]:.2f} before, {load[1]:.2f} after", "",
           "| contender | wall s | requests | max in flight | ratio | client CPU s | "
           "fake Graph busy | note |",
           "|---|---:|---:|---:|---:|---:|---:|---|"]
    for o, ratio in ((a, f"{a_floor:.2f}x floor"), (b, f"{b_a:.2f}x dmarcbot")):
        s = o.server
        slots = o.contender.connections
        busy = s["busy_s"] / (o.wall_s * slots)
        out.append(
            f"| {o.contender.name} | {o.wall_s:.2f} | {s['requests']} | {s['max_in_flight']} | "
            f"{ratio} | {o.cpu_s:.1f} | {busy:.0%} of {slots} | {_note(o)} |")
    out.append(f"| floor: dmarcbot's requests x {args.latency * 1000:g} ms / {GRAPH_LIMIT} | "
               f"{floor:.2f} | {a.server['requests']} | {GRAPH_LIMIT} | 1.00x | - | - | "
               "Graph's limit of 4 concurrent requests per mailbox |")
    out.append("")
    sa = a.server
    own = sa["busy_s"] - sa["requests"] * args.latency
    idle = a.wall_s - sa["busy_s"] / GRAPH_LIMIT
    out.append(
        f"Where dmarcbot's {a.wall_s:.2f} s go: the floor {floor:.2f} s; the fake's own work "
        f"beyond the added latency, {own / sa['requests'] * 1000:.1f} ms per request "
        f"({own / GRAPH_LIMIT:.2f} s of wall over {GRAPH_LIMIT} connections); the rest, "
        f"{idle:.2f} s, is connections left idle by the client. The client used "
        f"{a.cpu_s:.1f} s of CPU ({a.cpu_s / sa['requests'] * 1000:.1f} ms per request) in its "
        f"one event-loop thread, and that loop was held for more than "
        f"{STALL_S * 1000:.0f} ms {a.stalls} times, {a.stalled_s:.2f} s in all (longest "
        f"{a.longest_stall_s * 1000:.0f} ms), while finished requests waited to be read. The "
        f"fake used {sa['cpu_s']:.1f} s of CPU in its own process.")
    out.append("")
    out.append(
        f"The sequential reader's own floor (requests x latency) is {b_floor:.1f} s; it took "
        f"{b.wall_s - b_floor:.1f} s more "
        f"({(b.wall_s - b_floor) / b.server['requests'] * 1000:.1f} ms per request; client CPU "
        f"{b.cpu_s / b.server['requests'] * 1000:.1f} ms per request). The untimed warm-up run "
        f"on {WARMUP_MAILS} mails (the SDK's first imports) took {warmup_s:.2f} s.")
    out.append("")
    last = cold.last
    med, worst = statistics.median(cold.in_process), max(cold.in_process)
    out += ["Cold start (fresh `python -c`, empty environment but PATH, PYTHONPATH = repo root; "
            f"{len(cold.in_process)} runs):", "",
            "| measure | median s | max s |", "|---|---:|---:|",
            f"| `import functions_entry` + `app.get_functions()` | {med:.3f} | {worst:.3f} |",
            f"| whole process (interpreter start-up and exit too) | "
            f"{statistics.median(cold.wall):.3f} | {max(cold.wall):.3f} |", "",
            f"Last run: import {last['import_s']:.3f} s, indexing {last['index_s']:.3f} s, "
            f"functions {', '.join(last['functions'])}, {last['modules']} modules loaded; "
            f"msgraph imported: {'YES ' + str(last['msgraph'][:3]) if last['msgraph'] else 'no'}"
            f", kiota: {'yes' if last['kiota'] else 'no'}, msal: "
            f"{'yes' if last['msal'] else 'no'}, httpx: {'yes' if last['httpx'] else 'no'}.", ""]
    targets = [
        (f"dmarcbot / floor ≤ {TARGET_FLOOR_RATIO:g}x ({a.wall_s:.2f} / {floor:.2f} s)",
         f"{a_floor:.3f}x", a_floor <= TARGET_FLOOR_RATIO),
        (f"cold start (import + indexing) median < {TARGET_COLD_S:g} s", f"{med:.3f} s",
         med < TARGET_COLD_S),
        ("msgraph not imported at indexing", "not imported" if not last["msgraph"] else
         "imported", not last["msgraph"]),
    ]
    out += ["| target | result | |", "|---|---:|---|"]
    out += [f"| {name} | {value} | {'PASS' if ok else 'FAIL'} |" for name, value, ok in targets]
    out.append("")
    out.append(f"sequential / dmarcbot = {b_a:.2f}x · harness peak RSS "
               f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if problems:
        out += ["", "**PROBLEMS:**", *[f"- {p}" for p in problems]]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def harness(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO))
    began, load = time.perf_counter(), os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="dmarcbot-mailbox-bench-"))
    fake = FakeGraphProcess()
    problems: list[str] = []
    try:
        dmarcbot = Contender("dmarcbot (4 connections, 8 workers)", GRAPH_LIMIT, 8)
        sequential = Contender("sequential (1 connection, 1 worker)", 1, 1)
        _progress(f"warm-up: dmarcbot on {WARMUP_MAILS} mails (imports the SDK; untimed)")
        warm = run_contender(fake, dmarcbot, WARMUP_MAILS, args.latency, work, args.timeout,
                             "warmup", args.until_empty)
        check(warm, WARMUP_MAILS, problems)
        outcomes = []
        for c, tag, guess in ((dmarcbot, "a", 1.2 / GRAPH_LIMIT), (sequential, "b", 1.3)):
            _progress(f"{c.name} on {args.mails} mails "
                      f"(~{args.mails * 2 * args.latency * guess:.0f} s)")
            o = run_contender(fake, c, args.mails, args.latency, work, args.timeout, tag,
                              args.until_empty)
            check(o, args.mails, problems)
            _progress(f"  {o.wall_s:.2f} s, {o.server['requests']} requests, max in flight "
                      f"{o.server['max_in_flight']}, {o.stored} stored, "
                      f"{o.server['processed']} moved, run_mailbox calls handled {o.passes}")
            outcomes.append(o)
        _progress(f"cold start: {COLD_RUNS} fresh interpreters importing functions_entry")
        cold = cold_start(COLD_RUNS)
        if cold.last["msgraph"]:
            problems.append(f"indexing imported the Graph SDK: {cold.last['msgraph'][:3]}")
        print(report(args, outcomes[0], outcomes[1], cold, problems,
                     time.perf_counter() - began, (load, os.getloadavg()[0]), warm.wall_s))
    finally:
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)
    if problems:
        print(f"\n!!! {len(problems)} PROBLEM(S): " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=DEFAULT_MAILS,
                        help="report e-mails in the mailbox, one gzip attachment each")
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY,
                        help="seconds the fake Graph adds to every request")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds per contender before it is abandoned")
    parser.add_argument("--until-empty", action="store_true",
                        help="call run_mailbox again (same connection, same store) until a "
                             "call finds no message, as successive timer runs would; the "
                             "default is one call, which must handle every message")
    args = parser.parse_args(argv)
    if args.mails < 1 or args.latency <= 0:
        parser.error("--mails must be >= 1 and --latency > 0")
    return harness(args)


if __name__ == "__main__":
    raise SystemExit(main())
