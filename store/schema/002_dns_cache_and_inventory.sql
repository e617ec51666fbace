-- Version 2: DNS answers kept with their TTL, and the inventory of senders per domain.

CREATE TABLE dns_cache (
    name      TEXT    NOT NULL,
    rdtype    TEXT    NOT NULL,
    records   TEXT    NOT NULL,  -- JSON list of strings; empty for a negative answer
    canonical TEXT    NOT NULL,
    nxdomain  INTEGER NOT NULL,
    expires   REAL    NOT NULL,  -- Unix time; timeouts and SERVFAIL are never stored
    PRIMARY KEY (name, rdtype)
) WITHOUT ROWID;

CREATE TABLE inventory (
    policy_domain TEXT NOT NULL,
    service_key   TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('Pending', 'Approved', 'Rejected')),
    owner         TEXT,
    first_seen    TEXT NOT NULL,  -- YYYY-MM-DD
    last_seen     TEXT NOT NULL,
    messages      INTEGER NOT NULL DEFAULT 0,
    dmarc_pass    INTEGER NOT NULL DEFAULT 0,
    decided_by    TEXT,
    decided_at    TEXT,
    PRIMARY KEY (policy_domain, service_key)
) WITHOUT ROWID;
