"""App-only tokens for Microsoft Graph, from msal, with one client per credential per process.

Production uses a federated credential (the Function's managed identity vouches for the app
registration: nothing to rotate) or a certificate; a client secret is for development tenants only
and logs a warning. msal keeps the token cache inside its client, so the client is built once per
credential and reused by every invocation the worker process runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from azure.core.credentials import AccessToken

from graph.errors import CredentialError

log = logging.getLogger("dmarcbot.graph")

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
PUBLIC_AUTHORITY = "https://login.microsoftonline.com"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"

CredentialKind = Literal["certificate", "federated", "secret"]


@dataclasses.dataclass(frozen=True, slots=True)
class AppCredential:
    """Who the app is and how it proves it. Exactly one of the three proofs is set.

    `certificate` is a PEM file (private key and certificate) or a PFX/PKCS#12 file;
    `managed_identity_client_id` selects the federated credential (a user-assigned managed
    identity's client id, or "system" for the system-assigned one); `secret` is for development.
    """

    tenant_id: str
    client_id: str
    certificate: Path | None = None
    certificate_password: str | None = dataclasses.field(default=None, repr=False)
    managed_identity_client_id: str | None = None
    secret: str | None = dataclasses.field(default=None, repr=False)
    authority_host: str = PUBLIC_AUTHORITY
    ca_bundle: Path | None = None  # a TLS-inspecting proxy's CA, or a test CA

    @property
    def kind(self) -> CredentialKind:
        if self.certificate is not None:
            return "certificate"
        if self.managed_identity_client_id is not None:
            return "federated"
        return "secret"

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"


class MsalCredential:
    """An async azure.core token credential over msal's confidential client (kiota's input).

    msal is synchronous (requests), so a token request runs in a worker thread: a slow Entra
    ID or identity endpoint must not stall the other invocations on the event loop.
    """

    def __init__(self, app: Any, kind: CredentialKind) -> None:
        self._app = app
        self.kind = kind
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, ...], AccessToken] = {}

    async def get_token(self, *scopes: str, claims: str | None = None,
                        tenant_id: str | None = None, enable_cae: bool = False,
                        **kwargs: Any) -> AccessToken:
        # kiota asks before every request: answer from memory while the token has 5 minutes
        # left, as msal's own cache would, without a trip to a thread
        token = self._tokens.get(scopes)
        if token is not None and claims is None and token.expires_on - time.time() > 300:
            return token
        token = await asyncio.to_thread(self.get_token_sync, *scopes, claims=claims)
        self._tokens[scopes] = token
        return token

    def get_token_sync(self, *scopes: str, claims: str | None = None) -> AccessToken:
        with self._lock:  # one refresh at a time; msal answers the rest from its cache
            try:
                result = self._app.acquire_token_for_client(
                    scopes=list(scopes or (GRAPH_SCOPE,)), claims_challenge=claims)
            except (OSError, ValueError) as exc:  # requests' errors are OSErrors
                raise CredentialError(
                    f"cannot get a token from Entra ID ({type(exc).__name__})") from None
        if "access_token" not in result:
            code = result.get("error") or "unknown_error"
            codes = result.get("error_codes") or []
            detail = f" (AADSTS{codes[0]})" if codes else ""
            raise CredentialError(f"Entra ID refused the {self.kind} credential: {code}{detail}",
                                  code=str(code), aadsts=str(codes[0]) if codes else None)
        return AccessToken(result["access_token"], int(time.time()) + int(result["expires_in"]))

    # The rest of azure.core's AsyncTokenCredential protocol, which kiota's provider is typed
    # against. The credential is process-wide (credential_for): nothing to release per user.
    async def close(self) -> None:
        """Nothing to close: msal's client and its token cache live as long as the process."""

    async def __aenter__(self) -> MsalCredential:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None = None,
                        exc_value: BaseException | None = None,
                        traceback: TracebackType | None = None) -> None:
        await self.close()

    def invalidate(self) -> None:
        """Forget cached access tokens: Graph said the one we sent has expired or was revoked."""
        cache = self._app.token_cache
        self._tokens.clear()
        with self._lock:
            for item in list(cache.search(cache.CredentialType.ACCESS_TOKEN)):
                cache.remove_at(item)


_clients: dict[AppCredential, MsalCredential] = {}
_clients_lock = threading.Lock()


def credential_for(app: AppCredential, *, http_client: Any = None) -> MsalCredential:
    """The process-wide credential for `app`, built on first use (and its token cache with it)."""
    with _clients_lock:
        if app not in _clients:
            _clients[app] = _build(app, http_client)
        return _clients[app]


def _build(app: AppCredential, http_client: Any) -> MsalCredential:
    import msal

    if http_client is None:
        http_client = _timely_session()
        if app.ca_bundle is not None:
            http_client.verify = str(app.ca_bundle)
            # requests lets REQUESTS_CA_BUNDLE override `verify` unless the environment is
            # ignored; proxies come from the environment still, as they would have
            http_client.trust_env = False
            http_client.proxies = urllib.request.getproxies()
    if app.kind == "secret":
        log.warning("using a client secret for Microsoft Graph: fine for a development tenant, "
                    "use a certificate or the managed identity in production")
    try:
        client = msal.ConfidentialClientApplication(
            app.client_id,
            client_credential=_proof(app, http_client),
            authority=app.authority,
            http_client=http_client,
            instance_discovery=False,  # the authority comes from our settings, not from input
        )
    except (OSError, ValueError) as exc:
        raise CredentialError(f"cannot use the {app.kind} credential: {_first_line(exc)}") from None
    return MsalCredential(client, app.kind)


def _timely_session() -> Any:
    """A requests session whose calls time out: msal gives none to a session it is handed."""
    import requests

    session = requests.Session()
    session.mount("https://", requests.adapters.HTTPAdapter(max_retries=1))
    session.request = functools.partial(  # type: ignore[method-assign]
        session.request, timeout=(5.0, 30.0))  # connect, read
    return session


def _proof(app: AppCredential, http_client: Any) -> Any:
    if app.kind == "certificate":
        assert app.certificate is not None
        return _certificate(app.certificate, app.certificate_password)
    if app.kind == "federated":
        return {"client_assertion": _managed_identity_assertion(app, http_client)}
    if not app.secret:
        raise CredentialError("no credential: set a certificate, a managed identity or a secret")
    return app.secret


def _certificate(path: Path, password: str | None) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CredentialError(f"{path}: cannot read the certificate ({exc.strerror})") from None
    secret = {"passphrase": password} if password else {}
    if b"-----BEGIN" not in data:
        return {"private_key_pfx_path": str(path), **secret}
    text = data.decode("ascii", "replace")
    key = re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----",
                    text, re.S)
    cert = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S)
    if key is None or cert is None:
        raise CredentialError(f"{path}: a PEM certificate file needs both the private key and "
                              "the certificate")
    # msal derives the SHA-256 thumbprint from the certificate (msal 1.35+)
    return {"private_key": key.group(0), "public_certificate": cert.group(0), **secret}


def _managed_identity_assertion(app: AppCredential, http_client: Any) -> Callable[[], str]:
    """A callable msal invokes for a fresh client assertion: a managed identity token."""
    import msal

    identity: Any
    if app.managed_identity_client_id == "system":
        identity = msal.SystemAssignedManagedIdentity()
    else:
        identity = msal.UserAssignedManagedIdentity(client_id=app.managed_identity_client_id)
    source = msal.ManagedIdentityClient(identity, http_client=http_client)

    def assertion() -> str:
        result = source.acquire_token_for_client(resource=TOKEN_EXCHANGE_AUDIENCE)
        if "access_token" not in result:
            code = result.get("error") or "unknown_error"
            raise CredentialError(f"the managed identity gave no token: {code}", code=str(code))
        return result["access_token"]

    return assertion


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
