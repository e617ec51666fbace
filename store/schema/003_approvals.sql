-- Version 3: when each sender's owner was asked, reminded and alerted (approvals).

ALTER TABLE inventory ADD COLUMN asked_at TEXT;
ALTER TABLE inventory ADD COLUMN reminded_at TEXT;
ALTER TABLE inventory ADD COLUMN alerted_at TEXT;
