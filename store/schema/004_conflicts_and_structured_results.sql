-- Version 4 (issue 13): reports sharing a ledger key are kept side by side unless their content
-- is the same; rollup rows name their report, so two reports' content can be compared and a
-- conflicting report's rows left out of what is believed; DKIM and SPF results are JSON, never
-- space-joined text.
-- Run with foreign keys off (store/sqlite.py checks them before committing), as SQLite's
-- table-rebuild procedure asks; `dmarcbot_legacy_results` is defined by store/sqlite.py.

CREATE TABLE reports_v4 (
    id            INTEGER PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind IN ('aggregate', 'failure', 'tls')),
    reporter      TEXT    NOT NULL,  -- reporter e-mail, else org name (lower case)
    report_id     TEXT    NOT NULL,
    policy_domain TEXT    NOT NULL,
    begin_ts      INTEGER NOT NULL,  -- Unix seconds, UTC
    end_ts        INTEGER NOT NULL,
    org_name      TEXT    NOT NULL,
    schema        TEXT,
    source        TEXT    NOT NULL,  -- the input it was first read from
    records       INTEGER NOT NULL DEFAULT 0,
    messages      INTEGER NOT NULL DEFAULT 0,
    errors        TEXT    NOT NULL DEFAULT '[]',  -- JSON list of strings
    stored_at     TEXT    NOT NULL,
    -- a TLS or failure report's analysis.rollup.content_digest; an aggregate report's content
    -- is its rows in daily_rollups
    digest        TEXT,
    legacy        INTEGER NOT NULL DEFAULT 0,  -- stored before v4: only its counts compare
    conflict      INTEGER NOT NULL DEFAULT 0  -- another report has the key and other content
);
INSERT INTO reports_v4 (id, kind, reporter, report_id, policy_domain, begin_ts, end_ts, org_name,
                        schema, source, records, messages, errors, stored_at, legacy)
SELECT id, kind, reporter, report_id, policy_domain, begin_ts, end_ts, org_name, schema, source,
       records, messages, errors, stored_at, 1 FROM reports;
DROP TABLE reports;
ALTER TABLE reports_v4 RENAME TO reports;
CREATE INDEX reports_by_domain ON reports (policy_domain, begin_ts);
CREATE INDEX reports_by_key ON reports (kind, reporter, report_id, policy_domain, begin_ts,
                                        end_ts);
CREATE INDEX reports_in_conflict ON reports (id) WHERE conflict;

CREATE TABLE daily_rollups_v4 (
    policy_domain TEXT    NOT NULL,
    day           TEXT    NOT NULL,  -- YYYY-MM-DD, UTC
    source_ip     TEXT    NOT NULL,
    header_from   TEXT    NOT NULL,
    envelope_from TEXT    NOT NULL,
    dkim          TEXT    NOT NULL,  -- JSON [[domain, selector, result], ...], report order
    spf           TEXT    NOT NULL,  -- JSON [[domain, scope, result], ...]
    dkim_aligned  INTEGER NOT NULL,
    spf_aligned   INTEGER NOT NULL,
    disposition   TEXT    NOT NULL,
    reasons       TEXT    NOT NULL,
    report        INTEGER NOT NULL,  -- reports.id; 0 for rows summed before version 4
    messages      INTEGER NOT NULL,
    PRIMARY KEY (policy_domain, day, source_ip, header_from, envelope_from, dkim, spf,
                 dkim_aligned, spf_aligned, disposition, reasons, report)
) WITHOUT ROWID;
INSERT INTO daily_rollups_v4 (policy_domain, day, source_ip, header_from, envelope_from, dkim,
                              spf, dkim_aligned, spf_aligned, disposition, reasons, report,
                              messages)
SELECT policy_domain, day, source_ip, header_from, envelope_from,
       dmarcbot_legacy_results(dkim), dmarcbot_legacy_results(spf), dkim_aligned, spf_aligned,
       disposition, reasons, 0, messages FROM daily_rollups WHERE true
ON CONFLICT DO UPDATE SET messages = messages + excluded.messages;
DROP TABLE daily_rollups;
ALTER TABLE daily_rollups_v4 RENAME TO daily_rollups;
