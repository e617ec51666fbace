"""A Graph client for one mailbox's worth of work: msgraph-sdk over an httpx client we own.

We build the httpx client ourselves for three reasons: its connection pool is the hard cap of
Graph's 4 concurrent requests per mailbox (HTTP/1.1, one request per connection); every request
carries `Prefer: IdType="ImmutableId"` so message ids survive moves; and streamed downloads (the
SDK has no builder for `attachments/{id}/$value`) go through the same middleware, retries
included. The SDK's retry handler retries 429, 503 and 504 and honours `Retry-After`.

One httpx client is bound to the event loop that first uses it, so connections are made per
invocation (cheap), never at import time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx

from graph.credentials import GRAPH_SCOPE, MsalCredential
from graph.errors import CredentialError, GraphError, from_status

if TYPE_CHECKING:
    from kiota_abstractions.request_information import RequestInformation
    from msgraph import GraphServiceClient
    from msgraph.graph_request_adapter import GraphRequestAdapter

log = logging.getLogger("dmarcbot.graph")
T = TypeVar("T")

GRAPH_V1 = "https://graph.microsoft.com/v1.0"
MAX_CONCURRENT_REQUESTS = 4  # Graph's Outlook limit per app per mailbox
IMMUTABLE_IDS = 'IdType="ImmutableId"'


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry 429/503/504 (kiota's RetryHandler does the work)."""

    max_retries: int = 3
    delay: float = 3.0  # seconds added to the backoff when the answer has no Retry-After


@dataclasses.dataclass(slots=True)
class GraphConnection:
    """The SDK client, its adapter and the httpx client under them, for one event loop."""

    client: GraphServiceClient
    adapter: GraphRequestAdapter
    http: httpx.AsyncClient
    transport: httpx.AsyncHTTPTransport
    credential: MsalCredential
    base_url: str

    async def aclose(self) -> None:
        try:
            await self.http.aclose()
        finally:
            await self.transport.aclose()

    async def call(self, request: Callable[[], Awaitable[T]]) -> T:
        """Run an SDK request, its errors translated into graph.errors types."""
        from kiota_abstractions.api_error import APIError
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        async def once() -> T:
            try:
                return await request()
            except APIError as exc:  # ODataError, or a gateway's HTML page
                code = exc.error.code if isinstance(exc, ODataError) and exc.error else None
                raise from_status(exc.response_status_code, code) from None
            except httpx.HTTPError as exc:
                raise GraphError(f"cannot reach Microsoft Graph ({type(exc).__name__})") from None

        return await self.with_fresh_token(once)

    async def json(self, info: RequestInformation, *, answer: bool = True) -> dict[str, Any]:
        """Send a request the SDK built and read its JSON answer as plain data.

        The SDK's models cost about 3 ms of CPU per object to build; for listings, moves and
        list items that is most of the client's work, and the fields needed are a handful.
        """
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        errors: dict[str, Any] = {"XXX": ODataError}
        adapter = self.adapter

        def fresh() -> RequestInformation:
            # the token of an earlier attempt stays on the request unless taken off
            info.headers.remove("Authorization")
            return info

        if not answer:
            await self.call(lambda: adapter.send_no_response_content_async(fresh(), errors))
            return {}
        body = await self.call(lambda: adapter.send_primitive_async(fresh(), "bytes", errors))
        try:
            value = json.loads(body or b"{}")
        except ValueError:
            raise GraphError("Microsoft Graph answered with something that is not JSON") from None
        if not isinstance(value, dict):
            raise GraphError("Microsoft Graph answered with JSON that is not an object")
        return value

    async def with_fresh_token(self, once: Callable[[], Awaitable[T]]) -> T:
        """Graph refuses a token msal still thinks is good (revoked, clock skew): retry once."""
        try:
            return await once()
        except GraphError as exc:
            if exc.status != 401 or isinstance(exc, CredentialError):
                raise
            log.info("Graph refused the access token (%s); getting a new one", exc.code)
            self.credential.invalidate()
            return await once()

    async def __aenter__(self) -> GraphConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def odata_string(value: str) -> str:
    """A quoted OData string literal for a `$filter` (a quote inside is doubled)."""
    return "'" + value.replace("'", "''") + "'"


def quiet_transport_logs() -> None:
    """httpx logs every request's URL at INFO, and the Azure SDK its URLs and headers: with the
    mailbox, message ids and table keys (domains, IPs) in them. Warnings still get through.

    Applied on every connection, not once: other libraries (the Teams SDK among them) reset
    logging when they are imported.
    """
    for name in ("httpx", "httpcore", "azure"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def graph_scope(base_url: str) -> str:
    """The token scope for a Graph endpoint: its own host's `.default` (national clouds have
    their own Graph hosts); an IP address or localhost (a test or a proxy) stands for the
    public cloud's."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.replace(".", "").isdigit() or ":" in host:
        return GRAPH_SCOPE
    return f"https://{host}/.default"


def connect(credential: MsalCredential, *, base_url: str = GRAPH_V1,
            ca_bundle: Path | None = None, retry: RetryPolicy = RetryPolicy(),
            max_concurrent: int = MAX_CONCURRENT_REQUESTS) -> GraphConnection:
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from kiota_http.middleware.options import RetryHandlerOption
    from msgraph import GraphServiceClient
    from msgraph.graph_request_adapter import GraphRequestAdapter
    from msgraph.graph_request_adapter import options as default_options
    from msgraph_core import GraphClientFactory

    quiet_transport_logs()
    verify: Any = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else True
    # Our own transport: msgraph-core wraps it in a transport whose aclose() does nothing, so
    # closing the client alone would leave the pool's sockets open.
    transport = httpx.AsyncHTTPTransport(
        verify=verify,
        limits=httpx.Limits(max_connections=max_concurrent,
                            max_keepalive_connections=max_concurrent))
    http = httpx.AsyncClient(
        transport=transport,
        headers={"Prefer": IMMUTABLE_IDS},
        # waiting for one of the 4 connections is the design, not a fault: no pool timeout
        timeout=httpx.Timeout(60.0, pool=None),
    )
    options = dict(default_options)
    options[RetryHandlerOption.get_key()] = RetryHandlerOption(
        delay=retry.delay, max_retries=retry.max_retries)
    http = GraphClientFactory.create_with_default_middleware(client=http, options=options)
    host = urlsplit(base_url).hostname or ""
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[graph_scope(base_url)],
                                               allowed_hosts=[host])
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = base_url.rstrip("/")  # before the client copies it into its paths
    return GraphConnection(GraphServiceClient(request_adapter=adapter), adapter, http, transport,
                           credential, adapter.base_url)
