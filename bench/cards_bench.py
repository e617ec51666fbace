"""Cards benchmark: building and validating each Adaptive Card kind, against 20 ms a card.

For each kind (approval, decision, retry, read-only, and the digest with 5 and with 500 services)
the facts are made once: synthetic and seeded, with service names, categories and the DNS
records to publish taken from the service catalog through `cards.facts.publish_records`, the way
`approval_facts_from` does. Then, `--runs` times in a row, in this process:

  build      the card from the facts (`cards.approval_card(facts)`, ...)
  validate   `tests.cards_render.schema.errors(card)`: the official 1.5 schema compiled once per
             process by fastjsonschema, every element and then the whole card; jsonschema runs
             only to name a problem, so a valid card never reaches it
  both       the two above, back to back (the same runs)

and, `--baseline-runs` times on the same cards, the validator as it was before:
`schema.jsonschema_errors(card)`, jsonschema's Draft6Validator alone (every element, then the
whole card). The one-off costs of a process (importing the validators, loading and compiling the
schema) are timed first, on the first card, and reported apart.

The run fails (exit status 1) when a card is invalid for either validator or when a broken copy of
a card (one element's type misspelt) is not rejected with its path. A missed target is reported,
not an error.

    .venv/bin/python bench/cards_bench.py
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_MS = 20.0
DEFAULT_RUNS = 200
DEFAULT_BASELINE_RUNS = 20
WARMUP_RUNS = 5
DOMAIN = "contoso.com"
NOW = datetime(2026, 11, 28, 14, 5, tzinfo=UTC)

Card = dict[str, Any]


# -- the facts ---------------------------------------------------------------------------------

def approval_facts() -> Any:
    """A new sender as the notify step would describe it: SendGrid, six sending IPs."""
    from analysis.catalog import load_catalog
    from cards import ApprovalFacts, SourceLine
    from cards.facts import publish_records

    service = load_catalog().get("sendgrid")
    rng = random.Random("cards-bench/approval")
    sources = tuple(sorted(
        (SourceLine(f"167.89.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    f"o{i}.ptr{rng.randrange(9999)}.sendgrid.net" if i % 4 else None,
                    messages := rng.randrange(50, 10_000), rng.randrange(messages))
         for i in range(6)), key=lambda s: -s.messages))
    return ApprovalFacts(
        domain=DOMAIN, service_key=service.key, service_name=service.name,
        category=service.category, messages=sum(s.messages for s in sources),
        dmarc_pass=sum(s.dmarc_pass or 0 for s in sources), first_seen="2026-11-02",
        last_seen=date(2026, 11, 27), verdict="needs-dkim", item_id="117",
        request_id="r-6f1c2a", owner="Dana Whitfield", sources=sources,
        evidence=("SPF passed for return-path domain em2841.contoso.com",
                  f"{sources[0].ip} is in {service.name}'s SPF networks",
                  "reverse DNS o3.ptr7710.sendgrid.net (forward-confirmed)"),
        records=publish_records(DOMAIN, service.publish),
        advice="set up DKIM for contoso.com in SendGrid (Twilio) and publish s1._domainkey, "
               "s2._domainkey",
        refresh_user_ids=("29:1a2b3c", "29:4d5e6f"))


def digest_facts(services: int) -> Any:
    """One domain's week with `services` senders: catalog names, seeded volumes and statuses."""
    from analysis.catalog import load_catalog
    from cards import DigestFacts, ServiceLine

    catalog = sorted(load_catalog().services, key=lambda s: s.key)
    rng = random.Random(f"cards-bench/digest/{services}")
    lines = []
    for i in range(services):
        name = catalog[i % len(catalog)].name + (f" ({i // len(catalog) + 1})"
                                                 if i >= len(catalog) else "")
        status = rng.choice(("Approved", "Approved", "Pending", "Rejected"))
        messages = int(rng.paretovariate(1.2) * 40)
        lines.append(ServiceLine(name, status, messages, rng.randrange(messages + 1),
                                 f"Owner {i}" if status == "Pending" else None))
    messages = sum(s.messages for s in lines) + 4_012
    return DigestFacts(
        domain=DOMAIN, period_start=date(2026, 11, 21), period_end=date(2026, 11, 27),
        messages=messages, dmarc_pass=sum(s.dmarc_pass for s in lines),
        services=tuple(lines), impostor_messages=1_284, forwarded_messages=2_410,
        unidentified_messages=318, policy="none", next_policy="quarantine",
        next_step="move to p=quarantine with t=y: 97 % of approved mail passes with aligned DKIM",
        records=(("TXT", f"_dmarc.{DOMAIN}",
                  f"v=DMARC1; p=quarantine; t=y; rua=mailto:dmarc@{DOMAIN}"),),
        blockers=tuple(f"{s.name}: {s.messages:,} messages, not approved yet"
                       for s in lines if s.status == "Pending")[:3],
        list_url="https://contoso.sharepoint.com/sites/mail/Lists/Senders", top=5)


def builders() -> dict[str, Callable[[], Card]]:
    """Each kind's build step, its facts made beforehand (not timed)."""
    from cards import (
        Decision,
        approval_card,
        decision_card,
        digest_card,
        read_only_card,
        retry_card,
    )

    facts = approval_facts()
    decided = Decision("approve", "Dana Whitfield", NOW)
    few, many = digest_facts(5), digest_facts(500)
    return {
        "approval": lambda: approval_card(facts),
        "decision": lambda: decision_card(facts, decided),
        "retry": lambda: retry_card(facts, "SharePoint answered 503 (busy)", verb="approve"),
        "read-only": lambda: read_only_card(facts, "Approved", decided),
        "digest, 5 services": lambda: digest_card(few),
        "digest, 500 services": lambda: digest_card(many),
    }


# -- measuring ---------------------------------------------------------------------------------

def ms(ns: int) -> float:
    return ns / 1e6


def spread(values: list[float]) -> tuple[float, float, float]:
    """p50, p95 (inclusive quantiles), max."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    p95 = statistics.quantiles(values, n=100, method="inclusive")[94]
    return statistics.median(values), p95, max(values)


def fmt(values: list[float]) -> str:
    p50, p95, top = spread(values)
    return f"{p50:.2f} / {p95:.2f} / {top:.2f}"


def elements(card: Any) -> int:
    """Objects with a string `type` (what the element-wise pass checks), payloads left out."""
    if isinstance(card, dict):
        own = isinstance(card.get("type"), str)
        return own + sum(elements(v) for k, v in card.items() if k != "data")
    if isinstance(card, list):
        return sum(elements(v) for v in card)
    return 0


def break_card(card: Card) -> tuple[Card, str]:
    """A copy with its first TextBlock's type misspelt, and the path the message must name."""
    broken = copy.deepcopy(card)
    stack: list[tuple[str, Any]] = [("", broken)]
    while stack:
        path, value = stack.pop(0)
        if isinstance(value, dict):
            if value.get("type") == "TextBlock":
                value["type"] = "TextBlok"
                return broken, f"{path.lstrip('/')}: unknown type 'TextBlok'"
            stack.extend((f"{path}/{k}", v) for k, v in value.items() if k != "data")
        elif isinstance(value, list):
            stack.extend((f"{path}/{i}", v) for i, v in enumerate(value))
    raise AssertionError("no TextBlock in the card")


def run(args: argparse.Namespace) -> int:
    began, load_before = time.perf_counter(), os.getloadavg()[0]
    build = builders()
    first = build["approval"]()

    # One-off costs: the first card validated in this process pays them.
    t0 = time.perf_counter_ns()
    from tests.cards_render import schema
    t1 = time.perf_counter_ns()
    first_fast = schema.errors(first)
    t2 = time.perf_counter_ns()
    schema.errors(first)
    t3 = time.perf_counter_ns()
    first_slow = schema.jsonschema_errors(first)
    t4 = time.perf_counter_ns()
    once = {"import": ms(t1 - t0), "first fast": ms(t2 - t1), "second fast": ms(t3 - t2),
            "first jsonschema": ms(t4 - t3)}
    problems = [f"approval: {p}" for p in first_fast + first_slow]

    rows = []
    for name, make in build.items():
        print(f"{name}: {args.runs} runs, {args.baseline_runs} with jsonschema", file=sys.stderr)
        card = make()
        found = schema.errors(card) + schema.jsonschema_errors(card)
        problems += [f"{name}: {p}" for p in found]
        broken, expected = break_card(card)
        for label, check in (("compiled", schema.errors), ("jsonschema",
                                                           schema.jsonschema_errors)):
            got = check(broken)
            if not got or not got[0].endswith(expected):
                problems.append(f"{name}: a broken copy was not rejected by {label} with "
                                f"'{expected}' (got {got[:1]})")
        for _ in range(WARMUP_RUNS):
            schema.errors(make())
        built, checked, both = build_and_check(make, schema.errors, args.runs)
        _, old_checked, old_both = build_and_check(make, schema.jsonschema_errors,
                                                   args.baseline_runs)
        card = make()
        rows.append({"name": name, "bytes": len(_json(card)), "elements": elements(card),
                     "build": built, "validate": checked, "both": both,
                     "old validate": old_checked, "old both": old_both})

    broken, _ = break_card(first)
    failing = []
    for _ in range(5):
        a = time.perf_counter_ns()
        schema.errors(broken)
        failing.append(ms(time.perf_counter_ns() - a))

    print(report(args, rows, once, statistics.median(failing), problems,
                 time.perf_counter() - began, (load_before, os.getloadavg()[0])))
    return 1 if problems else 0


def _json(card: Card) -> str:
    return json.dumps(card, ensure_ascii=False, separators=(",", ":"))


# -- the report --------------------------------------------------------------------------------

def report(args: argparse.Namespace, rows: list[dict[str, Any]], once: dict[str, float],
           failing_ms: float, problems: list[str], elapsed: float,
           load: tuple[float, float]) -> str:
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in
                         ("fastjsonschema", "jsonschema", "microsoft-teams-cards"))
    out = [
        f"Command: `.venv/bin/python bench/cards_bench.py{_argv()}` · "
        f"{datetime.now():%Y-%m-%d %H:%M} · {os.cpu_count()} CPUs · Python "
        f"{platform.python_version()} · {versions} · {args.runs} runs per card "
        f"({args.baseline_runs} with jsonschema) after {WARMUP_RUNS} warm-up runs · run took "
        f"{elapsed:.0f} s · load average {load[0]:.2f} before, {load[1]:.2f} after",
        "",
        "Milliseconds per card, p50 / p95 / max:",
        "",
        "| card | bytes | elements | build | validate | build + validate | "
        f"target: p95 < {args.target_ms:g} ms |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        p95 = spread(r["both"])[1]
        verdict = "PASS" if p95 < args.target_ms else "FAIL"
        out.append(f"| {r['name']} | {r['bytes']:,} | {r['elements']} | {fmt(r['build'])} | "
                   f"{fmt(r['validate'])} | {fmt(r['both'])} | {p95:.2f} ms {verdict} |")
    out += [
        "",
        "Against the validator before (jsonschema alone, every element then the whole card), "
        "same cards, milliseconds p50 / p95 / max:",
        "",
        "| card | validate, jsonschema | validate, compiled | jsonschema / compiled, p50 | "
        "p95 | "
        f"build + jsonschema | p95 < {args.target_ms:g} ms |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        old50, old95, _ = spread(r["old validate"])
        new50, new95, _ = spread(r["validate"])
        both95 = spread(r["old both"])[1]
        verdict = "PASS" if both95 < args.target_ms else "FAIL"
        out.append(f"| {r['name']} | {fmt(r['old validate'])} | {fmt(r['validate'])} | "
                   f"{old50 / new50:.0f}x | {old95 / new95:.0f}x | {fmt(r['old both'])} | "
                   f"{both95:.2f} ms {verdict} |")
    out += [
        "",
        f"Once per process, on the first card (approval): importing the validators "
        f"{once['import']:.0f} ms; its first validation {once['first fast']:.0f} ms (loading "
        f"the schema and compiling it; the next one {once['second fast']:.1f} ms); the first "
        f"jsonschema validation {once['first jsonschema']:.0f} ms. A card that fails pays "
        f"the jsonschema pass for its messages: {failing_ms:.0f} ms for the approval card with "
        "one misspelt type (median of 5).",
        "",
    ]
    if problems:
        out += ["**PROBLEMS**", ""] + [f"- {p}" for p in problems] + [""]
    else:
        out += ["Every card is valid for both validators, and a broken copy of each is "
                "rejected by both with its path.", ""]
    worst = max(rows, key=lambda r: spread(r["both"])[1])
    worst95 = spread(worst["both"])[1]
    out += [
        "| target | result | |",
        "|---|---:|---|",
        f"| build + validate, p95 of every card < {args.target_ms:g} ms (worst: {worst['name']}) "
        f"| {worst95:.2f} ms | {'PASS' if worst95 < args.target_ms else 'FAIL'} |",
    ]
    return "\n".join(out)


def _argv() -> str:
    return "".join(f" {a}" for a in sys.argv[1:])


def build_and_check(make: Callable[[], dict[str, Any]], check: Callable[[Any], Any],
                    runs: int) -> tuple[list[float], list[float], list[float]]:
    """Milliseconds to build a card, to validate it with `check`, and both, for each run."""
    built, checked, both = [], [], []
    for _ in range(runs):
        a = time.perf_counter_ns()
        card = make()
        b = time.perf_counter_ns()
        check(card)
        c = time.perf_counter_ns()
        built.append(ms(b - a))
        checked.append(ms(c - b))
        both.append(ms(c - a))
    return built, checked, both


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                        help="timed build + validate runs per card")
    parser.add_argument("--baseline-runs", type=int, default=DEFAULT_BASELINE_RUNS,
                        help="timed runs per card of the jsonschema validator")
    parser.add_argument("--target-ms", type=float, default=TARGET_MS)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.baseline_runs < 1:
        parser.error("--runs and --baseline-runs must be at least 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
