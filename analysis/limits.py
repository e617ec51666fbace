"""Limits on untrusted input, in one place.

Reports arrive from anyone who can send mail to the report address, so every size, ratio and
nesting level is capped. Defaults are far above what real receivers send (the largest reports seen
are a few MB compressed) yet small enough that a bomb is refused long before it hurts. Each limit
can be changed with an environment variable `DMARCBOT_<NAME>` (for example
`DMARCBOT_MAX_DECOMPRESSED_BYTES=1073741824`); see docs/limits.md.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

MiB = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    #: Largest single input held in memory or inflated from: an e-mail message, an attachment,
    #: a compressed file or zip member as stored.
    max_input_bytes: int = 64 * MiB
    #: Largest report document after decompression (XML or JSON), counted while streaming.
    max_decompressed_bytes: int = 512 * MiB
    #: Largest decompressed/compressed size ratio. DMARC XML compresses 10-30x; bombs 1000x.
    max_ratio: int = 150
    #: Most members read from one zip archive, and most parts walked in one e-mail.
    max_members: int = 64
    #: Deepest nesting of containers (mbox > e-mail > forwarded e-mail > zip > gzip ...).
    max_depth: int = 6
    #: Longest date range one aggregate report may cover; it is split into this many daily
    #: rows per record, so a forged range of centuries would cost millions of rows.
    max_report_days: int = 62
    #: Hours past now that an aggregate report's date range may end. Receivers' clocks are a
    #: little off, but a report dated years ahead would stamp its records, and the alerts that
    #: follow them, with days not yet come (and silence "still sending" alerts until then).
    max_future_hours: int = 24
    #: The first year an aggregate report may begin in. DMARC was published in January 2012 and
    #: receivers sent their first reports that year, so an earlier date is a forgery or a broken
    #: clock (a setting all the same, like every limit: to read an old archive on purpose).
    earliest_report_year: int = 2012
    #: Sources per policy domain per run whose reverse DNS is looked up, most mail first (an
    #: IPv6 /64 counts once). A report names any number of addresses, and each costs a PTR
    #: query and its forward checks; the largest real reports name a few thousand, and the
    #: sources past the first 2,000 carry a sliver of the mail. The rest are reported "not
    #: looked up (budget)" and judged on the report's own evidence.
    max_dns_sources: int = 2000
    #: Seconds one run may spend on DNS evidence in all, shared fairly among its domains. Well
    #: inside the Functions timeout (10 minutes), which must also list mail and send cards.
    dns_budget_seconds: int = 240
    #: How many times its usual daily volume a reporter may report for a domain before its
    #: report is held (kept, not believed: analysis/volume.py). Anyone can own a domain that
    #: passes DMARC and mail reports from it, so authentication proves who reported, not that
    #: the counts are true; a forged flood of "compliant" mail would otherwise outvote the
    #: real failures. A reporter new to a domain is measured against the domain's largest
    #: established reporter. Real campaigns move a reporter's volume a few times, not 20.
    max_volume_factor: int = 20
    #: Messages per day any reporter may report for a domain whatever its history: small
    #: domains' volumes swing widely, and a few hundred messages cannot outvote real traffic.
    volume_floor: int = 1000
    #: Days with believed reports after which a reporter is measured against its own usual
    #: volume rather than as a newcomer.
    established_reporter_days: int = 3

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Defaults, overridden by `DMARCBOT_<FIELD>` variables; bad values name the variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for field in dataclasses.fields(cls):
            name = f"DMARCBOT_{field.name.upper()}"
            raw = environ.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                value = int(raw.strip())
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a whole number") from None
            if value < 1:
                raise ValueError(f"{name}={raw!r} must be at least 1")
            values[field.name] = value
        return cls(**values)
