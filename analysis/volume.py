"""How much a believed report may claim, measured against what its reporter sent before.

A report mail that passes DMARC proves who reported, not that the counts are true: anyone can
register a domain, pass DMARC for it, and mail a report claiming 400,000 compliant messages for
a victim domain, which dilutes its real failures below the blocker threshold and flips the
advice to "enforce". So a report's volume is compared with history before it is believed:

- a reporter with believed reports on `established_reporter_days` days of the last
  `WINDOW_DAYS` is held to `max_volume_factor` times its own median day;
- a reporter new to the domain is held to that factor times the median day of the domain's
  largest established reporter, so a newcomer cannot outweigh the reporters already trusted;
- a domain with no established reporter yet (a new install) has nothing to compare with, and
  its first reports are believed;
- any reporter may always report `volume_floor` messages a day.

The median, not the mean or the maximum, is the yardstick, so raising it takes a majority of
the window's days: a flood cannot ratchet itself up geometrically within a day or two. A held
report is kept with its reason (like an unverified one) and believed once the admin trusts its
reporter (DMARCBOT_TRUSTED_REPORTERS). Reports given as bare files are the admin's own and are
not measured.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable

from analysis.limits import Limits

#: Days of believed history a report is compared with.
WINDOW_DAYS = 30
_DAY = 86_400
#: Every hold reason starts so: a believed copy of a held report does not lift it (that takes
#: the admin's trust), unlike a copy that lifts an authentication doubt.
HELD = "held for volume: "


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    """One believed aggregate report as the look-back sees it."""

    reporter_domain: str
    begin: int  # Unix seconds, UTC
    end: int
    messages: int


def is_held(reason: str | None) -> bool:
    return reason is not None and reason.startswith(HELD)


def window(begin: int) -> tuple[int, int]:
    """Unix seconds [low, high) of the reports a report beginning at `begin` is compared with:
    the `WINDOW_DAYS` days before its own day, and its own day (what was reported so far)."""
    day = begin - begin % _DAY
    return day - WINDOW_DAYS * _DAY, day + _DAY


def _days(begin: int, end: int) -> int:
    return max(1, -(-(end - begin) // _DAY))


def _daily(sent: Iterable[Sent]) -> dict[str, dict[int, float]]:
    """Messages per reporter per UTC day; a multi-day report is spread over its days."""
    out: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for s in sent:
        days = _days(s.begin, s.end)
        first = s.begin - s.begin % _DAY
        for i in range(min(days, WINDOW_DAYS + 1)):
            out[s.reporter_domain][first + i * _DAY] += s.messages / days
    return out


def hold_reason(reporter_domain: str, begin: int, end: int, messages: int,
                mine: Iterable[Sent], others: Callable[[], Iterable[Sent]],
                limits: Limits) -> str | None:
    """Why a believed report is held for its volume, or None when it may be believed.

    `mine`: this reporter's believed reports for the domain within `window(begin)`; `others`:
    every reporter's, asked only when this one is new to the domain.
    """
    today = begin - begin % _DAY
    per_day = messages / _days(begin, end)
    own = _daily(mine).get(reporter_domain, {})
    so_far = own.pop(today, 0.0)
    if so_far + per_day <= limits.volume_floor:
        return None  # under the floor whatever the history: most reports, no more to read
    past = [v for day, v in own.items() if day < today]
    if len(past) >= limits.established_reporter_days:
        usual = statistics.median(past)
        yardstick = f"{reporter_domain}'s usual {usual:,.0f} a day"
    else:
        established = [statistics.median(v for d, v in days.items() if d < today)
                       for r, days in _daily(others()).items()
                       if r != reporter_domain
                       and sum(d < today for d in days) >= limits.established_reporter_days]
        if not established:
            return None  # nothing to compare with yet: the domain's first reporters
        usual = max(established)
        yardstick = (f"the {usual:,.0f} a day of the domain's largest established reporter "
                     f"({reporter_domain} is new to it)")
    cap = max(limits.max_volume_factor * usual, limits.volume_floor)
    if so_far + per_day <= cap:
        return None
    claimed = f"{per_day:,.0f} messages a day" + (f" (with {so_far:,.0f} already that day)"
                                                  if so_far else "")
    return (f"{HELD}{claimed} is over {limits.max_volume_factor}x {yardstick} (limit "
            f"max_volume_factor={limits.max_volume_factor})")


class VolumeCheck:
    """One report's measurement: the store judges it inside its transaction (where the history
    is), and the caller reads `held` afterwards to say why the report is not believed."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.held: str | None = None

    def judge(self, reporter_domain: str, begin: int, end: int, messages: int,
              mine: Iterable[Sent], others: Callable[[], Iterable[Sent]]) -> str | None:
        self.held = hold_reason(reporter_domain, begin, end, messages, mine, others, self.limits)
        return self.held
