"""The bot's messaging endpoint as the Functions host calls it: a signed click in, a card out.

Teams (the fake Bot Framework) signs each request with a test key served as JWKS on loopback;
decisions land in the SharePoint list on the fake Graph, guarded by the item's eTag.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import pytest

from function_app import bot_functions, connections
from function_app.settings import app_credential
from graph.client import connect
from graph.credentials import credential_for
from graph.senders_list import DEFAULT_NAME, NewSender, SendersList
from tests.fakes.botframework import FakeBotFramework, FakeUser, invoke_activity
from tests.fakes.entra import FakeEntra
from tests.fakes.fixtures import TENANT_ID
from tests.fakes.graph import FakeGraph
from tests.fakes.sharepoint import FakeList, FakeSite
from tests.fakes.tls import TestCA
from tests.mailbox_env import CLIENT_ID, PROVISIONING_ROLES, SECRET, env_for, hand_over

SITE = "contoso.sharepoint.com,2c1b2f4e-6b8e-4a4f-9a0e-3f1d2c3b4a59,7d0c6a1e-5f3b-4c2d-8e9f"
OWNER = "0b6d2f4c-1111-4a4a-9c9c-000000000001"
STRANGER = "0b6d2f4c-2222-4a4a-9c9c-000000000002"
ADMIN = "0b6d2f4c-3333-4a4a-9c9c-000000000003"
DATA = {"domain": "contoso.com", "service": "mailchimp", "item": "1", "request": "r"}


@pytest.fixture
def bf(test_ca: TestCA) -> Iterator[FakeBotFramework]:
    with FakeBotFramework(test_ca, app_id=CLIENT_ID, tenant_id=TENANT_ID) as fake:
        for user in (OWNER, STRANGER, ADMIN):
            fake.add_user(user)
        yield fake
    assert not fake.errors, fake.errors[0]


@pytest.fixture
def the_list(monkeypatch: pytest.MonkeyPatch, entra: FakeEntra, graph: FakeGraph,
             test_ca: TestCA, bf: FakeBotFramework) -> FakeList:
    """The senders list with one Pending sender, Mailchimp for contoso.com, owned by OWNER."""
    entra.add_client(CLIENT_ID, secret=SECRET, roles=PROVISIONING_ROLES)
    site: FakeSite = graph.add_site(SITE).grant(CLIENT_ID, "manage")
    env = env_for(entra, graph, test_ca, DMARCBOT_SP_SITE_ID=SITE,
                  DMARCBOT_BOT_OPENID_URL=bf.openid_metadata_url, DMARCBOT_ADMINS=ADMIN,
                  DMARCBOT_TEAMS_APP_ID="dmarcbot-teams-app")

    async def provision() -> str:
        credential = credential_for(app_credential(env))
        async with connect(credential, base_url=graph.base_url, ca_bundle=test_ca.ca_pem) as g:
            senders = SendersList(g, SITE)
            list_id = await senders.provision()
            await senders.ensure_pending(NewSender(
                "contoso.com", "mailchimp", "Mailchimp (Intuit)", "2026-11-01", "2026-11-28",
                1324, 0.0, owner_upn="ann@contoso.com", owner_id=OWNER, verdict="needs-dkim",
                category="esp", evidence="DKIM d=mcsv.net passed\nreturn path mcsv.net"))
            return list_id

    env["DMARCBOT_SP_LIST_ID"] = asyncio.run(provision())
    hand_over(entra, site, env["DMARCBOT_SP_LIST_ID"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found = site.list_named(DEFAULT_NAME)
    assert found is not None
    return found


def click(bf: FakeBotFramework, user: str, verb: str, data: dict[str, Any] | None = None, *,
          token: str | None = None) -> tuple[int, Any]:
    """One Action.Execute click, posted to the function as the host would."""
    who: FakeUser = bf.users[user]
    activity = invoke_activity(verb, data or DATA, **bf.who(who))
    (answer,) = post_together([(activity, token or bf.mint())])
    return answer


def post_together(posts: list[tuple[dict[str, Any], str]],
                  between: Callable[[int], None] = lambda _: None) -> list[tuple[int, Any]]:
    """(activity, token) pairs posted one after the other on one event loop, so to one
    endpoint, as a worker does; `between(i)` runs after the i-th answer."""
    async def post_all() -> list[tuple[int, Any]]:
        answers = []
        try:
            for i, (activity, token) in enumerate(posts):
                request = func.HttpRequest(
                    method="POST", url="/api/messages", body=json.dumps(activity).encode(),
                    headers={"Authorization": f"Bearer {token}",
                             "Content-Type": "application/json"})
                response = await bot_functions.bot_messages(request)
                body = response.get_body()
                answers.append((response.status_code, json.loads(body) if body else None))
                between(i)
        finally:
            await connections.close_shared()
        return answers

    return asyncio.run(post_all())


def item(the_list: FakeList) -> dict[str, Any]:
    (only,) = the_list.items.values()
    return only.fields


def buttons(answer: Any) -> list[str]:
    card = answer["value"]
    text = json.dumps(card)
    return [verb for verb in ("approve", "reject", "notmine") if f'"verb": "{verb}"' in text]


def test_the_owner_approves_and_everyone_then_sees_the_decision(
        bf: FakeBotFramework, the_list: FakeList) -> None:
    status, answer = click(bf, OWNER, "approve")
    assert status == 200 and answer["type"] == "application/vnd.microsoft.card.adaptive"
    assert buttons(answer) == []  # the decision card has no buttons
    assert "Approved" in json.dumps(answer["value"])
    fields = item(the_list)
    # recorded by name: a click carries only the object id
    assert (fields["Status"], fields["DecidedBy"]) == ("Approved", "ann@contoso.com")
    decided_at = fields["DecidedAt"]
    # a double click decides once
    status, again = click(bf, OWNER, "reject")
    assert status == 200 and "Approved" in json.dumps(again["value"])
    assert (item(the_list)["Status"], item(the_list)["DecidedAt"]) == ("Approved", decided_at)


def test_someone_else_s_click_changes_nothing(bf: FakeBotFramework, the_list: FakeList) -> None:
    status, answer = click(bf, STRANGER, "approve")
    assert status == 200 and buttons(answer) == []  # the read-only card
    assert "Only ann@contoso.com" in json.dumps(answer["value"])
    assert item(the_list)["Status"] == "Pending"
    # the owner's own refresh shows the buttons; an admin may decide
    _, mine = click(bf, OWNER, "refresh")
    assert buttons(mine) == ["approve", "reject", "notmine"]
    click(bf, ADMIN, "reject")  # the directory does not know this admin: recorded by id
    assert (item(the_list)["Status"], item(the_list)["DecidedBy"]) == ("Rejected", ADMIN)


def test_not_mine_hands_the_sender_to_its_owner(bf: FakeBotFramework,
                                                the_list: FakeList) -> None:
    _, missing = click(bf, OWNER, "notmine", DATA)  # no address typed: the form again
    assert buttons(missing) == ["approve", "reject", "notmine"]
    assert item(the_list)["OwnerId"] == OWNER
    status, answer = click(bf, OWNER, "notmine", {**DATA, "owner": "marketing@contoso.com"})
    assert status == 200 and "marketing@contoso.com" in json.dumps(answer["value"])
    fields = item(the_list)
    assert (fields["Status"], fields["OwnerUpn"]) == ("Pending", "marketing@contoso.com")
    assert "OwnerId" not in fields  # the new owner's id is found when their card is sent
    _, late = click(bf, OWNER, "approve")  # no longer the owner
    assert buttons(late) == [] and item(the_list)["Status"] == "Pending"


def test_a_decision_someone_made_meanwhile_wins(bf: FakeBotFramework, the_list: FakeList,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real_get = SendersList.get
    calls = 0

    async def stale_get(self: SendersList, domain: str, service_key: str) -> Any:
        nonlocal calls
        calls += 1
        found = await real_get(self, domain, service_key)
        if calls == 1:  # between our read and our write, the admin rejects it
            (fake_item,) = list(the_list.items.values())
            the_list.update_item(fake_item, {"Status": "Rejected", "DecidedBy": ADMIN,
                                             "DecidedAt": "2026-11-29T08:00:00Z"})
        return found

    monkeypatch.setattr(SendersList, "get", stale_get)
    status, answer = click(bf, OWNER, "approve")  # the PATCH meets 412 Precondition Failed
    assert status == 200 and "Rejected" in json.dumps(answer["value"])
    assert (item(the_list)["Status"], item(the_list)["DecidedBy"]) == ("Rejected", ADMIN)


def test_a_failed_list_write_answers_with_a_card_to_retry(
        bf: FakeBotFramework, the_list: FakeList, graph: FakeGraph) -> None:
    graph.inject(500, method="PATCH", path_contains="/fields", times=3)
    status, answer = click(bf, OWNER, "approve")
    assert status == 200
    card = json.dumps(answer["value"])
    assert "was not saved" in card and '"verb": "approve"' in card
    assert item(the_list)["Status"] == "Pending"


def test_a_request_without_a_valid_token_is_refused(bf: FakeBotFramework,
                                                    the_list: FakeList) -> None:
    status, answer = click(bf, OWNER, "approve", token=bf.mint(audience="api://someone-else"))
    assert (status, answer) == (401, {"error": "Unauthorized"})
    assert item(the_list)["Status"] == "Pending"


# ----------------------------------------------------------------------------- replays

def writes(graph: FakeGraph) -> int:
    """SharePoint writes so far (a decision is a PATCH of the item's fields)."""
    return sum(1 for r in graph.requests if r.method in ("PATCH", "POST", "PUT", "DELETE"))


def reopen(the_list: FakeList) -> None:
    """Someone sets the sender back to Pending in the list (a decision taken back)."""
    (fake_item,) = the_list.items.values()
    the_list.update_item(fake_item, {"Status": "Pending", "DecidedBy": None, "DecidedAt": None})


def test_a_replayed_click_is_answered_without_acting(bf: FakeBotFramework, the_list: FakeList,
                                                     graph: FakeGraph) -> None:
    """The reproduced attack: a captured approve, posted again with its token, decided again
    (here after the decision was taken back in the list, so the replay would have mattered)."""
    activity, token = invoke_activity("approve", DATA, **bf.who(bf.users[OWNER])), bf.mint()
    counted: list[int] = []

    def after(i: int) -> None:
        counted.append(writes(graph))
        if i == 0:
            reopen(the_list)

    first, replay = post_together([(activity, token), (activity, token)], after)
    assert first[0] == 200 and "Approved" in json.dumps(first[1]["value"])
    assert counted[1] == counted[0]  # the replay wrote nothing
    assert item(the_list)["Status"] == "Pending"  # and decided nothing
    # answered as a duplicate click is: the card as it stands (here: the buttons again)
    assert replay[0] == 200 and replay[1]["type"] == "application/vnd.microsoft.card.adaptive"
    assert buttons(replay[1]) == ["approve", "reject", "notmine"]


def test_the_same_token_with_another_activity_is_acted_on(bf: FakeBotFramework,
                                                          the_list: FakeList) -> None:
    """The Bot Connector sends every activity of the hour with one token: that is legitimate."""
    token, who = bf.mint(), bf.who(bf.users[OWNER])
    approve = invoke_activity("approve", DATA, **who)
    reject = invoke_activity("reject", DATA, **who)  # a new id, the same token
    (_, first), (_, second) = post_together([(approve, token), (reject, token)],
                                            lambda i: reopen(the_list) if i == 0 else None)
    assert "Approved" in json.dumps(first["value"]) and "Rejected" in json.dumps(second["value"])
    assert item(the_list)["Status"] == "Rejected"


def test_an_activity_id_reused_in_another_conversation_is_still_a_replay(
        bf: FakeBotFramework, the_list: FakeList) -> None:
    """The body is the sender's to write: the id alone is remembered, not (conversation, id)."""
    token, who = bf.mint(), bf.who(bf.users[OWNER])
    approve = invoke_activity("approve", DATA, **who)
    elsewhere = json.loads(json.dumps(approve))
    elsewhere["conversation"]["id"] = "a:1-another-conversation"
    post_together([(approve, token), (elsewhere, bf.mint())],
                  lambda i: reopen(the_list) if i == 0 else None)
    assert item(the_list)["Status"] == "Pending"


def test_an_action_without_an_activity_id_is_not_acted_on(bf: FakeBotFramework,
                                                          the_list: FakeList) -> None:
    """Without an id a replay could not be told apart: Teams always sends one."""
    activity = invoke_activity("approve", DATA, **bf.who(bf.users[OWNER]))
    del activity["id"]
    ((status, answer),) = post_together([(activity, bf.mint())])
    assert status == 200 and answer["statusCode"] == 400
    assert item(the_list)["Status"] == "Pending"


def test_a_replay_on_another_instance_meets_the_decision_already_taken(
        bf: FakeBotFramework, the_list: FakeList, graph: FakeGraph) -> None:
    """Another worker has no memory of the activity: the item's status (and If-Match on its
    eTag, for a replay that races the original) keeps the first decision."""
    activity, token = invoke_activity("reject", DATA, **bf.who(bf.users[OWNER])), bf.mint()
    post_together([(invoke_activity("approve", DATA, **bf.who(bf.users[OWNER])), token)])
    decided = dict(item(the_list))
    before = writes(graph)
    ((status, answer),) = post_together([(activity, token)])  # another event loop: another
    assert status == 200 and "Approved" in json.dumps(answer["value"])  # endpoint
    assert writes(graph) == before and item(the_list) == decided
