"""Table Storage's source rollups (issue 14): the entities and their arithmetic; store/tables.py
does the requests.

They live in each domain's ledger partition, beside its reports, so a report's commit and the
note that it is still to be added are one transaction (RowKeys starting `~` sort after every
ledger RowKey, which are hex digests):

- `~s-<digest of (ip, basis)>-<part>`: one source's patterns (`SourceRollup` without the domain
  and source) on one basis (`store.base.basis`), as JSON, in parts of at most `PART_CHARS`;
- `~p-<moment>-<ledger RowKey>`: pending work, written with the commit that makes it due:
  `add` a clean report (the IPs it has been added for so far in `applied`), or `rebuild` the
  sources of some reports (a conflicting copy arrived, a believed copy lifted a doubt);
- `~c-<ledger key digest>`: this key has several copies, read from their daily rows instead;
- `~v`: the source rollups hold the partition's history (written by the first full rebuild);
- `~m-<YYYY-MM>-<digest of (ip, basis)>-<part>`: retention's monthly rollups, the daily rows of
  expired reports summed per month, source and basis as a source's patterns are;
- `~x`: retention's batch under way, if any (store/table_retention.py);
- `~n`: what the last naming kept (`Store.recall_naming`): its context, the partition's clock
  when it read, and the generations of `~n-<generation>-<part>` that hold its identifications
  (source IP -> `analysis.remembered.encode`, as JSON objects in parts of at most `PART_CHARS`;
  a later generation's entry for an IP stands over an earlier one's);
- `~nclock`: touched by each naming as it starts (its Timestamp is the partition's clock) and by
  each rebuild; a naming keeps what it named only if nobody touched it since.

Pending work is settled by whoever reads next (the scheduled step), not at ingest: ingest keeps
its requests, and one settle writes each source once for all the reports it waited for.
Every settle transaction is conditional on the ETags read before its inputs, so two settlers,
or a settler and a crash, cannot count a report twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

from analysis.rollup import RollupKey, SourceRollup, results_from_json, results_json

SOURCE, PENDING, CONFLICT, VERSION = "~s-", "~p-", "~c-", "~v"
MONTHLY, EXPIRY = "~m-", "~x"
NAMING, NAMING_PARTS, NAMING_CLOCK = "~n", "~n-", "~nclock"
#: Generations of kept identifications before a naming writes them all as one again.
MAX_GENERATIONS = 4
PART_CHARS = 400_000  # JSON per entity part: an entity holds at most 1 MiB (UTF-16)
#: Entities written per settle transaction (the service allows 100; one is the pending note).
OPS = 90
#: JSON per settle transaction (the service takes at most 4 MiB).
BATCH_CHARS = 1_500_000

#: header_from, envelope_from, DKIM JSON, SPF JSON, DKIM aligned, SPF aligned, disposition,
#: reasons: a daily row's dimensions without domain, day and source.
Pattern = tuple[str, str, str, str, bool, bool, str, str]
#: pattern -> (messages, first day, last day)
Totals = dict[Pattern, tuple[int, str, str]]


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def unit_row(ip: str, basis: str) -> str:
    """The RowKey prefix of one source's entities on one basis."""
    return f"{SOURCE}{digest(ip, basis)}-"


def monthly_row(month: str, ip: str, basis: str) -> str:
    """The RowKey prefix of one source's monthly rollup on one basis (`month`: YYYY-MM)."""
    return f"{MONTHLY}{month}-{digest(ip, basis)}-"


def pattern(key: RollupKey) -> Pattern:
    return (key.header_from, key.envelope_from, results_json(key.dkim), results_json(key.spf),
            key.dkim_aligned, key.spf_aligned, key.disposition, key.reasons)


def add_row(totals: Totals, found: Pattern, messages: int, first: str, last: str) -> None:
    old = totals.get(found)
    totals[found] = ((messages, first, last) if old is None else
                     (old[0] + messages, min(old[1], first), max(old[2], last)))


def merged(a: Totals, b: Totals) -> Totals:
    out = dict(a)
    for found, (messages, first, last) in b.items():
        add_row(out, found, messages, first, last)
    return out


def encode(totals: Totals) -> list[str]:
    """A source's patterns as JSON parts, each under `PART_CHARS`, in a stable order."""
    rows = [[*found, *totals[found]] for found in sorted(totals)]
    parts: list[str] = []
    current: list[object] = []
    size = 0
    for row in rows:
        text = json.dumps(row)
        if current and size + len(text) > PART_CHARS:
            parts.append(json.dumps(current))
            current, size = [], 0
        current.append(row)
        size += len(text) + 2
    if current:
        parts.append(json.dumps(current))
    return parts


def decode(parts: Iterable[str]) -> Totals:
    totals: Totals = {}
    for part in parts:
        for row in json.loads(part):
            add_row(totals, (row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]),
                             row[6], row[7]), int(row[8]), row[9], row[10])
    return totals


def source_rollups(domain: str, ip: str, totals: Mapping[Pattern, tuple[int, str, str]]
                   ) -> list[SourceRollup]:
    return [SourceRollup(RollupKey(domain, first, ip, found[0], found[1],
                                   results_from_json(found[2]), results_from_json(found[3]),
                                   found[4], found[5], found[6], found[7]), last, messages)
            for found, (messages, first, last) in totals.items()]


def pack_kept(kept: Mapping[str, str]) -> list[str]:
    """Kept identifications (IP -> text) as JSON objects of at most `PART_CHARS`, by IP."""
    parts: list[str] = []
    current: dict[str, str] = {}
    size = 0
    for ip in sorted(kept):
        cost = len(json.dumps(ip)) + len(json.dumps(kept[ip])) + 2
        if current and size + cost > PART_CHARS:
            parts.append(json.dumps(current, separators=(",", ":")))
            current, size = {}, 0
        current[ip] = kept[ip]
        size += cost
    if current:
        parts.append(json.dumps(current, separators=(",", ":")))
    return parts


def unpack_kept(parts: Iterable[str]) -> dict[str, str]:
    """`pack_kept`'s inverse; ValueError when a part is not a JSON object of texts."""
    kept: dict[str, str] = {}
    for part in parts:
        found = json.loads(part)
        if type(found) is not dict or any(type(v) is not str for v in found.values()):
            raise ValueError("a part of the kept identifications is not ours")
        kept.update(found)
    return kept
