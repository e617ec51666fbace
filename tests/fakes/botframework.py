"""Fake Bot Framework on loopback HTTPS: the token-signing side and the Bot Connector REST API.

One server plays both hosts a Teams bot talks to:

* login.botframework.com: OpenID metadata (`/v1/.well-known/openidconfiguration`) pointing at
  a JWKS (`/v1/.well-known/keys`) with test RSA keys, their `endorsements` and rotation;
  `mint()` signs activity tokens as the Bot Connector does (iss, aud, serviceurl, nbf, exp);
* the Bot Connector (`{service_url}v3/conversations...`): create a 1:1 conversation, send and
  update activities, accepting only live bearer tokens a FakeEntra issued for the Bot Framework
  scope, refusing what the real service refuses (no members, a card with the wrong content type,
  an unknown conversation or activity, a user who blocked the bot) in its error shapes.

`FakeTeamsGraph` is the Graph side of proactive installation (the app catalog and a user's
installed apps), routed against the msgraph-sdk route table like tests.fakes.graph.

Activity builders (`invoke_activity`, `message_activity`, `installation_update`) make the JSON
Teams posts to the bot, so tests can sign and post it to the endpoint.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.server import LoopbackServer, Request, Response, Served
from tests.fakes.tls import TestCA

BOT_SCOPE = "https://api.botframework.com/.default"
BOT_ISSUER = "https://api.botframework.com"
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
METADATA_PATH = "/v1/.well-known/openidconfiguration"
KEYS_PATH = "/v1/.well-known/keys"
SERVICE_PREFIX = "/teams"  # as in https://smba.trafficmanager.net/teams/
MAX_ACTIVITY_BYTES = 40 * 1024  # Teams refuses bigger messages with 413 MessageSizeTooBig
DENIED = {"message": "Authorization has been denied for this request."}
# What Teams answers (403) to a bot writing to a user who blocked or removed it: `message` is
# itself JSON, in a string. Byte for byte the example of msteams-docs
# msteams-platform/bots/how-to/conversations/send-proactive-messages.md ("Understand who
# blocked, muted, or uninstalled a bot").
MESSAGE_WRITES_BLOCKED = (
    rb'{"errorCode":209,"message":"{\n  \"subCode\": \"MessageWritesBlocked\",\n  '
    rb'\"details\": \"Thread is blocked from message writes.\",\n  \"errorCode\": null,'
    rb'\n  \"errorSubCode\": null\n}"}')
# What a create answers while a new installation has not reached the conversation roster yet
# (the body of MicrosoftDocs/bot-docs#1527; Company Communicator users saw the same message
# right after a proactive install, OfficeDev/microsoft-teams-apps-company-communicator#744).
NOT_IN_ROSTER = ("BotNotInConversationRoster", "The bot is not part of the conversation roster.")


class TokenIssuer(Protocol):
    def is_valid(self, token: str) -> bool: ...


# ----------------------------------------------------------------------------- signing keys

@dataclass(frozen=True)
class SigningKey:
    """An RSA key the fake Bot Framework signs activity tokens with."""

    kid: str
    private_key: rsa.RSAPrivateKey
    endorsements: tuple[str, ...] | None = ("msteams",)

    def jwk(self) -> dict[str, Any]:
        """The public key as login.botframework.com lists it."""
        numbers = self.private_key.public_key().public_numbers()
        jwk: dict[str, Any] = {"kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid,
                               "n": _b64uint(numbers.n), "e": _b64uint(numbers.e)}
        if self.endorsements is not None:
            jwk["endorsements"] = list(self.endorsements)
        return jwk

    def with_endorsements(self, endorsements: tuple[str, ...] | None) -> SigningKey:
        return SigningKey(self.kid, self.private_key, endorsements)


def signing_key(kid: str | None = None,
                endorsements: tuple[str, ...] | None = ("msteams",)) -> SigningKey:
    """A new 2048-bit RSA signing key (about 50 ms: share them per session)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(kid or secrets.token_urlsafe(12), key, endorsements)


def _b64uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint_activity_token(key: SigningKey, *, app_id: str, service_url: str,
                        issuer: str = BOT_ISSUER, audience: str | None = None,
                        now: float | None = None, lifetime: int = 3600,
                        not_before: float | None = None, kid: str | None = None,
                        algorithm: str = "RS256", extra: Mapping[str, Any] | None = None,
                        omit: Iterable[str] = ()) -> str:
    """A Bot Connector → bot token: {serviceurl, nbf, exp, iss, aud}, RS256 with header kid.

    `omit` drops claims; `extra` adds or replaces some; `algorithm="HS256"` signs with a shared
    secret and `"none"` leaves the token unsigned (attacks the validator must refuse).
    """
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "serviceurl": service_url,
        "nbf": int(issued - 5 if not_before is None else not_before),
        "exp": int(issued + lifetime),
        "iss": issuer,
        "aud": app_id if audience is None else audience,
    }
    claims.update(extra or {})
    for name in omit:
        claims.pop(name, None)
    headers = {"kid": key.kid if kid is None else kid, "x5t": key.kid, "typ": "JWT"}
    if algorithm == "none":
        return _unsigned(claims, headers)
    if algorithm.startswith("HS"):
        return jwt.encode(claims, "shared-secret-an-attacker-might-try-32b", algorithm=algorithm,
                          headers=headers)
    return jwt.encode(claims, key.private_key, algorithm=algorithm, headers=headers)


def _unsigned(claims: Mapping[str, Any], headers: Mapping[str, Any]) -> str:
    def part(value: Mapping[str, Any]) -> str:
        raw = json.dumps({**value}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', **headers})}.{part(claims)}."


# ----------------------------------------------------------------------------- activities

def _base_activity(kind: str, *, service_url: str, tenant_id: str, app_id: str,
                   user_aad_id: str, user_id: str, conversation_id: str,
                   channel_id: str = "msteams") -> dict[str, Any]:
    return {
        "type": kind,
        "id": f"f:{uuid.uuid4().hex}",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "serviceUrl": service_url,
        "channelId": channel_id,
        "from": {"id": user_id, "name": "Owner", "aadObjectId": user_aad_id},
        "conversation": {"conversationType": "personal", "tenantId": tenant_id,
                         "id": conversation_id},
        "recipient": {"id": f"28:{app_id}", "name": "dmarcbot"},
        "entities": [{"locale": "en-US", "country": "US", "platform": "Web",
                      "timezone": "Europe/Paris", "type": "clientInfo"}],
        "channelData": {"tenant": {"id": tenant_id}, "source": {"name": "message"}},
        "locale": "en-US",
    }


def invoke_activity(verb: str, data: Mapping[str, Any] | None = None, *,
                    trigger: str = "manual", **who: str) -> dict[str, Any]:
    """An `adaptiveCard/action` invoke, as Teams posts it for an Action.Execute click."""
    activity = _base_activity("invoke", **who)
    activity["name"] = "adaptiveCard/action"
    activity["replyToId"] = "1:1700000000000"
    activity["value"] = {"action": {"type": "Action.Execute", "verb": verb,
                                    "data": dict(data or {})},
                         "trigger": trigger}
    return activity


def message_activity(text: str = "hello", **who: str) -> dict[str, Any]:
    activity = _base_activity("message", **who)
    activity["text"] = text
    activity["textFormat"] = "plain"
    return activity


def installation_update(action: str = "add", **who: str) -> dict[str, Any]:
    """What Teams posts when the app is installed for the user (the 1:1 chat now exists)."""
    activity = _base_activity("installationUpdate", **who)
    activity["action"] = action
    activity["channelData"]["source"] = None
    return activity


# ----------------------------------------------------------------------------- Bot Connector

class BotRequest(NamedTuple):
    method: str
    path: str
    body: Any  # parsed JSON (None when not JSON); never the Authorization header


@dataclass
class FakeUser:
    aad_object_id: str
    user_id: str  # 29:...
    installed: bool = True
    blocked: bytes | None = None  # the body creates and sends answer with (403)
    settling: int = 0  # creates still refused (403 NOT_IN_ROSTER) though installed


@dataclass
class FakeConversation:
    id: str
    user: FakeUser
    tenant_id: str
    activities: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # verb, id


@dataclass
class _Fault:
    status: int
    payload: Any
    headers: dict[str, str]
    method: str | None
    path_contains: str | None
    remaining: int


class _ConnectorError(Exception):
    def __init__(self, status: int, code: str, message: str, sub_code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        error: dict[str, str] = {"code": code, "message": message}
        if sub_code:
            error["subCode"] = sub_code
        self.status, self.payload = status, {"error": error}
        self.headers = dict(headers or {})
        self.raw: bytes | None = None  # a body sent as is, in place of the payload

    @classmethod
    def with_body(cls, status: int, raw: bytes) -> _ConnectorError:
        error = cls(status, "", "")
        error.raw = raw
        return error

    def response(self) -> Response:
        if self.raw is not None:
            return Response(self.status, self.raw,
                            {"Content-Type": "application/json; charset=utf-8", **self.headers})
        return Response.json(self.status, self.payload, self.headers)


class FakeBotFramework(Served):
    """OpenID metadata + JWKS + Bot Connector for one bot (app id) in one tenant.

    ``tokens`` decides which bearer tokens the Bot Connector accepts (a FakeEntra constructed
    with ``scopes=`` including BOT_SCOPE); None accepts any non-empty one.
    """

    def __init__(self, ca: TestCA, *, app_id: str, tenant_id: str,
                 tokens: TokenIssuer | None = None,
                 keys: Iterable[SigningKey] = ()) -> None:
        self.app_id = app_id
        self.tenant_id = tenant_id
        self.tokens = tokens
        self._keys: list[SigningKey] = list(keys) or [signing_key("fake-key-1")]
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.users: dict[str, FakeUser] = {}
        self.conversations: dict[str, FakeConversation] = {}
        self.requests: list[BotRequest] = []
        self.metadata_requests = 0
        self.jwks_requests = 0
        self.jwks_available = True  # False: the key endpoint answers 503
        self._faults: list[_Fault] = []
        self.settle_after_install = 0  # creates refused after each install (see install)
        self._server = LoopbackServer(self._handle, ca.server_context())

    @property
    def origin(self) -> str:
        return self._server.origin

    @property
    def openid_metadata_url(self) -> str:
        return self.origin + METADATA_PATH

    @property
    def jwks_uri(self) -> str:
        return self.origin + KEYS_PATH

    @property
    def service_url(self) -> str:
        """The serviceUrl Teams puts in activities, with its trailing slash."""
        return f"{self.origin}{SERVICE_PREFIX}/"

    # ------------------------------------------------------------------ keys and tokens
    @property
    def key(self) -> SigningKey:
        """The key new tokens are signed with (the first published one)."""
        with self._lock:
            return self._keys[0]

    def publish(self, *keys: SigningKey) -> None:
        """Serve exactly these keys from now on (a rotation drops the old ones)."""
        with self._lock:
            self._keys = list(keys)

    def mint(self, key: SigningKey | None = None, **kwargs: Any) -> str:
        """An activity token for this bot and service URL (see mint_activity_token)."""
        kwargs.setdefault("app_id", self.app_id)
        kwargs.setdefault("service_url", self.service_url)
        return mint_activity_token(key or self.key, **kwargs)

    def who(self, user: FakeUser | None = None, **overrides: str) -> dict[str, str]:
        """The identity arguments of the activity builders for `user` in this tenant."""
        if user is None:
            user = next(iter(self.users.values()), None) or self.add_user(str(uuid.uuid4()))
        conversation = self._conversation_for(user)
        args = {"service_url": self.service_url, "tenant_id": self.tenant_id,
                "app_id": self.app_id, "user_aad_id": user.aad_object_id,
                "user_id": user.user_id, "conversation_id": conversation.id}
        args.update(overrides)
        return args

    # ------------------------------------------------------------------ users and knobs
    def add_user(self, aad_object_id: str, *, installed: bool = True) -> FakeUser:
        user = FakeUser(aad_object_id, f"29:1{secrets.token_urlsafe(24)}", installed)
        with self._lock:
            self.users[aad_object_id] = user
        return user

    def block(self, aad_object_id: str, *, code: str = "ConversationBlockedByUser",
              sub_code: str | None = "MessageWritesBlocked",
              message: str = "User blocked the conversation with the bot.",
              body: bytes | None = None) -> None:
        """The user blocks the bot: sends and creates answer 403 with this error object, or
        with `body` as is (MESSAGE_WRITES_BLOCKED is what Teams documents)."""
        if body is None:
            error = {"code": code, "message": message}
            if sub_code:
                error["subCode"] = sub_code
            body = json.dumps({"error": error}).encode()
        with self._lock:
            self.users[aad_object_id].blocked = body

    def install(self, aad_object_id: str) -> None:
        """The app was just installed for the user (FakeTeamsGraph calls this). Teams installs
        asynchronously: the next `settle_after_install` creates still answer 403."""
        with self._lock:
            user = self.users.get(aad_object_id)
            if user is None:
                user = self.users[aad_object_id] = FakeUser(
                    aad_object_id, f"29:1{secrets.token_urlsafe(24)}", installed=False)
            if not user.installed:
                user.installed = True
                user.settling = self.settle_after_install

    def refuse_creates(self, aad_object_id: str, times: int) -> None:
        """The next `times` creates for an installed user answer 403 as a new installation
        does (an installation that Teams has not finished, or never will)."""
        with self._lock:
            self.users[aad_object_id].settling = times

    def fail_next(self, status: int, code: str = "ServiceError", *, times: int = 1,
                  method: str | None = None, path_contains: str | None = None,
                  headers: Mapping[str, str] | None = None) -> None:
        """The next `times` matching connector requests answer `status` with this code."""
        payload = {"error": {"code": code, "message": f"Injected {status}."}}
        with self._lock:
            self._faults.append(_Fault(status, payload, dict(headers or {}), method,
                                       path_contains, times))

    def conversation(self, conversation_id: str) -> FakeConversation:
        with self._lock:
            return self.conversations[conversation_id]

    def _conversation_for(self, user: FakeUser) -> FakeConversation:
        with self._lock:
            for conversation in self.conversations.values():
                if conversation.user is user:
                    return conversation
            conversation = FakeConversation(f"a:1{secrets.token_urlsafe(40)}", user,
                                            self.tenant_id)
            self.conversations[conversation.id] = conversation
            return conversation

    # ------------------------------------------------------------------ HTTP
    def _handle(self, request: Request) -> Response:
        path = request.raw_path
        if request.method == "GET" and path == METADATA_PATH:
            with self._lock:
                self.metadata_requests += 1
            return Response.json(200, {
                "issuer": BOT_ISSUER,
                "authorization_endpoint": "https://invalid.botframework.com",
                "jwks_uri": self.jwks_uri,
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            })
        if request.method == "GET" and path == KEYS_PATH:
            with self._lock:
                self.jwks_requests += 1
                keys = [k.jwk() for k in self._keys]
                available = self.jwks_available
            if not available:
                return Response.json(503, {"error": "unavailable"})
            return Response.json(200, {"keys": keys})
        if not path.startswith(SERVICE_PREFIX + "/v3/"):
            return Response.json(404, {"error": {"code": "NotFound", "message": "No route."}})
        body: Any = None
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(BotRequest(request.method, path, body))
        try:
            self._authenticate(request)
            fault = self._take_fault(request.method, path)
            if fault is not None:
                return Response.json(fault.status, fault.payload, fault.headers)
            if request.body and body is None:
                raise _ConnectorError(400, "BadSyntax", "Request body is not valid JSON.")
            if len(request.body) > MAX_ACTIVITY_BYTES:
                raise _ConnectorError(413, "MessageSizeTooBig", "Message size too large.")
            return self._route(request.method, path[len(SERVICE_PREFIX):], body)
        except _ConnectorError as exc:
            return exc.response()

    def _authenticate(self, request: Request) -> None:
        scheme, _, token = (request.headers.get("Authorization") or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _Denied()
        if self.tokens is not None:
            if not self.tokens.is_valid(token):
                raise _Denied()
            scope = _issued_scope(self.tokens, token)
            if scope is not None and BOT_SCOPE not in scope.split():
                raise _Denied()  # a Graph token is no good here
            claims = getattr(self.tokens, "claims", None)
            issued = claims(token) if claims is not None else None
            if issued is not None and issued.get("appid") != self.app_id:
                raise _Denied()  # another app's Bot Framework token: not this bot's

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method and fault.method != method:
                    continue
                if fault.path_contains and fault.path_contains not in path:
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _route(self, method: str, path: str, body: Any) -> Response:
        parts = [unquote(p) for p in path.split("/") if p]  # v3, conversations, ...
        if parts[:2] != ["v3", "conversations"]:
            raise _ConnectorError(404, "NotFound", "No route.")
        if len(parts) == 2 and method == "POST":
            return self._create_conversation(body)
        if len(parts) == 4 and parts[3] == "activities" and method == "POST":
            return self._send(parts[2], body)
        if len(parts) == 5 and parts[3] == "activities" and method == "PUT":
            return self._update(parts[2], parts[4], body)
        raise _ConnectorError(405, "MethodNotAllowed",
                              f"The requested resource does not support http method '{method}'.")

    def _create_conversation(self, body: Any) -> Response:
        if not isinstance(body, dict):
            raise _ConnectorError(400, "BadArgument", "Missing conversation parameters.")
        members = body.get("members")
        if not isinstance(members, list) or not members:
            raise _ConnectorError(400, "BadArgument", "Conversation members are required.")
        if body.get("isGroup") is True or len(members) != 1:
            raise _ConnectorError(400, "BadArgument",
                                  "Only 1:1 conversations can be created by this fake.")
        bot = body.get("bot")
        bot_id = bot.get("id") if isinstance(bot, dict) else None
        if bot_id not in (self.app_id, f"28:{self.app_id}"):
            raise _ConnectorError(400, "BadArgument", "Bot id does not match the caller.")
        tenant = body.get("tenantId")
        channel_data = body.get("channelData")
        channel_tenant = None
        if isinstance(channel_data, dict) and isinstance(channel_data.get("tenant"), dict):
            channel_tenant = channel_data["tenant"].get("id")
        if not tenant and not channel_tenant:
            raise _ConnectorError(400, "BadArgument", "Tenant id is required.")
        if (tenant or channel_tenant) != self.tenant_id or (
                channel_tenant and tenant and channel_tenant != tenant):
            raise _ConnectorError(403, "NotEnoughPermissions", "Tenant does not match.")
        member = members[0]
        member_id = member.get("id") if isinstance(member, dict) else None
        if not isinstance(member_id, str) or not member_id:
            raise _ConnectorError(400, "BadArgument", "Member id is required.")
        user = self._user(member_id)
        if user is None or not user.installed:
            raise _ConnectorError(403, "ForbiddenOperationException",
                                  "Bot is not installed in user's personal scope")
        if user.blocked:
            raise _ConnectorError.with_body(403, user.blocked)
        with self._lock:
            settling = user.settling > 0
            if settling:
                user.settling -= 1
        if settling:
            raise _ConnectorError(403, *NOT_IN_ROSTER)
        conversation = self._conversation_for(user)
        return Response.json(201, {"id": conversation.id})

    def _user(self, member_id: str) -> FakeUser | None:
        with self._lock:
            if member_id in self.users:
                return self.users[member_id]
            return next((u for u in self.users.values() if u.user_id == member_id), None)

    def _find(self, conversation_id: str) -> FakeConversation:
        with self._lock:
            conversation = self.conversations.get(conversation_id)
        if conversation is None:
            raise _ConnectorError(404, "ConversationNotFound", "Conversation not found.")
        if conversation.user.blocked:
            raise _ConnectorError.with_body(403, conversation.user.blocked)
        return conversation

    def _send(self, conversation_id: str, body: Any) -> Response:
        conversation = self._find(conversation_id)
        _check_message(body)
        activity_id = f"1:{int(time.time() * 1000)}{next(self._ids):04d}"
        stored = {**copy.deepcopy(body), "id": activity_id}
        with self._lock:
            conversation.activities[activity_id] = stored
            conversation.history.append(("create", activity_id, stored))
        return Response.json(201, {"id": activity_id})

    def _update(self, conversation_id: str, activity_id: str, body: Any) -> Response:
        conversation = self._find(conversation_id)
        with self._lock:
            known = activity_id in conversation.activities
        if not known:
            raise _ConnectorError(404, "ActivityNotFoundInConversation", "Conversation not found.")
        _check_message(body)
        if isinstance(body, dict) and body.get("id") not in (None, activity_id):
            raise _ConnectorError(400, "BadArgument", "Activity id does not match the URL.")
        stored = {**copy.deepcopy(body), "id": activity_id}
        with self._lock:
            conversation.activities[activity_id] = stored
            conversation.history.append(("update", activity_id, stored))
        return Response.json(200, {"id": activity_id})


class _Denied(_ConnectorError):
    def __init__(self) -> None:
        super().__init__(401, "Unauthorized", DENIED["message"])
        self.payload = dict(DENIED)  # the connector's 401 body is not the usual error object


def _check_message(body: Any) -> None:
    if not isinstance(body, dict):
        raise _ConnectorError(400, "BadArgument", "Activity is required.")
    if body.get("type") != "message":
        raise _ConnectorError(400, "BadArgument", f"Unknown activity type {body.get('type')!r}.")
    attachments = body.get("attachments")
    if attachments is None and not body.get("text"):
        raise _ConnectorError(400, "BadArgument", "Message has no text and no attachments.")
    for attachment in attachments or ():
        if not isinstance(attachment, dict):
            raise _ConnectorError(400, "BadArgument", "Attachment must be an object.")
        content_type = attachment.get("contentType")
        content = attachment.get("content")
        if content_type != ADAPTIVE_CARD:
            raise _ConnectorError(400, "BadArgument", f"Unknown attachment type {content_type!r}.")
        if not isinstance(content, dict) or content.get("type") != "AdaptiveCard" \
                or not isinstance(content.get("version"), str):
            raise _ConnectorError(400, "BadArgument", "Adaptive card content is not a card.")


def _issued_scope(tokens: TokenIssuer, token: str) -> str | None:
    """The scope FakeEntra issued `token` for, when it can tell (None: unknown, accept).

    FakeEntra keeps the scope of each token but has no public accessor for it; reading it here
    lets the connector refuse a Graph token, as the real one does.
    """
    state, lock = getattr(tokens, "_state", None), getattr(tokens, "_lock", None)
    issued_tokens = getattr(state, "tokens", None)
    if not isinstance(issued_tokens, dict) or lock is None:
        return None
    with lock:
        issued = issued_tokens.get(token)
    scope = getattr(issued, "scope", None)
    return scope if isinstance(scope, str) else None


# ----------------------------------------------------------------------------- Graph side

class GraphCall(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    body: Any


class FakeTeamsGraph(Served):
    """Graph v1.0 for proactive installation: the org app catalog and users' installed apps.

    Requests are routed against the msgraph-sdk route table (an unknown path, method or query
    option is a 400, as real Graph answers) and need a live token from ``tokens``.
    """

    def __init__(self, ca: TestCA, *, tokens: TokenIssuer | None = None,
                 routes: Any = None) -> None:
        from tests.fakes.routes import RouteTable

        self.tokens = tokens
        self.routes = routes or RouteTable.load()
        self.catalog: dict[str, str] = {}  # external (manifest) id -> teams app id
        self.installed: dict[str, dict[str, str]] = {}  # user id -> {teams app id: install id}
        self.calls: list[GraphCall] = []
        self.post_status: int | None = None  # answer POSTs with this error status instead
        self.on_install: Callable[[str], None] | None = None  # told the user id of an install
        self._lock = threading.Lock()
        self._server = LoopbackServer(self._handle, ca.server_context())

    @property
    def base_url(self) -> str:
        return f"{self._server.origin}/v1.0"

    def publish_app(self, external_id: str) -> str:
        teams_app_id = str(uuid.uuid4())
        with self._lock:
            self.catalog[external_id] = teams_app_id
        return teams_app_id

    def _handle(self, request: Request) -> Response:
        path = unquote(request.raw_path)
        query = dict(request.query)
        body: Any = None
        if request.body:
            try:
                body = json.loads(request.body)
            except ValueError:
                return _graph_error(400, "BadRequest", "Invalid JSON.")
        with self._lock:
            self.calls.append(GraphCall(request.method, path, query, body))
        from tests.fakes.routes import RouteError

        if not path.startswith("/v1.0/"):
            return _graph_error(400, "BadRequest", "Invalid version.")
        route = self.routes.match(request.method, request.raw_path[len("/v1.0"):], query.keys())
        if isinstance(route, RouteError):
            return _graph_error(400, "BadRequest", route.reason)
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or (
                self.tokens is not None and not self.tokens.is_valid(token.strip())):
            return _graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        refused = self._refused(route, token.strip())
        if refused is not None:
            return refused
        template = route.template.lower()
        if template == "/appcatalogs/teamsapps" and request.method == "GET":
            return self._catalog(query)
        if template == "/users/{user-id}/teamwork/installedapps":
            user = route.params.get("user-id", "")
            if request.method == "GET":
                return self._installed(user, query)
            return self._install(user, body, request.headers.get("Host") or "")
        return _graph_error(501, "NotImplemented", f"The fake does not serve {route.template}.")

    def _refused(self, route: Any, token: str) -> Response | None:
        """Graph's 403 when the token's roles do not cover the call (tests.fakes.permissions)."""
        from tests.fakes.permissions import denied, need_for, token_roles

        claims = getattr(self.tokens, "claims", None)
        need = need_for(route.method, route.template)
        if claims is None or need is None:
            return None
        roles = token_roles(claims(token))
        if roles & need.roles:
            return None
        error = denied(need, roles)
        return _graph_error(error.status, error.code, error.message)

    def _catalog(self, query: Mapping[str, str]) -> Response:
        wanted = _eq_filter(query.get("$filter", ""), "externalId")
        with self._lock:
            apps = [{"id": tid, "externalId": ext, "displayName": "dmarcbot",
                     "distributionMethod": "organization"}
                    for ext, tid in self.catalog.items() if wanted is None or ext == wanted]
        return Response.json(200, {"@odata.context": "$metadata#appCatalogs/teamsApps",
                                   "value": apps})

    def _installed(self, user: str, query: Mapping[str, str]) -> Response:
        wanted = _eq_filter(query.get("$filter", ""), "teamsApp/id")
        expand = "teamsapp" in query.get("$expand", "").lower()
        with self._lock:
            apps = dict(self.installed.get(user, {}))
        value = []
        for app_id, install_id in apps.items():
            if wanted is not None and app_id != wanted:
                continue
            item: dict[str, Any] = {"id": install_id}
            if expand:
                item["teamsApp"] = {"id": app_id, "displayName": "dmarcbot"}
            value.append(item)
        return Response.json(200, {"value": value})

    def _install(self, user: str, body: Any, host: str) -> Response:
        if self.post_status is not None:
            return _graph_error(self.post_status, "Forbidden" if self.post_status == 403
                                else "Error", "Injected.")
        bind = body.get("teamsApp@odata.bind") if isinstance(body, dict) else None
        # a bind to this Graph, whichever host serves it (a FakeGraph may route here)
        prefix = f"https://{host}/v1.0/appCatalogs/teamsApps/"
        if not isinstance(bind, str) or not bind.startswith(prefix):
            return _graph_error(400, "BadRequest", "teamsApp@odata.bind is required.")
        app_id = bind[len(prefix):]
        with self._lock:
            if app_id not in self.catalog.values():
                return _graph_error(404, "NotFound", "App not found in the catalog.")
            apps = self.installed.setdefault(user, {})
            if app_id in apps:
                return _graph_error(409, "Conflict", "App is already installed.")
            apps[app_id] = base64.urlsafe_b64encode(f"{user}##{app_id}".encode()).decode()
        if self.on_install is not None:  # e.g. FakeBotFramework.install
            self.on_install(user)
        return Response(201)


def _eq_filter(expression: str, name: str) -> str | None:
    """The literal of `name eq '…'` (None when there is no filter; '' when it is another)."""
    expression = expression.strip()
    if not expression:
        return None
    prefix = f"{name} eq '"
    if not expression.startswith(prefix) or not expression.endswith("'"):
        return ""
    return expression[len(prefix):-1].replace("''", "'")


def _graph_error(status: int, code: str, message: str) -> Response:
    return Response.json(status, {"error": {"code": code, "message": message,
                                            "innerError": {"request-id": str(uuid.uuid4())}}})
