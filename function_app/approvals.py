"""Owners' decisions: who is asked about which sender, when, and how a decision is taken.

The rules are pure functions over inventory items (`due`, `decide`). `take_decision` applies
one to a record kept elsewhere (the local store, or the SharePoint list in Microsoft 365): the
command line's `dmarcbot decide` and the Teams bot go through it alike, and a decision is
written only over the status it was taken on, so two clicks cannot both win.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, Protocol

from store.base import InventoryItem, Store

if TYPE_CHECKING:
    from analysis.verdicts import ServiceVerdict

Verb = Literal["approve", "reject", "notmine"]
Notice = Literal["ask", "remind", "alert"]
VERBS: tuple[Verb, ...] = ("approve", "reject", "notmine")
_UPN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class Refused(Exception):
    """A decision that cannot be taken; `code` says why, the message says it to a person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True, slots=True)
class ApprovalSettings:
    """Who decides by default, who may always decide, and how patient reminders are."""

    default_owners: Mapping[str, str] = dataclasses.field(default_factory=dict)  # domain → UPN
    admins: frozenset[str] = frozenset()  # UPNs, lower case
    remind_after_days: int = 7

    def owner_of(self, item: InventoryItem) -> str | None:
        """The sender's owner: the one recorded for it, else the domain's default owner."""
        return item.owner or self.default_owners.get(item.policy_domain)

    def may_decide(self, item: InventoryItem, who: str) -> bool:
        who = who.strip().lower()
        owner = self.owner_of(item)
        return who in self.admins or (owner is not None and who == owner.lower())


def parse_owners(text: str) -> dict[str, str]:
    """`contoso.com=ann@contoso.com, fabrikam.com=bob@fabrikam.com` → {domain: UPN}."""
    owners: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        domain, sep, upn = part.partition("=")
        if not sep or not domain.strip() or not _UPN.fullmatch(upn.strip()):
            raise ValueError(f"{part!r} is not DOMAIN=OWNER@DOMAIN")
        owners[domain.strip().lower()] = upn.strip()
    return owners


def due(item: InventoryItem, now: dt.datetime, settings: ApprovalSettings) -> Notice | None:
    """What the sender's owner should be sent now, if anything.

    - ask: a Pending sender whose owner was never sent its card (never asked twice);
    - remind: still Pending `remind_after_days` after the last card or reminder;
    - alert: Rejected, yet seen sending after the decision (once per day it is seen).
    """
    if settings.owner_of(item) is None:
        return None
    if item.status == "Pending":
        if item.asked_at is None:
            return "ask"
        last = max(item.asked_at, item.reminded_at or "")
        if now - parse_stamp(last) >= dt.timedelta(days=settings.remind_after_days):
            return "remind"
    elif item.status == "Rejected" and item.decided_at:
        decided_day = item.decided_at[:10]
        if item.last_seen > decided_day and (item.alerted_at or "")[:10] < item.last_seen:
            return "alert"
    return None


def noticed(item: InventoryItem, notice: Notice, now: dt.datetime,
            settings: ApprovalSettings) -> InventoryItem:
    """The item once its owner has been sent `notice` (the owner is recorded with it)."""
    when = stamp(now)
    owner = settings.owner_of(item)
    if notice == "ask":
        return dataclasses.replace(item, owner=owner, asked_at=when)
    if notice == "remind":
        return dataclasses.replace(item, owner=owner, reminded_at=when)
    # an alert is about a day of sending: the next one waits for a later day to be seen
    return dataclasses.replace(item, owner=owner, alerted_at=f"{item.last_seen}T00:00:00Z")


def decide(item: InventoryItem, verb: Verb, who: str, now: dt.datetime,
           settings: ApprovalSettings, *, new_owner: str | None = None,
           recorded_as: str | None = None) -> InventoryItem:
    """The item after `who` clicks `verb`; `Refused` when they may not, or it makes no sense.

    Not mine hands the sender to `new_owner`, who is asked afresh; the sender stays Pending.
    `recorded_as` names the decider in the record when `who` is an id people cannot read.
    """
    if verb not in VERBS:
        raise Refused("unknown-verb", f"{verb!r} is not one of {', '.join(VERBS)}")
    if not settings.may_decide(item, who):
        owner = settings.owner_of(item) or "nobody yet"
        raise Refused("not-owner", f"only the sender's owner ({owner}) or an admin can decide")
    when = stamp(now)
    by = recorded_as or who
    if verb == "notmine":
        if new_owner is None or not _UPN.fullmatch(new_owner.strip()):
            raise Refused("no-owner", "name the right owner as an e-mail address")
        return dataclasses.replace(item, status="Pending", owner=new_owner.strip(),
                                   decided_by=by, decided_at=when, asked_at=None,
                                   reminded_at=None)
    status = "Approved" if verb == "approve" else "Rejected"
    return dataclasses.replace(item, status=status, owner=settings.owner_of(item),
                               decided_by=by, decided_at=when, alerted_at=None)


class DecisionRecords(Protocol):
    """Where decisions are kept: the store's inventory, or the SharePoint list."""

    async def get(self, domain: str, service_key: str) -> InventoryItem | None: ...

    async def save(self, item: InventoryItem, *, if_status: str) -> bool: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    item: InventoryItem
    changed: bool  # False: decided already (a double click), nothing written


async def take_decision(records: DecisionRecords, domain: str, service_key: str, verb: Verb,
                  who: str, now: dt.datetime, settings: ApprovalSettings, *,
                  new_owner: str | None = None, recorded_as: str | None = None) -> Outcome:
    """Decide for one sender, once: a sender decided already keeps its decision."""
    item = await records.get(domain.lower(), service_key)
    if item is None:
        raise Refused("unknown-sender", f"no sender {service_key!r} is known for {domain}")
    if item.status != "Pending":
        if not settings.may_decide(item, who):
            raise Refused("not-owner", "only the sender's owner or an admin can decide")
        return Outcome(item, changed=False)
    after = decide(item, verb, who, now, settings, new_owner=new_owner,
                   recorded_as=recorded_as)
    if not await records.save(after, if_status=item.status):
        current = await records.get(domain.lower(), service_key)
        return Outcome(current or item, changed=False)  # someone decided a moment earlier
    return Outcome(after, changed=True)


class StoreRecords:
    """The local mode's system of record: decisions (`DecisionRecords`) and what was asked of
    whom (`notify.NoticeRecords`), kept in the store's inventory. A person is their UPN here,
    and a card's receipt (the outbox file) needs no keeping."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, domain: str, service_key: str) -> InventoryItem | None:
        return self.store.inventory(domain).get((domain, service_key))

    async def save(self, item: InventoryItem, *, if_status: str) -> bool:
        return self.store.update_item(item, if_status=if_status)

    async def waiting(self) -> list[InventoryItem]:
        return list(self.store.inventory().values())

    async def item_for(self, verdict: ServiceVerdict) -> InventoryItem | None:
        # identification recorded it already (pipeline.find_senders): read it
        return await self.get(verdict.domain, verdict.service_key)

    async def address(self, item: InventoryItem, owner: str) -> tuple[InventoryItem, str]:
        return item, owner  # `noticed` records the owner with the notice

    async def mark(self, notice: Notice, before: InventoryItem,
                   after: InventoryItem) -> InventoryItem | None:
        return after if self.store.update_item(after, if_status=before.status) else None

    async def unmark(self, notice: Notice, before: InventoryItem, after: InventoryItem) -> None:
        self.store.update_item(before, if_status=after.status)

    async def card_sent(self, item: InventoryItem, receipt: object) -> None:
        return None

    def item_id(self, item: InventoryItem) -> str:
        return item_key(item)


def item_key(item: InventoryItem) -> str:
    """How a card names a sender where the record has no ids of its own: `domain|service`."""
    return f"{item.policy_domain}|{item.service_key}"


STAMP = "%Y-%m-%dT%H:%M:%SZ"  # how inventory items keep a moment: UTC, to the second


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(STAMP)


def parse_stamp(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, STAMP).replace(tzinfo=dt.UTC)
