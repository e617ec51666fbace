"""State of one fake Exchange Online mailbox: folders, messages, attachments, ids.

Kept apart from HTTP so tests can seed and inspect it directly. Ids behave like Exchange's:
a message has a REST id that changes when it moves and an immutable id that does not
(unless the FakeGraph is told otherwise), and attachment ids embed the message id they were
listed under, so an attachment id taken before a move stops working after it.
"""

from __future__ import annotations

import base64
import copy
import secrets
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

ROOT = "msgfolderroot"
WELL_KNOWN_FOLDERS = {
    ROOT: "Top of Information Store",
    "inbox": "Inbox",
    "archive": "Archive",
    "deleteditems": "Deleted Items",
    "sentitems": "Sent Items",
    "drafts": "Drafts",
    "junkemail": "Junk Email",
}
_ATTACHMENT_ID_PREFIX = "AAMkAtt"


@dataclass(frozen=True)
class FileAttachment:
    """A file attached to a message (Graph's fileAttachment)."""

    name: str
    content: bytes
    content_type: str = "application/octet-stream"
    is_inline: bool = False
    content_id: str | None = None

    @property
    def size(self) -> int:
        return len(self.content)


@dataclass(frozen=True)
class ItemAttachment:
    """A whole message attached to a message (forwarded reports arrive like this).

    ``mime`` is the attached message in RFC 822 form; Graph serves it from ``$value``.
    """

    name: str
    mime: bytes
    content_type: str | None = None  # Graph reports null for attached items

    @property
    def size(self) -> int:
        return len(self.mime)


Attachment = FileAttachment | ItemAttachment


@dataclass
class FakeFolder:
    id: str
    display_name: str
    parent_id: str
    well_known: str | None = None
    is_hidden: bool = False


@dataclass
class FakeMessage:
    """A message as stored. ``id`` is the current REST id; ``immutable_id`` survives moves."""

    id: str
    immutable_id: str
    folder_id: str
    subject: str
    received: datetime
    sender_name: str
    sender_address: str
    internet_message_id: str
    to_address: str
    body: str = ""
    categories: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    is_read: bool = False
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    change_key: str = field(default_factory=lambda: _token("CQAAABYAAAA", 16))
    conversation_id: str = field(default_factory=lambda: _token("AAQkAD", 24))
    #: The header Exchange Online stamped on arrival (None: none).
    authentication_results: str | None = None

    @property
    def has_attachments(self) -> bool:
        # Graph's hasAttachments ignores inline parts
        return any(not getattr(a, "is_inline", False) for a in self.attachments)


def _token(prefix: str, nbytes: int) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def new_rest_id() -> str:
    return _token("AAMkAD", 36) + "AAA="  # '=' and '-'/'_' as in real ids: quoting matters


def new_immutable_id() -> str:
    return _token("AAkALgAA", 36) + "AAA="


def attachment_id(message_id: str, index: int) -> str:
    """The attachment id as listed under ``message_id`` (REST or immutable)."""
    raw = f"{message_id}|{index}".encode()
    return _ATTACHMENT_ID_PREFIX + base64.urlsafe_b64encode(raw).decode()


def parse_attachment_id(value: str) -> tuple[str, int] | None:
    if not value.startswith(_ATTACHMENT_ID_PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(value[len(_ATTACHMENT_ID_PREFIX):]).decode()
        message_id, _, index = raw.rpartition("|")
        return message_id, int(index)
    except ValueError:
        return None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class FakeMailbox:
    """One mailbox. Create through ``FakeGraph.add_mailbox``; all methods are thread-safe."""

    def __init__(self, upn: str, object_id: str | None = None,
                 lock: threading.RLock | None = None) -> None:
        self.upn = upn
        self.object_id = object_id or str(uuid.uuid4())
        self._lock = lock or threading.RLock()
        self._folders: dict[str, FakeFolder] = {}
        self._messages: dict[int, FakeMessage] = {}
        self._index: dict[str, int] = {}  # REST and immutable ids -> message key
        self._next_key = 0
        self.app_roles: dict[str, str] = {}  # app id -> Exchange RBAC role scoped to this box
        for name, display in WELL_KNOWN_FOLDERS.items():
            fid = _token("AQMkAD", 24) + "AAAA="
            parent = "" if name == ROOT else self._well_known_id(ROOT)
            self._folders[fid] = FakeFolder(fid, display, parent, name, is_hidden=name == ROOT)

    # ------------------------------------------------------------------ access
    def grant(self, app_id: str, role: str = "Mail.ReadWrite") -> FakeMailbox:
        """An Exchange RBAC for Applications assignment (`Application Mail.ReadWrite` or
        `Application Mail.Read`) whose management scope holds this mailbox only."""
        with self._lock:
            self.app_roles[app_id] = role
        return self

    def revoke(self, app_id: str) -> None:
        with self._lock:
            self.app_roles.pop(app_id, None)

    def allows(self, app_id: str, wanted: str) -> bool:
        with self._lock:
            granted = self.app_roles.get(app_id)
        return granted == wanted or granted == "Mail.ReadWrite"

    # ------------------------------------------------------------------ seeding / inspection
    def add_message(self, folder: str = "inbox", *, subject: str = "",
                    received: datetime | None = None,
                    sender: str | tuple[str, str] = "dmarc@receiver.example",
                    internet_message_id: str | None = None,
                    attachments: Sequence[Attachment] = (),
                    categories: Sequence[str] = (), body: str = "",
                    is_read: bool = False, dmarc: str | None = "pass") -> str:
        """Put a message in ``folder`` (well-known name, display name or id); returns its
        REST id. ``sender`` is an address or (name, address).

        ``dmarc``: the DMARC result Exchange Online stamps in the message's
        Authentication-Results header, for the sender's domain, as it does on arrival (its own
        form, without an authserv-id); None for no header at all.
        """
        name, address = sender if isinstance(sender, tuple) else ("", sender)
        stamp = None if dmarc is None else exchange_stamp(address.rpartition("@")[2], dmarc)
        with self._lock:
            target = self._folder_by_name(folder)
            message = FakeMessage(
                id=new_rest_id(), immutable_id=new_immutable_id(), folder_id=target.id,
                subject=subject, received=_utc(received or datetime.now(UTC)),
                sender_name=name, sender_address=address,
                internet_message_id=internet_message_id or f"<{uuid.uuid4().hex}@fake.invalid>",
                to_address=self.upn, body=body, categories=list(categories),
                attachments=list(attachments), is_read=is_read, authentication_results=stamp)
            key = self._next_key
            self._next_key += 1
            self._messages[key] = message
            self._index[message.id] = key
            self._index[message.immutable_id] = key
            return message.id

    def add_folder(self, name: str, parent: str = ROOT) -> str:
        """Create a folder (as an admin would); returns its id. Duplicate names raise."""
        with self._lock:
            folder = self.create_folder(name, self._folder_by_name(parent).id)
            if folder is None:
                raise ValueError(f"folder {name!r} already exists")
            return folder.id

    def folder_id(self, name: str) -> str:
        """Id of a folder by well-known name, display name or id."""
        with self._lock:
            return self._folder_by_name(name).id

    def messages_in(self, folder: str) -> list[FakeMessage]:
        """Copies of the messages in a folder, oldest first."""
        with self._lock:
            fid = self._folder_by_name(folder).id
            found = [copy.deepcopy(m) for m in self._messages.values() if m.folder_id == fid]
        return sorted(found, key=lambda m: m.received)

    def message(self, message_id: str) -> FakeMessage | None:
        """Copy of a message by REST or immutable id, or None."""
        with self._lock:
            found = self.find(message_id)
            return copy.deepcopy(found) if found else None

    # ------------------------------------------------------------------ used by FakeGraph
    def _well_known_id(self, name: str) -> str:
        return next(f.id for f in self._folders.values() if f.well_known == name)

    def _folder_by_name(self, ref: str) -> FakeFolder:
        found = self.resolve_folder(ref)
        if found is None:
            wanted = ref.casefold()
            found = next((f for f in self._folders.values()
                          if f.display_name.casefold() == wanted), None)
        if found is None:
            raise KeyError(f"no folder {ref!r} in {self.upn}")
        return found

    def resolve_folder(self, ref: str) -> FakeFolder | None:
        """A folder by id or well-known name (what Graph accepts in a URL)."""
        with self._lock:
            if ref in self._folders:
                return self._folders[ref]
            lowered = ref.lower()
            return next((f for f in self._folders.values() if f.well_known == lowered), None)

    def folders(self) -> list[FakeFolder]:
        with self._lock:
            return list(self._folders.values())

    def create_folder(self, name: str, parent_id: str) -> FakeFolder | None:
        """New child folder, or None when a sibling already has that name."""
        with self._lock:
            if any(f.parent_id == parent_id and f.display_name.casefold() == name.casefold()
                   for f in self._folders.values()):
                return None
            fid = _token("AQMkAD", 24) + "AAAA="
            folder = FakeFolder(fid, name, parent_id)
            self._folders[fid] = folder
            return folder

    def find(self, message_id: str) -> FakeMessage | None:
        with self._lock:
            key = self._index.get(message_id)
            return self._messages.get(key) if key is not None else None

    def all_messages(self) -> list[FakeMessage]:
        with self._lock:
            return list(self._messages.values())

    def move(self, message: FakeMessage, folder: FakeFolder, *, new_immutable: bool) -> None:
        """Move like Exchange: a new REST id; the immutable id only if ``new_immutable``."""
        with self._lock:
            key = self._index.pop(message.id)
            message.id = new_rest_id()
            self._index[message.id] = key
            if new_immutable:
                self._index.pop(message.immutable_id, None)
                message.immutable_id = new_immutable_id()
                self._index[message.immutable_id] = key
            message.folder_id = folder.id
            message.last_modified = datetime.now(UTC)
            message.change_key = _token("CQAAABYAAAA", 16)


def exchange_stamp(domain: str, dmarc: str = "pass") -> str:
    """An Authentication-Results header value as Exchange Online writes it (no authserv-id)."""
    outcome = "pass" if dmarc == "pass" else "fail"
    action = "none" if dmarc == "pass" else "oreject"
    return (f"spf={outcome} (sender IP is 192.0.2.25) smtp.mailfrom={domain}; dkim={outcome} "
            f"(signature was verified) header.d={domain};dmarc={dmarc} action={action} "
            f"header.from={domain};compauth={outcome} reason=100")
