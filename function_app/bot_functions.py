"""The bot's messaging endpoint: Teams posts card clicks here (`POST /api/messages`).

Anonymous at the Functions layer, because the Bot Connector authenticates with its own token,
which `graph.bot_auth` checks on every request. Settings are read at the first request, and the
endpoint (its key cache, its Graph connection) lives as long as the worker's event loop.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import weakref
from typing import TYPE_CHECKING

import azure.functions as func

from function_app.connections import shared_graph
from function_app.settings import approval_settings, teams_settings

if TYPE_CHECKING:
    from graph.bot_host import BotEndpoint

bp = func.Blueprint()


@bp.function_name("bot_messages")
@bp.route(route="messages", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def bot_messages(req: func.HttpRequest) -> func.HttpResponse:
    status, payload = await endpoint().handle(req.get_body(), dict(req.headers))
    return func.HttpResponse(json.dumps(payload) if payload is not None else "",
                             status_code=status, mimetype="application/json")


def endpoint() -> BotEndpoint:
    """This event loop's endpoint, built from the settings at first use."""
    # the card models and token checks load at the first click, not when the app is indexed
    from function_app.teams import CardActions
    from graph.bot_auth import ActivityAuthenticator
    from graph.bot_host import BotEndpoint
    from graph.senders_list import SendersList

    loop = asyncio.get_running_loop()
    if loop not in _endpoints:
        config = teams_settings()
        ca = config.credential.ca_bundle
        authenticator = ActivityAuthenticator(
            config.credential.client_id, config.credential.tenant_id,
            config.openid_metadata_url,
            verify=ssl.create_default_context(cafile=str(ca)) if ca else True)
        senders = SendersList(shared_graph(config.credential, config.graph_url), config.site_id,
                              config.list_id)
        _endpoints[loop] = BotEndpoint(authenticator, CardActions(senders, approval_settings()))
    return _endpoints[loop]


_endpoints: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BotEndpoint] = (
    weakref.WeakKeyDictionary())
