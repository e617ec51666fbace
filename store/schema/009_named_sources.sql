-- Version 9 (issue 14): naming remembers each source's identification, so the scheduled step
-- names only the sources whose reports changed since (analysis/remembered.py).

-- 1 when a report (or a rebuild) changed the row since the domain was last named, 2 while a
-- naming that has claimed it runs, 0 once that naming is remembered. Existing rows count as
-- changed; nothing is remembered yet, so the first naming of each domain reads it whole.
ALTER TABLE source_rollups ADD COLUMN changed INTEGER NOT NULL DEFAULT 1;

CREATE TABLE named_sources (
    policy_domain  TEXT NOT NULL,
    source_ip      TEXT NOT NULL,
    identification TEXT NOT NULL,  -- JSON, analysis.remembered.encode
    PRIMARY KEY (policy_domain, source_ip)
) WITHOUT ROWID;

-- The context the domain's named_sources were made in (analysis.remembered.naming_context).
CREATE TABLE naming (
    policy_domain TEXT NOT NULL PRIMARY KEY,
    context       TEXT NOT NULL
) WITHOUT ROWID;
