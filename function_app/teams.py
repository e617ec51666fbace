"""Owners' decisions in Teams: the bot's card actions, recorded in the SharePoint list.

(Asking owners, reminders, alerts and digests are in `teams_notify`.)

A click (Action.Execute) arrives at the bot endpoint with the clicker's Entra object id. The
decision goes through `approvals.take_decision`, as `dmarcbot decide` does, over the list item
(its eTag guards the write), and the answer is the card as it now stands: the decision for
everyone, the buttons only for the owner. Nothing here raises to Teams: a failed write is a card
with a Retry button.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from cards.approval import approval_card
from cards.decision import decision_card, read_only_card, retry_card
from cards.facts import ApprovalFacts, Decision
from function_app.approvals import (
    VERBS,
    ApprovalSettings,
    Refused,
    Verb,
    parse_stamp,
    stamp,
    take_decision,
)
from graph.bot_auth import Caller
from graph.bot_connector import user_object_id, user_principal_name
from graph.errors import Conflict, GraphError
from graph.senders_list import SenderItem, SendersList
from store.base import InventoryItem

log = logging.getLogger("dmarcbot.teams")


class ListRecords:
    """`approvals.DecisionRecords` over the SharePoint list.

    In Teams a person is their Entra object id, so an item's owner is its OwnerId (filled in
    when the card is sent); admins may be named by object id in DMARCBOT_ADMINS.
    """

    def __init__(self, senders: SendersList,
                 seen: dict[tuple[str, str], SenderItem] | None = None) -> None:
        self.senders = senders
        self.read: dict[tuple[str, str], SenderItem] = {}
        self._seen = dict(seen or {})  # an item read a moment ago, used for the first look only

    async def get(self, domain: str, service_key: str) -> InventoryItem | None:
        item = self._seen.pop((domain, service_key), None)
        if item is None:  # a second look (after losing a race) asks SharePoint again
            item = await self.senders.get(domain, service_key)
        if item is None:
            return None
        # under the names asked for and the names the list keeps (the case may differ)
        self.read[domain, service_key] = self.read[item.domain, item.service_key] = item
        return inventory_item(item)

    async def save(self, item: InventoryItem, *, if_status: str) -> bool:
        current = self.read[item.policy_domain, item.service_key]
        if current.status != if_status or item.decided_by is None or item.decided_at is None:
            return False
        handed_to = item.owner if item.status == "Pending" else None  # Not mine
        try:
            # the PATCH answers with the item as written: kept, so it need not be read again
            written = await self.senders.decide(
                current, item.status, item.decided_by,  # type: ignore[arg-type]
                parse_stamp(item.decided_at), owner_upn=handed_to)
            self.read[item.policy_domain, item.service_key] = written
        except Conflict:
            return False  # decided by someone else since it was read
        return True


def inventory_item(item: SenderItem, *, owner: str = "id") -> InventoryItem:
    """The item as `approvals` sees it. Its owner is the Entra object id (`owner="id"`: what a
    click is checked against) or the UPN (`owner="upn"`: whom to ask)."""
    messages = item.messages
    return InventoryItem(
        policy_domain=item.domain, service_key=item.service_key, status=item.status,
        owner=item.owner_id if owner == "id" else item.owner_upn,
        first_seen=_day(item.first_seen), last_seen=_day(item.last_seen),
        messages=messages, dmarc_pass=round((item.pass_rate or 0.0) * messages),
        decided_by=item.decided_by, decided_at=_stamp(item.decided_at),
        asked_at=_stamp(item.asked_at), reminded_at=_stamp(item.last_reminded),
        alerted_at=_stamp(item.last_alerted))


def facts(item: SenderItem) -> ApprovalFacts:
    """The card facts the list keeps (sources and records are on the first card only)."""
    return ApprovalFacts(
        domain=item.domain, service_key=item.service_key, service_name=item.service_name,
        category=item.category or "", messages=item.messages,
        dmarc_pass=round((item.pass_rate or 0.0) * item.messages),
        first_seen=_day(item.first_seen), last_seen=_day(item.last_seen),
        verdict=item.verdict or "", item_id=item.id,
        request_id=f"{item.id}|{_stamp(item.asked_at) or ''}",
        evidence=tuple(line for line in (item.evidence or "").splitlines() if line.strip()),
        owner=item.owner_upn)


def card_for(item: SenderItem, viewer: str | None, settings: ApprovalSettings) -> dict[str, Any]:
    """The card as it stands for `viewer` (an object id), chosen by the item's status.

    Pending: the buttons for who may decide (a new owner after Not mine included), the
    read-only card for everyone else. Decided: the decision, for everyone.
    """
    f = facts(item)
    if item.status == "Pending":
        if viewer and settings.may_decide(inventory_item(item), viewer):
            return approval_card(f)
        return read_only_card(f, item.status)
    if item.status in ("Approved", "Rejected") and item.decided_by and item.decided_at:
        verb = "approve" if item.status == "Approved" else "reject"
        return decision_card(f, Decision(verb, item.decided_by, item.decided_at))
    return read_only_card(f, item.status)  # decided in the list itself, or a status of its own


CLICK_BUDGET = 4.0  # seconds: Teams waits about 5 for the answer to a card action


class CardActions:
    """The bot's `on_action`: Approve, Reject, Not mine and refresh, for one list."""

    def __init__(self, senders: SendersList, settings: ApprovalSettings) -> None:
        self.senders = senders
        self.settings = settings
        self._admins_resolved = False

    async def _resolve_admins(self) -> None:
        """Admins named by UPN are known to Teams by object id: look them up once."""
        ids = set(self.settings.admins)
        for admin in self.settings.admins:
            if "@" in admin:
                try:
                    ids.add((await user_object_id(self.senders.graph, admin)).lower())
                except GraphError as exc:
                    log.warning("admin %s not found in the directory (%s)", admin, exc.code)
        self.settings = dataclasses.replace(self.settings, admins=frozenset(ids))
        self._admins_resolved = True

    async def _name_of(self, who: str, item: SenderItem) -> str:
        """The decider as people know them: the owner's UPN, else the directory's, else the id
        (a click carries only the Entra object id)."""
        if item.owner_id == who and item.owner_upn:
            return item.owner_upn
        try:
            return await user_principal_name(self.senders.graph, who)
        except GraphError:
            return who

    async def __call__(self, caller: Caller, verb: str, data: Mapping[str, Any]
                       ) -> dict[str, Any]:
        if not self._admins_resolved:
            await self._resolve_admins()
        domain, service = str(data.get("domain") or ""), str(data.get("service") or "")
        item = await self.senders.get(domain, service)
        if item is None:
            raise LookupError("the card names no sender in the list")  # the endpoint answers
        who = caller.aad_object_id
        if verb == "refresh" or verb not in VERBS or who is None:
            return card_for(item, who, self.settings)
        new_owner = data.get("owner") if isinstance(data.get("owner"), str) else None
        records = ListRecords(self.senders, seen={(domain.lower(), service): item})
        try:
            async with asyncio.timeout(CLICK_BUDGET):  # Teams gives up on a slow answer
                outcome = await take_decision(records, domain, service,
                                              _verb(verb), who, dt.datetime.now(dt.UTC),
                                              self.settings, new_owner=new_owner,
                                              recorded_as=await self._name_of(who, item))
        except Refused as exc:
            log.info("card action %s refused (%s)", verb, exc.code)
            return card_for(item, who, self.settings)  # Not mine without an address: the form
        except (GraphError, TimeoutError) as exc:
            log.warning("recording a decision failed (%s)", getattr(exc, "code", None)
                        or type(exc).__name__)
            return retry_card(facts(item), "the list of senders could not be updated",
                              verb=verb, new_owner=new_owner)
        if outcome.changed:
            log.info("%s: %s decided %s", verb, domain, service)
        return card_for(records.read.get((item.domain, item.service_key), item), who,
                        self.settings)


def _verb(verb: str) -> Verb:
    assert verb in VERBS
    return verb


def _day(value: dt.datetime | None) -> str:
    return value.date().isoformat() if value else ""


def _stamp(value: dt.datetime | None) -> str | None:
    return stamp(value) if value else None
