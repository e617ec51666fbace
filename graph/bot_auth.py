"""Who is calling the bot endpoint: validation of the Bot Connector's token on every activity.

Teams (through the Bot Connector service) POSTs each activity with `Authorization: Bearer <JWT>`.
The rules are the Bot Framework's "Connector to bot" ones, checked here in full on every request,
whatever else (the Teams SDK) may check too:

1. a Bearer token is present;
2. it is RS256, signed by a key from the OpenID metadata's `jwks_uri` (keys cached for a day,
   fetched again once when a token names a key we do not know: that is how rotation shows);
3. `iss` is the Bot Framework's, 4. `aud` is our app id (or `api://<id>`, `api://botid-<id>`),
5. `exp`/`nbf`/`iat` hold within 5 minutes of clock skew,
6. the `serviceurl` claim is the activity's `serviceUrl` (so a token cannot be replayed with a
   service URL of the sender's choosing: we later send our own bot token to that URL),
7. the signing key is endorsed for the activity's channel (when the key lists endorsements);

and then, for this app: the channel is Teams and the activity belongs to our tenant.

Each refusal is a `BotAuthError` whose `reason` is a short code for logs; the token itself is never
logged, nor put in an exception.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import httpx
import jwt

from graph.errors import BotAuthError

__all__ = [
    "BOT_FRAMEWORK_ISSUER",
    "DEFAULT_OPENID_METADATA_URL",
    "MAX_CLOCK_SKEW",
    "ActivityAuthenticator",
    "BotAuthError",
    "Caller",
    "activity_tenant",
]

log = logging.getLogger("dmarcbot.bot")

DEFAULT_OPENID_METADATA_URL = "https://login.botframework.com/v1/.well-known/openidconfiguration"
BOT_FRAMEWORK_ISSUER = "https://api.botframework.com"
TEAMS_CHANNEL = "msteams"
MAX_CLOCK_SKEW = 300  # seconds, as the Bot Framework SDKs allow
KEYS_TTL = 24 * 3600  # the SDKs keep the keys for days; a new kid triggers a fetch anyway
REFRESH_COOLDOWN = 30.0  # at most one unknown-kid refetch per this many seconds
MAX_TOKEN_BYTES = 16 * 1024
MAX_DOCUMENT_BYTES = 512 * 1024  # metadata or key set; the real ones are a few KB
ALGORITHM = "RS256"


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """Who sent an authenticated activity, and where to answer."""

    aad_object_id: str | None  # Entra object id of the user (absent on some system events)
    user_id: str  # Teams user id, "29:…"
    tenant_id: str
    service_url: str  # the activity's serviceUrl, as sent
    conversation_id: str
    # the token's `exp` (Unix seconds): until then + MAX_CLOCK_SKEW the same token is accepted
    # again, so that is how long the endpoint must remember the activity it came with
    token_expires: float | None = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True, slots=True)
class _Key:
    key: Any  # a cryptography RSA public key
    endorsements: frozenset[str] | None  # None: the key lists none


class _KeysUnavailable(Exception):
    """The metadata or key set could not be fetched or read (reason in the message)."""


class ActivityAuthenticator:
    """Checks an inbound activity and its `Authorization` header; see the module docstring.

    One instance per process: it keeps the signing keys. `http_client` (an httpx.AsyncClient)
    is used for the two key documents when given; otherwise a short-lived client is made per
    fetch (fetches are rare) with `verify` and `timeout`. `clock` returns Unix seconds.
    """

    def __init__(self, app_id: str, tenant_id: str,
                 openid_metadata_url: str = DEFAULT_OPENID_METADATA_URL,
                 http_client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time, *,
                 verify: ssl.SSLContext | str | bool = True,
                 timeout: float = 10.0,
                 keys_ttl: float = KEYS_TTL,
                 refresh_cooldown: float = REFRESH_COOLDOWN,
                 issuer: str = BOT_FRAMEWORK_ISSUER,
                 check_endorsements: bool = True) -> None:
        if not app_id or not tenant_id:
            raise ValueError("the bot needs its app id and our tenant id")
        if urlsplit(openid_metadata_url).scheme != "https":
            raise ValueError("the OpenID metadata URL must be https")
        self.app_id = app_id
        self.tenant_id = tenant_id
        self.openid_metadata_url = openid_metadata_url
        self.audiences = frozenset({app_id, f"api://{app_id}", f"api://botid-{app_id}"})
        self.issuer = issuer
        self.check_endorsements = check_endorsements
        self._http = http_client
        self._verify = verify
        self._timeout = timeout
        self._clock = clock
        self._ttl = keys_ttl
        self._cooldown = refresh_cooldown
        self._keys: dict[str, _Key] = {}
        self._fetched_at: float | None = None  # when the current keys were fetched
        self._last_attempt: float | None = None  # last fetch attempt, successful or not
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._fetch_lock = asyncio.Lock()  # one fetch at a time; the others wait for its keys
        self.fetches = 0  # completed key-set fetches (metadata + keys), for tests and metrics

    # -- the check ------------------------------------------------------------------------------

    async def authenticate(self, authorization_header: str | None,
                           activity: Mapping[str, Any]) -> Caller:
        """The caller of `activity` if its token and content pass every rule, else BotAuthError."""
        token = _bearer(authorization_header)
        header = _unverified_header(token)
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM:
            raise BotAuthError("bad_algorithm")
        if not isinstance(kid, str) or not kid:
            raise BotAuthError("missing_kid")
        key = await self._key(kid)
        claims = self._verified_claims(token, key)
        self._check_claims(claims)

        service_url = activity.get("serviceUrl")
        if not isinstance(service_url, str) or not service_url:
            raise BotAuthError("missing_service_url")
        claimed = claims.get("serviceurl")
        if not isinstance(claimed, str) or not claimed:
            raise BotAuthError("missing_serviceurl_claim")
        if claimed.rstrip("/") != service_url.rstrip("/"):
            raise BotAuthError("serviceurl_mismatch")
        if urlsplit(service_url).scheme != "https":
            raise BotAuthError("bad_service_url")

        channel = activity.get("channelId")
        if (self.check_endorsements and key.endorsements is not None
                and channel not in key.endorsements):
            raise BotAuthError("not_endorsed")
        if channel != TEAMS_CHANNEL:
            raise BotAuthError("wrong_channel")
        tenant = activity_tenant(activity)
        if tenant is None:
            raise BotAuthError("missing_tenant")
        if tenant.lower() != self.tenant_id.lower():
            raise BotAuthError("wrong_tenant")
        return dataclasses.replace(_caller(activity, tenant, service_url),
                                   token_expires=float(claims["exp"]))

    def _verified_claims(self, token: str, key: _Key) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[ALGORITHM],
                # time, issuer and audience are checked below, against our clock, one by one
                options={"verify_signature": True, "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False, "verify_aud": False, "verify_iss": False})
        except jwt.InvalidSignatureError:
            raise BotAuthError("bad_signature") from None
        except jwt.DecodeError:
            raise BotAuthError("malformed_token") from None
        except jwt.PyJWTError:
            raise BotAuthError("invalid_token") from None
        if not isinstance(claims, dict):
            raise BotAuthError("malformed_token")
        return claims

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        if claims.get("iss") != self.issuer:
            raise BotAuthError("bad_issuer")
        aud = claims.get("aud")
        if not isinstance(aud, str) or aud not in self.audiences:
            raise BotAuthError("bad_audience")
        now = self._clock()
        exp = claims.get("exp")
        if not _is_number(exp):
            raise BotAuthError("missing_exp")
        if now > exp + MAX_CLOCK_SKEW:
            raise BotAuthError("expired")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is None:
                continue
            if not _is_number(value):
                raise BotAuthError(f"bad_{name}")
            if now + MAX_CLOCK_SKEW < value:
                raise BotAuthError("not_yet_valid")

    # -- signing keys ---------------------------------------------------------------------------

    async def _key(self, kid: str) -> _Key:
        key = self._keys.get(kid)
        if key is not None and self._fresh(self._clock()):
            return key
        async with self._lock():
            now = self._clock()
            key = self._keys.get(kid)
            if key is not None and self._fresh(now):  # fetched by another request meanwhile
                return key
            # keys stale, or a kid we do not know (a rotation): fetch, but at most once per
            # cooldown, so tokens with made-up kids cannot make us hammer the key endpoint
            if self._last_attempt is None or now - self._last_attempt >= self._cooldown:
                await self._refresh(now)
            elif not self._keys:
                raise BotAuthError("keys_unavailable")
        key = self._keys.get(kid)  # stale keys still serve while the endpoint is down
        if key is None:
            raise BotAuthError("unknown_key")
        return key

    def _fresh(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self._ttl

    def _lock(self) -> asyncio.Lock:
        """The fetch lock of the running event loop (an asyncio.Lock serves one loop only)."""
        loop = asyncio.get_running_loop()
        if self._lock_loop is not loop:
            self._lock_loop, self._fetch_lock = loop, asyncio.Lock()
        return self._fetch_lock

    async def _refresh(self, now: float) -> None:
        self._last_attempt = now
        try:
            keys = await self._fetch_keys()
        except _KeysUnavailable as exc:
            if self._keys:  # keep answering with the keys we had: the service is down, not them
                log.warning("bot signing keys not refreshed (%s); keeping %d cached keys",
                            exc, len(self._keys))
                return
            log.error("bot signing keys unavailable (%s)", exc)
            raise BotAuthError("keys_unavailable") from None
        self._keys = keys
        self._fetched_at = now
        self.fetches += 1
        log.info("bot signing keys fetched: %d keys", len(keys))

    async def _fetch_keys(self) -> dict[str, _Key]:
        if self._http is not None:
            return await self._fetch_with(self._http)
        async with httpx.AsyncClient(verify=self._verify, timeout=self._timeout,
                                     follow_redirects=False) as client:
            return await self._fetch_with(client)

    async def _fetch_with(self, client: httpx.AsyncClient) -> dict[str, _Key]:
        metadata = await _get_json(client, self.openid_metadata_url, self._timeout)
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme != "https":
            raise _KeysUnavailable("metadata without an https jwks_uri")
        document = await _get_json(client, jwks_uri, self._timeout)
        raw_keys = document.get("keys")
        if not isinstance(raw_keys, list):
            raise _KeysUnavailable("key set without keys")
        keys: dict[str, _Key] = {}
        for raw in raw_keys:
            parsed = _parse_jwk(raw)
            if parsed is not None:
                keys[raw["kid"]] = parsed
        if not keys:
            raise _KeysUnavailable("key set without a usable RSA signing key")
        return keys


# -- helpers ------------------------------------------------------------------------------------

def activity_tenant(activity: Mapping[str, Any]) -> str | None:
    """The tenant an activity belongs to: conversation.tenantId, else channelData.tenant.id.

    When both are present and differ, neither can be trusted: "" is returned, which matches no
    tenant.
    """
    found: list[str] = []
    conversation = activity.get("conversation")
    if isinstance(conversation, Mapping):
        value = conversation.get("tenantId")
        if isinstance(value, str) and value:
            found.append(value)
    channel_data = activity.get("channelData")
    if isinstance(channel_data, Mapping):
        tenant = channel_data.get("tenant")
        if isinstance(tenant, Mapping):
            value = tenant.get("id")
            if isinstance(value, str) and value:
                found.append(value)
    if not found:
        return None
    if len({t.lower() for t in found}) > 1:
        return ""
    return found[0]


def _bearer(authorization_header: str | None) -> str:
    if not authorization_header:
        raise BotAuthError("missing_token")
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise BotAuthError("missing_token")
    if len(token) > MAX_TOKEN_BYTES:
        raise BotAuthError("malformed_token")
    return token


def _unverified_header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise BotAuthError("malformed_token") from None
    if not isinstance(header, dict):
        raise BotAuthError("malformed_token")
    return header


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _caller(activity: Mapping[str, Any], tenant: str, service_url: str) -> Caller:
    sender = activity.get("from")
    conversation = activity.get("conversation")
    if not isinstance(sender, Mapping) or not isinstance(conversation, Mapping):
        raise BotAuthError("malformed_activity")
    user_id, aad = sender.get("id"), sender.get("aadObjectId")
    conversation_id = conversation.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise BotAuthError("malformed_activity")
    if not isinstance(conversation_id, str) or not conversation_id:
        raise BotAuthError("malformed_activity")
    return Caller(aad if isinstance(aad, str) and aad else None, user_id, tenant, service_url,
                  conversation_id)


def _parse_jwk(raw: object) -> _Key | None:
    if not isinstance(raw, dict) or raw.get("kty") != "RSA":
        return None
    if not isinstance(raw.get("kid"), str) or raw.get("use", "sig") != "sig":
        return None
    try:
        key = jwt.PyJWK(raw, algorithm=ALGORITHM).key
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    endorsements = raw.get("endorsements")
    listed = (frozenset(e for e in endorsements if isinstance(e, str))
              if isinstance(endorsements, list) else None)
    return _Key(key, listed)


async def _get_json(client: httpx.AsyncClient, url: str, timeout: float) -> dict[str, Any]:
    what = urlsplit(url).path.rsplit("/", 1)[-1] or "document"
    try:
        async with client.stream("GET", url, timeout=timeout) as response:
            if response.status_code != 200:
                raise _KeysUnavailable(f"{what}: HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise _KeysUnavailable(f"{what}: larger than {MAX_DOCUMENT_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise _KeysUnavailable(f"{what}: {type(exc).__name__}") from None
    try:
        value = json.loads(bytes(body))
    except ValueError:
        raise _KeysUnavailable(f"{what}: not JSON") from None
    if not isinstance(value, dict):
        raise _KeysUnavailable(f"{what}: not a JSON object")
    return value
