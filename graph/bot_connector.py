"""Talking to owners in Teams: the Bot Connector REST API, and installing the bot for a user.

Outbound calls go to the `serviceUrl` Teams gave us in an activity (or the public default),
with an app-only token for `https://api.botframework.com/.default` from the same app
registration that calls Graph (msal, see graph.credentials). The API is small, so this is plain
httpx: the Teams SDK's client wants its own token plumbing and its conversation model has no
`bot`/`isGroup`.

    connector = BotConnector(credential, app_id)
    conversation = await connector.create_conversation(service_url, owner_aad_id, tenant_id)
    activity = await connector.send_card(service_url, conversation, card)
    await connector.update_card(service_url, conversation, activity, new_card)

Errors are graph.errors types: `Blocked` (the user blocked or removed the bot: stop, tell an
admin), `BotNotInstalled` (install it with `ensure_app_installed`, then retry),
`ConversationNotFound` (a NotFound), other refusals `BotConnectorError` with status and code.
Throttling (429, with Retry-After) and transient 412/502/503/504 are retried a few times; a POST
only on 429 and 503, which say it was not done.

Teams installs an app asynchronously: right after `ensure_app_installed` installed it, creating
the conversation can still be refused as not installed for a few seconds. With
`after_install=True`, `create_conversation` waits and tries again a few times (11 to 19 s in
all: INSTALL_WAITS with jitter); otherwise that refusal is an answer, not a reason to wait.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

from graph.client import odata_string
from graph.errors import (
    Blocked,
    BotConnectorError,
    BotNotInstalled,
    ConversationNotFound,
    CredentialError,
    GraphError,
    NotFound,
)

if TYPE_CHECKING:
    from graph.client import GraphConnection

__all__ = [
    "ADAPTIVE_CARD",
    "BOT_SCOPE",
    "DEFAULT_SERVICE_URL",
    "AppInstallation",
    "BotConnector",
    "card_activity",
    "ensure_app_installed",
]

log = logging.getLogger("dmarcbot.bot")

BOT_SCOPE = "https://api.botframework.com/.default"
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
DEFAULT_SERVICE_URL = "https://smba.trafficmanager.net/teams/"  # public cloud, any region
RETRYABLE = frozenset({412, 429, 502, 503, 504})
# A POST that timed out at a gateway (502, 504) may have been delivered: sending it again
# could give the owner the same card twice. Only answers that say "not done" are retried.
RETRYABLE_POST = frozenset({429, 503})
BLOCKED_CODES = frozenset({"MessageWritesBlocked", "ConversationBlockedByUser",
                           "BotDisabledByAdmin"})
NOT_INSTALLED_CODES = frozenset({"ForbiddenOperationException", "BotNotInConversationRoster"})
# Waits before each new try to create a conversation after a fresh installation, each stretched
# or shrunk by up to a quarter at random (so workers do not retry in step): 11-19 s in all.
INSTALL_WAITS = (1.0, 2.0, 4.0, 8.0)


class TokenSource(Protocol):
    """An async token credential (graph.credentials.MsalCredential)."""

    async def get_token(self, *scopes: str) -> Any: ...


class BotConnector:
    """Bot Connector client for one bot. Use as `async with`, or call `aclose()`.

    `http_client` is used as given (its owner closes it); otherwise one is made on first use,
    with `verify` (a CA bundle path or an SSLContext, for a proxy or a test) and `timeout`.
    """

    def __init__(self, credential: TokenSource, app_id: str, *,
                 http_client: httpx.AsyncClient | None = None,
                 verify: ssl.SSLContext | str | bool = True, timeout: float = 15.0,
                 max_retries: int = 3, max_retry_after: float = 10.0,
                 install_waits: Sequence[float] = INSTALL_WAITS,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.credential = credential
        self.app_id = app_id
        self._http = http_client
        self._own_http = http_client is None
        self._verify = verify
        self._timeout = timeout
        self._max_retries = max_retries
        self._max_retry_after = max_retry_after
        self._install_waits = tuple(install_waits)
        self._sleep = sleep

    async def aclose(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> BotConnector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the three calls ------------------------------------------------------------------------

    async def create_conversation(self, service_url: str, user_aad_id: str, tenant_id: str,
                                  *, after_install: bool = False) -> str:
        """The id of the bot's 1:1 conversation with the user (created, or the existing one).

        Addressing the user by Entra object id works only once the app is installed for them
        (`ensure_app_installed`); otherwise the service answers BotNotInstalled. Right after
        installing it (`after_install`), that answer only means Teams has not finished: it is
        tried again after each of `install_waits`, with jitter, before BotNotInstalled is
        raised. A user who blocked the bot (Blocked) is never tried again.
        """
        waits = self._install_waits if after_install else ()
        tries = 0
        while True:
            tries += 1
            try:
                return await self._create_conversation(service_url, user_aad_id, tenant_id)
            except BotNotInstalled as exc:
                if tries > len(waits):
                    if waits:
                        log.warning("the new installation was still not ready after %d tries "
                                    "(%s)", tries, exc.code)
                    raise
                delay = waits[tries - 1] * (0.75 + random.random() / 2)
                log.info("the new installation is not ready yet (%s); try %d of %d in %.1f s",
                         exc.code, tries + 1, len(waits) + 1, delay)
                await self._sleep(delay)

    async def _create_conversation(self, service_url: str, user_aad_id: str,
                                   tenant_id: str) -> str:
        payload = {
            "isGroup": False,
            "bot": {"id": f"28:{self.app_id}"},
            "members": [{"id": user_aad_id}],
            "tenantId": tenant_id,
            "channelData": {"tenant": {"id": tenant_id}},
        }
        answer = await self._call("POST", _endpoint(service_url, "v3", "conversations"), payload)
        conversation_id = answer.get("id")
        if not isinstance(conversation_id, str) or not conversation_id:
            raise BotConnectorError("the Bot Connector created a conversation without an id",
                                    code="NoConversationId")
        return conversation_id

    async def send_card(self, service_url: str, conversation_id: str, card: Mapping[str, Any],
                        *, summary: str | None = None) -> str:
        """Post an Adaptive Card as a new message; returns the activity id (to update it later)."""
        url = _endpoint(service_url, "v3", "conversations", conversation_id, "activities")
        answer = await self._call("POST", url, card_activity(card, summary=summary))
        activity_id = answer.get("id")
        if not isinstance(activity_id, str) or not activity_id:
            raise BotConnectorError("the Bot Connector sent a message without an id",
                                    code="NoActivityId")
        return activity_id

    async def update_card(self, service_url: str, conversation_id: str, activity_id: str,
                          card: Mapping[str, Any], *, summary: str | None = None) -> None:
        """Replace the card of a message the bot sent (the whole activity is replaced)."""
        url = _endpoint(service_url, "v3", "conversations", conversation_id, "activities",
                        activity_id)
        activity = card_activity(card, summary=summary)
        activity["id"] = activity_id
        await self._call("PUT", url, activity)

    # -- HTTP -----------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                verify=self._verify, follow_redirects=False,
                timeout=httpx.Timeout(self._timeout, connect=5.0),
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=8))
        return self._http

    async def _token(self) -> str:
        token = await self.credential.get_token(BOT_SCOPE)
        value = getattr(token, "token", None)
        if not isinstance(value, str) or not value:
            raise CredentialError("no token for the Bot Framework")
        return value

    async def _call(self, method: str, url: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload, separators=(",", ":")).encode()
        retries = 0
        refreshed = False
        while True:
            headers = {"Authorization": f"Bearer {await self._token()}",
                       "Content-Type": "application/json; charset=utf-8"}
            try:
                response = await self._client().request(method, url, content=body,
                                                        headers=headers)
            except httpx.HTTPError as exc:
                raise BotConnectorError(
                    f"cannot reach the Bot Connector ({type(exc).__name__})") from None
            status = response.status_code
            if 200 <= status < 300:
                return _json_object(response.content)
            if status == 401 and not refreshed and hasattr(self.credential, "invalidate"):
                # a token msal still trusts was refused (revoked, clock skew): one fresh try
                log.info("the Bot Connector refused the access token; getting a new one")
                self.credential.invalidate()
                refreshed = True
                continue
            retryable = RETRYABLE_POST if method == "POST" else RETRYABLE
            if status in retryable and retries < self._max_retries:
                retries += 1
                delay = self._delay(response, retries)
                log.info("the Bot Connector answered %d; retry %d in %.1f s", status, retries,
                         delay)
                await self._sleep(delay)
                continue
            raise _connector_error(method, status, response.content)

    def _delay(self, response: httpx.Response, attempt: int) -> float:
        header = response.headers.get("Retry-After")
        if header is not None:
            try:
                return min(max(float(header), 0.0), self._max_retry_after)
            except ValueError:
                pass
        return min(self._max_retry_after, (2 ** (attempt - 1)) * (0.5 + random.random() / 2))


def card_activity(card: Mapping[str, Any], *, summary: str | None = None) -> dict[str, Any]:
    """A message activity carrying one Adaptive Card."""
    activity: dict[str, Any] = {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CARD, "content": dict(card)}],
    }
    if summary:
        activity["summary"] = summary  # what the notification and chat list show
    return activity


def _endpoint(service_url: str, *segments: str) -> str:
    """`{serviceUrl}/seg/seg…`, each segment percent-encoded (conversation ids hold ':', ';')."""
    parts = urlsplit(service_url)
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password \
            or parts.query or parts.fragment:
        raise BotConnectorError("the service URL is not a plain https URL",
                                code="InvalidServiceUrl")
    for segment in segments:
        if not segment:
            raise BotConnectorError("an empty id in a Bot Connector path", code="InvalidId")
    return service_url.rstrip("/") + "/" + "/".join(quote(s, safe="") for s in segments)


def _json_object(content: bytes) -> dict[str, Any]:
    if not content.strip():
        return {}
    try:
        value = json.loads(content)
    except ValueError:
        raise BotConnectorError("the Bot Connector answered with something that is not JSON",
                                code="NotJson") from None
    return value if isinstance(value, dict) else {}


def _connector_error(method: str, status: int, content: bytes) -> BotConnectorError:
    code, sub_code = _error_codes(content)
    shown = sub_code or code
    message = f"the Bot Connector answered {method} with {status} {shown or ''}".rstrip()
    cls: type[BotConnectorError] = BotConnectorError
    if status == 403 and (sub_code in BLOCKED_CODES or code in BLOCKED_CODES):
        cls = Blocked
    elif status == 403 and (code in NOT_INSTALLED_CODES or sub_code in NOT_INSTALLED_CODES):
        cls = BotNotInstalled
    elif status == 404:
        cls = ConversationNotFound
    return cls(message, code=shown, status=status)


def _error_codes(content: bytes) -> tuple[str | None, str | None]:
    """(code, subCode) of a Bot Connector error body, in any of the shapes Teams answers with:

    * `{"error": {"code": "ConversationBlockedByUser", "subCode": "MessageWritesBlocked"}}`;
    * `{"subCode": "..."}`;
    * `{"errorCode": 209, "message": "{\"subCode\": \"MessageWritesBlocked\", ...}"}`, where
      `message` is itself JSON in a string (msteams-docs send-proactive-messages.md: what a
      user who blocked or removed the bot answers), or an object.
    """
    try:
        value = json.loads(content)
    except ValueError:
        return None, None
    if not isinstance(value, dict):
        return None, None
    code = sub_code = None
    error = value.get("error")
    if isinstance(error, dict):
        code = _text(error.get("code"))
        sub_code = _text(error.get("subCode")) or _text(error.get("subcode"))
    sub_code = sub_code or _text(value.get("subCode"))
    number = value.get("errorCode")
    if isinstance(number, int) and not isinstance(number, bool):
        code = code or str(number)
        inner = value.get("message")
        if isinstance(inner, str) and inner.lstrip().startswith("{"):
            try:
                inner = json.loads(inner)
            except ValueError:
                inner = None
        if isinstance(inner, dict):
            sub_code = sub_code or _text(inner.get("subCode")) or _text(inner.get("code"))
    return code, sub_code


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# -- proactive installation (Graph) ------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class AppInstallation:
    teams_app_id: str  # the app's id in the org catalog (not the manifest id)
    installed_now: bool  # False: it was installed already


async def catalog_app_id(graph_connection: GraphConnection, external_id: str) -> str | None:
    """The org catalog's id of the Teams app whose manifest id is `external_id` (app permission
    AppCatalog.Read.All), or None when it has not been uploaded."""
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.app_catalogs.teams_apps.teams_apps_request_builder import (
        TeamsAppsRequestBuilder,
    )

    query = TeamsAppsRequestBuilder.TeamsAppsRequestBuilderGetQueryParameters(
        filter=f"externalId eq {odata_string(external_id)}", select=["id", "externalId"])
    info = graph_connection.client.app_catalogs.teams_apps.to_get_request_information(
        RequestConfiguration(query_parameters=query))
    apps = (await graph_connection.json(info)).get("value") or []
    return next((a["id"] for a in apps if isinstance(a, dict)
                 and a.get("externalId") == external_id and isinstance(a.get("id"), str)), None)


async def ensure_app_installed(graph_connection: GraphConnection, user_id: str,
                               teams_app_external_id: str) -> AppInstallation:
    """Install our Teams app for a user unless it is there already (Graph, app permission
    TeamsAppInstallation.ReadWriteSelfForUser.All). Teams then sends the bot an
    installationUpdate carrying the 1:1 conversation, and create_conversation works by the
    user's Entra object id.
    """
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.models.user_scope_teams_app_installation import (
        UserScopeTeamsAppInstallation,
    )
    from msgraph.generated.users.item.teamwork.installed_apps.installed_apps_request_builder import (  # noqa: E501
        InstalledAppsRequestBuilder,
    )

    client = graph_connection.client
    teams_app_id = await catalog_app_id(graph_connection, teams_app_external_id)
    if teams_app_id is None:
        raise NotFound(f"the Teams app {teams_app_external_id} is not in the org app catalog",
                       code="AppNotInCatalog", status=404)

    installed = client.users.by_user_id(user_id).teamwork.installed_apps
    query = InstalledAppsRequestBuilder.InstalledAppsRequestBuilderGetQueryParameters(
        expand=["teamsApp"], filter=f"teamsApp/id eq {odata_string(teams_app_id)}")
    info = installed.to_get_request_information(RequestConfiguration(query_parameters=query))
    found = (await graph_connection.json(info)).get("value") or []
    if any(isinstance(i, dict) and isinstance(i.get("teamsApp"), dict)
           and i["teamsApp"].get("id") == teams_app_id for i in found):
        return AppInstallation(teams_app_id, installed_now=False)

    body = UserScopeTeamsAppInstallation(additional_data={
        "teamsApp@odata.bind": f"{graph_connection.base_url}/appCatalogs/teamsApps/{teams_app_id}"})
    info = installed.to_post_request_information(body)
    try:
        await graph_connection.json(info, answer=False)
    except GraphError as exc:
        if exc.status != 409:
            raise
        # installed by a concurrent run a moment ago: just as fresh, so just as unsettled
        return AppInstallation(teams_app_id, installed_now=True)
    log.info("installed the Teams app for a user")
    return AppInstallation(teams_app_id, installed_now=True)


async def user_object_id(graph_connection: GraphConnection, upn: str) -> str:
    """A user's Entra object id from their UPN (app permission User.ReadBasic.All): the Bot
    Connector addresses users by object id, and clicks arrive with it."""
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

    query = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["id"])
    info = graph_connection.client.users.by_user_id(upn).to_get_request_information(
        RequestConfiguration(query_parameters=query))
    found = (await graph_connection.json(info)).get("id")
    if not isinstance(found, str) or not found:
        raise NotFound(f"no user {upn} in the directory", code="Request_ResourceNotFound",
                       status=404)
    return found


async def user_principal_name(graph_connection: GraphConnection, object_id: str) -> str:
    """A user's UPN from their Entra object id: how a decision is recorded for people."""
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

    query = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(
        select=["userPrincipalName"])
    info = graph_connection.client.users.by_user_id(object_id).to_get_request_information(
        RequestConfiguration(query_parameters=query))
    found = (await graph_connection.json(info)).get("userPrincipalName")
    if not isinstance(found, str) or not found:
        raise NotFound(f"no user {object_id} in the directory",
                       code="Request_ResourceNotFound", status=404)
    return found
