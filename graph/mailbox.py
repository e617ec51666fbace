"""The shared mailbox that receives DMARC reports, read and sorted through Microsoft Graph.

Reading never deletes or marks anything: a handled message is moved to the `Processed` folder,
a refused one to `Failed` with the reason as a category, so a person can always see what happened
and move a message back to be read again. Ids are immutable (see graph.client), so an id taken
from a listing still names the message after a move.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

import httpx

from graph.client import GraphConnection
from graph.errors import CredentialError, GraphError, NotFound, TooLarge

if TYPE_CHECKING:
    from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

log = logging.getLogger("dmarcbot.graph")

T = TypeVar("T")
Destination = Literal["processed", "failed"]

_ATTACHMENT_FIELDS = "id,name,contentType,size,isInline"
_MESSAGE_FIELDS = ["id", "parentFolderId", "receivedDateTime", "internetMessageId"]
_EXPAND = [f"attachments($select={_ATTACHMENT_FIELDS})"]
MAX_CATEGORY = 255  # Outlook's limit on a category name
_CHUNK = 1 << 16


@dataclasses.dataclass(frozen=True, slots=True)
class Attachment:
    """What Graph says about an attachment before anything is downloaded."""

    id: str
    name: str
    kind: Literal["file", "item"]
    size: int
    inline: bool


@dataclasses.dataclass(frozen=True, slots=True)
class MailRef:
    """A message in the mailbox and its attachments' metadata."""

    id: str
    folder_id: str | None
    received: dt.datetime | None
    internet_message_id: str | None
    attachments: tuple[Attachment, ...]

    @property
    def label(self) -> str:
        """How logs and the ledger name the message: its Message-ID, never its subject."""
        return self.internet_message_id or f"message {self.id[-12:]}"


@dataclasses.dataclass(frozen=True, slots=True)
class Folders:
    """Display names of the folders a message is listed from and sorted into."""

    source: str = "inbox"  # a well-known folder name or a folder id
    processed: str = "Processed"
    failed: str = "Failed"


class Mailbox:
    """One shared mailbox, read through one Graph connection (at most 4 requests in flight)."""

    def __init__(self, graph: GraphConnection, address: str, folders: Folders = Folders()):
        self.graph = graph
        self.address = address
        self.folders = folders
        self._folder_ids: dict[str, str] = {}

    @property
    def _user(self) -> UserItemRequestBuilder:
        return self.graph.client.users.by_user_id(self.address)

    # -- listing ---------------------------------------------------------------------------------

    async def messages(self, *, page_size: int = 50) -> AsyncIterator[MailRef]:
        """Every message in the source folder, oldest first, page by page."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (  # noqa: E501
            MessagesRequestBuilder,
        )

        builder = self._user.mail_folders.by_mail_folder_id(self.folders.source).messages
        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            select=_MESSAGE_FIELDS, orderby=["receivedDateTime asc"], top=page_size,
            expand=_EXPAND)
        page = await self._call(lambda: builder.get(RequestConfiguration(query_parameters=query)))
        while page is not None:
            for message in page.value or ():
                yield _mail_ref(message)
            if not page.odata_next_link:
                break
            # Graph's nextLink is absolute and followed verbatim
            page = await self._call(builder.with_url(page.odata_next_link).get)

    async def message(self, message_id: str) -> MailRef:
        """One message by id; `NotFound` when it has been moved or deleted since it was listed."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.messages.item.message_item_request_builder import (
            MessageItemRequestBuilder,
        )

        query = MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(
            select=_MESSAGE_FIELDS, expand=_EXPAND)
        builder = self._user.messages.by_message_id(message_id)
        message = await self._call(
            lambda: builder.get(RequestConfiguration(query_parameters=query)))
        if message is None:
            raise NotFound("the message is gone", status=404)
        return _mail_ref(message)

    async def waiting(self, ref: MailRef) -> bool:
        """Whether the message is still in the source folder, not yet sorted by an earlier run.

        Immutable ids survive moves, so finding a message by id does not mean it still waits.
        """
        return ref.folder_id == await self._source_id()

    # -- downloading -----------------------------------------------------------------------------

    async def attachment_bytes(self, ref: MailRef, attachment: Attachment, limit: int) -> bytes:
        """The raw bytes of a file attachment, or the MIME of an item (a forwarded e-mail).

        Refused before downloading when Graph's size is over `limit`, and again while streaming
        when the bytes outgrow it (for an item, Graph's size is not the MIME's size).
        """
        if attachment.kind == "file" and attachment.size > limit:
            raise TooLarge(f"{attachment.size} bytes, over the input size limit of {limit} bytes "
                           "(max_input_bytes)")
        return await self._download(
            f"/users/{_q(self.address)}/messages/{_q(ref.id)}/attachments/{_q(attachment.id)}"
            "/$value", limit)

    async def message_bytes(self, ref: MailRef, limit: int) -> bytes:
        """The whole message as MIME (a report sent as the body rather than an attachment)."""
        return await self._download(f"/users/{_q(self.address)}/messages/{_q(ref.id)}/$value",
                                    limit)

    async def _download(self, path: str, limit: int) -> bytes:
        from kiota_abstractions.method import Method
        from kiota_abstractions.request_information import RequestInformation

        async def once() -> bytes:
            info = RequestInformation(Method.GET, self.graph.base_url + path)
            request = await self.graph.adapter.convert_to_native_async(info)
            try:
                async with self.graph.http.stream(request.method, request.url,
                                                  headers=request.headers,
                                                  extensions=request.extensions) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise _status_error(response.status_code, response.content)
                    chunks: list[bytes] = []
                    total = 0
                    async for chunk in response.aiter_bytes(_CHUNK):
                        total += len(chunk)
                        if total > limit:
                            raise TooLarge(f"over {limit} bytes, the input size limit "
                                           "(max_input_bytes)")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.HTTPError as exc:
                raise GraphError(f"cannot reach Microsoft Graph ({type(exc).__name__})") from None

        return await self._with_fresh_token(once)

    # -- sorting ---------------------------------------------------------------------------------

    async def move(self, ref: MailRef, to: Destination, *, reason: str | None = None) -> str:
        """Move the message out of the source folder; returns its id in the new folder.

        For `failed`, the reason goes into a category first, so it travels with the message.
        """
        from msgraph.generated.models.message import Message
        from msgraph.generated.users.item.messages.item.move.move_post_request_body import (
            MovePostRequestBody,
        )

        builder = self._user.messages.by_message_id(ref.id)
        if reason is not None:
            category = f"dmarcbot: {' '.join(reason.split())}"[:MAX_CATEGORY]
            await self._call(lambda: builder.patch(Message(categories=[category])))
        folder = await self.folder_id(self.folders.failed if to == "failed"
                                      else self.folders.processed)
        moved = await self._call(lambda: builder.move.post(
            MovePostRequestBody(destination_id=folder)))
        return moved.id if moved is not None and moved.id else ref.id

    async def folder_id(self, name: str) -> str:
        """The id of a top-level folder, created when missing (and cached)."""
        if name not in self._folder_ids:
            self._folder_ids[name] = await self._find_or_create(name)
        return self._folder_ids[name]

    async def _source_id(self) -> str:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.mail_folders.item.mail_folder_item_request_builder import (  # noqa: E501
            MailFolderItemRequestBuilder,
        )

        if self.folders.source not in self._folder_ids:
            query = MailFolderItemRequestBuilder.MailFolderItemRequestBuilderGetQueryParameters(
                select=["id"])
            builder = self._user.mail_folders.by_mail_folder_id(self.folders.source)
            folder = await self._call(
                lambda: builder.get(RequestConfiguration(query_parameters=query)))
            self._folder_ids[self.folders.source] = folder.id if folder and folder.id else ""
        return self._folder_ids[self.folders.source]

    async def _find_or_create(self, name: str) -> str:
        from msgraph.generated.models.mail_folder import MailFolder

        found = await self._find_folder(name)
        if found:
            return found
        try:
            created = await self._call(
                lambda: self._user.mail_folders.post(MailFolder(display_name=name)))
        except GraphError as exc:
            if exc.code != "ErrorFolderExists":
                raise
            # another instance created it between our look and our create
            found = await self._find_folder(name)
            if not found:
                raise
            return found
        if created is None or not created.id:
            raise GraphError(f"Graph created folder {name!r} but returned no id")
        return created.id

    async def _find_folder(self, name: str) -> str | None:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.mail_folders.mail_folders_request_builder import (
            MailFoldersRequestBuilder,
        )

        escaped = name.replace("'", "''")
        query = MailFoldersRequestBuilder.MailFoldersRequestBuilderGetQueryParameters(
            filter=f"displayName eq '{escaped}'", select=["id", "displayName"])
        page = await self._call(lambda: self._user.mail_folders.get(
            RequestConfiguration(query_parameters=query)))
        for folder in (page.value if page else None) or ():
            if folder.display_name == name and folder.id:
                return folder.id
        return None

    # -- errors ----------------------------------------------------------------------------------

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        """Run an SDK request, translating its errors into graph.errors types."""
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        async def once() -> T:
            try:
                return await request()
            except ODataError as exc:
                code = exc.error.code if exc.error else None
                raise _error(exc.response_status_code, code) from None
            except httpx.HTTPError as exc:
                raise GraphError(f"cannot reach Microsoft Graph ({type(exc).__name__})") from None

        return await self._with_fresh_token(once)

    async def _with_fresh_token(self, once: Callable[[], Awaitable[T]]) -> T:
        """Graph refuses a token msal still thinks is good (revoked, clock skew): retry once."""
        try:
            return await once()
        except GraphError as exc:
            if exc.status != 401 or isinstance(exc, CredentialError):
                raise
            log.info("Graph refused the access token (%s); getting a new one", exc.code)
            self.graph.credential.invalidate()
            return await once()


def _mail_ref(message: Any) -> MailRef:
    attachments = []
    for a in message.attachments or ():
        kind = {"#microsoft.graph.fileAttachment": "file",
                "#microsoft.graph.itemAttachment": "item"}.get(a.odata_type or "")
        if kind is None or not a.id:  # reference attachments are links, not content
            continue
        attachments.append(
            Attachment(a.id, a.name or "attachment", kind, a.size or 0, bool(a.is_inline)))
    return MailRef(message.id, message.parent_folder_id, message.received_date_time,
                   message.internet_message_id, tuple(attachments))


def _q(segment: str) -> str:
    return quote(segment, safe="@")


def _error(status: int | None, code: str | None) -> GraphError:
    cls = NotFound if status == 404 else GraphError
    return cls(f"Microsoft Graph answered {status} {code or ''}".rstrip(), code=code,
               status=status)


def _status_error(status: int, body: bytes) -> GraphError:
    code = None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        code = json.loads(body)["error"]["code"]
    return _error(status, code)
