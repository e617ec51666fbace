"""Inbound bot activities: token validation (graph.bot_auth) and the endpoint (graph.bot_host).

Tokens are signed with test RSA keys published as JWKS by a loopback HTTPS fake of the Bot
Framework; the validator fetches them over real TLS, as in production.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from graph.bot_auth import (
    KEYS_TTL,
    MAX_CLOCK_SKEW,
    REFRESH_COOLDOWN,
    ActivityAuthenticator,
    Caller,
)
from graph.bot_host import TOKEN_LIFETIME, BotEndpoint, FunctionsHttpAdapter, SeenActivities
from graph.errors import BotAuthError
from tests.fakes.botframework import (
    FakeBotFramework,
    SigningKey,
    installation_update,
    invoke_activity,
    message_activity,
    signing_key,
)
from tests.fakes.fixtures import TENANT_ID
from tests.fakes.tls import TestCA

APP_ID = "3f1c1a52-5b1e-4b7b-9a59-6b0c4ad0e0d1"
OWNER = "6c0b4a1e-3f7d-4a8e-9b2c-1d5e7f9a0b3c"
OTHER_TENANT = "99999999-2222-4333-8444-555555555555"
CARD = {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "ok"}]}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {"main": signing_key("key-main"), "rotated": signing_key("key-rotated"),
            "stranger": signing_key("key-main"),  # same kid, another key: a forgery
            "webchat": signing_key("key-webchat", ("msteams", "webchat"))}


@pytest.fixture
def bf(test_ca: TestCA, keys: dict[str, SigningKey]) -> Iterator[FakeBotFramework]:
    with FakeBotFramework(test_ca, app_id=APP_ID, tenant_id=TENANT_ID,
                          keys=[keys["main"], keys["webchat"]]) as fake:
        fake.add_user(OWNER)
        yield fake
    assert not fake.errors, fake.errors[0]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(bf: FakeBotFramework, clock: Clock, test_ca: TestCA) -> ActivityAuthenticator:
    return ActivityAuthenticator(APP_ID, TENANT_ID, bf.openid_metadata_url, clock=clock,
                                 verify=test_ca.client_context())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def check(auth: ActivityAuthenticator, token: str | None, activity: dict[str, Any]) -> Caller:
    return run(auth.authenticate(None if token is None else f"Bearer {token}", activity))


def refusal(auth: ActivityAuthenticator, header: str | None, activity: dict[str, Any]) -> str:
    with pytest.raises(BotAuthError) as caught:
        run(auth.authenticate(header, activity))
    return caught.value.reason


def post(endpoint: BotEndpoint, activity: Any, header: str | None,
         header_name: str = "Authorization") -> tuple[int, Any]:
    headers = {} if header is None else {header_name: header}
    body = activity if isinstance(activity, bytes) else json.dumps(activity).encode()
    return run(endpoint.handle(body, headers))


# ----------------------------------------------------------------------------- valid tokens

def test_a_valid_token_names_the_caller(auth: ActivityAuthenticator,
                                        bf: FakeBotFramework) -> None:
    who = bf.who()
    caller = check(auth, bf.mint(), invoke_activity("approve", {"k": 1}, **who))
    assert caller == Caller(OWNER, who["user_id"], TENANT_ID, bf.service_url,
                            who["conversation_id"])


@pytest.mark.parametrize("audience", [APP_ID, f"api://{APP_ID}", f"api://botid-{APP_ID}"])
def test_each_documented_audience_is_accepted(auth: ActivityAuthenticator, bf: FakeBotFramework,
                                              audience: str) -> None:
    assert check(auth, bf.mint(audience=audience), message_activity(**bf.who())).tenant_id


def test_the_service_url_compares_without_its_trailing_slash(auth: ActivityAuthenticator,
                                                             bf: FakeBotFramework) -> None:
    token = bf.mint(service_url=bf.service_url.rstrip("/"))
    assert check(auth, token, message_activity(**bf.who())).service_url == bf.service_url


def test_five_minutes_of_clock_skew_are_tolerated(auth: ActivityAuthenticator,
                                                  bf: FakeBotFramework, clock: Clock) -> None:
    activity = message_activity(**bf.who())
    check(auth, bf.mint(now=clock.now - 3600 - 290, lifetime=3600), activity)  # expired 290 s
    check(auth, bf.mint(not_before=clock.now + 290), activity)  # valid in 290 s


def test_the_tenant_may_come_from_channel_data_only(auth: ActivityAuthenticator,
                                                    bf: FakeBotFramework) -> None:
    activity = message_activity(**bf.who())
    del activity["conversation"]["tenantId"]
    assert check(auth, bf.mint(), activity).tenant_id == TENANT_ID


# ----------------------------------------------------------------------------- refusals

def _who(bf: FakeBotFramework, **overrides: str) -> dict[str, str]:
    return bf.who(**overrides)


def _without(activity: dict[str, Any], *path: str) -> dict[str, Any]:
    node = activity
    for name in path[:-1]:
        node = node[name]
    del node[path[-1]]
    return activity


REFUSALS = {
    "wrong signature": lambda bf, k, now: (
        "bad_signature", bf.mint(key=k["stranger"]), None, None),
    "unknown kid": lambda bf, k, now: ("unknown_key", bf.mint(key=k["rotated"]), None, None),
    "wrong issuer": lambda bf, k, now: (
        "bad_issuer", bf.mint(issuer="https://sts.windows.net/x/"), None, None),
    "wrong audience": lambda bf, k, now: (
        "bad_audience", bf.mint(audience="00000000-0000-0000-0000-000000000000"), None, None),
    "audience list": lambda bf, k, now: (
        "bad_audience", bf.mint(audience=[APP_ID, "other"]), None, None),  # type: ignore[arg-type]
    "expired": lambda bf, k, now: (
        "expired", bf.mint(now=now - 3600 - 310, lifetime=3600), None, None),
    "not yet valid": lambda bf, k, now: (
        "not_yet_valid", bf.mint(not_before=now + 310), None, None),
    "issued in the future": lambda bf, k, now: (
        "not_yet_valid", bf.mint(extra={"iat": int(now + 600)}), None, None),
    "no exp": lambda bf, k, now: ("missing_exp", bf.mint(omit=["exp"]), None, None),
    "serviceurl mismatch": lambda bf, k, now: (
        "serviceurl_mismatch", bf.mint(service_url="https://evil.example/teams/"), None, None),
    "no serviceurl claim": lambda bf, k, now: (
        "missing_serviceurl_claim", bf.mint(omit=["serviceurl"]), None, None),
    "activity without serviceUrl": lambda bf, k, now: (
        "missing_service_url", bf.mint(), _without(message_activity(**_who(bf)), "serviceUrl"),
        None),
    "other tenant": lambda bf, k, now: (
        "wrong_tenant", bf.mint(), message_activity(**_who(bf, tenant_id=OTHER_TENANT)), None),
    "tenants disagree": lambda bf, k, now: (
        "wrong_tenant", bf.mint(),
        {**message_activity(**_who(bf)), "channelData": {"tenant": {"id": OTHER_TENANT}}}, None),
    "no tenant": lambda bf, k, now: (
        "missing_tenant", bf.mint(),
        _without(_without(message_activity(**_who(bf)), "conversation", "tenantId"),
                 "channelData", "tenant"), None),
    "non-msteams channel": lambda bf, k, now: (
        "wrong_channel", bf.mint(key=k["webchat"]),
        {**message_activity(**_who(bf)), "channelId": "webchat"}, None),
    "key not endorsed for the channel": lambda bf, k, now: (
        "not_endorsed", bf.mint(), {**message_activity(**_who(bf)), "channelId": "webchat"},
        None),
    "HS256": lambda bf, k, now: ("bad_algorithm", bf.mint(algorithm="HS256"), None, None),
    "alg none": lambda bf, k, now: ("bad_algorithm", bf.mint(algorithm="none"), None, None),
    "RS512": lambda bf, k, now: ("bad_algorithm", bf.mint(algorithm="RS512"), None, None),
    "no kid": lambda bf, k, now: ("missing_kid", bf.mint(kid=""), None, None),
    "missing header": lambda bf, k, now: ("missing_token", None, None, ""),
    "not bearer": lambda bf, k, now: ("missing_token", None, None, "Basic dXNlcjpwdw=="),
    "empty bearer": lambda bf, k, now: ("missing_token", None, None, "Bearer "),
    "not a JWT": lambda bf, k, now: ("malformed_token", None, None, "Bearer not.a.jwt"),
    "no sender": lambda bf, k, now: (
        "malformed_activity", bf.mint(), _without(message_activity(**_who(bf)), "from"), None),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_broken_rule_is_refused_with_401(case: str, auth: ActivityAuthenticator,
                                              bf: FakeBotFramework, keys: dict[str, SigningKey],
                                              clock: Clock, caplog: pytest.LogCaptureFixture
                                              ) -> None:
    caplog.set_level(logging.DEBUG)
    reason, token, activity, header = REFUSALS[case](bf, keys, clock.now)
    activity = activity or invoke_activity("approve", {"k": 1}, **bf.who())
    if header is None:
        header = f"Bearer {token}"
    called: list[object] = []

    async def on_action(*args: object) -> dict[str, Any]:
        called.append(args)
        return CARD

    endpoint = BotEndpoint(auth, on_action)
    assert post(endpoint, activity, header or None) == (401, {"error": "Unauthorized"})
    assert refusal(auth, header or None, activity) == reason
    assert not called
    assert reason in caplog.text
    if token:
        assert token not in caplog.text
        assert all(part not in caplog.text for part in token.split(".") if len(part) > 8)


# ----------------------------------------------------------------------------- signing keys

def test_keys_are_fetched_once_for_many_requests(auth: ActivityAuthenticator,
                                                 bf: FakeBotFramework, clock: Clock) -> None:
    activity = message_activity(**bf.who())

    async def many() -> None:
        await asyncio.gather(*(auth.authenticate(f"Bearer {bf.mint()}", activity)
                               for _ in range(10)))  # concurrent, cold: one fetch between them
        for _ in range(20):
            clock.now += 60
            await auth.authenticate(f"Bearer {bf.mint(now=clock.now)}", activity)

    run(many())
    assert (bf.metadata_requests, bf.jwks_requests, auth.fetches) == (1, 1, 1)


def test_keys_are_fetched_again_after_their_time_to_live(auth: ActivityAuthenticator,
                                                         bf: FakeBotFramework,
                                                         clock: Clock) -> None:
    activity = message_activity(**bf.who())
    check(auth, bf.mint(), activity)
    clock.now += KEYS_TTL + 1
    check(auth, bf.mint(now=clock.now), activity)
    assert bf.jwks_requests == 2


def test_a_rotated_key_is_picked_up_with_one_refetch(auth: ActivityAuthenticator,
                                                     bf: FakeBotFramework, clock: Clock,
                                                     keys: dict[str, SigningKey]) -> None:
    activity = message_activity(**bf.who())
    check(auth, bf.mint(), activity)
    bf.publish(keys["rotated"])  # the old key is withdrawn
    clock.now += REFRESH_COOLDOWN + 1
    check(auth, bf.mint(key=keys["rotated"], now=clock.now), activity)
    assert bf.jwks_requests == 2
    # the withdrawn key is unknown now; within the cooldown that costs no fetch
    assert refusal(auth, f"Bearer {bf.mint(key=keys['main'])}", activity) == "unknown_key"
    assert bf.jwks_requests == 2


def test_an_unknown_kid_costs_one_refetch_per_cooldown(auth: ActivityAuthenticator,
                                                       bf: FakeBotFramework, clock: Clock,
                                                       keys: dict[str, SigningKey]) -> None:
    activity = message_activity(**bf.who())
    check(auth, bf.mint(), activity)
    clock.now += REFRESH_COOLDOWN + 1
    for _ in range(5):
        assert refusal(auth, f"Bearer {bf.mint(kid='made-up')}", activity) == "unknown_key"
    assert bf.jwks_requests == 2  # one refetch, not five
    check(auth, bf.mint(now=clock.now), activity)  # the known key still works
    assert bf.jwks_requests == 2


def test_cached_keys_outlive_an_outage_of_the_key_endpoint(auth: ActivityAuthenticator,
                                                           bf: FakeBotFramework,
                                                           clock: Clock) -> None:
    activity = message_activity(**bf.who())
    check(auth, bf.mint(), activity)
    bf.jwks_available = False
    clock.now += KEYS_TTL + 1
    for _ in range(3):
        check(auth, bf.mint(now=clock.now), activity)
    assert bf.jwks_requests == 2  # one failed attempt, then the cooldown


def test_without_keys_every_request_is_refused(bf: FakeBotFramework, clock: Clock,
                                               test_ca: TestCA) -> None:
    bf.jwks_available = False
    auth = ActivityAuthenticator(APP_ID, TENANT_ID, bf.openid_metadata_url, clock=clock,
                                 verify=test_ca.client_context())
    assert refusal(auth, f"Bearer {bf.mint()}", message_activity(**bf.who())) \
        == "keys_unavailable"


def test_keys_from_an_untrusted_server_are_not_used(bf: FakeBotFramework, clock: Clock) -> None:
    auth = ActivityAuthenticator(APP_ID, TENANT_ID, bf.openid_metadata_url, clock=clock)
    # the system trust store does not know the test CA: TLS fails, no key is fetched
    assert refusal(auth, f"Bearer {bf.mint()}", message_activity(**bf.who())) \
        == "keys_unavailable"


def test_the_metadata_url_must_be_https() -> None:
    with pytest.raises(ValueError, match="https"):
        ActivityAuthenticator(APP_ID, TENANT_ID, "http://127.0.0.1:1/openidconfiguration")


# ----------------------------------------------------------------------------- the endpoint

class Recorder:
    def __init__(self, card: Any = CARD, fail: BaseException | None = None) -> None:
        self.card, self.fail = card, fail
        self.actions: list[tuple[Caller, str, dict[str, Any]]] = []
        self.conversations: list[tuple[Caller, dict[str, Any]]] = []

    async def on_action(self, caller: Caller, verb: str, data: dict[str, Any]) -> Any:
        self.actions.append((caller, verb, data))
        if self.fail is not None:
            raise self.fail
        return self.card

    async def on_conversation(self, caller: Caller, activity: dict[str, Any]) -> None:
        self.conversations.append((caller, activity))
        if self.fail is not None:
            raise self.fail


def endpoint_for(auth: ActivityAuthenticator, recorder: Recorder) -> BotEndpoint:
    return BotEndpoint(auth, recorder.on_action, recorder.on_conversation)


def test_an_invoke_answers_with_the_handlers_card(auth: ActivityAuthenticator,
                                                  bf: FakeBotFramework) -> None:
    recorder = Recorder()
    data = {"serviceKey": "mailchimp", "requestId": "r-1", "mac": "abc"}
    status, body = post(endpoint_for(auth, recorder),
                        invoke_activity("approve", data, **bf.who()), f"Bearer {bf.mint()}",
                        header_name="authorization")  # any header case
    assert status == 200
    assert body == {"statusCode": 200, "type": "application/vnd.microsoft.card.adaptive",
                    "value": CARD}
    [(caller, verb, got)] = recorder.actions
    assert (caller.aad_object_id, caller.tenant_id, verb, got) == (OWNER, TENANT_ID, "approve",
                                                                   data)


@pytest.mark.parametrize("failure", ["raises", "returns no card"])
def test_a_failing_handler_answers_with_an_error_card_to_retry(
        failure: str, auth: ActivityAuthenticator, bf: FakeBotFramework,
        caplog: pytest.LogCaptureFixture) -> None:
    recorder = (Recorder(fail=RuntimeError("SharePoint said 503"))
                if failure == "raises" else Recorder(card=None))
    data = {"serviceKey": "mailchimp", "requestId": "r-1"}
    token = bf.mint()
    status, body = post(endpoint_for(auth, recorder), invoke_activity("reject", data, **bf.who()),
                        f"Bearer {token}")
    assert status == 200
    assert body["statusCode"] == 200 and body["type"].endswith("card.adaptive")
    card = body["value"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    assert card["actions"] == [{"type": "Action.Execute", "title": "Try again", "verb": "reject",
                                "data": data}]
    assert token not in caplog.text


def test_an_action_without_a_verb_is_a_bad_request_for_teams(auth: ActivityAuthenticator,
                                                             bf: FakeBotFramework) -> None:
    recorder = Recorder()
    activity = invoke_activity("approve", **bf.who())
    del activity["value"]["action"]["verb"]
    status, body = post(endpoint_for(auth, recorder), activity, f"Bearer {bf.mint()}")
    assert status == 200
    assert body["statusCode"] == 400 and body["type"] == "application/vnd.microsoft.error"
    assert not recorder.actions


# ----------------------------------------------------------------------------- replays

def test_a_replayed_action_is_answered_as_a_refresh_and_not_acted_on(
        auth: ActivityAuthenticator, bf: FakeBotFramework, clock: Clock,
        caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    endpoint = BotEndpoint(auth, recorder.on_action, seen=SeenActivities(clock=clock))
    activity, token = invoke_activity("approve", {"k": 1}, **bf.who()), bf.mint(now=clock.now)
    caplog.set_level(logging.INFO, logger="dmarcbot.bot")
    first = post(endpoint, activity, f"Bearer {token}")
    again = post(endpoint, activity, f"Bearer {token}")
    assert first == again  # the same answer shape a second click gets: the card
    assert [verb for _, verb, _ in recorder.actions] == ["approve", "refresh"]
    assert endpoint.replays == 1
    # a count in the log, never the token or the activity
    assert "replay" in caplog.text and token not in caplog.text
    assert activity["id"] not in caplog.text


def test_an_activity_is_remembered_until_its_token_expires(
        auth: ActivityAuthenticator, bf: FakeBotFramework, clock: Clock) -> None:
    recorder = Recorder()
    seen = SeenActivities(clock=clock)
    endpoint = BotEndpoint(auth, recorder.on_action, seen=seen)
    activity = invoke_activity("approve", {"k": 1}, **bf.who())
    token = bf.mint(now=clock.now, lifetime=600)
    post(endpoint, activity, f"Bearer {token}")
    clock.now += 600 + MAX_CLOCK_SKEW - 1  # the token is still accepted: still a replay
    post(endpoint, activity, f"Bearer {token}")
    assert [verb for _, verb, _ in recorder.actions] == ["approve", "refresh"]
    clock.now += 2  # now the token itself is refused, and the activity may be forgotten
    assert post(endpoint, activity, f"Bearer {token}")[0] == 401
    post(endpoint, invoke_activity("reject", **bf.who()), f"Bearer {bf.mint(now=clock.now)}")
    assert len(seen) == 1  # the expired entry went when the next one came
    assert [verb for _, verb, _ in recorder.actions] == ["approve", "refresh", "reject"]


def test_the_memory_is_bounded_by_count_and_never_forgets_a_live_id(
        auth: ActivityAuthenticator, bf: FakeBotFramework, clock: Clock) -> None:
    recorder = Recorder()
    seen = SeenActivities(limit=3, clock=clock)
    endpoint = BotEndpoint(auth, recorder.on_action, seen=seen)
    token = f"Bearer {bf.mint(now=clock.now)}"
    activities = [invoke_activity("approve", {"n": n}, **bf.who()) for n in range(5)]
    answers = [post(endpoint, activity, token) for activity in activities]
    assert len(seen) == 3
    # the flood is refused, not let in by forgetting: a replay of the first is still caught
    assert [a[1]["statusCode"] for a in answers[3:]] == [503, 503]  # type: ignore[index]
    post(endpoint, activities[0], token)
    assert [verb for _, verb, _ in recorder.actions] == ["approve"] * 3 + ["refresh"]


def test_without_the_token_s_expiry_an_activity_is_kept_for_a_token_s_lifetime(
        clock: Clock) -> None:
    seen = SeenActivities(clock=clock)
    assert seen.first_time("f:1", None)
    assert seen.first_time("f:\ud800", None)  # any string the JSON held, lone surrogates too
    clock.now += TOKEN_LIFETIME + MAX_CLOCK_SKEW
    assert not seen.first_time("f:1", None)
    clock.now += 1
    assert seen.first_time("f:1", None)


def test_other_activities_get_an_empty_200(auth: ActivityAuthenticator,
                                           bf: FakeBotFramework) -> None:
    recorder = Recorder()
    endpoint = endpoint_for(auth, recorder)
    other_invoke = {**invoke_activity("x", **bf.who()), "name": "task/fetch"}
    for activity in (message_activity(**bf.who()), other_invoke):
        assert post(endpoint, activity, f"Bearer {bf.mint()}") == (200, None)
    assert not recorder.actions and not recorder.conversations


def test_an_installation_hands_over_the_conversation(auth: ActivityAuthenticator,
                                                     bf: FakeBotFramework) -> None:
    recorder = Recorder()
    who = bf.who()
    activity = installation_update(**who)
    assert post(endpoint_for(auth, recorder), activity, f"Bearer {bf.mint()}") == (200, None)
    [(caller, got)] = recorder.conversations
    assert (caller.conversation_id, caller.service_url) == (who["conversation_id"],
                                                            bf.service_url)
    assert got["type"] == "installationUpdate"


def test_a_failing_conversation_handler_answers_500_without_details(
        auth: ActivityAuthenticator, bf: FakeBotFramework) -> None:
    recorder = Recorder(fail=OSError("table storage down"))
    status, body = post(endpoint_for(auth, recorder), installation_update(**bf.who()),
                        f"Bearer {bf.mint()}")
    assert (status, body) == (500, {"error": "internal"})


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe\x00", b"[" * 100_000,
                                 b""])
def test_a_body_that_is_not_a_json_object_is_a_400(raw: bytes, auth: ActivityAuthenticator,
                                                   bf: FakeBotFramework) -> None:
    status, body = post(endpoint_for(auth, Recorder()), raw, f"Bearer {bf.mint()}")
    assert (status, body) == (400, {"error": "BadRequest"})


def test_an_oversized_body_is_refused_unread(auth: ActivityAuthenticator) -> None:
    endpoint = BotEndpoint(auth, Recorder().on_action, max_body=1000)
    assert post(endpoint, b" " * 1001, None)[0] == 413


# ----------------------------------------------------------------------------- Teams SDK hosting

@pytest.mark.filterwarnings("ignore:HtmlWidgetSecurityPolicy is in preview",
                            "ignore:The bot client is deprecated:DeprecationWarning")
def test_the_teams_sdk_app_initialises_on_the_functions_adapter() -> None:
    """The SDK can be set up inside the Function (routes registered, no server, no network)."""
    from microsoft_teams.apps import App
    from microsoft_teams.apps.http.adapter import HttpServerAdapter

    adapter = FunctionsHttpAdapter()
    assert isinstance(adapter, HttpServerAdapter)
    app = App(http_server_adapter=adapter, client_id=APP_ID, tenant_id=TENANT_ID,
              token=lambda scope, tenant=None: "unused")

    async def go() -> tuple[int, Any]:
        await app.initialize()
        with pytest.raises(NotImplementedError):
            await app.start(0)  # type: ignore[func-returns-value]
        return await adapter.dispatch("POST", "/api/messages", {"type": "message"}, {})

    assert run(go()) == (401, {"error": "Unauthorized"})  # the SDK's own check: no bearer
    assert ("POST", "/api/messages") in adapter.routes
