"""The notify step: each sender that needs its owner's decision gets a card, once.

After identification, every (domain, service) due for a card (asked never, a reminder due, or a
rejected sender still sending; see `approvals.due`) is recorded as noticed first and then sent,
so a crash in between leaves it unasked until its reminder rather than asked twice. Where cards
go is the notifier's business: Teams, or the local outbox.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from analysis.verdicts import ServiceVerdict
from cards.approval import approval_card
from cards.decision import decision_card, read_only_card
from cards.facts import ApprovalFacts, Decision, approval_facts_from
from function_app.approvals import ApprovalSettings, Notice, due, noticed
from store.base import InventoryItem, Store

log = logging.getLogger("dmarcbot.notify")


class Notifier(Protocol):
    async def send(self, to: str, card: dict[str, Any], *, kind: str, domain: str,
                   service: str | None = None) -> object: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    notice: Notice
    item: InventoryItem


def facts_for(verdict: ServiceVerdict, item: InventoryItem) -> ApprovalFacts:
    """The card facts of one sender; ids name the (domain, service) and when it was asked."""
    item_id = f"{item.policy_domain}|{item.service_key}"
    return approval_facts_from(verdict, item_id=item_id,
                               request_id=f"{item_id}|{item.asked_at or ''}", owner=item.owner)


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


async def notify(store: Store, verdicts: Iterable[ServiceVerdict], notifier: Notifier,
                 settings: ApprovalSettings, now: dt.datetime) -> list[Sent]:
    """Send every card that is due; returns what was sent."""
    inventory = store.inventory()
    sent: list[Sent] = []
    for verdict in verdicts:
        item = inventory.get((verdict.domain, verdict.service_key))
        if not verdict.needs_decision or item is None:
            continue
        notice = due(item, now, settings)
        if notice is None:
            continue
        after = noticed(item, notice, now, settings)
        if not store.update_item(after, if_status=item.status):
            continue  # decided a moment ago: nothing to ask
        facts = facts_for(verdict, after)
        if notice == "alert":
            assert after.decided_by and after.decided_at
            card = read_only_card(facts, "Rejected",
                                  Decision("reject", after.decided_by, after.decided_at))
        else:
            card = approval_card(facts)
        assert after.owner is not None  # due() asks only senders with an owner
        try:
            await notifier.send(after.owner, card, kind=notice, domain=verdict.domain,
                                service=verdict.service_key)
        except Exception:
            store.update_item(item, if_status=after.status)  # not sent: due again next time
            raise
        log.info("%s sent for %s %s", notice, verdict.domain, verdict.service_key)
        sent.append(Sent(notice, after))
    return sent
