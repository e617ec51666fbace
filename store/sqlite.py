"""SQLite store: the embedded default. One file, WAL, one transaction per report."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path

from analysis.dnsevidence import Answer
from analysis.mailauth import reporter_domain
from analysis.model import AggregateReport, FailureReport, Report, TlsReport
from analysis.rollup import (
    LedgerKey,
    RollupKey,
    SourceRollup,
    content_digest,
    ledger_key,
    legacy_results,
    report_days,
    results_json,
    rollup_rows,
)
from analysis.volume import Sent, VolumeCheck, is_held, window
from store.base import AddResult, InventoryItem, LedgerEntry, Recalled, StoreError, basis
from store.sqlite_sources import (
    COLUMNS,
    Daily,
    Pattern,
    SqliteSources,
    day_start,
    transaction,
)

_WAL_ATTEMPTS = 600  # 30 s at most, as the busy timeout
#: A report's daily rows, summed per key and staged (`SqliteSources.stage`): a new report's rows
#: never meet stored ones (the key holds the report), so a plain insert, no upsert.
_INSERT_ROLLUPS = ("INSERT INTO daily_rollups (policy_domain, day, source_ip, pattern, report,"
                   " messages) SELECT ?, day, source_ip, pattern, ?, messages"
                   " FROM temp.report_rows")
#: A rollup key's columns, in the order of the primary key before schema 8 (what `rollups()`
#: is sorted by), from `daily_rollups d` and `patterns p`.
_KEY_COLUMNS = "d.policy_domain, d.day, d.source_ip, " + ", ".join(f"p.{c}" for c in COLUMNS)
_SAME_KEY = ("kind = ? AND reporter = ? AND report_id = ? AND policy_domain = ?"
             " AND begin_ts = ? AND end_ts = ?")


def _migrations() -> list[str]:
    """Schema scripts in order; the file `NNN_*.sql` brings the database to version NNN."""
    folder = resources.files("store") / "schema"
    scripts = sorted(f.name for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(folder / name).read_text(encoding="utf-8") for name in scripts]


def latest_schema_version() -> int:
    """The version a database has once this dmarcbot has opened it."""
    return len(_migrations())


class SqliteStore:
    """The store in one SQLite file (or `:memory:`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # one thread at a time, not always the one that opened it (the mailbox job stores
            # from a thread of its own)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30,
                                       check_same_thread=False)
            self._sources = SqliteSources(self._db)
            self._use_wal()
            # WAL keeps the file consistent without a disk flush per commit (the DNS cache
            # commits once per answer).
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            self._sources.open()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open the database ({exc})") from None

    def _use_wal(self) -> None:
        """Switch to WAL. Another process switching the same new file at the same moment
        makes SQLite answer "locked" at once, without its busy timeout: try again a while."""
        for attempt in range(_WAL_ATTEMPTS):
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == _WAL_ATTEMPTS - 1:
                    raise
                time.sleep(0.05)

    def _migrate(self) -> None:
        """Bring the schema up to date, one version per transaction.

        The version is read again after taking the write lock: several processes opening a new
        file at once (four `ingest` runs on a first start) each see version 0 before any has the
        lock, and all but the first would otherwise apply a script that has already run.
        """
        scripts = _migrations()
        if self._version(len(scripts)) == len(scripts):
            return  # the usual case: no write lock taken
        self._db.create_function("dmarcbot_legacy_results", 1, _legacy_results_json,
                                 deterministic=True)
        # Table rebuilds (version 4) need foreign keys off; they are checked before committing.
        self._db.execute("PRAGMA foreign_keys = OFF")
        try:
            while True:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    version = self._version(len(scripts))
                    if version == len(scripts):
                        self._db.execute("COMMIT")
                        return
                    for statement in _statements(scripts[version]):
                        self._db.execute(statement)
                    if self._db.execute("PRAGMA foreign_key_check").fetchone() is not None:
                        raise StoreError(f"{self.path}: schema version {version + 1} would break "
                                         "a reference between tables")
                    self._db.execute(f"PRAGMA user_version = {version + 1}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
        finally:
            self._db.execute("PRAGMA foreign_keys = ON")

    def _version(self, known: int) -> int:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > known:
            raise StoreError(
                f"{self.path}: database schema version {version} is newer than this dmarcbot "
                f"knows ({known}); upgrade dmarcbot"
            )
        return int(version)

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------

    def add_report(self, report: Report, *, unverified: str | None = None,
                   volume: VolumeCheck | None = None) -> AddResult:
        """Store the report; `duplicate` if a report with its key and content is stored,
        `conflict` (stored, and both flagged) if one with its key but other content is.
        `unverified`: why its e-mail is not believed (None: it is); a believed copy of an
        unverified report makes the stored one believed, unless it is held for its volume.
        `volume`: measure a believed aggregate report against its reporter's history and hold
        it if it claims too much (analysis.volume).

        Content is compared only once the records are read, so a report whose key is already
        stored is read and written whole, then rolled back if it turns out a duplicate: an
        aggregate report by its rollup rows, a TLS or failure report by its content digest, one
        stored before schema 4 (whose rows were merged with others') by its counts.
        """
        key = ledger_key(report)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            horizon = self._sources.horizon() if key.kind == "aggregate" else None
            if horizon is not None and key.end < day_start(horizon):
                self._rollback()  # its period was expired: a copy of what went, or as good
                return "duplicate"
            earlier = db.execute("SELECT id, digest, legacy, records, messages FROM reports"
                                 " WHERE " + _SAME_KEY, dataclasses.astuple(key)).fetchall()
            report_row = self._insert_ledger(key, report, unverified)
            content: str | None = None
            days = 0  # the days an aggregate report's rows span
            if isinstance(report, AggregateReport):
                records, messages, days = self._add_rollups(report, report_row)
            elif isinstance(report, TlsReport):
                records, messages = self._add_tls(report_row, report)
                content = content_digest(report, key)
            else:
                records, messages = self._add_failure(report_row, report)
                content = content_digest(report, key)
            for row, digest, legacy, records_, messages_ in earlier:
                if ((records_, messages_) == (records, messages) if legacy
                        else self._same_rows(report, row, report_row)
                        if isinstance(report, AggregateReport)  # content is None
                        else digest == content):
                    self._rollback()  # patterns it made go too
                    if unverified is None:  # the same report, now from a believed e-mail
                        self._believe(key, row, messages, volume)
                    return "duplicate"
            db.executemany("UPDATE reports SET conflict = 1 WHERE id = ?",
                           [(row[0],) for row in earlier])
            if unverified is None and volume is not None and key.kind == "aggregate":
                unverified = self._volume_hold(key, report_row, messages, volume)
            db.execute(
                "UPDATE reports SET records = ?, messages = ?, errors = ?, digest = ?,"
                " conflict = ?, unverified = ? WHERE id = ?",
                (records, messages, json.dumps(report.errors), content, int(bool(earlier)),
                 unverified, report_row),
            )
            if earlier:  # neither copy counts on its own now (issue 14: source rollups)
                self._sources.rebuild_reports(key.policy_domain, [row[0] for row in earlier])
            elif days:
                self._sources.add(key.policy_domain,
                                  basis(unverified, reporter_domain(key.reporter)),
                                  days == 1)
            db.execute("COMMIT")
            self._sources.committed()
        except BaseException:
            self._rollback()
            raise
        return "conflict" if earlier else "stored"

    def _believe(self, key: LedgerKey, row: int, messages: int, volume: VolumeCheck | None) -> None:
        """A stored report again, from a believed e-mail: believed now, unless its volume is
        (or was already) too much."""
        with transaction(self._db):
            (doubt,) = self._db.execute("SELECT unverified FROM reports WHERE id = ?",
                                        (row,)).fetchone()
            if doubt is None or is_held(doubt):
                return
            hold = (self._volume_hold(key, row, messages, volume)
                    if volume is not None and key.kind == "aggregate" else None)
            self._db.execute("UPDATE reports SET unverified = ? WHERE id = ?", (hold, row))
            if hold is None and key.kind == "aggregate":  # believed now: its basis changed
                self._sources.rebuild_reports(key.policy_domain, [row])

    def _volume_hold(self, key: LedgerKey, row: int, messages: int, check: VolumeCheck
                     ) -> str | None:
        """analysis.volume's judgement, from the believed reports of the look-back window."""
        low, high = window(key.begin)
        query = ("SELECT COALESCE(reporter_domain, ''), begin_ts, end_ts, messages FROM reports"
                 " WHERE policy_domain = ? AND begin_ts >= ? AND begin_ts < ?"
                 " AND kind = 'aggregate' AND unverified IS NULL AND id != ?")
        where = (key.policy_domain, low, high, row)
        reporter = reporter_domain(key.reporter) or ""
        mine = [Sent(*r) for r in self._db.execute(query + " AND reporter_domain = ?",
                                                    (*where, reporter))]
        return check.judge(reporter, key.begin, key.end, messages, mine,
                           lambda: [Sent(*r) for r in self._db.execute(query, where)])

    def _rollback(self) -> None:
        # SQLite may have rolled back already (a full disk, say); don't hide the first error.
        self._sources.rolled_back()
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _insert_ledger(self, key: LedgerKey, report: Report, unverified: str | None) -> int:
        schema: str | None
        if isinstance(report, AggregateReport):
            org, schema = report.reporter.org_name, report.schema
        elif isinstance(report, TlsReport):
            org, schema = report.organization_name, None
        else:
            org, schema = report.reporter or "", report.format
        cursor = self._db.execute(
            "INSERT INTO reports (kind, reporter, report_id, policy_domain, begin_ts, end_ts,"
            " org_name, schema, source, stored_at, unverified, reporter_domain)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key.kind, key.reporter, key.report_id, key.policy_domain, key.begin, key.end, org,
             schema, report.source, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
             unverified, reporter_domain(key.reporter)),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _same_rows(self, report: AggregateReport, one: int, other: int) -> bool:
        """Whether two aggregate reports of one ledger key keep the same rollup rows.

        Only a report whose key is stored already pays for this; the rows are found through
        the primary key's (domain, day) prefix. A pattern has one id, so ids compare as well.
        """
        days = report_days(report.begin, report.end)
        where = "policy_domain = ? AND day BETWEEN ? AND ? AND report = ?"
        span = (report.policy.domain, days[0][0].isoformat(), days[-1][0].isoformat())
        rows = f"SELECT day, source_ip, pattern, messages FROM daily_rollups WHERE {where}"
        differ = f"SELECT EXISTS ({rows} EXCEPT {rows})"
        return not any(self._db.execute(differ, (*span, a, *span, b)).fetchone()[0]
                       for a, b in ((one, other), (other, one)))

    def _add_rollups(self, report: AggregateReport, report_row: int) -> tuple[int, int, int]:
        """Write the report's daily rows and stage them for its sources; return records,
        messages and the days the rows span (0: no rows)."""
        days = report_days(report.begin, report.end)
        pattern_id = self._sources.pattern_id
        daily: Daily = {}
        records = messages = 0
        for record in report.records:
            records += 1
            messages += record.count
            for key, count in rollup_rows(report, record, days):
                row = (key.day, key.source_ip, pattern_id((
                    key.header_from, key.envelope_from, results_json(key.dkim),
                    results_json(key.spf), key.dkim_aligned, key.spf_aligned, key.disposition,
                    key.reasons)))
                daily[row] = daily.get(row, 0) + count
        if not daily:
            return records, messages, 0
        self._sources.stage(daily)
        self._db.execute(_INSERT_ROLLUPS, (report.policy.domain, report_row))
        return records, messages, len(days)

    def _add_tls(self, report_row: int, report: TlsReport) -> tuple[int, int]:
        sessions = 0
        for policy in report.policies:
            sessions += policy.total_successful_session_count + policy.total_failure_session_count
            failures = [
                {"result_type": d.result_type, "failed_session_count": d.failed_session_count,
                 "sending_mta_ip": d.sending_mta_ip, "receiving_mx_hostname":
                 d.receiving_mx_hostname, "receiving_ip": d.receiving_ip}
                for d in policy.failure_details
            ]
            self._db.execute(
                "INSERT INTO tls_results (report, policy_domain, policy_type, successful, failed,"
                " failures) VALUES (?, ?, ?, ?, ?, ?)",
                (report_row, policy.policy_domain, policy.policy_type,
                 policy.total_successful_session_count, policy.total_failure_session_count,
                 json.dumps(failures)),
            )
        return len(report.policies), sessions

    def _add_failure(self, report_row: int, report: FailureReport) -> tuple[int, int]:
        arrival = int(report.arrival_date.timestamp()) if report.arrival_date else None
        self._db.execute(
            "INSERT INTO failure_reports (report, reported_domain, arrival_ts, source_ip,"
            " auth_failure, identity_alignment, delivery_result, dkim_domain, dkim_selector,"
            " spf_dns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (report_row, report.reported_domain, arrival, report.source_ip, report.auth_failure,
             report.identity_alignment, report.delivery_result, report.dkim_domain,
             report.dkim_selector, report.spf_dns),
        )
        return 1, 1

    # -- reading -------------------------------------------------------------------------------

    def reports(self, *, domain: str | None = None, since: str | None = None,
                kind: str | None = None) -> Iterator[LedgerEntry]:
        sql = ("SELECT kind, reporter, report_id, policy_domain, begin_ts, end_ts, org_name,"
               " schema, source, records, messages, errors, stored_at, conflict, unverified"
               " FROM reports"
               " WHERE 1=1")
        params: list[object] = []
        if domain is not None:
            sql += " AND policy_domain = ?"
            params.append(domain.lower())
        if since is not None:
            sql += " AND end_ts >= ?"
            params.append(int(datetime.fromisoformat(since).replace(tzinfo=UTC).timestamp()))
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        for row in self._db.execute(sql + " ORDER BY begin_ts, id", params):
            yield LedgerEntry(
                key=LedgerKey(*row[:6]), org_name=row[6], schema=row[7], source=row[8],
                records=row[9], messages=row[10], errors=tuple(json.loads(row[11])),
                stored_at=row[12], conflict=bool(row[13]), unverified=row[14],
            )

    def rollups(self, *, domain: str | None = None, since: str | None = None,
                conflicting: bool = False, trusted_reporters: Collection[str] = ()
                ) -> Iterator[tuple[RollupKey, int]]:
        sql = ("SELECT d.policy_domain, d.day, d.source_ip, d.pattern, sum(d.messages)"
               " FROM daily_rollups d JOIN patterns p ON p.id = d.pattern WHERE 1=1")
        params: list[object] = []
        if not conflicting:
            trusted = sorted({t.lower() for t in trusted_reporters})
            marks = ", ".join("?" * len(trusted))

            def believed(r: str) -> str:
                # COALESCE: a report with no reporter domain is in no list (NULL IN … is NULL)
                return (f"({r}.unverified IS NULL OR COALESCE({r}.reporter_domain, '')"
                        f" IN ({marks}))"
                        if trusted else f"{r}.unverified IS NULL")

            # Left out: a report whose e-mail is not believed, and one in conflict with another
            # believed report of its key (a forged copy never makes a believed report doubted).
            sql += (" AND d.report NOT IN (SELECT r.id FROM reports r WHERE NOT " + believed("r")
                    + " OR (r.conflict AND EXISTS (SELECT 1 FROM reports o WHERE o.id != r.id"
                    " AND o.kind = r.kind AND o.reporter = r.reporter AND o.report_id ="
                    " r.report_id AND o.policy_domain = r.policy_domain AND o.begin_ts ="
                    " r.begin_ts AND o.end_ts = r.end_ts AND " + believed("o") + ")))")
            params += trusted * 2
        if domain is not None:
            sql += " AND d.policy_domain = ?"
            params.append(domain.lower())
        if since is not None:
            sql += " AND d.day >= ?"
            params.append(since)
        # Grouped in primary-key order (rows of several reports sum up without a sort), then
        # sorted by the pattern's columns as before schema 8; each pattern is read once.
        group = "d.policy_domain, d.day, d.source_ip, d.pattern"
        patterns: dict[int, Pattern] = {}
        for domain_, day, ip, id_, messages in self._db.execute(
                f"{sql} GROUP BY {group} ORDER BY {_KEY_COLUMNS}", params):
            pattern = patterns.get(id_)
            if pattern is None:
                pattern = patterns[id_] = self._sources.pattern(id_)
            yield RollupKey(domain_, day, ip, *pattern), messages


    def sources(self, domain: str, *, trusted_reporters: Collection[str] = ()
                ) -> Iterator[SourceRollup]:
        return self._sources.read(domain.lower(), trusted_reporters)

    def recall_naming(self, domain: str, *, trusted_reporters: Collection[str] = ()
                      ) -> Recalled:
        return self._sources.recall(domain.lower(), trusted_reporters)

    def remember_naming(self, domain: str, context: str,
                        identifications: Iterable[tuple[str, str]], *, whole: bool) -> None:
        self._sources.remember(domain.lower(), context, identifications, whole)

    def naming_mark(self) -> str | None:
        row = self._db.execute("SELECT started_at FROM naming_mark").fetchone()
        return None if row is None else str(row[0])

    def set_naming_mark(self, stamp: str) -> None:
        self._db.execute("INSERT INTO naming_mark (id, started_at) VALUES (1, ?)"
                         " ON CONFLICT DO UPDATE SET started_at = excluded.started_at", (stamp,))

    def domains(self, *, stored_since: str | None = None) -> list[str]:
        return self._sources.domains(stored_since)

    def expire(self, before: date) -> int:
        return self._sources.expire(before)

    # -- DNS cache (analysis.dnsevidence.DnsCache) --------------------------------------------

    def get_answer(self, name: str, rdtype: str, now: float) -> Answer | None:
        row = self._db.execute(
            "SELECT records, canonical, nxdomain, expires FROM dns_cache"
            " WHERE name = ? AND rdtype = ? AND expires > ?", (name, rdtype, now)).fetchone()
        if row is None:
            return None
        return Answer(name, rdtype, tuple(json.loads(row[0])), row[1], bool(row[2]), row[3])

    def get_answers(self, keys: Collection[tuple[str, str]], now: float
                    ) -> dict[tuple[str, str], Answer]:
        """One statement per type and 5,000 names, not one per answer: a warm run of 10,000
        sources reads 17,000 (about 0.1 s of it when read one by one)."""
        names: dict[str, list[str]] = defaultdict(list)
        for name, rdtype in keys:
            names[rdtype].append(name)
        out = {}
        for rdtype, wanted in names.items():
            for at in range(0, len(wanted), 5000):
                for name, records, canonical, nxdomain, expires in self._db.execute(
                        "SELECT name, records, canonical, nxdomain, expires FROM dns_cache"
                        " WHERE rdtype = ? AND name IN (SELECT value FROM json_each(?))"
                        " AND expires > ?", (rdtype, json.dumps(wanted[at:at + 5000]), now)):
                    out[name, rdtype] = Answer(name, rdtype, tuple(json.loads(records)),
                                               canonical, bool(nxdomain), expires)
        return out

    def put_answer(self, answer: Answer) -> None:
        self._db.execute(
            "INSERT INTO dns_cache (name, rdtype, records, canonical, nxdomain, expires)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET records = excluded.records,"
            " canonical = excluded.canonical, nxdomain = excluded.nxdomain,"
            " expires = excluded.expires",
            (answer.name, answer.rdtype, json.dumps(answer.records), answer.canonical,
             int(answer.nxdomain), answer.expires),
        )

    def flush(self) -> None:
        pass  # answers are written as they come: a local write costs less than keeping them

    # -- inventory ------------------------------------------------------------------------------

    def inventory(self, domain: str | None = None) -> dict[tuple[str, str], InventoryItem]:
        sql = ("SELECT policy_domain, service_key, status, owner, first_seen, last_seen, messages,"
               " dmarc_pass, decided_by, decided_at, asked_at, reminded_at, alerted_at"
               " FROM inventory")
        params: tuple[object, ...] = ()
        if domain is not None:
            sql += " WHERE policy_domain = ?"
            params = (domain.lower(),)
        return {(row[0], row[1]): InventoryItem(*row) for row in self._db.execute(sql, params)}

    def note_seen(self, domain: str, service_key: str, first_seen: str, last_seen: str,
                  messages: int, dmarc_pass: int, *, whole_history: bool = True) -> InventoryItem:
        """Record a sender as seen; a new one starts `Pending`, a known one keeps its status.

        Volumes are updated only from a look at the whole history (`whole_history`), so a look
        at the last few days does not shrink them.
        """
        domain = domain.lower()
        volumes = (", messages = excluded.messages, dmarc_pass = excluded.dmarc_pass"
                   if whole_history else "")
        self._db.execute(
            "INSERT INTO inventory (policy_domain, service_key, status, first_seen, last_seen,"
            " messages, dmarc_pass) VALUES (?, ?, 'Pending', ?, ?, ?, ?)"
            " ON CONFLICT DO UPDATE SET first_seen = min(first_seen, excluded.first_seen),"
            " last_seen = max(last_seen, excluded.last_seen)" + volumes,
            (domain, service_key, first_seen, last_seen, messages, dmarc_pass),
        )
        return self.inventory(domain)[domain, service_key]

    def update_item(self, item: InventoryItem, *, if_status: str) -> bool:
        cursor = self._db.execute(
            "UPDATE inventory SET owner = ?, status = ?, decided_by = ?, decided_at = ?,"
            " asked_at = ?, reminded_at = ?, alerted_at = ?"
            " WHERE policy_domain = ? AND service_key = ? AND status = ?",
            (item.owner, item.status, item.decided_by, item.decided_at, item.asked_at,
             item.reminded_at, item.alerted_at, item.policy_domain.lower(), item.service_key,
             if_status),
        )
        return cursor.rowcount == 1


def _legacy_results_json(text: str) -> str:
    """Schema 4: a space-joined result text of earlier versions as JSON."""
    return results_json(legacy_results(text))


def _statements(script: str) -> Iterator[str]:
    """Split a schema script into statements (SQLite decides where each one is complete)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    if buffer.strip() and not all(
            part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()):
        raise StoreError(f"schema script ends with an incomplete statement: {buffer[:60]!r}")
