"""Owners' decisions in Teams: the bot's card actions, recorded in the SharePoint list.

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
import ssl
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from analysis.verdicts import ServiceVerdict
from cards.approval import approval_card
from cards.decision import Decision, decision_card, read_only_card, retry_card
from cards.facts import ApprovalFacts, approval_facts_from
from function_app.approvals import (
    VERBS,
    ApprovalSettings,
    Notice,
    Refused,
    Verb,
    due,
    take_decision,
)
from graph.bot_auth import Caller
from graph.bot_connector import BotConnector, ensure_app_installed, user_object_id
from graph.client import GraphConnection
from graph.errors import Conflict, GraphError
from graph.senders_list import NewSender, SenderItem, SendersList

if TYPE_CHECKING:
    from analysis.catalog import Catalog
    from analysis.dnsevidence import DnsEvidence
    from function_app.settings import TeamsSettings
    from store.base import Store
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
        self.read[domain, service_key] = item
        return inventory_item(item)

    async def save(self, item: InventoryItem, *, if_status: str) -> bool:
        current = self.read[item.policy_domain, item.service_key]
        if current.status != if_status or item.decided_by is None or item.decided_at is None:
            return False
        handed_to = item.owner if item.status == "Pending" else None  # Not mine
        try:
            # the PATCH answers with the item as written: kept, so it need not be read again
            self.read[item.policy_domain, item.service_key] = await self.senders.decide(
                current, item.status, item.decided_by,  # type: ignore[arg-type]
                _moment(item.decided_at), owner_upn=handed_to)
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
                                              self.settings, new_owner=new_owner)
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
        return card_for(records.read.get((domain.lower(), service), item), who, self.settings)


def _verb(verb: str) -> Verb:
    assert verb in VERBS
    return verb  # type: ignore[return-value]


def _day(value: dt.datetime | None) -> str:
    return value.date().isoformat() if value else ""


def _stamp(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _moment(stamp: str) -> dt.datetime:
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)



# -- asking owners in Teams ------------------------------------------------------------------


class TeamsNotifier:
    """Sends a card to a person's 1:1 chat with the bot, installing the app for them first."""

    def __init__(self, graph: GraphConnection, connector: BotConnector, tenant_id: str,
                 teams_app_id: str, service_url: str) -> None:
        self.graph = graph
        self.connector = connector
        self.tenant_id = tenant_id
        self.teams_app_id = teams_app_id
        self.service_url = service_url

    async def user_id(self, upn: str) -> str:
        return await user_object_id(self.graph, upn)

    async def send(self, user_id: str, card: dict[str, Any]) -> SentCard:
        await ensure_app_installed(self.graph, user_id, self.teams_app_id)
        conversation = await self.connector.create_conversation(self.service_url, user_id,
                                                                self.tenant_id)
        activity = await self.connector.send_card(self.service_url, conversation, card)
        return SentCard(user_id, conversation, activity, self.service_url)


@dataclasses.dataclass(frozen=True, slots=True)
class SentCard:
    user_id: str
    conversation_id: str
    activity_id: str
    service_url: str


async def notify_owners(senders: SendersList, verdicts: Iterable[ServiceVerdict],
                        notifier: TeamsNotifier, settings: ApprovalSettings,
                        now: dt.datetime) -> list[Notice]:
    """The notify step in Microsoft 365: the list is the record, Teams the way to the owner.

    Each sender that needs a decision gets its list item (Pending when new; never reset once
    decided). Whatever `approvals.due` says is due is recorded on the item first, then sent, so
    a crash in between never asks twice; the card's ids are kept to update it later. One
    sender's failure (an owner not in the directory, Teams blocked) does not stop the others.
    """
    sent: list[Notice] = []
    for verdict in verdicts:
        if not verdict.needs_decision:
            continue
        try:
            notice = await _notify_one(senders, verdict, notifier, settings, now)
        except GraphError as exc:
            log.warning("could not ask the owner of %s %s (%s %s); trying again next time",
                        verdict.domain, verdict.service_key, exc.status, exc.code)
            continue
        if notice is not None:
            sent.append(notice)
    return sent


async def _notify_one(senders: SendersList, verdict: ServiceVerdict, notifier: TeamsNotifier,
                      settings: ApprovalSettings, now: dt.datetime) -> Notice | None:
    item, _ = await senders.ensure_pending(NewSender(
        verdict.domain, verdict.service_key, verdict.service_name, verdict.first_day,
        verdict.last_day, verdict.messages,
        verdict.dmarc_pass / verdict.messages if verdict.messages else None,
        owner_upn=settings.default_owners.get(verdict.domain),
        evidence="\n".join(verdict.evidence), category=verdict.category,
        verdict=verdict.verdict))
    if not item.owner_upn or due(inventory_item(item, owner="upn"), now, settings) is None:
        return None
    # the person to ask, by the id a click will carry: recorded before the card goes out
    user = await notifier.user_id(item.owner_upn)
    if item.owner_id != user:
        item = await senders.set_owner_id(item, user)  # a new person is asked afresh
    notice = due(inventory_item(item, owner="upn"), now, settings)
    if notice is None:
        return None
    stamp = {"ask": "asked_at", "remind": "last_reminded", "alert": "last_alerted"}[notice]
    # an alert records the day of sending it is about (see approvals.noticed)
    when = item.last_seen if notice == "alert" and item.last_seen else now
    try:
        item = await senders.touch(item, **{stamp: when})
    except Conflict:
        return None  # decided a moment ago: nothing to ask
    item_facts = approval_facts_from(verdict, item_id=item.id,
                                     request_id=f"{item.id}|{_stamp(now)}", owner=item.owner_upn)
    card = approval_card(item_facts) if notice != "alert" else read_only_card(
        item_facts, "Rejected", Decision("reject", item.decided_by or "", item.decided_at or now))
    try:
        delivered = await notifier.send(user, card)
    except GraphError:
        await senders.touch(item, **{stamp: None})  # not sent: due again next time
        raise
    await senders.set_card(item, delivered.conversation_id, delivered.activity_id,
                           delivered.service_url)
    return notice


def senders_list(config: TeamsSettings) -> SendersList:
    from function_app.mailjob import shared_graph

    return SendersList(shared_graph(config.credential, config.graph_url), config.site_id,
                       config.list_id)


async def domains_waiting(config: TeamsSettings) -> set[str]:
    """Domains with a sender waiting for its owner, or rejected (alerts need its verdict)."""
    senders = senders_list(config)
    waiting = await senders.by_status("Pending") + await senders.by_status("Rejected")
    return {item.domain for item in waiting}


async def ask_owners(config: TeamsSettings, verdicts: Iterable[ServiceVerdict],
                     settings: ApprovalSettings) -> list[Notice]:
    """The Microsoft 365 notify step, with this worker's connections."""
    from function_app.mailjob import shared_graph
    from graph.credentials import credential_for

    ca = config.credential.ca_bundle
    async with BotConnector(credential_for(config.credential), config.credential.client_id,
                            verify=ssl.create_default_context(cafile=str(ca)) if ca else True
                            ) as connector:
        notifier = TeamsNotifier(shared_graph(config.credential, config.graph_url), connector,
                                 config.credential.tenant_id, config.teams_app_id,
                                 config.service_url)
        return await notify_owners(senders_list(config), verdicts, notifier, settings,
                                   dt.datetime.now(dt.UTC))


async def send_digests(config: TeamsSettings, store: Store, catalog: Catalog,
                       dns: DnsEvidence | None, settings: ApprovalSettings,
                       today: dt.date) -> int:
    """Each domain's weekly digest to its default owner: volume, pass rate, senders by status
    (from the list), impostors and the next step to enforcement. Returns the cards sent."""
    from analysis.posture import assess
    from analysis.senders import analyse_rollups
    from cards.digest import digest_card
    from cards.facts import digest_facts_from
    from function_app.mailjob import shared_graph
    from graph.credentials import credential_for

    since = today - dt.timedelta(days=7)
    period = (since, today - dt.timedelta(days=1))
    senders = senders_list(config)
    ca = config.credential.ca_bundle
    sent = 0
    async with BotConnector(credential_for(config.credential), config.credential.client_id,
                            verify=ssl.create_default_context(cafile=str(ca)) if ca else True
                            ) as connector:
        notifier = TeamsNotifier(shared_graph(config.credential, config.graph_url), connector,
                                 config.credential.tenant_id, config.teams_app_id,
                                 config.service_url)
        for domain, owner in sorted(settings.default_owners.items()):
            _, verdicts, _ = await analyse_rollups(
                store.rollups(domain=domain, since=since.isoformat()), catalog, dns)
            if not verdicts:
                continue  # no mail this week: nothing to say
            items = {i.service_key: i for i in await senders.for_domain(domain)}
            statuses = {k: i.status for k, i in items.items()}
            owners = {k: i.owner_upn for k, i in items.items() if i.owner_upn}
            posture = await assess(domain, dns, verdicts, statuses, catalog)  # type: ignore[arg-type]
            card = digest_card(digest_facts_from(posture, verdicts, statuses, period=period,
                                                 owners=owners))
            try:
                await notifier.send(await notifier.user_id(owner), card)
            except GraphError as exc:
                log.warning("the digest of %s was not delivered (%s %s)", domain, exc.status,
                            exc.code)
                continue
            sent += 1
    return sent
