-- Version 7 (issue 14): a domain's history without its days, kept up to date at ingest, so naming
-- reads each distinct sending pattern once instead of every day of every report; monthly rollups
-- that keep what retention expires; and what retention has expired (store/sqlite_sources.py).

-- A daily row's dimensions but the domain, day and source, once each: source rollups name them
-- by id, which keeps their keys short (their upkeep at ingest costs about half as much).
CREATE TABLE patterns (
    id            INTEGER PRIMARY KEY,
    header_from   TEXT    NOT NULL,
    envelope_from TEXT    NOT NULL,
    dkim          TEXT    NOT NULL,  -- JSON, as in daily_rollups
    spf           TEXT    NOT NULL,
    dkim_aligned  INTEGER NOT NULL,
    spf_aligned   INTEGER NOT NULL,
    disposition   TEXT    NOT NULL,
    reasons       TEXT    NOT NULL,
    UNIQUE (header_from, envelope_from, dkim, spf, dkim_aligned, spf_aligned, disposition,
            reasons)
);

-- Per (policy domain, source, pattern, basis): messages, first and last day of the reports that
-- count on their own (not in conflict with another copy of their key). basis: '' believed;
-- '~' || reporter domain: unverified or held, believed once the reporter is trusted
-- (DMARCBOT_TRUSTED_REPORTERS).
CREATE TABLE source_rollups (
    policy_domain TEXT    NOT NULL,
    source_ip     TEXT    NOT NULL,
    pattern       INTEGER NOT NULL,  -- patterns.id
    basis         TEXT    NOT NULL,
    messages      INTEGER NOT NULL,
    first_day     TEXT    NOT NULL,  -- YYYY-MM-DD, UTC
    last_day      TEXT    NOT NULL,
    PRIMARY KEY (policy_domain, source_ip, pattern, basis)
) WITHOUT ROWID;

-- Daily rows of expired reports, per calendar month, with their basis.
CREATE TABLE monthly_rollups (
    policy_domain TEXT    NOT NULL,
    month         TEXT    NOT NULL,  -- YYYY-MM, UTC
    source_ip     TEXT    NOT NULL,
    pattern       INTEGER NOT NULL,
    basis         TEXT    NOT NULL,
    messages      INTEGER NOT NULL,
    first_day     TEXT    NOT NULL,
    last_day      TEXT    NOT NULL,
    PRIMARY KEY (policy_domain, month, source_ip, pattern, basis)
) WITHOUT ROWID;

-- Retention: daily rows and ledger rows of reports that ended before this day are expired; a
-- report for a period before it is taken for a copy of one that was (it cannot be told apart).
CREATE TABLE expired (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    before_day TEXT    NOT NULL
);

-- Which domains had reports stored since a moment (the Functions timer's question).
CREATE INDEX reports_by_stored_at ON reports (stored_at);

INSERT INTO patterns (header_from, envelope_from, dkim, spf, dkim_aligned, spf_aligned,
                      disposition, reasons)
SELECT DISTINCT header_from, envelope_from, dkim, spf, dkim_aligned, spf_aligned, disposition,
       reasons
FROM daily_rollups;

INSERT INTO source_rollups (policy_domain, source_ip, pattern, basis, messages, first_day,
                            last_day)
SELECT d.policy_domain, d.source_ip, p.id,
       CASE WHEN r.unverified IS NULL THEN '' ELSE '~' || COALESCE(r.reporter_domain, '') END,
       sum(d.messages), min(d.day), max(d.day)
FROM daily_rollups d
JOIN patterns p ON p.header_from = d.header_from AND p.envelope_from = d.envelope_from
    AND p.dkim = d.dkim AND p.spf = d.spf AND p.dkim_aligned = d.dkim_aligned
    AND p.spf_aligned = d.spf_aligned AND p.disposition = d.disposition
    AND p.reasons = d.reasons
LEFT JOIN reports r ON r.id = d.report
WHERE r.id IS NULL OR NOT r.conflict
GROUP BY 1, 2, 3, 4;
