"""Retention on Table Storage (issue 14): reports past the horizon leave the ledger and their daily
rows; their history stays in monthly rollups beside the domain's sources (store/table_sources.py).

SQLite moves a batch of reports and deletes them in one transaction. Here a report's daily rows
lie in one partition per day, so a batch goes through three steps, each noted in the domain's
`~x` entity, and a crash at any request leaves a state that the next `expire` (or the next
reader that rebuilds the domain's sources) completes: *move* (the batch named, its reports'
deltas folded into their sources), *fold* (their ledger entities deleted with the note, then
their daily rows summed into monthly rollups that name the batch, so a repeat adds nothing),
*days* (their daily rows deleted). A rebuild finishes a batch before it reads and fences its
first write on `~x`, so it never counts an expired report twice or not at all. The horizon in
`~e` lets a run with nothing new cost one read, and ingest refuse reports of expired periods as
SQLite does. docs/storage.md, *Retention on Table Storage*, has the details.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Collection, Iterator
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableEntity, UpdateMode

from analysis.rollup import SourceRollup, fold_days, report_days
from store import table_sources as ts
from store.base import StoreError, basis, believed_bases
from store.tables import (
    _CONFLICTS,
    _DOMAINS,
    _MAX_OPS,
    _SETTLE_TRIES,
    LEDGER,
    ROLLUPS,
    Operation,
    _code,
    _delete,
    _key,
    _props,
    _rollup_key,
    _same_key,
    _text,
    _Unit,
    _value,
)

if TYPE_CHECKING:
    from store.tables import TableStore

#: Reports per batch: step 2 deletes their ledger entities in one transaction with `~x`.
BATCH = 90
#: Batches one `expire` call starts at most; the next call goes on where it stopped. A month of
#: a 200-domain tenant is ~250,000 reports at ~22 ms of client CPU each (bench/README.md,
#: retention): 50 batches are ~2 minutes of a scheduled run, the month done within a day.
BATCHES_PER_CALL = 50
#: Seconds ingest uses the horizon it read before reading it again.
HORIZON_FRESH = 60.0
#: The horizon's entity in the ledger table's `~domains` partition.
MARKER = "~e"
#: Tries of a step that other writers keep changing under it.
_TRIES = _SETTLE_TRIES
_RETRY = _CONFLICTS | {"ResourceNotFound"}

#: A report of a batch: ledger RowKey, attempt, basis, begin and end (Unix seconds).
Row = tuple[str, str, str, int, int]
#: (month, source ip, basis): one monthly rollup.
MonthKey = tuple[str, str, str]


def midnight(day: str) -> int:
    """Unix seconds of a UTC day's midnight."""
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """The reports of one batch, and the step it is in (`move`, `fold`, `days`)."""

    id: str
    phase: str
    rows: tuple[Row, ...]

    def days(self) -> dict[str, set[tuple[str, str]]]:
        """Day -> the (ledger key digest, attempt) of the reports with rows on it."""
        out: dict[str, set[tuple[str, str]]] = {}
        for row, attempt, _, begin, end in self.rows:
            for day, _ in report_days(datetime.fromtimestamp(begin, UTC),
                                      datetime.fromtimestamp(end, UTC)):
                out.setdefault(day.isoformat(), set()).add((_same_key(row), attempt))
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class Marker:
    """`~e`: the horizon asked for, the one reached everywhere, the last domain reached."""

    before: str = ""
    done: str = ""
    through: str = ""
    etag: str | None = None


@dataclasses.dataclass(slots=True)
class _Monthly:
    totals: ts.Totals
    etags: dict[str, str]
    batch: str


class TableRetention:
    """`TableStore.expire` and what the rest of the store asks of retention."""

    def __init__(self, store: TableStore) -> None:
        self._store = store
        self._seen: tuple[float, int] | None = None  # (when read, horizon's midnight)
        self.batch = BATCH
        self.batches_per_call = BATCHES_PER_CALL
        self._started = 0
        #: The sources of the partition being expired, as read when it was settled and kept up
        #: to date by the folds since (a write that finds them changed reads them again).
        self._units: dict[str, dict[tuple[str, str], _Unit]] = {}

    # -- the horizon ----------------------------------------------------------------------

    def expired_before(self) -> int:
        """Unix seconds: aggregate reports that ended before it were expired (0: none yet)."""
        now = time.monotonic()
        if self._seen is None or self._seen[0] < now - HORIZON_FRESH:
            before = self._marker().before
            self._seen = (now, midnight(before) if before else 0)
        return self._seen[1]

    def _marker(self) -> Marker:
        e = self._store._get(LEDGER, _DOMAINS, MARKER)
        if e is None:
            return Marker()
        return Marker(e.get("before", ""), e.get("done", ""), _text(e, "through"),
                      str(e.metadata["etag"]))

    def _write_marker(self, marker: Marker) -> Marker | None:
        """The marker written if nobody changed it since it was read (None: someone did)."""
        entity = {"PartitionKey": _DOMAINS, "RowKey": MARKER,
                  **_props(before=marker.before, done=marker.done, through=marker.through)}
        op: Operation = ("create", entity) if marker.etag is None else (
            "update", entity, {"mode": UpdateMode.REPLACE, "etag": marker.etag,
                               "match_condition": MatchConditions.IfNotModified})
        try:
            [result] = self._store._submit(LEDGER, [op])
        except HttpResponseError as exc:
            if _code(exc) in _RETRY:
                return None
            raise self._refused(exc) from None
        return dataclasses.replace(marker, etag=str(result.get("etag") or ""))

    # -- expiring -------------------------------------------------------------------------

    def expire(self, before: date) -> int:
        """See `Store.expire`: the reports expired by this call."""
        gone, self._started = 0, 0
        for _ in range(_TRIES):
            marker = self._marker()
            horizon = max(before.isoformat(), marker.before)
            if marker.before != horizon:  # ingest refuses what the new horizon expires first
                written = self._write_marker(Marker(horizon, marker.done, "", marker.etag))
                if written is None:
                    continue
                marker = written
            self._seen = (time.monotonic(), midnight(horizon))
            if marker.done == horizon:
                return gone
            cutoff = midnight(horizon)
            for domain in self._store.domains():
                if marker.through and domain <= marker.through:
                    continue
                count, complete = self._expire_domain(_key(domain), cutoff)
                gone += count
                if not complete:
                    return gone  # out of batches for this call, or contended: the next goes on
                if count:  # work worth not doing again (a domain with none costs two reads)
                    moved = self._write_marker(dataclasses.replace(marker, through=domain))
                    if moved is None:
                        return gone  # another process expires too: the next call goes on
                    marker = moved
            self._write_marker(dataclasses.replace(marker, done=horizon))
            return gone
        raise StoreError(f"{self._store._name(LEDGER)}: the retention horizon keeps changing "
                         "under concurrent writers")

    def _expire_domain(self, partition: str, cutoff: int) -> tuple[int, bool]:
        """Expire one partition's reports that ended before `cutoff`, a batch at a time:
        (reports expired, whether all are)."""
        gone = 0
        try:
            for _ in range(_TRIES):
                # sources read earlier may miss the deltas of a batch another process began
                self._units.clear()
                gone += self.finish(partition)
                candidates = self._candidates(partition, cutoff)
                if candidates is None:
                    return gone, False
                for i in range(0, len(candidates), self.batch):
                    if self._started >= self.batches_per_call:
                        return gone, False
                    if not self._start(partition, candidates[i:i + self.batch]):
                        break  # something changed since they were read: read them again
                    self._started += 1
                    gone += self.finish(partition)
                else:
                    return gone, True
            return gone, False
        finally:
            self._units.clear()

    def _candidates(self, partition: str, cutoff: int) -> list[TableEntity] | None:
        """The partition's aggregate reports that ended before `cutoff` and may go: not in
        conflict, not named by pending work (settled first). None: settling kept losing."""
        scan = list(self._store._query(
            LEDGER, f"PartitionKey eq @pk and RowKey lt @high and kind eq @kind"
            f" and end_ts lt {cutoff}L", {"pk": partition, "high": "~", "kind": "aggregate"},
            select=["RowKey", "attempt", "unverified", "reporter_domain", "begin_ts",
                    "end_ts"]))
        if not scan:
            return []
        for _ in range(_TRIES):  # what is due for these reports (an add, a rebuild) is done
            settled = self._store._settle(partition)
            if settled is not None:
                self._units = {partition: settled[0]}
                break
        else:
            return None
        conflicts = self._conflicts(partition)
        named: set[str] = set()
        for marker in self._store._pending(partition):  # read after the scan: see _start
            named |= ({marker["row"]} if marker["op"] == "add"
                      else set(json.loads(_text(marker, "rows"))))
        copies: dict[str, int] = {}
        for e in scan:
            copies[_same_key(e["RowKey"])] = copies.get(_same_key(e["RowKey"]), 0) + 1
        return sorted((e for e in scan if copies[_same_key(e["RowKey"])] == 1
                       and _same_key(e["RowKey"]) not in conflicts and e["RowKey"] not in named),
                      key=lambda e: (_value(e["begin_ts"]), e["RowKey"]))

    def _conflicts(self, partition: str) -> set[str]:
        return {e["RowKey"][len(ts.CONFLICT):] for e in self._store._query(
            LEDGER, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": partition, "low": ts.CONFLICT, "high": "~c."}, select=["RowKey"])}

    def _start(self, partition: str, reports: list[TableEntity]) -> bool:
        """Step 1's transaction: `~x` names the batch, if no report changed since it was read
        and no other batch is under way. False: read them again."""
        batch, etag = self._state(partition)
        if batch is not None:
            return False
        rows = tuple((e["RowKey"], e["attempt"],
                      basis(_text(e, "unverified") or None, _text(e, "reporter_domain") or None),
                      _value(e["begin_ts"]), _value(e["end_ts"])) for e in reports)
        touch: list[Operation] = [
            ("update", {"PartitionKey": partition, "RowKey": e["RowKey"]},
             {"mode": UpdateMode.MERGE, "etag": e.metadata["etag"],
              "match_condition": MatchConditions.IfNotModified}) for e in reports]
        try:
            self._store._submit(LEDGER, [*touch, self._state_op(
                partition, Batch(uuid.uuid4().hex[:12], "move", rows), etag)])
        except HttpResponseError as exc:
            if _code(exc) in _RETRY:
                return False
            raise self._refused(exc) from None
        return True

    # -- a batch's steps --------------------------------------------------------------------

    def finish(self, partition: str) -> int:
        """Complete the batch under way in the partition, if any; the reports whose ledger
        entities this call deleted."""
        gone = 0
        for _ in range(_TRIES):
            batch, etag = self._state(partition)
            if batch is None:
                return gone
            rows: dict[str, list[str]] | None = None  # the batch's daily rows, once read
            try:
                if batch.phase == "move":
                    self._fold_deltas(partition, batch)
                    batch, etag = self._delete_ledger(partition, batch, etag)
                    gone += len(batch.rows)
                if batch.phase == "fold":
                    rows = self._add_monthly(partition, batch)
                    batch = dataclasses.replace(batch, phase="days")
                    etag = self._submit_state(partition, batch, etag)
                self._delete_days(partition, batch, rows)
                self._submit_state(partition, None, etag)
                return gone
            except HttpResponseError as exc:
                if _code(exc) not in _RETRY:
                    raise self._refused(exc) from None
                # another process moved the batch on (or a rebuild read `~x`): read it again
                self._units.pop(partition, None)
        raise StoreError(f"{self._store._name(LEDGER)}: expiring partition {partition} keeps "
                         "changing under concurrent writers")

    def _fold_deltas(self, partition: str, batch: Batch) -> None:
        """Fold the deltas of the batch's reports into their sources, a transaction's worth at
        a time (conditional on what was read, like any fold)."""
        attempts = {row[1] for row in batch.rows}
        units = self._units.get(partition)
        if units is None:
            units = self._units[partition] = self._store._units(partition)
        self._store._fold_deltas(partition, units, lambda unit: sorted(
            row for row, (_, _, attempt) in unit.deltas.items() if attempt in attempts))

    def _delete_ledger(self, partition: str, batch: Batch, etag: str | None
                       ) -> tuple[Batch, str | None]:
        """Step 2's transaction: the ledger entities go and `~x` moves on, keys in conflict
        since the batch began left out."""
        conflicts = self._conflicts(partition)
        kept = tuple(row for row in batch.rows if _same_key(row[0]) not in conflicts)
        after = dataclasses.replace(batch, phase="fold", rows=kept)
        ops: list[Operation] = [("delete", {"PartitionKey": partition, "RowKey": row[0]})
                                for row in kept]
        results = self._store._submit(LEDGER, [*ops, self._state_op(partition, after, etag)])
        return after, str(results[-1].get("etag") or "")

    def _add_monthly(self, partition: str, batch: Batch) -> dict[str, list[str]]:
        """Sum the batch's daily rows into the monthly rollups (an entity that names the batch
        holds it already); their RowKeys per day."""
        bases = {(_same_key(row), attempt): basis_ for row, attempt, basis_, _, _ in batch.rows}
        adds: dict[MonthKey, ts.Totals] = {}
        rows: dict[str, list[str]] = {}
        for day, _ in sorted(batch.days().items()):
            rows[day] = []
            for e in self._store._query(ROLLUPS, "PartitionKey eq @pk",
                                        {"pk": f"{partition}!{day}"}):
                same, attempt = e["RowKey"].split("-", 2)[:2]
                basis_ = bases.get((same, attempt))
                if basis_ is None:
                    continue
                rows[day].append(e["RowKey"])
                key = _rollup_key(e)
                ts.add_row(adds.setdefault((day[:7], key.source_ip, basis_), {}),
                           ts.pattern(key), _value(e["messages"]), key.day, key.day)
        if not adds:
            return rows
        months = sorted(month for month, _, _ in adds)
        held = self._monthly(partition, months[0], months[-1])
        ops: list[Operation] = []
        chars = 0
        for name in sorted(adds):
            found = held.get(name, _Monthly({}, {}, ""))
            if found.batch == batch.id:
                continue
            mine, size = self._monthly_ops(partition, name, ts.merged(found.totals, adds[name]),
                                           found.etags, batch.id)
            if ops and (len(ops) + len(mine) > ts.OPS or chars + size > ts.BATCH_CHARS):
                self._store._submit(LEDGER, ops)
                ops, chars = [], 0
            ops += mine
            chars += size
        if ops:
            self._store._submit(LEDGER, ops)
        return rows

    def _monthly_ops(self, partition: str, name: MonthKey, totals: ts.Totals,
                     etags: dict[str, str], batch: str) -> tuple[list[Operation], int]:
        """The writes that make one monthly rollup `totals`, and their size."""
        month, ip, basis_ = name
        prefix = ts.monthly_row(month, ip, basis_)
        parts = ts.encode(totals)
        ops: list[Operation] = []
        rows = set()
        for i, part in enumerate(parts):
            row = f"{prefix}{i:04d}"
            rows.add(row)
            entity = {"PartitionKey": partition, "RowKey": row,
                      **_props(ip=ip, basis=basis_, patterns=part, batch=batch)}
            ops.append(("update", entity, {"mode": UpdateMode.REPLACE, "etag": etags[row],
                                           "match_condition": MatchConditions.IfNotModified})
                       if row in etags else ("create", entity))
        ops += [_delete({"PartitionKey": partition, "RowKey": row}, etags[row])
                for row in sorted(set(etags) - rows)]
        size = sum(len(p) for p in parts) + 300 * len(ops)
        if len(ops) > ts.OPS or size > ts.BATCH_CHARS:
            raise StoreError(f"{self._store._name(LEDGER)}: source {ip} of partition "
                             f"{partition} has too many patterns in {month} to keep")
        return ops, size

    def _delete_days(self, partition: str, batch: Batch, known: dict[str, list[str]] | None
                     ) -> None:
        """Step 3: the batch's daily rows, day by day, 100 per transaction (`known`: their
        RowKeys per day, as step 2 read them; else they are read)."""
        for day, reports in sorted(batch.days().items()):
            rows = None if known is None else known.get(day)
            for _ in range(_TRIES):
                if rows is None:
                    rows = [e["RowKey"] for e in self._store._query(
                        ROLLUPS, "PartitionKey eq @pk", {"pk": f"{partition}!{day}"},
                        select=["RowKey"]) if tuple(e["RowKey"].split("-", 2)[:2]) in reports]
                try:
                    for i in range(0, len(rows), _MAX_OPS):
                        self._store._submit(ROLLUPS, [
                            ("delete", {"PartitionKey": f"{partition}!{day}", "RowKey": row})
                            for row in rows[i:i + _MAX_OPS]])
                    break
                except HttpResponseError as exc:  # another process deletes them too
                    if _code(exc) != "ResourceNotFound":
                        raise
                    rows = None
            else:
                raise StoreError(f"{self._store._name(ROLLUPS)}: the expired rows of "
                                 f"{partition}!{day} keep changing under concurrent writers")

    # -- `~x`, the batch under way ------------------------------------------------------------

    def _state(self, partition: str) -> tuple[Batch | None, str | None]:
        """The batch under way (None: idle) and `~x`'s ETag (None: it does not exist)."""
        e = self._store._get(LEDGER, partition, ts.EXPIRY)
        if e is None:
            return None, None
        etag = str(e.metadata["etag"])
        if not e.get("batch"):
            return None, etag
        rows = tuple((str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]))
                     for r in json.loads(_text(e, "rows")))
        return Batch(str(e["batch"]), str(e["phase"]), rows), etag

    def _state_op(self, partition: str, batch: Batch | None, etag: str | None) -> Operation:
        entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": ts.EXPIRY}
        if batch is not None:
            entity.update(_props(batch=batch.id, phase=batch.phase,
                                 rows=json.dumps([list(r) for r in batch.rows])))
        if etag is None:
            return ("create", entity)
        return ("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag,
                                   "match_condition": MatchConditions.IfNotModified})

    def _submit_state(self, partition: str, batch: Batch | None, etag: str | None) -> str:
        [result] = self._store._submit(LEDGER, [self._state_op(partition, batch, etag)])
        return str(result.get("etag") or "")

    def fence(self, partition: str) -> Operation | None:
        """For a rebuild of the partition's sources, before it reads: the write its first
        transaction carries, which fails if a batch began or moved on since (None: a batch was
        under way and has been finished; read again)."""
        batch, etag = self._state(partition)
        if batch is not None and batch.phase != "days":
            self.finish(partition)
            return None
        entity = {"PartitionKey": partition, "RowKey": ts.EXPIRY}
        if etag is None:
            return ("create", entity)
        return ("update", entity, {"mode": UpdateMode.MERGE, "etag": etag,
                                   "match_condition": MatchConditions.IfNotModified})

    # -- monthly rollups ---------------------------------------------------------------------

    def _monthly(self, partition: str, first: str | None = None, last: str | None = None
                 ) -> dict[MonthKey, _Monthly]:
        """The partition's monthly rollups (of the months `first` to `last`, if given)."""
        low = ts.MONTHLY if first is None else f"{ts.MONTHLY}{first}-"
        high = "~m." if last is None else f"{ts.MONTHLY}{last}."
        parts: dict[MonthKey, list[tuple[str, str]]] = {}
        out: dict[MonthKey, _Monthly] = {}
        for e in self._store._query(
                LEDGER, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                {"pk": partition, "low": low, "high": high}):
            name = (e["RowKey"][len(ts.MONTHLY):len(ts.MONTHLY) + 7], _text(e, "ip"),
                    _text(e, "basis"))
            found = out.setdefault(name, _Monthly({}, {}, str(e.get("batch") or "")))
            found.etags[e["RowKey"]] = str(e.metadata["etag"])
            parts.setdefault(name, []).append((e["RowKey"], _text(e, "patterns")))
        for name, texts in parts.items():
            out[name].totals = ts.decode(text for _, text in sorted(texts))
        return out

    def monthly(self, partition: str) -> dict[tuple[str, str], ts.Totals]:
        """The monthly rollups of every month, per (source ip, basis): what a rebuild adds to
        the daily rows of the reports still in the ledger."""
        out: dict[tuple[str, str], ts.Totals] = {}
        for (_, ip, basis_), found in self._monthly(partition).items():
            out[ip, basis_] = ts.merged(out.get((ip, basis_), {}), found.totals)
        return out

    def folded(self, domain: str, trusted: Collection[str]) -> Iterator[SourceRollup]:
        """What `sources()` yields, from the daily rows and the monthly rollups (when settling
        keeps losing races), both read between two looks at `~x` that find it unchanged and no
        batch between its steps 1 and 2."""
        partition = _key(domain)
        bases = set(believed_bases(trusted))
        for _ in range(_TRIES):
            self.finish(partition)
            batch, etag = self._state(partition)
            if batch is not None and batch.phase != "days":
                continue
            by_ip: dict[str, ts.Totals] = {}
            for (ip, basis_), totals in self.monthly(partition).items():
                if basis_ in bases:
                    by_ip[ip] = ts.merged(by_ip.get(ip, {}), totals)
            rows = self._store.rollups(domain=domain, trusted_reporters=trusted)
            for key, (n, first, last) in fold_days(rows).items():
                ts.add_row(by_ip.setdefault(key.source_ip, {}), ts.pattern(key), n, first, last)
            if self._state(partition)[1] == etag:
                for ip, totals in by_ip.items():
                    yield from ts.source_rollups(domain, ip, totals)
                return
        raise StoreError(f"{self._store._name(LEDGER)}: the sources of {domain} keep changing "
                         "under concurrent writers")

    def _refused(self, exc: HttpResponseError) -> StoreError:
        return StoreError(f"{self._store._name(LEDGER)}: Table Storage refused the request "
                          f"({_code(exc)})")
