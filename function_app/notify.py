"""The notify step: each sender that needs its owner's decision gets a card, once.

One loop for every way of asking. What is due is `approvals.due`, applied here and nowhere
else; where the asking is recorded (the store's inventory, or the SharePoint list in Microsoft
365) and how a card travels (the local outbox, or Teams) belong to the adapters behind
`NoticeRecords` and `CardSender`. A notice is recorded first and then sent, so a crash in
between leaves the sender unasked until its reminder rather than asked twice; a card that
fails to go out has its mark undone, and is due again next run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any, Generic, Protocol, TypeVar

from analysis.verdicts import ServiceVerdict
from cards.approval import approval_card
from cards.decision import decision_card, read_only_card
from cards.facts import ApprovalFacts, Decision, approval_facts_from
from function_app.approvals import ApprovalSettings, Notice, due, item_key, noticed, stamp
from store.base import InventoryItem

log = logging.getLogger("dmarcbot.notify")

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
R_contra = TypeVar("R_contra", contravariant=True)


class NoticeRecords(Protocol[R_contra]):
    """Where what was asked of whom is kept. Items are `InventoryItem`s whose owner is the
    person's UPN, whatever the record calls them."""

    async def waiting(self) -> Iterable[InventoryItem]:
        """Every item that may be due a card (at least the Pending and the Rejected ones)."""
        ...

    async def item_for(self, verdict: ServiceVerdict) -> InventoryItem | None:
        """The sender's item once what the reports say of it is recorded (a new one starts
        Pending); None when the record has no such sender."""
        ...

    async def address(self, item: InventoryItem, owner: str) -> tuple[InventoryItem, str]:
        """How the card sender reaches `owner`, recorded on the item before a card goes out
        (a different person from the one asked before is asked afresh), and the item after."""
        ...

    async def mark(self, notice: Notice, before: InventoryItem,
                   after: InventoryItem) -> InventoryItem | None:
        """Record `notice` (`after` is `before` once noticed); None when the sender was decided
        since it was read: nothing to ask."""
        ...

    async def unmark(self, notice: Notice, before: InventoryItem, after: InventoryItem) -> None:
        """Undo `mark`: the card did not go out."""
        ...

    async def card_sent(self, item: InventoryItem, receipt: R_contra) -> None:
        """Keep what the card sender says of the card (to update it after a decision)."""
        ...

    def item_id(self, item: InventoryItem) -> str:
        """The id that a card's actions carry back to name the item."""
        ...


class CardSender(Protocol[R_co]):
    async def send(self, to: str, card: dict[str, Any], *, kind: str, domain: str,
                   service: str | None = None) -> R_co | None:
        """Deliver one card; None when the person refuses cards for now (the mark stays, so
        the reminder tries again instead of every run)."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Asking(Generic[R]):
    """How owners are asked: the record, the way cards go, and whom to ask when.

    `contain`: errors that fail one sender and not the run (a cloud call refused for one owner
    must not stop the others); any other error stops the step.
    """

    records: NoticeRecords[R]
    cards: CardSender[R]
    settings: ApprovalSettings
    contain: tuple[type[Exception], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    notice: Notice
    item: InventoryItem


def facts_for(verdict: ServiceVerdict, item: InventoryItem,
              item_id: str | None = None) -> ApprovalFacts:
    """The card facts of one sender; ids name the record's item and when its owner was asked
    (as a card rebuilt later from the record names them)."""
    item_id = item_id or item_key(item)
    return approval_facts_from(verdict, item_id=item_id,
                               request_id=f"{item_id}|{item.asked_at or ''}", owner=item.owner)


def notice_card(verdict: ServiceVerdict, item: InventoryItem, notice: Notice, item_id: str,
                now: dt.datetime) -> dict[str, Any]:
    """The approval card for an ask or a reminder; for an alert, the decision without buttons."""
    facts = facts_for(verdict, item, item_id)
    if notice == "alert":
        return read_only_card(facts, "Rejected", Decision(
            "reject", item.decided_by or "", item.decided_at or stamp(now)))
    return approval_card(facts)


def decided_card(verdict: ServiceVerdict, item: InventoryItem) -> dict[str, Any]:
    """The card after a decision (or the read-only one while it is pending)."""
    facts = facts_for(verdict, item)
    if item.status == "Pending" and item.decided_by and item.decided_at:  # handed on (Not mine)
        return decision_card(facts, Decision("notmine", item.decided_by, item.decided_at,
                                             handed_to=item.owner))
    if item.status in ("Approved", "Rejected") and item.decided_by and item.decided_at:
        verb = "approve" if item.status == "Approved" else "reject"
        return decision_card(facts, Decision(verb, item.decided_by, item.decided_at))
    return read_only_card(facts, item.status)


async def notify(asking: Asking[R], verdicts: Iterable[ServiceVerdict],
                 now: dt.datetime) -> list[Sent]:
    """Send every card that is due; returns what was sent."""
    sent: list[Sent] = []
    for verdict in verdicts:
        if not verdict.needs_decision:
            continue
        try:
            done = await _notify_one(asking, verdict, now)
        except asking.contain as exc:
            log.warning("could not ask the owner of %s %s (%s); trying again next time",
                        verdict.domain, verdict.service_key, _why(exc))
            continue
        if done is not None:
            sent.append(done)
    return sent


async def _notify_one(asking: Asking[R], verdict: ServiceVerdict,
                      now: dt.datetime) -> Sent | None:
    records, settings = asking.records, asking.settings
    item = await records.item_for(verdict)
    if item is None or due(item, now, settings) is None:
        return None
    owner = settings.owner_of(item)
    assert owner is not None  # due() asks only senders with an owner
    item, to = await records.address(item, owner)
    notice = due(item, now, settings)  # a new person is asked afresh
    if notice is None:
        return None
    marked = await records.mark(notice, item, noticed(item, notice, now, settings))
    if marked is None:
        return None  # decided a moment ago: nothing to ask
    card = notice_card(verdict, marked, notice, records.item_id(marked), now)
    try:
        receipt = await asking.cards.send(to, card, kind=notice, domain=verdict.domain,
                                          service=verdict.service_key)
    except Exception:
        await records.unmark(notice, item, marked)  # not sent: due again next time
        raise
    if receipt is None:
        return None
    await records.card_sent(marked, receipt)
    log.info("%s sent for %s %s", notice, verdict.domain, verdict.service_key)
    return Sent(notice, marked)


def _why(exc: Exception) -> str:
    """An error's status and code (never its text: it may quote what it was sent)."""
    parts = [str(p) for p in (getattr(exc, "status", None), getattr(exc, "code", None)) if p]
    return " ".join(parts) or type(exc).__name__
