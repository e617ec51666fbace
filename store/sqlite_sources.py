"""SQLite's source rollups and retention: a domain's history without its days (issue 14).

`source_rollups` holds, per (policy domain, source, pattern, basis), the messages and first and
last day of every report that counts without looking at others: not in conflict with another
copy of its ledger key. A pattern is a daily row's other dimensions (header_from, envelope_from,
results, alignment, disposition, reasons), kept once in `patterns` and named by id in daily,
source and monthly rows alike (schema 8), so a report's rows are written with short keys. The
`basis` says whom a report is believed on (`store.base.basis`): trusting a reporter later needs
no rebuild, reading picks the bases. Reports in conflict are read from their daily rows (there are
few). Rows are added in the report's own transaction; the rare changes that take a report out
of a basis (a conflicting copy arrives, a believed copy lifts a doubt) rebuild the sources that
report touched.

Retention moves the daily rows of reports that ended before a horizon into `monthly_rollups`
(pattern and basis kept, per calendar month) and deletes them and their ledger rows, a batch of
reports per transaction; reports in conflict are never expired (they are not rolled up into
anything), nor are TLS and failure reports.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator
from datetime import UTC, date, datetime

from analysis.rollup import Results, RollupKey, SourceRollup, results_from_json
from store.base import NOTHING_RECALLED, Recalled, StoreError, believed_bases

#: A pattern's columns, in `patterns`.
COLUMNS = ("header_from", "envelope_from", "dkim", "spf", "dkim_aligned", "spf_aligned",
           "disposition", "reasons")
#: What a report's rows count on (`store.base.basis`, in SQL).
BASIS = ("CASE WHEN r.unverified IS NULL THEN '' ELSE '~' || COALESCE(r.reporter_domain, '')"
         " END")
#: Daily rows with their report.
_WITH_REPORT = "daily_rollups d LEFT JOIN reports r ON r.id = d.report"
#: A report's daily rows, staged in the connection's temp schema while it is stored, so that
#: its daily rows and its sources are each written by one statement: a statement per row costs
#: more than the row (binding, stepping). Emptied before each report; its changes belong to the
#: report's transaction.
_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS report_rows (day TEXT NOT NULL, source_ip TEXT NOT NULL,"
          " pattern INTEGER NOT NULL, messages INTEGER NOT NULL)")
#: Staged rows per INSERT at most: four parameters each, within the 999 SQLite allows before
#: 3.32. Up to `_STAGE_EXACT` rows go in one INSERT of their number, more in powers of two, so
#: 34 prepared statements serve every report (the connection caches 128).
_STAGE_ROWS = 128
_STAGE_EXACT = 32
_UPSERT_SOURCES = """
INSERT INTO source_rollups (policy_domain, source_ip, pattern, basis, messages, first_day,
                            last_day)
SELECT ?1, source_ip, pattern, ?2, {} FROM temp.report_rows WHERE true{}
ON CONFLICT DO UPDATE SET messages = messages + excluded.messages,
    first_day = min(first_day, excluded.first_day), last_day = max(last_day, excluded.last_day),
    changed = 1
"""
#: A one-day report has one row per source and pattern: no grouping (it costs a third more).
_ADD_ONE_DAY = _UPSERT_SOURCES.format("messages, day, day", "")
_ADD_DAYS = _UPSERT_SOURCES.format("sum(messages), min(day), max(day)",
                                   " GROUP BY source_ip, pattern")
_PATTERN = ", ".join(COLUMNS)
_FIND = f"SELECT id FROM patterns WHERE ({_PATTERN}) = ({', '.join('?' * len(COLUMNS))})"
#: Reports expired per transaction at most (a crash loses at most this batch's work, never data).
_EXPIRE_BATCH = 500

#: A report's daily rows: (day, source_ip, pattern id) -> messages.
Daily = dict[tuple[str, str, int], int]
#: A pattern as a rollup key holds it: header_from, envelope_from, DKIM and SPF results, aligned
#: DKIM and SPF, disposition, reasons.
Pattern = tuple[str, str, Results, Results, bool, bool, str, str]


def day_start(day: str) -> int:
    """Unix seconds of a UTC day's midnight."""
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())


class SqliteSources:
    """The source rollups and retention of one `SqliteStore` connection (its transactions)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._ids: dict[tuple[object, ...], int] = {}  # pattern -> id, as committed
        self._new: dict[tuple[object, ...], int] = {}  # made in the open transaction

    def open(self) -> None:
        """Make the connection's staging table (outside any transaction: it stays)."""
        self._db.execute(_STAGE)

    # -- ingest (inside the report's transaction) -------------------------------------------

    def stage(self, daily: Daily) -> None:
        """Stage a report's daily rows for `add` and the daily rows' own insert."""
        self._db.execute("DELETE FROM temp.report_rows")
        flat = [value for row, messages in daily.items() for value in (*row, messages)]
        done = 0
        while done < len(daily):
            size = min(len(daily) - done, _STAGE_ROWS)
            if size > _STAGE_EXACT:
                size = 1 << (size.bit_length() - 1)
            self._db.execute(_stage_sql(size), flat[done * 4:(done + size) * 4])
            done += size

    def add(self, domain: str, basis_: str, one_day: bool) -> None:
        """A clean report's staged rows, folded across days into its sources."""
        self._db.execute(_ADD_ONE_DAY if one_day else _ADD_DAYS, (domain, basis_))

    def pattern_id(self, pattern: tuple[object, ...]) -> int:
        """The id of a pattern (header_from … reasons), made in the open transaction if new."""
        found = self._ids.get(pattern)
        if found is None:
            found = self._new.get(pattern)
            if found is None:
                found = self._find_or_make(pattern)
        return found

    def _find_or_make(self, pattern: tuple[object, ...]) -> int:
        row = self._db.execute(_FIND, pattern).fetchone()
        if row is not None:
            found = self._ids[pattern] = int(row[0])
            return found
        cursor = self._db.execute(
            f"INSERT INTO patterns ({_PATTERN}) VALUES ({', '.join('?' * len(COLUMNS))})",
            pattern)
        assert cursor.lastrowid is not None
        self._new[pattern] = cursor.lastrowid
        return cursor.lastrowid

    def pattern(self, id_: int) -> Pattern:
        """A pattern's columns as a rollup key holds them (header_from … reasons)."""
        row = self._db.execute(f"SELECT {_PATTERN} FROM patterns WHERE id = ?",
                               (id_,)).fetchone()
        if row is None:
            raise StoreError(f"pattern {id_} is named by rollup rows but missing from patterns")
        return (str(row[0]), str(row[1]), results_from_json(str(row[2])),
                results_from_json(str(row[3])), bool(row[4]), bool(row[5]), str(row[6]),
                str(row[7]))

    def committed(self) -> None:
        """The report's transaction committed: the patterns it made exist."""
        self._ids.update(self._new)
        self._new.clear()

    def rolled_back(self) -> None:
        self._new.clear()

    def rebuild_reports(self, domain: str, reports: Collection[int]) -> None:
        """The sources these reports touched, rebuilt from what counts now (their conflict flag
        or doubt changed)."""
        marks = ", ".join("?" * len(reports))
        ips = [ip for (ip,) in self._db.execute(
            f"SELECT DISTINCT source_ip FROM daily_rollups WHERE policy_domain = ?"
            f" AND report IN ({marks})", (domain, *reports))]
        if ips:
            self.rebuild(domain, ips)

    def rebuild(self, domain: str, ips: Collection[str] | None = None) -> None:
        """Source rollups of `domain` (of `ips` only, if given) from its daily rows that count
        on their own and the monthly rows retention kept. Reads the domain's whole history."""
        only, params = "", [domain]
        if ips is not None:
            only = f" AND source_ip IN ({', '.join('?' * len(ips))})"
            params += list(ips)
        else:
            self._db.execute("DELETE FROM naming WHERE policy_domain = ?", (domain,))
        # what naming kept of them goes (a source may be gone); the rows below count as changed
        self._db.execute(f"DELETE FROM named_sources WHERE policy_domain = ?{only}", params)
        self._db.execute(f"DELETE FROM source_rollups WHERE policy_domain = ?{only}", params)
        self._db.execute(
            "INSERT INTO source_rollups (policy_domain, source_ip, pattern, basis, messages,"
            " first_day, last_day) SELECT policy_domain, source_ip, pattern, basis,"
            " sum(messages), min(first_day), max(last_day) FROM ("
            f"  SELECT d.policy_domain, d.source_ip, d.pattern, {BASIS} AS basis,"
            "   d.messages, d.day AS first_day, d.day AS last_day FROM " + _WITH_REPORT
            + f"  WHERE d.policy_domain = ?{only.replace('source_ip', 'd.source_ip')}"
            "   AND (r.id IS NULL OR NOT r.conflict)"
            "  UNION ALL SELECT policy_domain, source_ip, pattern, basis, messages, first_day,"
            f"   last_day FROM monthly_rollups WHERE policy_domain = ?{only})"
            " GROUP BY policy_domain, source_ip, pattern, basis", params * 2)

    # -- reading ------------------------------------------------------------------------------

    def read(self, domain: str, trusted: Collection[str]) -> Iterator[SourceRollup]:
        """What `Store.sources` yields: the bases believed now, and the daily rows of reports in
        conflict that are believed by `Store.rollups`' rule."""
        yield from self._source_rows(domain, trusted)
        yield from self._conflict_rows(domain, trusted)

    def _source_rows(self, domain: str, trusted: Collection[str],
                     ips: Collection[str] | None = None) -> Iterator[SourceRollup]:
        bases = believed_bases(trusted)
        only, params = "", [domain, *bases]
        if ips is not None:
            only = " AND s.source_ip IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(sorted(ips)))
        for row in self._db.execute(
                f"SELECT s.source_ip, {', '.join(f'p.{c}' for c in COLUMNS)}, sum(s.messages),"
                " min(s.first_day), max(s.last_day) FROM source_rollups s"
                " JOIN patterns p ON p.id = s.pattern WHERE s.policy_domain = ?"
                f" AND s.basis IN ({', '.join('?' * len(bases))}){only}"
                " GROUP BY s.source_ip, s.pattern", params):
            yield SourceRollup(_key(domain, row[10], row), row[11], row[9])

    def _conflict_rows(self, domain: str, trusted: Collection[str]) -> Iterator[SourceRollup]:
        for report, begin, end in self._believed_conflicts(domain, trusted):
            first = datetime.fromtimestamp(begin, UTC).date().isoformat()
            last = datetime.fromtimestamp(end, UTC).date().isoformat()
            for row in self._db.execute(
                    f"SELECT d.source_ip, {', '.join(f'p.{c}' for c in COLUMNS)}, d.messages,"
                    " d.day FROM daily_rollups d JOIN patterns p ON p.id = d.pattern"
                    " WHERE d.policy_domain = ? AND d.day BETWEEN ? AND ? AND d.report = ?",
                    (domain, first, last, report)):
                yield SourceRollup(_key(domain, row[10], row), row[10], row[9])

    # -- what naming keeps (store.base.Recalled) -----------------------------------------------

    def recall(self, domain: str, trusted: Collection[str]) -> Recalled:
        """Claim the rows changed since the last naming (1 -> 2: a change made from now on
        stays 1, for the next naming), then read the sources they belong to whole. Sources with
        believed reports in conflict are read from their daily rows every time (there are few)."""
        self._db.execute("UPDATE source_rollups SET changed = 2"
                         " WHERE policy_domain = ? AND changed = 1", (domain,))
        row = self._db.execute("SELECT context FROM naming WHERE policy_domain = ?",
                               (domain,)).fetchone()
        if row is None:
            return NOTHING_RECALLED
        conflicts = list(self._conflict_rows(domain, trusted))
        ips = {ip for (ip,) in self._db.execute(
            "SELECT DISTINCT source_ip FROM source_rollups WHERE policy_domain = ?"
            " AND changed != 0", (domain,))}
        ips |= {r.key.source_ip for r in conflicts}
        changed = [*self._source_rows(domain, trusted, ips), *conflicts] if ips else []
        # Only sources that still have believed rows: a rebuild that took a source's last one
        # away while a naming was between reading and remembering must not leave it behind.
        bases = believed_bases(trusted)
        kept = {ip: text for ip, text in self._db.execute(
            "SELECT n.source_ip, n.identification FROM named_sources n"
            " WHERE n.policy_domain = ?1 AND EXISTS (SELECT 1 FROM source_rollups s"
            "  WHERE s.policy_domain = ?1 AND s.source_ip = n.source_ip"
            f"  AND s.basis IN ({', '.join('?' * len(bases))}))", (domain, *bases))
            if ip not in ips}
        return Recalled(str(row[0]), kept, changed)

    def remember(self, domain: str, context: str, identifications: Iterable[tuple[str, str]],
                 whole: bool) -> None:
        with transaction(self._db):
            if whole:
                self._db.execute("DELETE FROM named_sources WHERE policy_domain = ?", (domain,))
            self._db.executemany(
                "INSERT INTO named_sources (policy_domain, source_ip, identification)"
                " VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET"
                " identification = excluded.identification",
                [(domain, ip, text) for ip, text in identifications])
            self._db.execute("INSERT INTO naming (policy_domain, context) VALUES (?, ?)"
                             " ON CONFLICT DO UPDATE SET context = excluded.context",
                             (domain, context))
            self._db.execute("UPDATE source_rollups SET changed = 0"
                             " WHERE policy_domain = ? AND changed = 2", (domain,))

    def _believed_conflicts(self, domain: str, trusted: Collection[str]
                            ) -> list[tuple[int, int, int]]:
        """(id, begin, end) of the domain's reports in conflict that `Store.rollups` counts:
        believed, and no other believed copy of their key."""
        marks = ", ".join("?" * len(trusted))

        def believed(r: str) -> str:
            return (f"({r}.unverified IS NULL OR COALESCE({r}.reporter_domain, '') IN ({marks}))"
                    if trusted else f"{r}.unverified IS NULL")

        params = sorted(t.lower() for t in trusted)
        return self._db.execute(
            "SELECT r.id, r.begin_ts, r.end_ts FROM reports r WHERE r.conflict"
            " AND r.policy_domain = ? AND r.kind = 'aggregate' AND " + believed("r")
            + " AND NOT EXISTS (SELECT 1 FROM reports o WHERE o.id != r.id AND o.kind = r.kind"
            " AND o.reporter = r.reporter AND o.report_id = r.report_id AND o.policy_domain ="
            " r.policy_domain AND o.begin_ts = r.begin_ts AND o.end_ts = r.end_ts AND "
            + believed("o") + ")", (domain, *params, *params)).fetchall()

    def domains(self, stored_since: str | None) -> list[str]:
        if stored_since is not None:
            return [d for (d,) in self._db.execute(
                "SELECT DISTINCT policy_domain FROM reports WHERE kind = 'aggregate'"
                " AND stored_at >= ? ORDER BY 1", (stored_since,))]
        return [d for (d,) in self._db.execute(
            "SELECT policy_domain FROM reports WHERE kind = 'aggregate'"
            " UNION SELECT policy_domain FROM source_rollups ORDER BY 1")]

    # -- retention ----------------------------------------------------------------------------

    def horizon(self) -> str | None:
        """The first day whose daily rows are kept (None: nothing was expired yet)."""
        row = self._db.execute("SELECT before_day FROM expired").fetchone()
        return None if row is None else str(row[0])

    def expire(self, before: date) -> int:
        """Move the daily rows of reports that ended before `before` into monthly rollups and
        delete them and their ledger rows; returns how many reports went. Idempotent, and a
        crash loses nothing: each batch moves and deletes in one transaction."""
        with transaction(self._db):
            self._db.execute(
                "INSERT INTO expired (id, before_day) VALUES (1, ?) ON CONFLICT DO UPDATE"
                " SET before_day = max(before_day, excluded.before_day)", (before.isoformat(),))
        horizon = self.horizon() or before.isoformat()
        cutoff = day_start(horizon)
        gone = 0
        domains = {d for (d,) in self._db.execute(
            "SELECT DISTINCT policy_domain FROM reports WHERE kind = 'aggregate'")}
        domains |= {d for (d,) in self._db.execute(
            "SELECT DISTINCT policy_domain FROM daily_rollups WHERE report = 0 AND day < ?",
            (horizon,))}
        for domain in sorted(domains):
            while True:
                batch = self._db.execute(
                    "SELECT id, begin_ts, end_ts FROM reports WHERE policy_domain = ?"
                    " AND begin_ts < ? AND end_ts < ? AND kind = 'aggregate' AND NOT conflict"
                    " ORDER BY begin_ts LIMIT ?",
                    (domain, cutoff, cutoff, _EXPIRE_BATCH)).fetchall()
                if not batch:
                    break
                with transaction(self._db):
                    self._move(domain, [r[0] for r in batch], _day(min(r[1] for r in batch)),
                               _day(max(r[2] for r in batch)), horizon)
                gone += len(batch)
            with transaction(self._db):  # rows summed before schema 4 name no report
                self._move(domain, [0], "", horizon, horizon)
        return gone

    def _move(self, domain: str, reports: list[int], first: str, last: str, horizon: str
              ) -> None:
        """Roll these reports' daily rows before `horizon` into months; delete rows and reports."""
        marks = ", ".join("?" * len(reports))
        where = (f"d.policy_domain = ? AND d.day BETWEEN ? AND ? AND d.day < ?"
                 f" AND d.report IN ({marks})")
        params = (domain, first, last, horizon, *reports)
        self._db.execute(
            "INSERT INTO monthly_rollups (policy_domain, month, source_ip, pattern, basis,"
            " messages, first_day, last_day) SELECT d.policy_domain, substr(d.day, 1, 7),"
            f" d.source_ip, d.pattern, {BASIS}, sum(d.messages), min(d.day), max(d.day)"
            f" FROM {_WITH_REPORT} WHERE {where}"
            f" GROUP BY d.policy_domain, substr(d.day, 1, 7), d.source_ip, d.pattern, {BASIS}"
            " ON CONFLICT DO UPDATE SET messages = messages + excluded.messages,"
            " first_day = min(first_day, excluded.first_day),"
            " last_day = max(last_day, excluded.last_day)", params)
        self._db.execute(f"DELETE FROM daily_rollups AS d WHERE {where}", params)
        self._db.execute(f"DELETE FROM reports WHERE id IN ({marks})", reports)


@functools.cache
def _stage_sql(rows: int) -> str:
    return "INSERT INTO temp.report_rows VALUES " + ", ".join(["(?, ?, ?, ?)"] * rows)


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def _key(domain: str, day: str, row: tuple[object, ...]) -> RollupKey:
    """A rollup key from (source_ip, header_from, … reasons, …) columns."""
    return RollupKey(domain, day, str(row[0]), str(row[1]), str(row[2]),
                     results_from_json(str(row[3])), results_from_json(str(row[4])),
                     bool(row[5]), bool(row[6]), str(row[7]), str(row[8]))


class transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error (the connection is in autocommit)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            self._db.execute("ROLLBACK")
