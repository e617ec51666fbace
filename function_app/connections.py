"""What one Functions worker shares between invocations: its Graph connections and mailboxes.

The Python worker runs every invocation on one event loop. Sharing one Graph connection per
app makes its pool the limit of 4 requests in flight for the whole process, not per
invocation, and keeps tokens, TLS sessions and folder ids between calls. An httpx client is
bound to the loop that first used it, so everything here is kept per event loop.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from function_app.settings import MailboxSettings
from graph.client import GraphConnection, RetryPolicy, connect
from graph.credentials import AppCredential, credential_for
from graph.mailbox import Mailbox

_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], Any]] = (
    weakref.WeakKeyDictionary())


def shared_graph(credential: AppCredential, graph_url: str) -> GraphConnection:
    """This event loop's Graph connection for the app (mailbox, list and bot alike)."""
    objects = _shared.setdefault(asyncio.get_running_loop(), {})
    key = ("graph", credential, graph_url)
    if key not in objects:
        objects[key] = connect(credential_for(credential), base_url=graph_url,
                               ca_bundle=credential.ca_bundle, retry=RetryPolicy())
    return objects[key]


def shared_mailbox(settings: MailboxSettings) -> Mailbox:
    """This event loop's mailbox, over the shared connection."""
    objects = _shared.setdefault(asyncio.get_running_loop(), {})
    key = ("mailbox", settings)
    if key not in objects:
        objects[key] = Mailbox(shared_graph(settings.credential, settings.graph_url),
                               settings.address, settings.folders)
    return objects[key]


async def close_shared() -> None:
    """Close this event loop's shared connections (a worker or a test is done with it)."""
    for value in _shared.pop(asyncio.get_running_loop(), {}).values():
        if isinstance(value, GraphConnection):
            await value.aclose()
