"""Asking owners in Teams: the Microsoft 365 adapters of the notify loop, and the weekly digest.

What is due and when is `notify.notify`'s, as for the local outbox. Here the SharePoint list is
the record (`ListNotices`: what was asked, when, of whom) and the Bot Connector carries the cards
to each owner's 1:1 chat with the bot, after installing the app for them if needed
(`TeamsCards`).
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
from function_app.approvals import ApprovalSettings, Notice, parse_stamp
from function_app.notify import Asking, notify
from function_app.settings import trusted_reporters
from function_app.teams import inventory_item
from graph.bot_connector import BotConnector, ensure_app_installed, user_object_id
from graph.client import GraphConnection
from graph.errors import Blocked, Conflict, GraphError
from graph.senders_list import NewSender, SenderItem, SendersList

if TYPE_CHECKING:
    from analysis.catalog import Catalog
    from analysis.dnsevidence import DnsEvidence
    from function_app.settings import TeamsSettings
    from store.base import InventoryItem, Store

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


class ListNotices:
    """`notify.NoticeRecords` over the SharePoint list, the system of record for status and
    owner in Microsoft 365.

    A sender's item is created Pending, or brought up to date, with what the reports say; the
    domain's default owner fills an empty OwnerUpn, never one a person chose. The person asked
    is recorded by the Entra object id a click will carry (OwnerId) before the card goes out.
    """

    def __init__(self, senders: SendersList, settings: ApprovalSettings) -> None:
        self.senders = senders
        self.settings = settings
        self._read: dict[tuple[str, str], SenderItem] = {}  # each item as last read or written

    async def waiting(self) -> list[InventoryItem]:
        items = await self.senders.by_status("Pending") + await self.senders.by_status("Rejected")
        return [inventory_item(item, owner="upn") for item in items]

    async def item_for(self, verdict: ServiceVerdict) -> InventoryItem:
        item, _ = await self.senders.ensure_pending(NewSender(
            verdict.domain, verdict.service_key, verdict.service_name, verdict.first_day,
            verdict.last_day, verdict.messages,
            verdict.dmarc_pass / verdict.messages if verdict.messages else None,
            owner_upn=self.settings.default_owners.get(verdict.domain),
            evidence="\n".join(verdict.evidence), category=verdict.category,
            verdict=verdict.verdict))
        return self._keep(item)

    async def address(self, item: InventoryItem, owner: str) -> tuple[InventoryItem, str]:
        current = self._item(item)
        user = await user_object_id(self.senders.graph, owner)
        if current.owner_id != user:
            current = await self.senders.set_owner_id(current, user)  # a new person: asked afresh
        return self._keep(current), user

    async def mark(self, notice: Notice, before: InventoryItem,
                   after: InventoryItem) -> InventoryItem | None:
        try:
            return self._keep(await self.senders.touch(self._item(before),
                                                       **_when(notice, after)))
        except Conflict:
            return None

    async def unmark(self, notice: Notice, before: InventoryItem, after: InventoryItem) -> None:
        self._keep(await self.senders.touch(self._item(after), **_when(notice, before)))

    async def card_sent(self, item: InventoryItem, receipt: SentCard) -> None:
        self._keep(await self.senders.set_card(self._item(item), receipt.conversation_id,
                                               receipt.activity_id, receipt.service_url))

    def item_id(self, item: InventoryItem) -> str:
        return self._item(item).id

    def _keep(self, item: SenderItem) -> InventoryItem:
        self._read[item.domain, item.service_key] = item
        return inventory_item(item, owner="upn")

    def _item(self, item: InventoryItem) -> SenderItem:
        return self._read[item.policy_domain, item.service_key]


_COLUMN = {"ask": "asked_at", "remind": "last_reminded", "alert": "last_alerted"}
_FIELD = {"ask": "asked_at", "remind": "reminded_at", "alert": "alerted_at"}


def _when(notice: Notice, item: InventoryItem) -> dict[str, dt.datetime | None]:
    """The list column that records `notice`, as `item` has it (see approvals.noticed)."""
    value = getattr(item, _FIELD[notice])
    return {_COLUMN[notice]: parse_stamp(value) if value else None}


class TeamsCards:
    """`notify.CardSender` over Teams. An owner who blocked the bot is not written to again
    every run: Teams says to stop until they talk to the bot again, so the mark stays and the
    reminder tries once more."""

    def __init__(self, notifier: TeamsNotifier) -> None:
        self.notifier = notifier

    async def send(self, to: str, card: dict[str, Any], *, kind: str, domain: str,
                   service: str | None = None) -> SentCard | None:
        try:
            return await self.notifier.send(to, card)
        except Blocked as exc:
            log.warning("the owner of %s %s has blocked the bot or an admin disabled it (%s); "
                        "an admin should ask them to unblock it; next try with the reminder",
                        domain, service, exc.code)
            return None


def teams_asking(senders: SendersList, notifier: TeamsNotifier,
                 settings: ApprovalSettings) -> Asking[SentCard]:
    """Owners asked in Teams, recorded in the list. One sender's failure (an owner not in the
    directory, Teams refusing) does not stop the others; it is tried again next run."""
    return Asking(ListNotices(senders, settings), TeamsCards(notifier), settings,
                  contain=(GraphError,))


async def notify_owners(senders: SendersList, verdicts: Iterable[ServiceVerdict],
                        notifier: TeamsNotifier, settings: ApprovalSettings,
                        now: dt.datetime) -> list[Notice]:
    """The notify step in Microsoft 365 (`notify.notify`): the notices sent."""
    sent = await notify(teams_asking(senders, notifier, settings), verdicts, now)
    return [s.notice for s in sent]


def senders_list(config: TeamsSettings) -> SendersList:
    from function_app.connections import shared_graph

    return SendersList(shared_graph(config.credential, config.graph_url), config.site_id,
                       config.list_id)


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


@contextlib.asynccontextmanager
async def asking_in_teams(config: TeamsSettings,
                          settings: ApprovalSettings) -> AsyncIterator[Asking[SentCard]]:
    """Owners asked in Teams with this worker's connections, for the block."""
    async with teams_notifier(config) as notifier:
        yield teams_asking(senders_list(config), notifier, settings)


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
