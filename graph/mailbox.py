"""The shared mailbox that receives DMARC reports, read and sorted through Microsoft Graph.

Reading never deletes or marks anything: a handled message is moved to the `Processed` folder,
a refused one to `Failed` with the reason as a category, so a person can always see what happened
and move a message back to be read again. Ids are immutable (see graph.client), so an id taken
from a listing still names the message after a move.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import httpx

from graph.client import GraphConnection, odata_string
from graph.errors import GraphError, NotFound, TooLarge, from_status

if TYPE_CHECKING:
    from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder


Destination = Literal["processed", "failed"]

_ATTACHMENT_FIELDS = "id,name,size"
# internetMessageHeaders: the receiving server's Authentication-Results, which decide whether
# the reports in the message are believed (analysis.mailauth)
_MESSAGE_FIELDS = ["id", "internetMessageId", "categories", "internetMessageHeaders"]
_KEPT_HEADERS = frozenset({"authentication-results"})
_WHERE_FIELDS = [*_MESSAGE_FIELDS, "parentFolderId"]
_EXPAND = [f"attachments($select={_ATTACHMENT_FIELDS})"]
CATEGORY_PREFIX = "dmarcbot: "
MAX_CATEGORY = 255  # Outlook's limit on a category name, in UTF-16 code units
_CHUNK = 1 << 16


@dataclasses.dataclass(frozen=True, slots=True)
class Attachment:
    """What Graph says about an attachment before anything is downloaded."""

    id: str
    name: str
    kind: Literal["file", "item"]
    size: int  # as Graph reports it: a little over the content's size


@dataclasses.dataclass(frozen=True, slots=True)
class MailRef:
    """A message in the mailbox and its attachments' metadata."""

    id: str
    internet_message_id: str | None = None
    attachments: tuple[Attachment, ...] = ()
    categories: tuple[str, ...] = ()
    #: Its Authentication-Results headers, top first: who vouched for it on arrival.
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """How logs and the ledger name the message: its Message-ID, never its subject."""
        if self.internet_message_id:
            return self.internet_message_id
        return f"message #{hashlib.sha256(self.id.encode()).hexdigest()[:12]}"


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
        self._folder_lock = asyncio.Lock()  # one look (and create) per folder, not one per worker
        self._source_id: str | None = None
        # parentFolderId values seen -> whether they name the source folder (its own id first)
        self._is_source: dict[str, bool] = {}

    @property
    def _user(self) -> UserItemRequestBuilder:
        return self.graph.client.users.by_user_id(self.address)

    # -- listing ---------------------------------------------------------------------------------

    async def message_ids(self, *, page_size: int = 1000) -> list[str]:
        """The ids of every message waiting in the source folder, oldest first (for the queue)."""
        return [ref.id async for ref in self._list(["id"], None, page_size)]

    async def messages(self, *, page_size: int = 100) -> list[MailRef]:
        """Every message waiting in the source folder, oldest first, with its attachments' sizes.

        The whole listing is read before anything is moved: a nextLink is a position in the
        folder, so moving messages while paging would skip some.
        """
        return [ref async for ref in self._list(_MESSAGE_FIELDS, _EXPAND, page_size)]

    async def _list(self, fields: list[str], expand: list[str] | None,
                    page_size: int) -> AsyncIterator[MailRef]:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (  # noqa: E501
            MessagesRequestBuilder,
        )

        builder = self._user.mail_folders.by_mail_folder_id(self.folders.source).messages
        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            select=fields, orderby=["receivedDateTime asc"], top=page_size, expand=expand)
        info = builder.to_get_request_information(RequestConfiguration(query_parameters=query))
        while True:
            page = await self.graph.json(info)
            for message in page.get("value") or ():
                yield _mail_ref(message)
            link = page.get("@odata.nextLink")
            if not isinstance(link, str) or not link:
                break
            # Graph's nextLink is absolute and followed verbatim
            info = builder.with_url(link).to_get_request_information()

    async def waiting_message(self, message_id: str) -> MailRef | None:
        """The message if it still waits in the source folder; None once it has been sorted
        (moved elsewhere, or gone).

        Read by id from the mailbox, with the folder it is in (`parentFolderId`): immutable ids
        survive moves, and no Graph document promises that asking the source folder for a
        message that has left it answers 404, so where the message is decides.
        """
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.messages.item.message_item_request_builder import (
            MessageItemRequestBuilder,
        )

        query = MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(
            select=_WHERE_FIELDS, expand=_EXPAND)
        builder = self._user.messages.by_message_id(message_id)
        info = builder.to_get_request_information(RequestConfiguration(query_parameters=query))
        try:
            message = await self.graph.json(info)
        except NotFound:
            return None
        parent = message.get("parentFolderId")
        if not isinstance(parent, str) or not await self._in_source(parent):
            return None
        return _mail_ref(message)

    async def source_folder_id(self) -> str:
        """The id of the folder reports are read from (configured as a well-known name such as
        `inbox`, or an id), asked of Graph once and cached."""
        async with self._folder_lock:
            if self._source_id is None:
                self._source_id = await self._folder_id_of(self.folders.source)
                self._is_source[self._source_id] = True
        return self._source_id

    async def _in_source(self, parent_id: str) -> bool:
        """Whether a message's `parentFolderId` names the source folder.

        Nothing promises that a message's `parentFolderId` is written in the same form as the
        folder's own id (Exchange has more than one form of a folder id), and taking a waiting
        message for a sorted one would leave it unread for good. So an id that is not the
        source's own is asked of Graph once (`GET /mailFolders/{id}` names it as the source was
        named) before the message counts as sorted; the answer is remembered either way.
        """
        source = await self.source_folder_id()
        if parent_id in self._is_source:
            return self._is_source[parent_id]
        try:
            canonical = await self._folder_id_of(parent_id)
        except NotFound:
            canonical = None  # a folder deleted since: not the source
        self._is_source[parent_id] = canonical == source
        return self._is_source[parent_id]

    async def _folder_id_of(self, ref: str) -> str:
        """A folder's id as `GET /mailFolders/{ref}` gives it (ref: well-known name or id)."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.mail_folders.item.mail_folder_item_request_builder import (  # noqa: E501
            MailFolderItemRequestBuilder,
        )

        query = MailFolderItemRequestBuilder.MailFolderItemRequestBuilderGetQueryParameters(
            select=["id"])
        builder = self._user.mail_folders.by_mail_folder_id(ref)
        info = builder.to_get_request_information(RequestConfiguration(query_parameters=query))
        found = (await self.graph.json(info)).get("id")
        if not isinstance(found, str) or not found:
            raise GraphError("Microsoft Graph described a mail folder without an id")
        return found

    # -- downloading -----------------------------------------------------------------------------

    async def attachment_bytes(self, ref: MailRef, attachment: Attachment, limit: int) -> bytes:
        """The raw bytes of a file attachment, or the MIME of an item (a forwarded e-mail).

        Refused before downloading when Graph's size is over `limit`, and again while streaming
        when the bytes outgrow it (for an item, Graph's size is not the MIME's size).
        """
        if attachment.kind == "file" and attachment.size > limit:
            raise TooLarge(f"Graph reports {attachment.size} bytes, over the input size limit of "
                           f"{limit} bytes (max_input_bytes)")
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

        return await self.graph.with_fresh_token(once)

    # -- sorting ---------------------------------------------------------------------------------

    async def mark(self, ref: MailRef, reason: str | None) -> None:
        """Put the reason a message failed into a category (None clears an old one).

        A person's own categories stay; only dmarcbot's is replaced, so a message moved back to
        be read again loses the reason it failed last time once it succeeds.
        """
        from msgraph.generated.models.message import Message

        wanted = [c for c in ref.categories if not c.startswith(CATEGORY_PREFIX)]
        if reason is not None:
            wanted.append(category(reason))
        if wanted != list(ref.categories):
            builder = self._user.messages.by_message_id(ref.id)
            await self.graph.call(lambda: builder.patch(Message(categories=wanted)))

    async def move(self, ref: MailRef, to: Destination) -> None:
        """Move the message out of the source folder into `Processed` or `Failed`."""
        from msgraph.generated.users.item.messages.item.move.move_post_request_body import (
            MovePostRequestBody,
        )

        folder = await self.folder_id(self.folders.failed if to == "failed"
                                      else self.folders.processed)
        move = self._user.messages.by_message_id(ref.id).move
        info = move.to_post_request_information(MovePostRequestBody(destination_id=folder))
        await self.graph.json(info, answer=False)  # the moved message is not needed

    async def folder_id(self, name: str) -> str:
        """The id of a top-level folder, created when missing (and cached)."""
        async with self._folder_lock:
            if name not in self._folder_ids:
                self._folder_ids[name] = await self._find_or_create(name)
        return self._folder_ids[name]

    async def _find_or_create(self, name: str) -> str:
        from msgraph.generated.models.mail_folder import MailFolder

        found = await self._find_folder(name)
        if found:
            return found
        try:
            created = await self.graph.call(
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

        query = MailFoldersRequestBuilder.MailFoldersRequestBuilderGetQueryParameters(
            filter=f"displayName eq {odata_string(name)}", select=["id", "displayName"])
        page = await self.graph.call(lambda: self._user.mail_folders.get(
            RequestConfiguration(query_parameters=query)))
        for folder in (page.value if page else None) or ():
            # Exchange folder names ignore case: `processed` is the `Processed` folder
            if (folder.display_name or "").casefold() == name.casefold() and folder.id:
                return folder.id
        return None


def _mail_ref(message: Any) -> MailRef:
    """A MailRef from an SDK Message or from Graph's JSON for one (camelCase keys)."""
    get = message.get if isinstance(message, dict) else None
    if get is None:  # an SDK model
        raw = [{"@odata.type": a.odata_type, "id": a.id, "name": a.name, "size": a.size}
               for a in message.attachments or ()]
        fields = (message.id, message.internet_message_id, message.categories)
        headers = [(h.name, h.value) for h in message.internet_message_headers or ()]
    else:
        raw = get("attachments") or []
        fields = (get("id"), get("internetMessageId"), get("categories"))
        headers = [(h.get("name"), h.get("value")) for h in get("internetMessageHeaders") or ()
                   if isinstance(h, dict)]
    attachments = []
    for a in raw:
        kind = {"#microsoft.graph.fileAttachment": "file",
                "#microsoft.graph.itemAttachment": "item"}.get(a.get("@odata.type") or "")
        if kind is None or not a.get("id"):  # reference attachments are links, not content
            continue
        attachments.append(Attachment(a["id"], a.get("name") or "attachment", kind,  # type: ignore[arg-type]
                                      int(a.get("size") or 0)))
    message_id, internet_id, categories = fields
    if not isinstance(message_id, str) or not message_id:
        raise GraphError("Microsoft Graph listed a message without an id")
    kept = tuple((str(name), str(value)) for name, value in headers
                 if isinstance(name, str) and name.lower() in _KEPT_HEADERS and value is not None)
    return MailRef(message_id, internet_id, tuple(attachments), tuple(categories or ()), kept)


def category(reason: str) -> str:
    """A category naming why a message failed: one line, no `,` or `;` (Outlook splits on
    them), at most 255 UTF-16 code units."""
    text = CATEGORY_PREFIX + " ".join(reason.replace(",", " ").replace(";", " ").split())
    while len(text.encode("utf-16-le")) > 2 * MAX_CATEGORY:
        text = text[:-1]
    return text


def _q(segment: str) -> str:
    return quote(segment, safe="@")


def _status_error(status: int, body: bytes) -> GraphError:
    code = None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        code = json.loads(body)["error"]["code"]
    return from_status(status, code)
