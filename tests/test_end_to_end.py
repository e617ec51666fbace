"""From report e-mails to an owner's decision, with every Microsoft part faked over loopback.

Reports arrive in the shared mailbox; the timer queues them, the queue trigger stores them
(Azurite), the next tick names the senders, records a Pending item in the SharePoint list and
sends the owner a card through the Bot Connector; the owner clicks Approve; the item is
Approved, the card answered is the decision, the next tick sends nothing more, and the weekly
digest shows the sender approved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from function_app import bot_functions, connections, digest_functions, mailbox_functions
from graph.permissions import TEAMS_ROLES
from tests.builders import aggregate_xml, gzipped, record_xml
from tests.fakes.botframework import FakeBotFramework, invoke_activity
from tests.fakes.entra import FakeEntra
from tests.fakes.fixtures import TENANT_ID
from tests.fakes.graph import FakeGraph
from tests.fakes.mailbox import FileAttachment
from tests.mailbox_env import CLIENT_ID, MAILBOX, RUNTIME_ROLES
from tests.teams_world import (  # noqa: F401 - fixtures used by name
    OWNER_ID,
    OWNER_UPN,
    TEAMS_APP,
    entra_fixture,
    preinstalled_fixture,
    world_fixture,
)
from tests.test_bot_connector import Sleeps
from tests.test_mailbox_functions import SENDGRID, Out


def test_report_mail_to_pending_item_to_card_to_approval(
        world: tuple[FakeBotFramework, Any], graph: FakeGraph) -> None:
    bf, the_list = world
    box = graph.mailbox(MAILBOX)
    assert box is not None
    yesterday = int(time.time()) // 86400 * 86400 - 86400
    report = gzipped(aggregate_xml(
        record_xml("198.51.100.10", 40, dkim="fail", spf="fail", envelope_from="sendgrid.net",
                   header_from="example.com", auth=SENDGRID),
        report_id="r1", begin=yesterday, end=yesterday + 86399))
    box.add_message(internet_message_id="<sg@r>",
                    attachments=[FileAttachment("r.xml.gz", report)])
    ticks = [Out(), Out(), Out()]

    async def worker() -> None:
        try:
            await mailbox_functions.poll_mailbox(TimerRequest(), ticks[0])
            for body in ticks[0].value:
                await mailbox_functions.ingest_mail(
                    QueueMessage(id="q", body=body.encode(), dequeue_count=1))
            await mailbox_functions.poll_mailbox(TimerRequest(), ticks[1])
        finally:
            await connections.close_shared()

    asyncio.run(worker())

    (item,) = the_list.items.values()
    assert item.fields["Status"] == "Pending" and item.fields["ServiceKey"] == "sendgrid"
    assert (item.fields["OwnerUpn"], item.fields["OwnerId"]) == (OWNER_UPN, OWNER_ID)
    conversations = list(bf.conversations.values())
    assert len(conversations) == 1 and len(conversations[0].activities) == 1
    (sent,) = conversations[0].activities.values()
    card = sent["attachments"][0]["content"]
    assert '"verb": "approve"' in json.dumps(card)
    approve = next(a for a in _actions(card) if a.get("verb") == "approve")

    # the owner clicks Approve in Teams
    activity = invoke_activity("approve", approve["data"], **bf.who(bf.users[OWNER_ID]))
    request = func.HttpRequest(method="POST", url="/api/messages",
                               body=json.dumps(activity).encode(),
                               headers={"Authorization": f"Bearer {bf.mint()}"})

    async def click() -> func.HttpResponse:
        try:
            return await bot_functions.bot_messages(request)
        finally:
            await connections.close_shared()

    response = asyncio.run(click())
    assert response.status_code == 200
    answer = json.loads(response.get_body())
    assert '"verb": "approve"' not in json.dumps(answer["value"])
    assert item.fields["Status"] == "Approved" and item.fields["DecidedBy"] == OWNER_UPN

    # the next tick asks nobody again
    async def tick() -> None:
        try:
            await mailbox_functions.poll_mailbox(TimerRequest(), ticks[2])
        finally:
            await connections.close_shared()

    asyncio.run(tick())
    assert sum(len(c.activities) for c in bf.conversations.values()) == 1

    # Monday morning: the owner's weekly digest, with SendGrid among the approved senders
    async def digest() -> None:
        try:
            await digest_functions.send_digests(TimerRequest())
        finally:
            await connections.close_shared()

    asyncio.run(digest())
    activities = list(conversations[0].activities.values())
    assert len(activities) == 2
    weekly = json.dumps(activities[1]["attachments"][0]["content"])
    assert "WEEKLY" in weekly and "Approved" in weekly and "SendGrid" in weekly
    assert graph.rejected == [] and graph.deleted == []


def _actions(card: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute":
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card)
    return found


def test_owners_are_reminded_and_alerted_in_teams(world: tuple[FakeBotFramework, Any],
                                                  graph: FakeGraph) -> None:
    """A week without an answer brings a reminder; a rejected sender that keeps sending, an
    alert; and each only once for the same state."""
    import datetime as dt

    from analysis import read_reports
    from analysis.catalog import load_catalog
    from analysis.senders import analyse_rollups
    from function_app import teams_notify as teams
    from function_app.settings import approval_settings, teams_settings
    from graph.bot_connector import BotConnector
    from graph.credentials import credential_for
    from store import SqliteStore
    from tests.builders import aggregate_xml, record_xml

    bf, the_list = world
    day = dt.date(2026, 11, 20)
    begin = int(dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp())
    xml = aggregate_xml(record_xml("198.51.100.10", 9, dkim="fail", spf="fail",
                                   envelope_from="sendgrid.net", header_from="example.com",
                                   auth=SENDGRID), report_id="w", begin=begin, end=begin + 86399)
    store = SqliteStore(":memory:")
    for report in read_reports(xml):
        store.add_report(report)

    async def ask(now: dt.datetime) -> list[str]:
        config = teams_settings()
        _, verdicts, _ = await analyse_rollups(store.rollups(), load_catalog(), None)
        try:
            async with BotConnector(credential_for(config.credential), CLIENT_ID,
                                    verify=ssl.create_default_context(
                                        cafile=str(config.credential.ca_bundle))) as connector:
                notifier = teams.TeamsNotifier(
                    connections.shared_graph(config.credential, config.graph_url), connector,
                    TENANT_ID, TEAMS_APP, bf.service_url)
                return list(await teams.notify_owners(teams.senders_list(config), verdicts,
                                                      notifier, approval_settings(), now))
        finally:
            await connections.close_shared()

    start = dt.datetime.combine(day, dt.time(8), dt.UTC)
    assert asyncio.run(ask(start)) == ["ask"]
    assert asyncio.run(ask(start + dt.timedelta(days=3))) == []
    assert asyncio.run(ask(start + dt.timedelta(days=7))) == ["remind"]
    assert asyncio.run(ask(start + dt.timedelta(days=8))) == []
    # the owner rejects it; it keeps sending the day after
    (item,) = the_list.items.values()
    the_list.update_item(item, {"Status": "Rejected", "DecidedBy": OWNER_ID,
                                "DecidedAt": "2026-11-20T12:00:00Z"})
    later = begin + 86400
    for report in read_reports(aggregate_xml(
            record_xml("198.51.100.10", 3, dkim="fail", spf="fail", envelope_from="sendgrid.net",
                       header_from="example.com", auth=SENDGRID),
            report_id="w2", begin=later, end=later + 86399)):
        store.add_report(report)
    assert asyncio.run(ask(start + dt.timedelta(days=9))) == ["alert"]
    assert asyncio.run(ask(start + dt.timedelta(days=9, hours=1))) == []
    (conversation,) = bf.conversations.values()
    kinds = [json.dumps(a["attachments"][0]["content"]) for a in conversation.activities.values()]
    assert len(kinds) == 3 and '"verb": "approve"' not in kinds[2]  # the alert has no buttons


# -- delivery to owners Teams is not ready for, or who blocked the bot --------------------------

def _asker(bf: FakeBotFramework, sleeps: Sleeps) -> Any:
    """`ask(now)`: one notify run over a day of SendGrid mail, as the timer runs it, with the
    Bot Connector's waits recorded in `sleeps`."""
    import datetime as dt

    from analysis import read_reports
    from analysis.catalog import load_catalog
    from analysis.senders import analyse_rollups
    from function_app import teams_notify as teams
    from function_app.settings import approval_settings, teams_settings
    from graph.bot_connector import BotConnector
    from graph.credentials import credential_for
    from store import SqliteStore

    begin = int(dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp())
    store = SqliteStore(":memory:")
    for report in read_reports(aggregate_xml(
            record_xml("198.51.100.10", 9, dkim="fail", spf="fail", envelope_from="sendgrid.net",
                       header_from="example.com", auth=SENDGRID),
            report_id="fresh", begin=begin, end=begin + 86399)):
        store.add_report(report)

    def ask(now: dt.datetime) -> list[str]:
        async def go() -> list[str]:
            config = teams_settings()
            _, verdicts, _ = await analyse_rollups(store.rollups(), load_catalog(), None)
            try:
                async with BotConnector(credential_for(config.credential), CLIENT_ID,
                                        verify=ssl.create_default_context(
                                            cafile=str(config.credential.ca_bundle)),
                                        sleep=sleeps) as connector:
                    notifier = teams.TeamsNotifier(
                        connections.shared_graph(config.credential, config.graph_url),
                        connector, TENANT_ID, TEAMS_APP, bf.service_url)
                    return list(await teams.notify_owners(
                        teams.senders_list(config), verdicts, notifier, approval_settings(),
                        now))
            finally:
                await connections.close_shared()

        return asyncio.run(go())

    return ask


def _creates(bf: FakeBotFramework) -> int:
    return sum(1 for r in bf.requests if (r.method, r.path) == ("POST", "/teams/v3/conversations"))


def _cards(bf: FakeBotFramework) -> int:
    return sum(len(c.activities) for c in bf.conversations.values())


def _start() -> Any:
    import datetime as dt

    return dt.datetime(2026, 11, 20, 8, tzinfo=dt.UTC)


@pytest.mark.parametrize("preinstalled", [False])
def test_a_fresh_installation_is_waited_for_and_the_card_delivered(
        world: tuple[FakeBotFramework, Any], graph: FakeGraph) -> None:
    """Teams installs asynchronously: the chat answers 403 for a moment after the install."""
    bf, the_list = world
    bf.settle_after_install = 2
    sleeps = Sleeps()
    assert _asker(bf, sleeps)(_start()) == ["ask"]
    installs = [r for r in graph.requests if r.method == "POST"
                and r.path.endswith("/teamwork/installedApps")]
    assert len(installs) == 1 and bf.users[OWNER_ID].installed
    assert _creates(bf) == 3 and _cards(bf) == 1  # delivered on the third try
    assert not graph.forbidden  # the roles graph.permissions names are enough
    first, second = sleeps.delays  # backed off, with jitter
    assert 0.75 <= first <= 1.25 and 1.5 <= second <= 2.5
    (item,) = the_list.items.values()
    (conversation,) = bf.conversations.values()
    assert item.fields["CardActivityId"] == next(iter(conversation.activities))
    assert item.fields["AskedAt"]


@pytest.mark.parametrize("preinstalled", [False])
@pytest.mark.parametrize("role", sorted(TEAMS_ROLES))
def test_every_graph_role_the_setup_grants_is_needed(
        world: tuple[FakeBotFramework, Any], graph: FakeGraph, entra: FakeEntra,
        role: str) -> None:
    """The roles in graph.permissions (and scripts/setup-entra.sh) are the least that works:
    the fakes refuse, as Graph does, once any one of them is missing."""
    from graph.errors import GraphError

    bf, _ = world
    entra.set_roles(CLIENT_ID, RUNTIME_ROLES - {role})
    entra.expire_all()  # the consent changed: tokens issued before it carry the old roles
    with contextlib.suppress(GraphError):
        _asker(bf, Sleeps())(_start())
    refused = {r.path for r in graph.forbidden}  # route templates
    assert any(t.endswith(NEEDED_FOR[role]) for t in refused), (role, refused)
    assert _cards(bf) == 0


NEEDED_FOR = {  # the call each role is for, as the fake Graph routes it
    "User.ReadBasic.All": "/users/{user-id}",
    "AppCatalog.Read.All": "/appCatalogs/teamsApps",
    "TeamsAppInstallation.ReadWriteSelfForUser.All": "/teamwork/installedApps",
    "Lists.SelectedOperations.Selected": "/items",
}


@pytest.mark.parametrize("preinstalled", [False])
def test_an_installation_that_stays_unready_leaves_the_sender_for_the_next_run(
        world: tuple[FakeBotFramework, Any], graph: FakeGraph) -> None:
    import datetime as dt

    bf, the_list = world
    bf.settle_after_install = 6  # more refusals than one run waits out
    sleeps = Sleeps()
    ask = _asker(bf, sleeps)
    assert ask(_start()) == []
    assert _creates(bf) == 5 and _cards(bf) == 0
    assert len(sleeps.delays) == 4 and 11.25 <= sum(sleeps.delays) <= 18.75  # bounded
    (item,) = the_list.items.values()
    assert item.fields["Status"] == "Pending" and not item.fields.get("AskedAt")  # still due

    # the next run: installed already, so a 403 is an answer, not a reason to wait
    assert ask(_start() + dt.timedelta(hours=1)) == []
    assert _creates(bf) == 6 and len(sleeps.delays) == 4 and _cards(bf) == 0
    # Teams has caught up by the run after
    assert ask(_start() + dt.timedelta(hours=2)) == ["ask"]
    assert _creates(bf) == 7 and _cards(bf) == 1 and len(sleeps.delays) == 4
    assert item.fields["AskedAt"] and item.fields["CardActivityId"]
    assert sum(1 for r in graph.requests if r.method == "POST"
               and r.path.endswith("/teamwork/installedApps")) == 1


def test_an_owner_who_blocked_the_bot_is_not_asked_every_run(
        world: tuple[FakeBotFramework, Any], caplog: pytest.LogCaptureFixture) -> None:
    """Teams answers the documented 403 `errorCode 209` body; dmarcbot stops until the
    reminder is due, instead of being refused again on every run."""
    import datetime as dt

    from tests.fakes.botframework import MESSAGE_WRITES_BLOCKED

    bf, the_list = world
    bf.block(OWNER_ID, body=MESSAGE_WRITES_BLOCKED)
    sleeps = Sleeps()
    ask = _asker(bf, sleeps)
    caplog.set_level("INFO")
    assert ask(_start()) == []
    assert (_creates(bf), _cards(bf), sleeps.delays) == (1, 0, [])
    assert "MessageWritesBlocked" in caplog.text and "blocked the bot" in caplog.text
    (item,) = the_list.items.values()
    assert item.fields["Status"] == "Pending" and item.fields["AskedAt"]
    calls = len(bf.requests)
    for later in (dt.timedelta(hours=1), dt.timedelta(days=1), dt.timedelta(days=6)):
        assert ask(_start() + later) == []
    assert len(bf.requests) == calls  # not asked again run after run
    # a week on, the reminder tries once more (perhaps they unblocked it): still refused
    assert ask(_start() + dt.timedelta(days=7)) == []
    assert _creates(bf) == 2 and _cards(bf) == 0 and sleeps.delays == []
    assert ask(_start() + dt.timedelta(days=7, hours=1)) == []
    assert _creates(bf) == 2
