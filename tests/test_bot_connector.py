"""Outbound Teams messaging (graph.bot_connector) against loopback fakes of Entra ID, the Bot
Connector and Graph's app-installation endpoints, over real TLS with msal tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from graph.bot_connector import BOT_SCOPE, BotConnector, ensure_app_installed
from graph.client import RetryPolicy, connect
from graph.credentials import GRAPH_SCOPE, AppCredential, MsalCredential, credential_for
from graph.errors import (
    Blocked,
    BotConnectorError,
    BotNotInstalled,
    ConversationNotFound,
    GraphError,
    NotFound,
)
from tests.fakes.botframework import (
    ADAPTIVE_CARD,
    MESSAGE_WRITES_BLOCKED,
    FakeBotFramework,
    FakeTeamsGraph,
)
from tests.fakes.entra import FakeEntra
from tests.fakes.fixtures import TENANT_ID
from tests.fakes.tls import TestCA
from tests.mailbox_env import RUNTIME_ROLES

APP_ID = "3f1c1a52-5b1e-4b7b-9a59-6b0c4ad0e0d1"
SECRET = "bot-secret-that-must-never-be-logged"
OWNER = "6c0b4a1e-3f7d-4a8e-9b2c-1d5e7f9a0b3c"
MANIFEST_ID = "0d6c3e2a-9f41-4b8e-8a51-2c7d9e0f1a2b"
CARD = {"type": "AdaptiveCard", "version": "1.5",
        "body": [{"type": "TextBlock", "text": "Approve mailchimp.com?"}],
        "actions": [{"type": "Action.Execute", "title": "Approve", "verb": "approve",
                     "data": {"serviceKey": "mailchimp"}}]}
DECIDED = {"type": "AdaptiveCard", "version": "1.5",
           "body": [{"type": "TextBlock", "text": "Approved by you"}]}


@pytest.fixture
def entra(test_ca: TestCA) -> Iterator[FakeEntra]:
    """Entra issuing tokens for Graph and for the Bot Framework, as the real tenant does."""
    with FakeEntra(test_ca, tenant_id=TENANT_ID, scopes=(GRAPH_SCOPE, BOT_SCOPE)) as fake:
        fake.add_client(APP_ID, secret=SECRET, roles=RUNTIME_ROLES)
        yield fake
    assert not fake.errors, fake.errors[0]


@pytest.fixture
def credential(entra: FakeEntra, test_ca: TestCA) -> MsalCredential:
    return credential_for(AppCredential(TENANT_ID, APP_ID, secret=SECRET,
                                        authority_host=entra.authority.rsplit("/", 1)[0],
                                        ca_bundle=test_ca.ca_pem))


@pytest.fixture
def bf(test_ca: TestCA, entra: FakeEntra) -> Iterator[FakeBotFramework]:
    with FakeBotFramework(test_ca, app_id=APP_ID, tenant_id=TENANT_ID, tokens=entra) as fake:
        fake.add_user(OWNER)
        yield fake
    assert not fake.errors, fake.errors[0]


class Sleeps:
    """Records the waits dmarcbot asks for instead of waiting them (no wall clock in tests)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def connector(credential: Any, test_ca: TestCA, sleep: Sleeps | None = None) -> BotConnector:
    return BotConnector(credential, APP_ID, verify=test_ca.client_context(),
                        sleep=sleep or Sleeps())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with(bot: BotConnector, call: Any) -> Any:
    async with bot:
        return await call(bot)


# ----------------------------------------------------------------------------- the round trip

def test_create_send_and_update_a_card(credential: MsalCredential, test_ca: TestCA,
                                       bf: FakeBotFramework, entra: FakeEntra) -> None:
    async def go(bot: BotConnector) -> tuple[str, str, str]:
        conversation = await bot.create_conversation(bf.service_url, OWNER, TENANT_ID)
        again = await bot.create_conversation(bf.service_url, OWNER, TENANT_ID)
        activity = await bot.send_card(bf.service_url, conversation, CARD, summary="1 sender")
        await bot.update_card(bf.service_url, conversation, activity, DECIDED)
        assert again == conversation  # the 1:1 conversation is the same each time
        return conversation, activity, again

    conversation, activity, _ = run(_with(connector(credential, test_ca), go))
    create = bf.requests[0]
    assert (create.method, create.path) == ("POST", "/teams/v3/conversations")
    assert create.body == {"isGroup": False, "bot": {"id": f"28:{APP_ID}"},
                           "members": [{"id": OWNER}], "tenantId": TENANT_ID,
                           "channelData": {"tenant": {"id": TENANT_ID}}}
    history = bf.conversation(conversation).history
    assert [(verb, aid) for verb, aid, _ in history] == [("create", activity),
                                                        ("update", activity)]
    sent, updated = history[0][2], history[1][2]
    assert sent["attachments"] == [{"contentType": ADAPTIVE_CARD, "content": CARD}]
    assert sent["summary"] == "1 sender"
    assert updated["attachments"][0]["content"] == DECIDED
    assert entra.token_requests == 1  # one Bot Framework token for the four calls
    assert ":" in conversation and bf.requests[2].path.endswith("/activities")


def test_a_graph_token_is_refused_by_the_connector(credential: MsalCredential,
                                                   test_ca: TestCA,
                                                   bf: FakeBotFramework) -> None:
    class GraphScoped:
        """A credential bug: asks for Graph whatever scope is wanted."""

        async def get_token(self, *scopes: str) -> Any:
            return await credential.get_token(GRAPH_SCOPE)

    with pytest.raises(BotConnectorError) as caught:
        run(_with(connector(GraphScoped(), test_ca),
                  lambda bot: bot.create_conversation(bf.service_url, OWNER, TENANT_ID)))
    assert caught.value.status == 401


def test_a_refused_token_is_replaced_once(credential: MsalCredential, test_ca: TestCA,
                                          bf: FakeBotFramework, entra: FakeEntra) -> None:
    async def go(bot: BotConnector) -> str:
        conversation = await bot.create_conversation(bf.service_url, OWNER, TENANT_ID)
        entra.expire_all()  # msal still holds the token; the service no longer takes it
        return await bot.send_card(bf.service_url, conversation, CARD)

    assert run(_with(connector(credential, test_ca), go))
    assert entra.token_requests == 2


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize(("code", "sub_code", "shown"), [
    ("ConversationBlockedByUser", "MessageWritesBlocked", "MessageWritesBlocked"),
    ("ConversationBlockedByUser", None, "ConversationBlockedByUser"),
    ("Forbidden", "MessageWritesBlocked", "MessageWritesBlocked"),
])
def test_a_user_who_blocked_the_bot_is_blocked(code: str, sub_code: str | None, shown: str,
                                               credential: MsalCredential, test_ca: TestCA,
                                               bf: FakeBotFramework) -> None:
    async def go(bot: BotConnector) -> None:
        conversation = await bot.create_conversation(bf.service_url, OWNER, TENANT_ID)
        bf.block(OWNER, code=code, sub_code=sub_code)
        with pytest.raises(Blocked) as caught:
            await bot.send_card(bf.service_url, conversation, CARD)
        assert (caught.value.status, caught.value.code) == (403, shown)
        with pytest.raises(Blocked):
            await bot.create_conversation(bf.service_url, OWNER, TENANT_ID)

    run(_with(connector(credential, test_ca), go))


# The 403 Teams documents for a bot writing to a user who blocked or removed it, byte for byte
# (msteams-docs msteams-platform/bots/how-to/conversations/send-proactive-messages.md,
# "Understand who blocked, muted, or uninstalled a bot"): `message` is JSON inside a string.
DOCUMENTED_209 = (
    rb'{"errorCode":209,"message":"{\n  \"subCode\": \"MessageWritesBlocked\",\n  '
    rb'\"details\": \"Thread is blocked from message writes.\",\n  \"errorCode\": null,'
    rb'\n  \"errorSubCode\": null\n}"}')


@pytest.mark.parametrize("body", [
    DOCUMENTED_209,
    DOCUMENTED_209.replace(rb"\n", rb"\r\n"),  # the localized pages' copy of the example
    rb'{"errorCode":209,"message":{"subCode":"MessageWritesBlocked","details":"blocked"}}',
])
def test_the_documented_message_writes_blocked_body_is_blocked(
        body: bytes, credential: MsalCredential, test_ca: TestCA, bf: FakeBotFramework) -> None:
    assert MESSAGE_WRITES_BLOCKED == DOCUMENTED_209  # the fake answers what Teams documents
    sleeps = Sleeps()

    async def go(bot: BotConnector) -> None:
        conversation = await bot.create_conversation(bf.service_url, OWNER, TENANT_ID)
        bf.block(OWNER, body=body)
        with pytest.raises(Blocked) as caught:
            await bot.send_card(bf.service_url, conversation, CARD)
        assert (caught.value.status, caught.value.code) == (403, "MessageWritesBlocked")
        with pytest.raises(Blocked):  # even right after an install: never waited out
            await bot.create_conversation(bf.service_url, OWNER, TENANT_ID, after_install=True)

    run(_with(connector(credential, test_ca, sleeps), go))
    assert sleeps.delays == [] and len(bf.requests) == 3


@pytest.mark.parametrize(("body", "status", "kind", "code"), [
    (b'{"errorCode":209,"message":"not json"}', 403, BotConnectorError, "209"),
    (rb'{"errorCode":209,"message":"{\"subCode\": 7}"}', 403, BotConnectorError, "209"),
    (rb'{"errorCode":209,"message":"{\"subCode\":\"MessageWritesBlocked\"}"}', 500,
     BotConnectorError, "MessageWritesBlocked"),
    (b'{"error":{"code":"BotNotInConversationRoster","message":"The bot is not part of the '
     b'conversation roster."}}', 403, BotNotInstalled, "BotNotInConversationRoster"),
    (b'{"subCode":"MessageWritesBlocked"}', 403, Blocked, "MessageWritesBlocked"),
    (b"[1, 2]", 403, BotConnectorError, None),
])
def test_other_error_bodies_keep_their_meaning(body: bytes, status: int, kind: type,
                                               code: str | None) -> None:
    """Only a 403 with a blocking code is Blocked; a 209 whose inner JSON says nothing is not."""
    from graph.bot_connector import _connector_error

    error = _connector_error("POST", status, body)
    assert type(error) is kind and (error.status, error.code) == (status, code)


# ----------------------------------------------------------------------------- installation lag

def test_a_fresh_installation_is_waited_out_with_backoff_and_jitter(
        credential: MsalCredential, test_ca: TestCA, bf: FakeBotFramework) -> None:
    sleeps = Sleeps()
    bf.refuse_creates(OWNER, 2)  # installed, but Teams is not done yet
    conversation = run(_with(connector(credential, test_ca, sleeps), lambda bot: (
        bot.create_conversation(bf.service_url, OWNER, TENANT_ID, after_install=True))))
    assert conversation.startswith("a:") and len(bf.requests) == 3
    first, second = sleeps.delays
    assert 0.75 <= first <= 1.25 and 1.5 <= second <= 2.5


def test_a_refused_create_is_retried_only_right_after_an_install_and_within_a_budget(
        credential: MsalCredential, test_ca: TestCA, bf: FakeBotFramework) -> None:
    sleeps = Sleeps()
    bf.refuse_creates(OWNER, 100)

    async def go(bot: BotConnector) -> None:
        with pytest.raises(BotNotInstalled) as caught:
            await bot.create_conversation(bf.service_url, OWNER, TENANT_ID, after_install=True)
        assert (caught.value.status, caught.value.code) == (403, "BotNotInConversationRoster")
        assert len(bf.requests) == 5 and len(sleeps.delays) == 4
        with pytest.raises(BotNotInstalled):  # installed long ago: an answer, not a wait
            await bot.create_conversation(bf.service_url, OWNER, TENANT_ID)
        assert len(bf.requests) == 6 and len(sleeps.delays) == 4

    run(_with(connector(credential, test_ca, sleeps), go))
    assert 11.25 <= sum(sleeps.delays) <= 18.75
    growing = [d / w for d, w in zip(sleeps.delays, (1, 2, 4, 8), strict=True)]
    assert all(0.75 <= g <= 1.25 for g in growing)


def test_the_wait_schedule_is_a_setting(credential: MsalCredential, test_ca: TestCA,
                                        bf: FakeBotFramework) -> None:
    sleeps = Sleeps()
    bf.refuse_creates(OWNER, 100)
    bot = BotConnector(credential, APP_ID, verify=test_ca.client_context(), sleep=sleeps,
                       install_waits=(10.0,))
    with pytest.raises(BotNotInstalled):
        run(_with(bot, lambda b: b.create_conversation(bf.service_url, OWNER, TENANT_ID,
                                                       after_install=True)))
    assert len(sleeps.delays) == 1 and 7.5 <= sleeps.delays[0] <= 12.5


def test_a_user_without_the_app_needs_an_installation(credential: MsalCredential,
                                                      test_ca: TestCA,
                                                      bf: FakeBotFramework) -> None:
    bf.add_user("7d1c5b2f-4a8e-4b9f-8c3d-2e6f8a0b1c4d", installed=False)
    with pytest.raises(BotNotInstalled) as caught:
        run(_with(connector(credential, test_ca), lambda bot: bot.create_conversation(
            bf.service_url, "7d1c5b2f-4a8e-4b9f-8c3d-2e6f8a0b1c4d", TENANT_ID)))
    assert caught.value.code == "ForbiddenOperationException"


def test_unknown_conversations_and_activities_are_not_found(credential: MsalCredential,
                                                            test_ca: TestCA,
                                                            bf: FakeBotFramework) -> None:
    async def go(bot: BotConnector) -> None:
        with pytest.raises(ConversationNotFound) as caught:
            await bot.send_card(bf.service_url, "a:gone", CARD)
        assert isinstance(caught.value, NotFound) and caught.value.code == "ConversationNotFound"
        conversation = await bot.create_conversation(bf.service_url, OWNER, TENANT_ID)
        with pytest.raises(NotFound) as missing:
            await bot.update_card(bf.service_url, conversation, "1:404", DECIDED)
        assert missing.value.code == "ActivityNotFoundInConversation"

    run(_with(connector(credential, test_ca), go))


def test_throttling_is_retried_after_the_time_asked(credential: MsalCredential,
                                                    test_ca: TestCA,
                                                    bf: FakeBotFramework) -> None:
    sleeps = Sleeps()
    bf.fail_next(429, "Throttled", headers={"Retry-After": "2"}, times=2)
    conversation = run(_with(connector(credential, test_ca, sleeps),
                             lambda bot: bot.create_conversation(bf.service_url, OWNER,
                                                                 TENANT_ID)))
    assert conversation and sleeps.delays == [2.0, 2.0]


def test_a_service_that_stays_down_is_an_error_after_a_few_tries(credential: MsalCredential,
                                                                 test_ca: TestCA,
                                                                 bf: FakeBotFramework) -> None:
    sleeps = Sleeps()
    bf.fail_next(503, "ServiceUnavailable", times=10)
    with pytest.raises(BotConnectorError) as caught:
        run(_with(connector(credential, test_ca, sleeps),
                  lambda bot: bot.send_card(bf.service_url, "a:x", CARD)))
    assert (caught.value.status, caught.value.code, len(sleeps.delays)) == (
        503, "ServiceUnavailable", 3)


def test_a_server_error_is_not_retried(credential: MsalCredential, test_ca: TestCA,
                                       bf: FakeBotFramework) -> None:
    sleeps = Sleeps()
    bf.fail_next(500, "ServiceError")
    with pytest.raises(BotConnectorError) as caught:
        run(_with(connector(credential, test_ca, sleeps),
                  lambda bot: bot.send_card(bf.service_url, "a:x", CARD)))
    assert type(caught.value) is BotConnectorError
    assert (caught.value.status, caught.value.code, sleeps.delays) == (500, "ServiceError", [])


def test_a_card_that_may_have_been_delivered_is_not_sent_again(
        credential: MsalCredential, test_ca: TestCA, bf: FakeBotFramework) -> None:
    sleeps = Sleeps()
    bf.fail_next(504, "GatewayTimeout")  # the gateway gave up; Teams may have the message
    with pytest.raises(BotConnectorError) as caught:
        run(_with(connector(credential, test_ca, sleeps),
                  lambda bot: bot.send_card(bf.service_url, "a:x", CARD)))
    assert (caught.value.status, sleeps.delays) == (504, [])


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/teams/", "https://user:pw@host/teams/",
                                 "https://host/teams/?x=1", "not a url"])
def test_the_service_url_must_be_plain_https(url: str, credential: MsalCredential,
                                             test_ca: TestCA) -> None:
    with pytest.raises(BotConnectorError) as caught:
        run(_with(connector(credential, test_ca),
                  lambda bot: bot.send_card(url, "a:x", CARD)))
    assert caught.value.code == "InvalidServiceUrl"


def test_the_secret_and_tokens_stay_out_of_errors_and_logs(credential: MsalCredential,
                                                           test_ca: TestCA,
                                                           bf: FakeBotFramework,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    caplog.set_level("DEBUG")
    bf.fail_next(429, "Throttled", headers={"Retry-After": "0"})
    bf.fail_next(403, "BotDisabledByAdmin")

    with pytest.raises(Blocked) as caught:
        run(_with(connector(credential, test_ca),
                  lambda bot: bot.create_conversation(bf.service_url, OWNER, TENANT_ID)))
    token = run(credential.get_token(BOT_SCOPE)).token
    for text in (caplog.text, str(caught.value)):
        assert SECRET not in text and token not in text


# ----------------------------------------------------------------------------- the fake itself

def test_the_fake_connector_refuses_what_the_real_one_refuses(test_ca: TestCA,
                                                             bf: FakeBotFramework,
                                                             credential: MsalCredential) -> None:
    token = run(credential.get_token(BOT_SCOPE)).token
    auth = {"Authorization": f"Bearer {token}"}
    base = bf.service_url + "v3/conversations"
    with httpx.Client(verify=test_ca.client_context()) as http:
        assert http.post(base, json={"members": []}).status_code == 401
        assert http.post(base, json={"bot": {"id": APP_ID}, "tenantId": TENANT_ID},
                         headers=auth).json()["error"]["code"] == "BadArgument"
        made = http.post(base, headers=auth, json={
            "bot": {"id": APP_ID}, "members": [{"id": OWNER}], "tenantId": TENANT_ID})
        assert made.status_code == 201
        activities = f"{base}/{made.json()['id']}/activities"
        wrong_type = {"type": "message", "attachments": [
            {"contentType": "application/json", "content": CARD}]}
        answer = http.post(activities, headers=auth, json=wrong_type)
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, "BadArgument")
        big = {"type": "message", "attachments": [{"contentType": ADAPTIVE_CARD, "content": {
            **CARD, "body": [{"type": "TextBlock", "text": "x" * 50_000}]}}]}
        assert http.post(activities, headers=auth, json=big).status_code == 413
        assert http.post(activities, headers=auth,
                         content=b"{not json").json()["error"]["code"] == "BadSyntax"


# ----------------------------------------------------------------------------- Graph install

@pytest.fixture
def teams_graph(test_ca: TestCA, entra: FakeEntra) -> Iterator[FakeTeamsGraph]:
    with FakeTeamsGraph(test_ca, tokens=entra) as fake:
        yield fake
    assert not fake.errors, fake.errors[0]


def install(credential: MsalCredential, graph: FakeTeamsGraph, test_ca: TestCA,
            times: int = 1) -> list[Any]:
    async def go() -> list[Any]:
        async with connect(credential, base_url=graph.base_url, ca_bundle=test_ca.ca_pem,
                           retry=RetryPolicy(max_retries=0, delay=0)) as conn:
            return [await ensure_app_installed(conn, OWNER, MANIFEST_ID) for _ in range(times)]

    return run(go())


def test_the_app_is_installed_once_for_a_user(credential: MsalCredential,
                                              teams_graph: FakeTeamsGraph,
                                              test_ca: TestCA) -> None:
    teams_app_id = teams_graph.publish_app(MANIFEST_ID)
    first, second = install(credential, teams_graph, test_ca, times=2)
    assert (first.teams_app_id, first.installed_now) == (teams_app_id, True)
    assert (second.teams_app_id, second.installed_now) == (teams_app_id, False)
    posts = [c for c in teams_graph.calls if c.method == "POST"]
    assert len(posts) == 1 and posts[0].path == f"/v1.0/users/{OWNER}/teamwork/installedApps"
    assert posts[0].body["teamsApp@odata.bind"] == \
        f"{teams_graph.base_url}/appCatalogs/teamsApps/{teams_app_id}"
    lookups = [c.query for c in teams_graph.calls if c.method == "GET"]
    assert lookups[0]["$filter"] == f"externalId eq '{MANIFEST_ID}'"
    assert lookups[1]["$filter"] == f"teamsApp/id eq '{teams_app_id}'"
    assert lookups[1]["$expand"] == "teamsApp"
    assert list(teams_graph.installed[OWNER]) == [teams_app_id]


def test_an_app_missing_from_the_catalog_is_not_found(credential: MsalCredential,
                                                      teams_graph: FakeTeamsGraph,
                                                      test_ca: TestCA) -> None:
    with pytest.raises(NotFound) as caught:
        install(credential, teams_graph, test_ca)
    assert caught.value.code == "AppNotInCatalog"


@pytest.mark.parametrize(("status", "outcome"), [(409, True), (403, GraphError)])
def test_installation_conflicts_and_refusals(status: int, outcome: Any,
                                             credential: MsalCredential,
                                             teams_graph: FakeTeamsGraph,
                                             test_ca: TestCA) -> None:
    teams_graph.publish_app(MANIFEST_ID)
    teams_graph.post_status = status
    if outcome is True:  # installed by a concurrent run: fine, and just as fresh
        [result] = install(credential, teams_graph, test_ca)
        assert result.installed_now is True
    else:
        with pytest.raises(outcome) as caught:
            install(credential, teams_graph, test_ca)
        assert caught.value.status == status
