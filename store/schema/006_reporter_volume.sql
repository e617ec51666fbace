-- Version 6 (issue 13): a believed report's volume is compared with what its reporter (and, for
-- a reporter new to the domain, the domain's established reporters) sent before
-- (analysis/volume.py); this index keeps that look-back to one reporter's rows.

CREATE INDEX reports_by_reporter ON reports (policy_domain, reporter_domain, begin_ts);
