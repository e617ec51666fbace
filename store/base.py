"""The one small interface every store implements (SQLite here, Azure Table Storage in Azure)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import date
from typing import Literal, Protocol

from analysis.dnsevidence import Answer
from analysis.model import Report
from analysis.rollup import LedgerKey, RollupKey, SourceRollup
from analysis.volume import VolumeCheck

#: `conflict`: stored, but another report has the same ledger key and other content; both are
#: kept, flagged, and left out of `rollups()` (what is believed) until resolved (issue 13).
AddResult = Literal["stored", "conflict", "duplicate"]


class StoreError(Exception):
    """The store cannot be used (wrong schema version, unreadable file); one-line message."""


class StorageRefused(StoreError):
    """Azure Storage answered with a refusal; `status` is its HTTP status (401/403: the identity
    lacks a role), None when no answer came with one (no identity to sign in with)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerEntry:
    key: LedgerKey
    org_name: str
    schema: str | None
    source: str
    records: int
    messages: int
    errors: tuple[str, ...]
    stored_at: str
    conflict: bool = False  # another report has this key and other content (see AddResult)
    #: Why the e-mail that delivered it is not believed (None: it is, or it was a bare file).
    unverified: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class InventoryItem:
    """A sender of a domain and its owner's decision (`Pending` until someone decides)."""

    policy_domain: str
    service_key: str
    status: str
    owner: str | None
    first_seen: str
    last_seen: str
    messages: int
    dmarc_pass: int
    decided_by: str | None
    decided_at: str | None
    asked_at: str | None = None  # when its owner was last sent the approval card
    reminded_at: str | None = None  # when its owner was last reminded
    alerted_at: str | None = None  # the last day of sending its owner was alerted about


@dataclasses.dataclass(frozen=True, slots=True)
class Recalled:
    """What the last naming of a domain left for this one (`Store.recall_naming`)."""

    #: analysis.remembered.naming_context of the kept identifications; None when nothing is
    #: remembered (then the domain's whole history is named, from `Store.sources`)
    context: str | None
    #: source IP -> its identification (analysis.remembered.encode), for each source whose
    #: reports did not change since
    kept: Mapping[str, str]
    #: the whole believed history (as `Store.sources` gives it) of every source that changed
    changed: Sequence[SourceRollup]


NOTHING_RECALLED = Recalled(None, {}, ())


def basis(unverified: str | None, reporter_domain: str | None) -> str:
    """Whom a report's rows in the source rollups are believed on: '' believed, `~<reporter
    domain>` unverified or held (believed once the reporter is trusted, as `Store.rollups`)."""
    return "" if unverified is None else "~" + (reporter_domain or "")


def believed_bases(trusted_reporters: Collection[str]) -> list[str]:
    return ["", *sorted({"~" + t.lower() for t in trusted_reporters})]


class Store(Protocol):
    def add_report(self, report: Report, *, unverified: str | None = None,
                   volume: VolumeCheck | None = None) -> AddResult:
        """Store a report whole, in one transaction, or not at all; a second copy changes nothing
        (a copy: same ledger key and same `ContentDigest`; same key and other content is a
        `conflict`, stored beside the first whichever came first).

        `unverified`: why the e-mail that delivered it is not believed (analysis.mailauth), None
        when it is or the report is a bare file. Such a report is kept, not believed.
        `volume`: for a believed report from mail, measure its volume against its reporter's
        history (analysis.volume); one that claims too much is kept and held, not believed, its
        reason in `unverified`. A believed copy of a held report does not lift the hold.

        Consumes an aggregate report's records. If reading them fails, nothing is stored and the
        error propagates.
        """
        ...

    def reports(self, *, domain: str | None = None, since: str | None = None,
                kind: str | None = None) -> Iterator[LedgerEntry]:
        """Ledger entries, optionally for one policy domain and ending on or after `since`."""
        ...

    def rollups(self, *, domain: str | None = None, since: str | None = None,
                conflicting: bool = False, trusted_reporters: Collection[str] = ()
                ) -> Iterator[tuple[RollupKey, int]]:
        """Daily rollup rows and their message counts, `since` a YYYY-MM-DD UTC day: what is
        believed. Left out unless `conflicting` (which shows everything stored): reports whose
        e-mail is not believed, unless their reporter's domain is in `trusted_reporters`, and
        reports in conflict with another believed report of their key.
        """
        ...

    def sources(self, domain: str, *, trusted_reporters: Collection[str] = ()
                ) -> Iterator[SourceRollup]:
        """The domain's whole believed history with its days folded (`analysis.rollup.
        SourceRollup`), by the same rule as `rollups()`: what naming reads. Kept up to date at
        ingest and by retention, so reading it costs the domain's distinct sending patterns,
        not its days; `analysis.identify.activities_from_sources` turns it into the sources that
        `rollups(domain=...)` would give, exactly (issue 14)."""
        ...

    def recall_naming(self, domain: str, *, trusted_reporters: Collection[str] = ()
                      ) -> Recalled:
        """The identifications the last naming of the domain's whole history kept, and the
        history of the sources that changed since: what a naming needs to name only those.
        From here on, a change counts for the next naming unless `remember_naming` follows."""
        ...

    def remember_naming(self, domain: str, context: str,
                        identifications: Iterable[tuple[str, str]], *, whole: bool) -> None:
        """Keep these identifications ((source IP, analysis.remembered.encode), made as they
        are read: a store that keeps nothing spends nothing on them) and their
        context for the next naming, after the one that `recall_naming` began: `whole` when
        every source of the domain was named (the others are forgotten), else only the sources
        that changed. A store may keep nothing (then every naming reads the whole history)."""
        ...

    def naming_mark(self) -> str | None:
        """When the last scheduled step of the Functions timer that completed began (ISO 8601,
        UTC; `set_naming_mark`), None before the first: the timer names the domains with
        reports stored since (function_app.schedule.stored_since)."""
        ...

    def set_naming_mark(self, stamp: str) -> None: ...

    def domains(self, *, stored_since: str | None = None) -> list[str]:
        """Policy domains with aggregate reports, sorted; with `stored_since` (ISO 8601, UTC)
        those with one stored at or after it (Table Storage may add some stored in the hour
        before: never fewer)."""
        ...

    def expire(self, before: date) -> int:
        """Retention: fold the daily rows of reports that ended before `before` into monthly
        rollups, then delete those rows and the reports' ledger entries; `sources()` keeps
        their history. Reports in conflict and TLS and failure reports stay. Idempotent; a
        crash half-way loses nothing. Returns how many reports were expired."""
        ...

    # The DNS cache (analysis.dnsevidence.DnsCache): answers kept until their TTL runs out.

    def get_answer(self, name: str, rdtype: str, now: float) -> Answer | None: ...

    def get_answers(self, keys: Collection[tuple[str, str]], now: float
                    ) -> dict[tuple[str, str], Answer]: ...

    def put_answer(self, answer: Answer) -> None: ...

    def flush(self) -> None:
        """Write the answers `put_answer` kept back (Table Storage writes them in batches)."""
        ...

    # The inventory of senders per domain and their owners' decisions.

    def inventory(self, domain: str | None = None) -> dict[tuple[str, str], InventoryItem]: ...

    def note_seen(self, domain: str, service_key: str, first_seen: str, last_seen: str,
                  messages: int, dmarc_pass: int, *, whole_history: bool = True
                  ) -> InventoryItem:
        """Record a sender as seen; a new one starts `Pending`, a known one keeps its status."""
        ...

    def update_item(self, item: InventoryItem, *, if_status: str) -> bool:
        """Write an item's owner, decision and notification times, if its status is still
        `if_status`; False when someone else changed it first (so two decisions cannot both
        win). Volumes and first/last seen are `note_seen`'s."""
        ...

    def close(self) -> None: ...
