"""Asking owners in Teams: each new sender's card, reminders, alerts and the weekly digest.

The SharePoint list is the record (what was asked, when, of whom); the Bot Connector carries
the cards to each owner's 1:1 chat with the bot, after installing the app for them if needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from analysis.verdicts import ServiceVerdict
from cards.approval import approval_card
from cards.decision import read_only_card
from cards.facts import Decision, approval_facts_from
from function_app.approvals import ApprovalSettings, Notice, due, stamp
from function_app.settings import trusted_reporters
from function_app.teams import inventory_item
from graph.bot_connector import BotConnector, ensure_app_installed, user_object_id
from graph.client import GraphConnection
from graph.errors import Blocked, Conflict, GraphError
from graph.senders_list import NewSender, SendersList

if TYPE_CHECKING:
    from analysis.catalog import Catalog
    from analysis.dnsevidence import DnsEvidence
    from function_app.settings import TeamsSettings
    from store.base import Store

log = logging.getLogger("dmarcbot.teams")


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
        """Deliver `card`. Right after installing the app for the person, Teams may need a few
        seconds before the chat can be created: only then is the not-installed answer waited
        out (bounded, see BotConnector.create_conversation)."""
        installation = await ensure_app_installed(self.graph, user_id, self.teams_app_id)
        conversation = await self.connector.create_conversation(
            self.service_url, user_id, self.tenant_id, after_install=installation.installed_now)
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
    A card that did not go out is due again next run, unless the owner blocked the bot: then
    the next try waits for the reminder (`remind_after_days`), not the next run.
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
    field = {"ask": "asked_at", "remind": "last_reminded", "alert": "last_alerted"}[notice]
    # an alert records the day of sending it is about (see approvals.noticed)
    when = item.last_seen if notice == "alert" and item.last_seen else now
    try:
        item = await senders.touch(item, **{field: when})
    except Conflict:
        return None  # decided a moment ago: nothing to ask
    item_facts = approval_facts_from(verdict, item_id=item.id,
                                     request_id=f"{item.id}|{stamp(now)}", owner=item.owner_upn)
    card = approval_card(item_facts) if notice != "alert" else read_only_card(
        item_facts, "Rejected", Decision("reject", item.decided_by or "", item.decided_at or now))
    try:
        delivered = await notifier.send(user, card)
    except Blocked as exc:
        # Teams says to stop writing until the person talks to the bot again: asking every run
        # would only be refused every run. The mark stays, so the reminder tries once more.
        log.warning("the owner of %s %s has blocked the bot or an admin disabled it (%s); "
                    "an admin should ask them to unblock it; next try with the reminder",
                    verdict.domain, verdict.service_key, exc.code)
        return None
    except GraphError:
        await senders.touch(item, **{field: None})  # not sent: due again next time
        raise
    await senders.set_card(item, delivered.conversation_id, delivered.activity_id,
                           delivered.service_url)
    return notice


def senders_list(config: TeamsSettings) -> SendersList:
    from function_app.connections import shared_graph

    return SendersList(shared_graph(config.credential, config.graph_url), config.site_id,
                       config.list_id)


async def domains_waiting(config: TeamsSettings) -> set[str]:
    """Domains with a sender waiting for its owner, or rejected (alerts need its verdict)."""
    senders = senders_list(config)
    waiting = await senders.by_status("Pending") + await senders.by_status("Rejected")
    return {item.domain for item in waiting}


@contextlib.asynccontextmanager
async def teams_notifier(config: TeamsSettings) -> AsyncIterator[TeamsNotifier]:
    """A notifier over this worker's Graph connection and a Bot Connector for the block."""
    from function_app.connections import shared_graph
    from graph.credentials import credential_for

    ca = config.credential.ca_bundle
    async with BotConnector(credential_for(config.credential), config.credential.client_id,
                            verify=ssl.create_default_context(cafile=str(ca)) if ca else True
                            ) as connector:
        yield TeamsNotifier(shared_graph(config.credential, config.graph_url), connector,
                            config.credential.tenant_id, config.teams_app_id,
                            config.service_url)


async def ask_owners(config: TeamsSettings, verdicts: Iterable[ServiceVerdict],
                     settings: ApprovalSettings) -> list[Notice]:
    """The Microsoft 365 notify step, with this worker's connections."""
    async with teams_notifier(config) as notifier:
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

    since = today - dt.timedelta(days=7)
    period = (since, today - dt.timedelta(days=1))
    last_day = period[1].isoformat()
    senders = senders_list(config)
    sent = 0
    async with teams_notifier(config) as notifier:
        for domain, owner in sorted(settings.default_owners.items()):
            _, verdicts, _ = await analyse_rollups(
                ((key, n) for key, n in store.rollups(domain=domain, since=since.isoformat(),
                                                      trusted_reporters=trusted_reporters())
                 if key.day <= last_day), catalog, dns)  # the days the card names, no more
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
