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
    """No token: the credential is misconfigured or Entra refused it (`code` is Entra's)."""


class NotFound(GraphError):
    """The item is gone (for a message: moved already, by an earlier run or by a person)."""


class TooLarge(GraphError):
    """An attachment is over the input size limit; it is refused before or while downloading."""
