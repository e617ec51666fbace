"""Fake Entra ID token endpoint (v2.0, client credentials) over HTTPS on loopback.

msal insists on an https authority and performs tenant discovery first, so the fake serves
the discovery document and the token endpoint, checks client secrets, certificate assertions
(RS256/PS256 signed by the registered certificate) and federated assertions, and answers errors
in Entra's shape so the code under test sees what production would.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.server import LoopbackServer, Request, Response, Served
from tests.fakes.tls import TestCA

GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_TENANT = "72f988bf-0000-4000-8000-00000000d0c5"


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential on an app registration: trust JWTs from this issuer
    and subject, signed by this key, for this audience."""

    issuer: str
    subject: str
    public_key_pem: str
    audience: str = TOKEN_EXCHANGE_AUDIENCE


class FakeManagedIdentity:
    """Stands in for the managed identity that signs the FIC assertion (no IMDS needed).

    ``assertion()`` is what production gets from ManagedIdentityClient for the
    ``api://AzureADTokenExchange`` resource; ``credential()`` registers trust in it.
    """

    def __init__(self, issuer: str = "https://fake-mi.invalid/v2.0",
                 subject: str | None = None) -> None:
        self.issuer = issuer
        self.subject = subject or str(uuid.uuid4())  # the MI's object (principal) id
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def credential(self, audience: str = TOKEN_EXCHANGE_AUDIENCE) -> FederatedCredential:
        public = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return FederatedCredential(self.issuer, self.subject, public.decode(), audience)

    def assertion(self, audience: str = TOKEN_EXCHANGE_AUDIENCE, lifetime: int = 600) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": self.subject, "aud": audience,
                  "iat": now, "nbf": now, "exp": now + lifetime, "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": "fake-mi"})


@dataclass
class _Client:
    client_id: str
    secret: str | None
    certificates: dict[str, x509.Certificate]  # thumbprint (b64url sha1 / sha256) -> cert
    federated: list[FederatedCredential]
    roles: frozenset[str]  # Graph application roles consented for the app
    object_id: str  # the service principal's object id (the token's `oid`)


@dataclass
class _Issued:
    client_id: str
    scope: str
    expires_at: float
    claims: dict[str, object]


class EntraRequest(NamedTuple):
    method: str
    path: str
    form_keys: tuple[str, ...]  # names only: never secrets or assertions


class _EntraError(Exception):
    def __init__(self, status: int, error: str, code: int, text: str) -> None:
        super().__init__(text)
        self.status, self.error, self.code, self.text = status, error, code, text


def _b64url_thumbprint(cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> str:
    """Thumbprint as msal puts it in the x5t / x5t#S256 header (base64url, padded)."""
    return base64.urlsafe_b64encode(cert.fingerprint(algorithm)).decode()


@dataclass
class _Registry:
    clients: dict[str, _Client] = field(default_factory=dict)
    tokens: dict[str, _Issued] = field(default_factory=dict)


class FakeEntra(Served):
    """Token endpoint for one tenant. Register apps with ``add_client`` before use.

    ``authority`` is what msal wants (with ``instance_discovery=False``); ``is_valid(token)``
    lets FakeGraph accept only live tokens; ``expire_all()`` simulates server-side expiry.
    """

    def __init__(self, ca: TestCA, *, tenant_id: str = DEFAULT_TENANT, expires_in: int = 3599,
                 scopes: Iterable[str] = (GRAPH_DEFAULT_SCOPE,)) -> None:
        self.tenant_id = tenant_id
        self.expires_in = expires_in
        self.scopes = frozenset(scopes)
        self.requests: list[EntraRequest] = []
        self.token_requests = 0
        self._lock = threading.Lock()
        self._state = _Registry()
        self._signing_secret = secrets.token_bytes(32)
        self._server = LoopbackServer(self._handle, ca.server_context())

    @property
    def authority(self) -> str:
        return f"{self._server.origin}/{self.tenant_id}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.authority}/oauth2/v2.0/token"

    @property
    def issuer(self) -> str:
        return f"{self.authority}/v2.0"

    # ------------------------------------------------------------------ registration / state
    def add_client(self, client_id: str, *, secret: str | None = None,
                   certificate_pem: str | bytes | None = None,
                   federated: Iterable[FederatedCredential] = (),
                   roles: Iterable[str] = ()) -> None:
        """Register an app with any mix of secret, certificate and federated credentials.

        ``roles``: the Microsoft Graph application permissions an admin consented to; Graph
        tokens carry them in their ``roles`` claim (other resources' tokens carry none).
        """
        certs: dict[str, x509.Certificate] = {}
        if certificate_pem is not None:
            raw = certificate_pem.encode() if isinstance(certificate_pem, str) else certificate_pem
            cert = x509.load_pem_x509_certificate(raw)
            certs[_b64url_thumbprint(cert, hashes.SHA1())] = cert
            certs[_b64url_thumbprint(cert, hashes.SHA256())] = cert
        with self._lock:
            self._state.clients[client_id] = _Client(client_id, secret, certs, list(federated),
                                                      frozenset(roles), str(uuid.uuid4()))

    def set_roles(self, client_id: str, roles: Iterable[str]) -> None:
        """Consent changed: tokens issued from now on carry these Graph roles."""
        with self._lock:
            self._state.clients[client_id].roles = frozenset(roles)

    def claims(self, token: str) -> dict[str, object] | None:
        """The claims of a live token this fake issued (None otherwise), as Graph reads them."""
        with self._lock:
            issued = self._state.tokens.get(token)
            if issued is None or time.time() >= issued.expires_at:
                return None
            return dict(issued.claims)

    def is_valid(self, token: str) -> bool:
        """True for a token this fake issued that has not expired (or been expired)."""
        with self._lock:
            issued = self._state.tokens.get(token)
            return issued is not None and time.time() < issued.expires_at

    def expire_all(self) -> None:
        """Every issued token stops being valid (clients may still hold them in cache)."""
        with self._lock:
            for issued in self._state.tokens.values():
                issued.expires_at = 0.0

    @property
    def issued_tokens(self) -> int:
        with self._lock:
            return len(self._state.tokens)

    # ------------------------------------------------------------------ HTTP
    def _handle(self, request: Request) -> Response:
        path = request.raw_path
        form: dict[str, list[str]] = {}
        if request.method == "POST":
            form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        with self._lock:
            self.requests.append(EntraRequest(request.method, path, tuple(sorted(form))))
        parts = [p for p in path.split("/") if p]
        try:
            if not parts:
                raise _EntraError(404, "invalid_request", 90002, "Not found.")
            if parts[0].lower() != self.tenant_id.lower():
                raise _EntraError(400, "invalid_request", 90002,
                                  f"Tenant '{parts[0]}' not found. Check to make sure you have "
                                  "the correct tenant ID and are signing into the correct cloud.")
            rest = "/".join(parts[1:]).lower()
            if request.method == "GET" and rest == "v2.0/.well-known/openid-configuration":
                return Response.json(200, self._discovery())
            if rest == "oauth2/v2.0/token":
                if request.method != "POST":
                    raise _EntraError(405, "invalid_request", 900561,
                                      "The endpoint only accepts POST requests.")
                with self._lock:
                    self.token_requests += 1
                return Response.json(200, self._token({k: v[-1] for k, v in form.items()}),
                                     {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})
            raise _EntraError(404, "invalid_request", 900561, f"Endpoint '{path}' not found.")
        except _EntraError as exc:
            return self._error(exc)

    def _discovery(self) -> dict[str, object]:
        base = self.authority
        return {
            "token_endpoint": self.token_endpoint,
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{self._server.origin}/{self.tenant_id}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": self.issuer,
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }

    def _error(self, exc: _EntraError) -> Response:
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return Response.json(exc.status, {
            "error": exc.error,
            "error_description": f"AADSTS{exc.code}: {exc.text} Trace ID: {trace} "
                                 f"Correlation ID: {corr} Timestamp: {stamp}",
            "error_codes": [exc.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": f"{self._server.origin}/error?code={exc.code}",
        })

    def _token(self, form: dict[str, str]) -> dict[str, object]:
        grant = form.get("grant_type", "")
        if grant != "client_credentials":
            raise _EntraError(400, "unsupported_grant_type", 70003,
                              f"The app requested an unsupported grant type '{grant}'.")
        client_id = form.get("client_id", "")
        with self._lock:
            client = self._state.clients.get(client_id)
        if client is None:
            raise _EntraError(400, "unauthorized_client", 700016,
                              f"Application with identifier '{client_id}' was not found in the "
                              f"directory '{self.tenant_id}'.")
        scope = form.get("scope", "")
        self._check_scope(scope)
        if form.get("client_secret"):
            if client.secret is None or not secrets.compare_digest(
                    form["client_secret"].encode(), client.secret.encode()):
                raise _EntraError(401, "invalid_client", 7000215,
                                  "Invalid client secret provided. Ensure the secret being sent "
                                  "in the request is the client secret value, not the client "
                                  f"secret ID, for a secret added to app '{client_id}'.")
        elif form.get("client_assertion"):
            if form.get("client_assertion_type") != JWT_BEARER:
                raise _EntraError(400, "invalid_request", 50027,
                                  "JWT token is invalid or malformed.")
            self._check_assertion(client, form["client_assertion"])
        else:
            raise _EntraError(401, "invalid_client", 7000218,
                              "The request body must contain the following parameter: "
                              "'client_assertion' or 'client_secret'.")
        now = int(time.time())
        resource = scope.split()[0].removesuffix("/.default")
        claims: dict[str, object] = {
            "aud": resource, "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now, "nbf": now, "exp": now + self.expires_in, "appid": client_id,
            "appidacr": "1" if form.get("client_secret") else "2", "idtyp": "app",
            "oid": client.object_id, "sub": client.object_id, "tid": self.tenant_id,
            "ver": "1.0", "uti": secrets.token_urlsafe(16)}
        if resource + "/.default" == GRAPH_DEFAULT_SCOPE and client.roles:
            claims["roles"] = sorted(client.roles)  # absent, not empty, when none: as Entra
        # A JWT like Entra's, so a client may read its claims; its signature is this fake's own.
        token = jwt.encode(claims, self._signing_secret, algorithm="HS256",
                           headers={"kid": "fake-entra"})
        with self._lock:
            self._state.tokens[token] = _Issued(client_id, scope, now + self.expires_in, claims)
        return {"token_type": "Bearer", "expires_in": self.expires_in,
                "ext_expires_in": self.expires_in, "access_token": token}

    def _check_scope(self, scope: str) -> None:
        wanted = scope.split()
        if not wanted:
            raise _EntraError(400, "invalid_request", 900144,
                              "The request body must contain the following parameter: 'scope'.")
        for item in wanted:
            if not item.endswith("/.default"):
                raise _EntraError(400, "invalid_scope", 1002012,
                                  f"The provided value for scope {item} is not valid. Client "
                                  "credential flows must have a scope value with /.default "
                                  "suffixed to the resource identifier (application ID URI).")
            if item not in self.scopes:
                raise _EntraError(400, "invalid_scope", 500011,
                                  f"The resource principal named {item.removesuffix('/.default')}"
                                  f" was not found in the tenant named {self.tenant_id}.")

    def _check_assertion(self, client: _Client, assertion: str) -> None:
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _EntraError(400, "invalid_request", 50027,
                              "JWT token is invalid or malformed.") from exc
        if claims.get("iss") == client.client_id:
            self._check_certificate_assertion(client, header, assertion)
        else:
            self._check_federated_assertion(client, claims, assertion)

    def _check_certificate_assertion(self, client: _Client, header: dict[str, object],
                                     assertion: str) -> None:
        thumb = header.get("x5t#S256") or header.get("x5t")
        cert = client.certificates.get(str(thumb)) if thumb else None
        if cert is None:
            raise _EntraError(401, "invalid_client", 700027,
                              "The certificate with identifier used to sign the client "
                              f"assertion is not registered on application. [Reason - The key "
                              f"was not found., Thumbprint of key used by client: '{thumb}']")
        try:
            claims = jwt.decode(assertion, cert.public_key(),  # type: ignore[arg-type]
                                algorithms=["RS256", "PS256"], audience=self.token_endpoint,
                                options={"require": ["exp", "aud", "iss", "sub"]})
        except jwt.ExpiredSignatureError as exc:
            raise _EntraError(401, "invalid_client", 700024,
                              "Client assertion is not within its valid time range.") from exc
        except jwt.InvalidAudienceError as exc:
            raise _EntraError(401, "invalid_client", 700212,
                              "No matching federated identity record found for presented "
                              "assertion audience.") from exc
        except jwt.PyJWTError as exc:
            raise _EntraError(401, "invalid_client", 700027,
                              f"Client assertion failed signature validation. ({exc})") from exc
        if claims.get("sub") != client.client_id:
            raise _EntraError(401, "invalid_client", 700021,
                              "Client assertion application identifier doesn't match "
                              "'client_id' parameter.")

    def _check_federated_assertion(self, client: _Client, claims: dict[str, object],
                                   assertion: str) -> None:
        iss, sub = claims.get("iss"), claims.get("sub")
        for fic in client.federated:
            if fic.issuer != iss or fic.subject != sub:
                continue
            try:
                jwt.decode(assertion, fic.public_key_pem, algorithms=["RS256", "PS256"],
                           audience=fic.audience, issuer=fic.issuer,
                           options={"require": ["exp", "aud", "iss", "sub"]})
            except jwt.ExpiredSignatureError as exc:
                raise _EntraError(400, "invalid_client", 700024,
                                  "Client assertion is not within its valid time range.") from exc
            except jwt.InvalidAudienceError as exc:
                raise _EntraError(400, "invalid_request", 700212,
                                  "No matching federated identity record found for presented "
                                  f"assertion audience '{claims.get('aud')}'.") from exc
            except jwt.PyJWTError as exc:
                raise _EntraError(401, "invalid_client", 700027,
                                  "Client assertion failed signature validation.") from exc
            return
        raise _EntraError(400, "invalid_request", 70021,
                          "No matching federated identity record found for presented assertion. "
                          f"Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. "
                          f"Assertion Audience: '{claims.get('aud')}'.")
