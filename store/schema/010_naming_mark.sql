-- Version 10 (issue 14): when the last scheduled step that completed began, so the timer names
-- only the domains with reports stored since (function_app/schedule.py, stored_since).
CREATE TABLE naming_mark (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    started_at TEXT    NOT NULL  -- ISO 8601, UTC
);
