-- Version 5 (issue 13): whether the e-mail that delivered a report passed DMARC for its reporter.
-- `unverified` holds why not (NULL: believed, as every report stored before this version and
-- every bare file); such a report's rows are left out of what is believed unless its reporter's
-- domain is trusted (DMARCBOT_TRUSTED_REPORTERS), which `rollups()` is told when it reads.

ALTER TABLE reports ADD COLUMN unverified TEXT;
ALTER TABLE reports ADD COLUMN reporter_domain TEXT;  -- of the reporter e-mail, lower case
