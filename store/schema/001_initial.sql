-- Version 1: the report ledger, daily rollups, and what TLS and failure reports add.

CREATE TABLE reports (
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
    UNIQUE (kind, reporter, report_id, policy_domain, begin_ts, end_ts)
);
CREATE INDEX reports_by_domain ON reports (policy_domain, begin_ts);

CREATE TABLE daily_rollups (
    policy_domain TEXT    NOT NULL,
    day           TEXT    NOT NULL,  -- YYYY-MM-DD, UTC
    source_ip     TEXT    NOT NULL,
    header_from   TEXT    NOT NULL,
    envelope_from TEXT    NOT NULL,
    dkim          TEXT    NOT NULL,
    spf           TEXT    NOT NULL,
    dkim_aligned  INTEGER NOT NULL,
    spf_aligned   INTEGER NOT NULL,
    disposition   TEXT    NOT NULL,
    reasons       TEXT    NOT NULL,
    messages      INTEGER NOT NULL,
    PRIMARY KEY (policy_domain, day, source_ip, header_from, envelope_from, dkim, spf,
                 dkim_aligned, spf_aligned, disposition, reasons)
) WITHOUT ROWID;

CREATE TABLE tls_results (
    report        INTEGER NOT NULL REFERENCES reports (id),
    policy_domain TEXT    NOT NULL,
    policy_type   TEXT    NOT NULL,
    successful    INTEGER NOT NULL,
    failed        INTEGER NOT NULL,
    failures      TEXT    NOT NULL  -- JSON list of failure details
);

CREATE TABLE failure_reports (
    report             INTEGER PRIMARY KEY REFERENCES reports (id),
    reported_domain    TEXT,
    arrival_ts         INTEGER,
    source_ip          TEXT,
    auth_failure       TEXT,
    identity_alignment TEXT,
    delivery_result    TEXT,
    dkim_domain        TEXT,
    dkim_selector      TEXT,
    spf_dns            TEXT
);
