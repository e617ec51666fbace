"""What can go wrong talking to Microsoft's cloud, as specific exception types.

Messages carry Graph's or Entra's error *code* and the HTTP status, never a token, a secret,
a message body or a full URL with mailbox and message ids.
"""

from __future__ import annotations


class GraphError(Exception):
    """A Microsoft cloud call failed; `code` is the service's error code."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class CredentialError(GraphError):
    """No token: the credential is misconfigured or Entra refused it (`code` is Entra's error,
    `aadsts` its AADSTS number when it gave one: what `dmarcbot doctor` explains)."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 aadsts: str | None = None):
        super().__init__(message, code=code, status=status)
        self.aadsts = aadsts


class NotFound(GraphError):
    """The item is gone (for a message: moved already, by an earlier run or by a person)."""


class TooLarge(GraphError):
    """An attachment is over the input size limit; it is refused before or while downloading."""


class Conflict(GraphError):
    """Someone changed the item first: its eTag no longer matches `If-Match` (412). For a
    decision, the first one stands; read the item again to see it."""


class BotAuthError(Exception):
    """An inbound bot activity failed authentication; `reason` is a short code for logs
    (`missing_token`, `bad_signature`, `unknown_key`, `wrong_tenant`...), never the token."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BotConnectorError(GraphError):
    """The Bot Connector (Teams messaging) refused a call; `code` is its error code."""


class Blocked(BotConnectorError):
    """The user blocked the bot or uninstalled it (403 `MessageWritesBlocked`,
    `ConversationBlockedByUser`) or an admin disabled it: stop posting, tell an admin."""


class BotNotInstalled(BotConnectorError):
    """The bot is not installed for the user (403 `ForbiddenOperationException`,
    `BotNotInConversationRoster`): install it (graph.bot_connector.ensure_app_installed) first."""


class ConversationNotFound(NotFound, BotConnectorError):
    """404 from the Bot Connector: the conversation or the activity is gone."""


_GONE = frozenset({"ErrorItemNotFound", "itemNotFound"})  # Exchange's and SharePoint's codes


def from_status(status: int | None, code: str | None) -> GraphError:
    """The error for a Graph answer: 412 is a Conflict; 404 is NotFound only for a missing item
    (an unknown mailbox or site is a real error, not "moved already")."""
    cls: type[GraphError] = GraphError
    if status == 412:
        cls = Conflict
    elif status == 404 and code in _GONE:
        cls = NotFound
    return cls(f"Microsoft Graph answered {status} {code or ''}".rstrip(), code=code,
               status=status)
