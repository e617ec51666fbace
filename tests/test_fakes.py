"""The loopback Microsoft fakes behave like the services, as the real msal and msgraph-sdk see."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msal
import pytest
import requests
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.file_attachment import FileAttachment as SdkFileAttachment
from msgraph.generated.models.item_attachment import ItemAttachment as SdkItemAttachment
from msgraph.generated.models.mail_folder import MailFolder
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.messages.item.move.move_post_request_body import (
    MovePostRequestBody,
)
from msgraph_core import GraphClientFactory

from tests.fakes import (
    FakeEntra,
    FakeGraph,
    FakeManagedIdentity,
    FileAttachment,
    ItemAttachment,
    RouteError,
    RouteTable,
    TestCA,
)
from tests.fakes.fixtures import (  # noqa: F401 - fixtures used by name
    entra_fixture,
    graph_fixture,
    graph_routes_fixture,
    test_ca_fixture,
)
from tests.fakes.mail_json import (
    FILE_ATTACHMENT_PROPERTIES,
    ITEM_ATTACHMENT_PROPERTIES,
    MAIL_FOLDER_PROPERTIES,
    MESSAGE_PROPERTIES,
)

SCOPE = "https://graph.microsoft.com/.default"
CLIENT_ID = "0b8a5a7e-0000-4000-8000-0000000000c1"
SECRET = "s3cr3t~value"
UPN = "dmarc@contoso.com"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

T = TypeVar("T")
# msgraph's builder modules define deprecated *RequestConfiguration classes at import time:
# they are imported inside the tests, where this filter applies.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions")]
Session = tuple[GraphServiceClient, GraphRequestAdapter]


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- client helpers

def msal_app(entra: FakeEntra, ca: TestCA, credential: Any,
             client_id: str = CLIENT_ID) -> msal.ConfidentialClientApplication:
    session = requests.Session()
    session.verify = str(ca.ca_pem)
    session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override .verify
    return msal.ConfidentialClientApplication(
        client_id, client_credential=credential, authority=entra.authority,
        instance_discovery=False, http_client=session)


class MsalTokens(AccessTokenProvider):
    """Kiota token provider over an msal app (msal is sync: run it in a thread)."""

    def __init__(self, app: msal.ConfidentialClientApplication) -> None:
        self.app = app

    async def get_authorization_token(self, uri: str,
                                      additional_authentication_context: Any = None) -> str:
        result = await asyncio.to_thread(self.app.acquire_token_for_client, scopes=[SCOPE])
        if "access_token" not in result:
            raise RuntimeError(f"token error: {result.get('error')}")
        return str(result["access_token"])

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator([])


class StaticToken(MsalTokens):
    def __init__(self, token: str) -> None:
        self.token = token

    async def get_authorization_token(self, uri: str,
                                      additional_authentication_context: Any = None) -> str:
        return self.token


@asynccontextmanager
async def sdk_client(graph: FakeGraph, ca: TestCA, tokens: AccessTokenProvider,
                     retry: RetryHandlerOption | None = None) -> AsyncIterator[Session]:
    """GraphServiceClient on a fresh httpx client (bound to the running loop), closed after."""
    options = {RetryHandlerOption.get_key(): retry or RetryHandlerOption(delay=0, max_retries=0)}
    # msgraph-core wraps the transport in AsyncGraphTransport, whose aclose() is a no-op:
    # closing the client leaves the pool's sockets open. Keep the real transport to close it.
    transport = httpx.AsyncHTTPTransport(verify=ca.client_context())
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(transport=transport, timeout=10), options=options)
    try:
        adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(tokens), client=http)
        adapter.base_url = graph.base_url  # before GraphServiceClient copies it
        yield GraphServiceClient(request_adapter=adapter), adapter
    finally:
        await http.aclose()
        await transport.aclose()


@pytest.fixture
def app(entra: FakeEntra, test_ca: TestCA) -> msal.ConfidentialClientApplication:
    entra.add_client(CLIENT_ID, secret=SECRET)
    return msal_app(entra, test_ca, SECRET)


@pytest.fixture
def session(graph: FakeGraph, test_ca: TestCA,
            app: msal.ConfidentialClientApplication) -> Callable[..., Any]:
    """``async with session() as (client, adapter)``: the SDK with msal secret tokens, for
    mailbox UPN (created here)."""
    graph.add_mailbox(UPN).grant(CLIENT_ID)

    def make(retry: RetryHandlerOption | None = None,
             tokens: AccessTokenProvider | None = None) -> Any:
        return sdk_client(graph, test_ca, tokens or MsalTokens(app), retry)

    return make


def raw_request(adapter: GraphRequestAdapter, path: str,
                method: Method = Method.GET) -> RequestInformation:
    info = RequestInformation()
    info.http_method = method
    info.url = f"{adapter.base_url}{path}"
    return info


async def odata_error(call: Awaitable[Any]) -> ODataError:
    with pytest.raises(ODataError) as caught:
        await call
    return caught.value


def seed_reports(graph: FakeGraph) -> list[str]:
    """Seven report mails with a zip (one an hour from T0), two plain mails in between."""
    box = graph.mailbox(UPN)
    assert box is not None
    ids = []
    for i in range(7):
        ids.append(box.add_message(
            subject=f"Report domain: contoso.com Submitter: google.com #{i}",
            received=T0 + timedelta(hours=i),
            sender=("Google", "noreply-dmarc-support@google.com"),
            internet_message_id=f"<report-{i}@google.com>",
            attachments=[FileAttachment(f"google.com!contoso.com!{i}.zip",
                                        b"PK\x03\x04" + bytes([i]), "application/zip")]))
        box.add_message(subject=f"hello {i}", received=T0 + timedelta(hours=i, minutes=30))
    return ids


# ----------------------------------------------------------------------------- route table

def test_route_table_from_sdk(graph_routes: RouteTable) -> None:
    assert graph_routes.size > 10_000
    ok = graph_routes.match("GET", "/users/dmarc%40contoso.com/MailFolders/Inbox/messages",
                            ["$select", "$filter", "$orderby", "$top", "$skiptoken"])
    assert ok and ok.template == "/users/{user-id}/mailFolders/{mailFolder-id}/messages"
    assert ok.params == {"user-id": "dmarc@contoso.com", "mailFolder-id": "Inbox"}
    value = graph_routes.match("GET", "/users/u/messages/AAMk%3D/attachments/a1/$value")
    assert value and value.template.endswith("/attachments/{attachment-id}/$value")
    assert graph_routes.match("GET", "/users/u/messages/microsoft.graph.delta()", ["$deltatoken"])
    wrong_method = graph_routes.match("DELETE", "/users/u/messages/m/move")
    assert isinstance(wrong_method, RouteError) and "allowed ['POST']" in wrong_method.reason
    assert isinstance(graph_routes.match("GET", "/users/u/mailfolder/inbox"), RouteError)
    assert isinstance(graph_routes.match("GET", "/users/u/messages/m", ["$top"]), RouteError)
    assert isinstance(graph_routes.match("POST", "/users/u/messages/m/move", ["$select"]),
                      RouteError)


def test_fake_property_names_are_the_sdk_models() -> None:
    def fields(model: Any) -> set[str]:
        return set(model().get_field_deserializers()) - {"@odata.type"}

    assert fields(Message) == MESSAGE_PROPERTIES
    assert fields(SdkFileAttachment) == FILE_ATTACHMENT_PROPERTIES
    assert fields(SdkItemAttachment) == ITEM_ATTACHMENT_PROPERTIES
    assert fields(MailFolder) == MAIL_FOLDER_PROPERTIES


# ----------------------------------------------------------------------------- Entra with msal

def test_msal_secret_token_then_cache(entra: FakeEntra,
                                      app: msal.ConfidentialClientApplication) -> None:
    first = app.acquire_token_for_client(scopes=[SCOPE])
    assert first["token_type"] == "Bearer" and first["token_source"] == "identity_provider"
    assert entra.is_valid(first["access_token"])
    second = app.acquire_token_for_client(scopes=[SCOPE])
    assert second["token_source"] == "cache" and second["access_token"] == first["access_token"]
    assert entra.token_requests == 1
    assert [r.method for r in entra.requests] == ["GET", "POST"]
    assert "client_secret" in entra.requests[1].form_keys
    assert SECRET not in repr(entra.requests)
    entra.expire_all()
    assert not entra.is_valid(first["access_token"])


def test_msal_errors_as_entra_sends_them(entra: FakeEntra, test_ca: TestCA) -> None:
    entra.add_client(CLIENT_ID, secret=SECRET)
    wrong = msal_app(entra, test_ca, "not-the-secret").acquire_token_for_client(scopes=[SCOPE])
    assert wrong["error"] == "invalid_client" and wrong["error_codes"] == [7000215]
    assert wrong["error_description"].startswith("AADSTS7000215:")
    scope = msal_app(entra, test_ca, SECRET).acquire_token_for_client(
        scopes=["https://graph.microsoft.com/Mail.Read"])
    assert scope["error"] == "invalid_scope"
    unknown = msal_app(entra, test_ca, SECRET, client_id="nobody").acquire_token_for_client(
        scopes=[SCOPE])
    assert unknown["error"] == "unauthorized_client"
    session = requests.Session()
    session.trust_env = False
    other_tenant = entra.authority.rsplit("/", 1)[0] + "/other-tenant/oauth2/v2.0/token"
    answer = session.post(other_tenant, data={"grant_type": "client_credentials"},
                          verify=str(test_ca.ca_pem), timeout=5)
    assert answer.status_code == 400 and answer.json()["error_codes"] == [90002]


@pytest.mark.parametrize("form", ["sha1-thumbprint", "public-certificate"])
def test_msal_certificate_credential(entra: FakeEntra, test_ca: TestCA, form: str) -> None:
    key_pem, cert_pem, sha1, _sha256 = test_ca.issue_client_certificate()
    entra.add_client(CLIENT_ID, certificate_pem=cert_pem)
    credential = ({"private_key": key_pem, "thumbprint": sha1} if form == "sha1-thumbprint"
                  else {"private_key": key_pem, "public_certificate": cert_pem})
    result = msal_app(entra, test_ca, credential).acquire_token_for_client(scopes=[SCOPE])
    assert "access_token" in result, result.get("error_description")
    assert "client_assertion" in entra.requests[-1].form_keys
    stranger_key, _cert, stranger_sha1, _ = test_ca.issue_client_certificate("stranger")
    refused = msal_app(entra, test_ca, {"private_key": stranger_key, "thumbprint": stranger_sha1}
                       ).acquire_token_for_client(scopes=[SCOPE])
    assert refused["error"] == "invalid_client" and refused["error_codes"] == [700027]


def test_msal_federated_credential(entra: FakeEntra, test_ca: TestCA) -> None:
    identity = FakeManagedIdentity()
    entra.add_client(CLIENT_ID, federated=[identity.credential()])
    good = msal_app(entra, test_ca, {"client_assertion": identity.assertion}
                    ).acquire_token_for_client(scopes=[SCOPE])
    assert "access_token" in good, good.get("error_description")
    impostor = FakeManagedIdentity(subject="someone-else")
    bad = msal_app(entra, test_ca, {"client_assertion": impostor.assertion}
                   ).acquire_token_for_client(scopes=[SCOPE])
    assert bad["error_codes"] == [70021]


# ----------------------------------------------------------------------------- Graph with the SDK

def test_list_filter_orderby_select_top_pages(graph: FakeGraph,
                                              session: Callable[..., Any]) -> None:
    ids = seed_reports(graph)

    from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
        MessagesRequestBuilder,
    )

    async def scenario() -> list[list[Message]]:
        async with session() as (client, _):
            inbox = client.users.by_user_id(UPN).mail_folders.by_mail_folder_id("inbox").messages
            query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
                select=["id", "subject", "receivedDateTime", "hasAttachments", "from",
                        "internetMessageId"],
                filter=f"receivedDateTime ge {T0.strftime('%Y-%m-%dT%H:%M:%SZ')} "
                       "and hasAttachments eq true",
                orderby=["receivedDateTime asc"], top=3)
            page = await inbox.get(RequestConfiguration(query_parameters=query))
            pages = []
            while page is not None:
                pages.append(page.value or [])
                page = await inbox.with_url(page.odata_next_link).get() \
                    if page.odata_next_link else None
            return pages

    pages = run(scenario())
    assert [len(p) for p in pages] == [3, 3, 1]
    messages = [m for p in pages for m in p]
    assert [m.id for m in messages] == ids
    first = messages[0]
    assert first.subject.endswith("#0") and first.has_attachments is True
    assert first.from_.email_address.address == "noreply-dmarc-support@google.com"
    assert first.received_date_time == T0 and first.internet_message_id == "<report-0@google.com>"
    assert first.body is None  # not selected
    assert all(m.additional_data == {} for m in messages)
    next_links = [r for r in graph.requests if "$skiptoken" in r.query]
    assert len(next_links) == 2 and all(r.query["$top"] == "3" for r in next_links)


def test_orderby_not_leading_filter_is_inefficient(graph: FakeGraph,
                                                   session: Callable[..., Any]) -> None:
    from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
        MessagesRequestBuilder,
    )

    async def scenario() -> ODataError:
        async with session() as (client, _):
            query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
                filter="hasAttachments eq true and receivedDateTime ge 2026-01-01T00:00:00Z",
                orderby=["receivedDateTime asc"])
            inbox = client.users.by_user_id(UPN).mail_folders.by_mail_folder_id("inbox").messages
            return await odata_error(inbox.get(RequestConfiguration(query_parameters=query)))

    error = run(scenario())
    assert error.response_status_code == 400 and error.error.code == "InefficientFilter"


def test_attachments_and_raw_values(graph: FakeGraph, session: Callable[..., Any]) -> None:
    box = graph.mailbox(UPN)
    assert box is not None
    forwarded = (b"From: reports@example.net\r\nTo: dmarc@contoso.com\r\nSubject: Report\r\n"
                 b"Date: Sun, 01 Mar 2026 08:00:00 +0000\r\nMessage-ID: <fwd@example.net>\r\n"
                 b"\r\nreport inside\r\n")
    mid = box.add_message(subject="two kinds", received=T0, attachments=[
        FileAttachment("r.xml.gz", b"\x1f\x8bgzip-bytes", "application/gzip"),
        ItemAttachment("Report", forwarded)])

    async def scenario() -> tuple[Any, ...]:
        async with session() as (client, adapter):
            message = client.users.by_user_id(UPN).messages.by_message_id(mid)
            listed = await message.attachments.get()
            file_att, item_att = listed.value
            quoted = f"/users/{quote(UPN)}/messages/{quote(mid, safe='')}"
            raw_file = await adapter.send_primitive_async(raw_request(
                adapter, f"{quoted}/attachments/{quote(file_att.id, safe='')}/$value"), "bytes", {})
            raw_item = await adapter.send_primitive_async(raw_request(
                adapter, f"{quoted}/attachments/{quote(item_att.id, safe='')}/$value"), "bytes", {})
            mime = await adapter.send_primitive_async(raw_request(adapter, f"{quoted}/$value"),
                                                      "bytes", {})
            return file_att, item_att, raw_file, raw_item, mime

    file_att, item_att, raw_file, raw_item, mime = run(scenario())
    assert isinstance(file_att, SdkFileAttachment)
    assert file_att.content_bytes == b"\x1f\x8bgzip-bytes"
    assert file_att.content_type == "application/gzip" and file_att.additional_data == {}
    assert isinstance(item_att, SdkItemAttachment) and item_att.additional_data == {}
    assert raw_file == b"\x1f\x8bgzip-bytes"
    assert raw_item == forwarded
    parsed = email.message_from_bytes(mime, policy=email.policy.default)
    assert parsed["Subject"] == "two kinds"
    names = [part.get_filename() for part in parsed.iter_attachments()]
    assert names == ["r.xml.gz", "Report"]


def test_move_changes_id_unless_immutable(graph: FakeGraph,
                                          session: Callable[..., Any]) -> None:
    box = graph.mailbox(UPN)
    assert box is not None
    archive = box.add_folder("DMARC-Processed")
    plain, pinned, forced = (box.add_message(subject=s, received=T0) for s in "abc")

    async def move(client: GraphServiceClient, mid: str, immutable: bool) -> Message:
        config: RequestConfiguration[Any] = RequestConfiguration()
        if immutable:
            config.headers.add("Prefer", 'IdType="ImmutableId"')
        return await client.users.by_user_id(UPN).messages.by_message_id(mid).move.post(
            MovePostRequestBody(destination_id=archive), config)

    pinned_id = box.message(pinned).immutable_id  # type: ignore[union-attr]
    forced_id = box.message(forced).immutable_id  # type: ignore[union-attr]

    async def scenario() -> tuple[Message, Message, Message, ODataError]:
        async with session() as (client, _):
            moved = await move(client, plain, immutable=False)
            old = client.users.by_user_id(UPN).messages.by_message_id(plain)
            gone = await odata_error(old.get())
            kept = await move(client, pinned_id, immutable=True)
            graph.ids_change_on_move = True
            changed = await move(client, forced_id, immutable=True)
            return moved, kept, changed, gone

    moved, kept, changed, gone = run(scenario())
    assert moved.id != plain and moved.parent_folder_id == archive
    assert gone.response_status_code == 404 and gone.error.code == "ErrorItemNotFound"
    assert kept.id == pinned_id and box.message(pinned) is None  # REST id changed anyway
    assert changed.id != forced_id and box.message(forced_id) is None
    assert [m.subject for m in box.messages_in("DMARC-Processed")] == ["a", "b", "c"]
    assert box.messages_in("inbox") == []


def test_folder_create_conflict_and_lookup(graph: FakeGraph,
                                           session: Callable[..., Any]) -> None:
    from msgraph.generated.users.item.mail_folders.mail_folders_request_builder import (
        MailFoldersRequestBuilder,
    )

    async def scenario() -> tuple[MailFolder, ODataError, list[MailFolder]]:
        async with session() as (client, _):
            folders = client.users.by_user_id(UPN).mail_folders
            created = await folders.post(MailFolder(display_name="DMARC-Processed"))
            conflict = await odata_error(folders.post(MailFolder(display_name="dmarc-processed")))
            query = MailFoldersRequestBuilder.MailFoldersRequestBuilderGetQueryParameters(
                filter="displayName eq 'DMARC-Processed'", select=["id", "displayName"], top=1)
            found = await folders.get(RequestConfiguration(query_parameters=query))
            return created, conflict, found.value

    created, conflict, found = run(scenario())
    assert created.display_name == "DMARC-Processed" and created.additional_data == {}
    assert conflict.response_status_code == 409 and conflict.error.code == "ErrorFolderExists"
    assert [f.id for f in found] == [created.id]


def test_patch_categories_and_delete_is_only_recorded(graph: FakeGraph,
                                                      session: Callable[..., Any]) -> None:
    box = graph.mailbox(UPN)
    assert box is not None
    mid = box.add_message(subject="broken report", received=T0)

    async def scenario() -> Message:
        async with session() as (client, _):
            message = client.users.by_user_id(UPN).messages.by_message_id(mid)
            patched = await message.patch(Message(categories=["dmarcbot: not a report"]))
            await message.delete()
            return patched

    patched = run(scenario())
    assert patched.categories == ["dmarcbot: not a report"]
    assert box.messages_in("inbox")[0].categories == ["dmarcbot: not a report"]
    assert graph.deleted == [f"/v1.0/users/{UPN}/messages/{mid}"]
    assert box.message(mid) is not None  # still there


def test_route_rejections(graph: FakeGraph, session: Callable[..., Any]) -> None:
    async def scenario() -> tuple[ODataError, ODataError]:
        async with session() as (_, adapter):
            made_up = raw_request(adapter, f"/users/{quote(UPN)}/mailFolder/inbox/messages")
            unknown_option = raw_request(adapter, f"/users/{quote(UPN)}/messages?$expandd=x")
            errors = {"XXX": ODataError}
            send = adapter.send_primitive_async
            return (await odata_error(send(made_up, "bytes", errors)),
                    await odata_error(send(unknown_option, "bytes", errors)))

    path_error, option_error = run(scenario())
    assert path_error.response_status_code == 400 and path_error.error.code == "BadRequest"
    assert option_error.response_status_code == 400
    assert [r.reason.split()[0] for r in graph.rejected] == ["Resource", "Query"]
    assert "$expandd" in graph.rejected[1].reason


def test_429_is_retried_by_the_sdk(graph: FakeGraph, session: Callable[..., Any],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from kiota_http.middleware.retry_handler import RetryHandler

    # Retry-After: 0 counts as absent, so kiota sleeps 0.25 s + up to 1 s of jitter: drop that.
    monkeypatch.setattr(RetryHandler, "_get_delay_time_exp_backoff", lambda self, n, d: 0.0)
    graph.inject(429, method="GET", path_contains="/mailFolders/inbox/messages",
                 headers={"Retry-After": "0"})

    async def scenario() -> int:
        async with session(RetryHandlerOption(delay=0, max_retries=2)) as (client, _):
            page = await client.users.by_user_id(UPN).mail_folders.by_mail_folder_id(
                "inbox").messages.get()
            return len(page.value)

    assert run(scenario()) == 0
    tries = [r for r in graph.requests if r.path.endswith("/inbox/messages")]
    assert len(tries) == 2 and tries[1].headers.get("retry-attempt") == "1"


def test_expired_token_is_401(graph: FakeGraph, entra: FakeEntra,
                              session: Callable[..., Any]) -> None:
    async def scenario() -> ODataError:
        async with session() as (client, _):
            inbox = client.users.by_user_id(UPN).mail_folders.by_mail_folder_id("inbox")
            await inbox.get()
            entra.expire_all()  # msal still serves the old token from its cache
            return await odata_error(inbox.get())

    error = run(scenario())
    assert error.response_status_code == 401
    assert error.error.code == "InvalidAuthenticationToken"
    assert error.error.message == "Access token has expired or is not yet valid."
    assert graph.requests[0].headers["authorization"] == "<redacted>"


def test_unknown_mailbox_and_forged_token(graph: FakeGraph,
                                          session: Callable[..., Any]) -> None:
    async def scenario() -> tuple[ODataError, ODataError]:
        async with session() as (client, _):
            missing = await odata_error(client.users.by_user_id("nobody@contoso.com").mail_folders
                                        .by_mail_folder_id("inbox").messages.get())
        async with session(tokens=StaticToken("made-up")) as (forged, _):
            refused = await odata_error(forged.users.by_user_id(UPN).messages.get())
        return missing, refused

    missing, refused = run(scenario())
    assert missing.response_status_code == 404 and missing.error.code == "ErrorInvalidUser"
    assert refused.response_status_code == 401


def test_latency_and_in_flight_per_mailbox(graph: FakeGraph,
                                           session: Callable[..., Any]) -> None:
    graph.latency = 0.05

    async def scenario() -> None:
        async with session() as (client, _):
            inbox = client.users.by_user_id(UPN).mail_folders.by_mail_folder_id("inbox")
            await asyncio.gather(*(inbox.get() for _ in range(6)))

    run(scenario())
    assert graph.max_in_flight[UPN] >= 2
    assert graph.in_flight[UPN] == 0


# ----------------------------------------------------------------------------- fake-only features

@pytest.fixture
def plain_graph(graph_routes: RouteTable) -> Iterator[tuple[FakeGraph, httpx.Client]]:
    """Plain-http FakeGraph accepting any bearer, with a raw httpx client for odd requests."""
    with FakeGraph(routes=graph_routes) as fake, httpx.Client(
            base_url=fake.base_url, headers={"Authorization": "Bearer any"}, timeout=5) as http:
        fake.add_mailbox(UPN)
        yield fake, http
    assert not fake.errors, fake.errors[0]


def test_query_options_and_ids(plain_graph: tuple[FakeGraph, httpx.Client]) -> None:
    graph, http = plain_graph
    box = graph.mailbox(UPN)
    assert box is not None
    forwarded = b"From: a@example.net\r\nSubject: inner\r\n\r\nhi\r\n"
    mid = box.add_message(subject="s", received=T0, attachments=[
        FileAttachment("a.zip", b"zz", "application/zip"), ItemAttachment("fw", forwarded)])
    base = f"/users/{UPN}/mailFolders/inbox/messages"

    slim = http.get(f"{base}?$select=subject&$expand=attachments($select=id,name)").json()
    assert set(slim["value"][0]) == {"id", "subject", "attachments"}
    assert [set(a) for a in slim["value"][0]["attachments"]] == [{"@odata.type", "id", "name"}] * 2
    full = http.get(f"{base}?$select=id&$expand=attachments").json()["value"][0]["attachments"]
    assert full[0]["contentBytes"] == "eno=" and "contentBytes" not in full[1]

    def error(url: str) -> tuple[int, str]:
        answer = http.get(url)
        return answer.status_code, answer.json()["error"]["code"]

    assert error(f"{base}?$top=1001") == (400, "ErrorInvalidUrlQuery")
    assert error(f"{base}?$filter=subject eq 'x'") == (400, "BadRequest")
    assert error(f"{base}?$filter=receivedDateTime ge 2026-01-01T00:00:00+00:00")[0] == 400
    assert error(f"{base}?$select=recievedDateTime") == (400, "RequestBroker--ParseUri")
    assert error(f"/users/{UPN}/messages/not-an-id") == (400, "ErrorInvalidIdMalformed")

    atts = http.get(f"/users/{UPN}/messages/{mid}/attachments").json()["value"]
    item = http.get(f"/users/{UPN}/messages/{mid}/attachments/{atts[1]['id']}"
                    "?$expand=microsoft.graph.itemattachment/item").json()
    assert item["item"]["subject"] == "inner"
    http.post(f"/users/{UPN}/messages/{mid}/move", json={"destinationId": "archive"})
    stale = http.get(f"/users/{UPN}/messages/{mid}/attachments/{atts[0]['id']}/$value")
    assert stale.status_code == 404  # attachment ids embed the message id they came with

    for i in range(3):
        box.add_message(subject=f"m{i}", received=T0 + timedelta(hours=i))
    capped = http.get(base, headers={"Prefer": "odata.maxpagesize=2"})
    assert len(capped.json()["value"]) == 2 and "@odata.nextLink" in capped.json()
    child = http.post(f"/users/{UPN}/mailFolders/inbox/childFolders", json={"displayName": "x"})
    assert child.status_code == 201 and box.folder_id("x") == child.json()["id"]


def test_auth_faults_and_mailbox_concurrency(plain_graph: tuple[FakeGraph, httpx.Client]) -> None:
    graph, http = plain_graph
    url = f"/users/{UPN}/mailFolders/inbox/messages"
    empty = http.get(url, headers={"Authorization": ""})
    assert empty.status_code == 401 and empty.json()["error"]["message"] == "Access token is empty."
    graph.inject(503, method="GET", path_contains="/inbox/", times=2)
    assert [http.get(url).status_code for _ in range(3)] == [503, 503, 200]
    graph.latency, graph.mailbox_concurrency_limit = 0.2, 1
    with ThreadPoolExecutor(3) as pool:
        codes = sorted(pool.map(lambda _: http.get(url).status_code, range(3)))
    assert codes[0] == 200 and 429 in codes
    assert graph.max_in_flight[UPN] >= 2 and graph.in_flight[UPN] == 0
