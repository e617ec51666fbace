-- Version 8 (issue 14): daily rows name their pattern by id, as source and monthly rollups do, so
-- their key is short: a 10,000-record report's rows cost about half as much to write, which pays
-- for keeping its source rollups in the same transaction. Reading joins `patterns`.
-- Run with foreign keys off (store/sqlite.py), as SQLite's table-rebuild procedure asks.

-- Version 7 made patterns only for the rows of reports that count on their own; a report in
-- conflict with another copy of its key may hold others.
INSERT OR IGNORE INTO patterns (header_from, envelope_from, dkim, spf, dkim_aligned, spf_aligned,
                                disposition, reasons)
SELECT DISTINCT header_from, envelope_from, dkim, spf, dkim_aligned, spf_aligned, disposition,
       reasons
FROM daily_rollups;

CREATE TABLE daily_rollups_v8 (
    policy_domain TEXT    NOT NULL,
    day           TEXT    NOT NULL,  -- YYYY-MM-DD, UTC
    source_ip     TEXT    NOT NULL,
    pattern       INTEGER NOT NULL,  -- patterns.id: header_from … reasons
    report        INTEGER NOT NULL,  -- reports.id; 0 for rows summed before version 4
    messages      INTEGER NOT NULL,
    PRIMARY KEY (policy_domain, day, source_ip, pattern, report)
) WITHOUT ROWID;
INSERT INTO daily_rollups_v8 (policy_domain, day, source_ip, pattern, report, messages)
SELECT d.policy_domain, d.day, d.source_ip, p.id, d.report, d.messages
FROM daily_rollups d
JOIN patterns p ON p.header_from = d.header_from AND p.envelope_from = d.envelope_from
    AND p.dkim = d.dkim AND p.spf = d.spf AND p.dkim_aligned = d.dkim_aligned
    AND p.spf_aligned = d.spf_aligned AND p.disposition = d.disposition
    AND p.reasons = d.reasons;
DROP TABLE daily_rollups;
ALTER TABLE daily_rollups_v8 RENAME TO daily_rollups;
