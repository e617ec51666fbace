"""Graph's JSON (and MIME) for messages, attachments and mail folders.

Property names are exactly the SDK models' (checked by tests/test_fakes.py), because an
unknown or misspelt property does not fail in the SDK: it lands in ``additional_data`` and
the real field silently reads None.
"""

from __future__ import annotations

import base64
import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr, parsedate_to_datetime
from typing import Any

from tests.fakes.mailbox import (
    Attachment,
    FakeFolder,
    FakeMessage,
    FileAttachment,
    ItemAttachment,
    attachment_id,
)

# Field names of the msgraph-sdk models (get_field_deserializers), minus '@odata.type'.
MESSAGE_PROPERTIES = frozenset({
    "attachments", "bccRecipients", "body", "bodyPreview", "categories", "ccRecipients",
    "changeKey", "conversationId", "conversationIndex", "createdDateTime", "extensions", "flag",
    "from", "hasAttachments", "id", "importance", "inferenceClassification",
    "internetMessageHeaders", "internetMessageId", "isDeliveryReceiptRequested", "isDraft",
    "isRead", "isReadReceiptRequested", "lastModifiedDateTime", "multiValueExtendedProperties",
    "parentFolderId", "receivedDateTime", "replyTo", "sender", "sentDateTime",
    "singleValueExtendedProperties", "subject", "toRecipients", "uniqueBody", "webLink",
})
FILE_ATTACHMENT_PROPERTIES = frozenset({
    "contentBytes", "contentId", "contentLocation", "contentType", "id", "isInline",
    "lastModifiedDateTime", "name", "size",
})
ITEM_ATTACHMENT_PROPERTIES = frozenset({
    "contentType", "id", "isInline", "item", "lastModifiedDateTime", "name", "size",
})
ATTACHMENT_PROPERTIES = FILE_ATTACHMENT_PROPERTIES | ITEM_ATTACHMENT_PROPERTIES
MAIL_FOLDER_PROPERTIES = frozenset({
    "childFolderCount", "childFolders", "displayName", "id", "isHidden", "messageRules",
    "messages", "multiValueExtendedProperties", "parentFolderId",
    "singleValueExtendedProperties", "totalItemCount", "unreadItemCount",
})

# What Graph returns without $select (navigation and heavy properties stay out).
_MESSAGE_DEFAULT = (
    "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "categories",
    "receivedDateTime", "sentDateTime", "hasAttachments", "internetMessageId", "subject",
    "bodyPreview", "importance", "parentFolderId", "conversationId", "conversationIndex",
    "isDeliveryReceiptRequested", "isReadReceiptRequested", "isRead", "isDraft", "webLink",
    "inferenceClassification", "body", "sender", "from", "toRecipients", "ccRecipients",
    "bccRecipients", "replyTo", "flag",
)
_FOLDER_DEFAULT = ("id", "displayName", "parentFolderId", "childFolderCount", "unreadItemCount",
                   "totalItemCount", "isHidden")


def lookup(names: frozenset[str]) -> dict[str, str]:
    """lower-case -> canonical, for case-insensitive $select."""
    return {n.lower(): n for n in names}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _address(name: str, address: str) -> dict[str, Any]:
    return {"emailAddress": {"name": name or address, "address": address}}


def _pick(full: dict[str, Any], select: list[str] | None,
          default: tuple[str, ...]) -> dict[str, Any]:
    wanted = default if select is None else ("id", *select)
    return {k: full.get(k) for k in dict.fromkeys(wanted)}


def message_json(msg: FakeMessage, message_id: str, select: list[str] | None) -> dict[str, Any]:
    """A message as Graph renders it; ``message_id`` is the REST or immutable id to show."""
    preview = " ".join(msg.body.split())[:255]
    full: dict[str, Any] = {
        "id": message_id,
        "createdDateTime": iso(msg.created),
        "lastModifiedDateTime": iso(msg.last_modified),
        "changeKey": msg.change_key,
        "categories": list(msg.categories),
        "receivedDateTime": iso(msg.received),
        "sentDateTime": iso(msg.received),
        "hasAttachments": msg.has_attachments,
        "internetMessageId": msg.internet_message_id,
        "subject": msg.subject,
        "bodyPreview": preview,
        "importance": "normal",
        "parentFolderId": msg.folder_id,
        "conversationId": msg.conversation_id,
        "conversationIndex": base64.b64encode(msg.conversation_id.encode()[:22]).decode(),
        "isDeliveryReceiptRequested": False,
        "isReadReceiptRequested": False,
        "isRead": msg.is_read,
        "isDraft": False,
        "webLink": f"https://outlook.office365.com/owa/?ItemID={message_id}"
                   "&exvsurl=1&viewmodel=ReadMessageItem",
        "inferenceClassification": "focused",
        "body": {"contentType": "text", "content": msg.body},
        "uniqueBody": {"contentType": "text", "content": msg.body},
        "sender": _address(msg.sender_name, msg.sender_address),
        "from": _address(msg.sender_name, msg.sender_address),
        "toRecipients": [_address("", msg.to_address)],
        "ccRecipients": [],
        "bccRecipients": [],
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
        "internetMessageHeaders": [{"name": k, "value": str(v)}
                                   for k, v in _headers(msg).items()],
        "extensions": [],
        "singleValueExtendedProperties": [],
        "multiValueExtendedProperties": [],
    }
    return _pick(full, select, _MESSAGE_DEFAULT)


def attachment_json(att: Attachment, message_id: str, index: int, msg: FakeMessage,
                    select: list[str] | None, expand_item: bool = False) -> dict[str, Any]:
    """An attachment with '@odata.type' (always, as Graph: the collection is polymorphic)."""
    common = {
        "id": attachment_id(message_id, index),
        "lastModifiedDateTime": iso(msg.created),
        "name": att.name,
        "contentType": att.content_type,
        "size": att.size,
        "isInline": getattr(att, "is_inline", False),
    }
    if isinstance(att, FileAttachment):
        odata_type, known = "#microsoft.graph.fileAttachment", FILE_ATTACHMENT_PROPERTIES
        full = {**common, "contentId": att.content_id, "contentLocation": None,
                "contentBytes": base64.b64encode(att.content).decode()}
        default = tuple(full)
    else:
        odata_type, known = "#microsoft.graph.itemAttachment", ITEM_ATTACHMENT_PROPERTIES
        full = dict(common)
        default = tuple(common)
        if expand_item:
            full["item"] = item_json(att, message_id, index)
            default = (*default, "item")
    picked = _pick(full, select, default)
    picked = {k: v for k, v in picked.items() if k in known}  # file props never on items
    return {"@odata.type": odata_type, **picked}


def item_json(att: ItemAttachment, message_id: str, index: int) -> dict[str, Any]:
    """The attached message, as ``$expand=microsoft.graph.itemattachment/item`` shows it."""
    parsed = email.message_from_bytes(att.mime, policy=email.policy.default)
    name, address = parseaddr(str(parsed.get("From", "")))
    sent = parsed.get("Date")
    when = iso(parsedate_to_datetime(str(sent))) if sent else None
    body = parsed.get_body(preferencelist=("plain", "html")) if parsed.is_multipart() else parsed
    text = body.get_content() if body is not None else ""
    return {
        "@odata.type": "#microsoft.graph.message",
        "id": attachment_id(message_id, index) + "I",
        "subject": str(parsed.get("Subject", "")),
        "sentDateTime": when,
        "receivedDateTime": when,
        "internetMessageId": str(parsed.get("Message-ID", "")),
        "hasAttachments": any(True for _ in parsed.iter_attachments())
        if parsed.is_multipart() else False,
        "from": _address(name, address),
        "body": {"contentType": "text", "content": text if isinstance(text, str) else ""},
    }


def folder_json(folder: FakeFolder, child_count: int, total: int, unread: int,
                select: list[str] | None) -> dict[str, Any]:
    full = {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id,
        "childFolderCount": child_count,
        "unreadItemCount": unread,
        "totalItemCount": total,
        "isHidden": folder.is_hidden,
    }
    return _pick(full, select, _FOLDER_DEFAULT)


# ----------------------------------------------------------------------------- MIME

def _headers(msg: FakeMessage) -> dict[str, str]:
    stamped = ({"Authentication-Results": msg.authentication_results}
               if msg.authentication_results else {})
    return {
        **stamped,  # the receiving server's own header comes first (added last)
        "From": formataddr((msg.sender_name, msg.sender_address)),
        "To": msg.to_address,
        "Subject": msg.subject,
        "Date": format_datetime(msg.received),
        "Message-ID": msg.internet_message_id,
        "MIME-Version": "1.0",
    }


def message_mime(msg: FakeMessage) -> bytes:
    """The message as RFC 822 bytes (what ``GET .../messages/{id}/$value`` returns)."""
    out = EmailMessage(policy=email.policy.SMTP)
    for key, value in _headers(msg).items():
        if key != "MIME-Version":
            out[key] = value
    out.set_content(msg.body or "")
    for att in msg.attachments:
        if isinstance(att, FileAttachment):
            maintype, _, subtype = att.content_type.partition("/")
            out.add_attachment(att.content, maintype=maintype or "application",
                               subtype=subtype or "octet-stream", filename=att.name,
                               disposition="inline" if att.is_inline else "attachment",
                               cid=f"<{att.content_id}>" if att.content_id else None)
        else:
            inner = email.message_from_bytes(att.mime, policy=email.policy.SMTP)
            out.add_attachment(inner, filename=att.name)
    return out.as_bytes()


def attachment_value(att: Attachment) -> tuple[bytes, str]:
    """Raw bytes and Content-Type for ``.../attachments/{id}/$value``."""
    if isinstance(att, FileAttachment):
        return att.content, att.content_type
    assert isinstance(att, ItemAttachment)
    return att.mime, "message/rfc822"
