"""Microsoft 365 for the Teams tests: Entra ID, Graph (mailbox, SharePoint site, Teams app
catalog) and the Bot Connector, faked over loopback, with the senders list provisioned as an
administrator would, and the app settings pointing at them (the store on Azurite).

A test module imports the fixtures (`entra_fixture`, `preinstalled_fixture`, `world_fixture`)
to use them by their names (`entra`, `preinstalled`, `world`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from function_app import mailbox_functions
from graph.senders_list import DEFAULT_NAME
from tests.azurite import unique_prefix
from tests.fakes.botframework import FakeBotFramework, FakeTeamsGraph
from tests.fakes.entra import GRAPH_DEFAULT_SCOPE, FakeEntra
from tests.fakes.fixtures import TENANT_ID
from tests.fakes.graph import FakeGraph
from tests.fakes.server import Request, Response
from tests.fakes.tls import TestCA
from tests.mailbox_env import (
    CLIENT_ID,
    MAILBOX,
    PROVISIONING_ROLES,
    SECRET,
    env_for,
    hand_over,
)

SITE = "contoso.sharepoint.com,2c1b2f4e-6b8e-4a4f-9a0e-3f1d2c3b4a59,7d0c6a1e-5f3b-4c2d-8e9f"
BOT_SCOPE = "https://api.botframework.com/.default"
OWNER_UPN, OWNER_ID = "ann@example.com", "5f0c8d2a-1111-4b4b-8c8c-00000000000a"
TEAMS_APP = "dmarcbot-teams-app"


@pytest.fixture(name="entra")
def entra_fixture(test_ca: TestCA) -> Iterator[FakeEntra]:
    """Entra ID that also issues the Bot Connector's tokens."""
    with FakeEntra(test_ca, tenant_id=TENANT_ID,
                   scopes=(GRAPH_DEFAULT_SCOPE, BOT_SCOPE)) as fake:
        yield fake
    assert not fake.errors, fake.errors[0]


@pytest.fixture(name="preinstalled")
def preinstalled_fixture() -> bool:
    """Whether the owner has the Teams app already (parametrize it False to have dmarcbot
    install it through Graph, as Teams does: asynchronously)."""
    return True


@pytest.fixture(name="world")
def world_fixture(monkeypatch: pytest.MonkeyPatch, entra: FakeEntra, graph: FakeGraph,
          test_ca: TestCA, azurite: Any,
          preinstalled: bool) -> Iterator[tuple[FakeBotFramework, Any]]:
    entra.add_client(CLIENT_ID, secret=SECRET, roles=PROVISIONING_ROLES)
    graph.add_mailbox(MAILBOX).grant(CLIENT_ID)
    site = graph.add_site(SITE).grant(CLIENT_ID, "manage")
    teams = FakeTeamsGraph(test_ca)
    app_id = teams.publish_app(TEAMS_APP)
    if preinstalled:  # an admin's setup policy; otherwise dmarcbot installs it for the owner
        teams.installed[OWNER_ID] = {app_id: "install-1"}

    def user(request: Request, route: Any) -> Response:
        if route.params.get("user-id", "").lower() != OWNER_UPN:
            return Response.json(404, {"error": {"code": "Request_ResourceNotFound",
                                                 "message": "no such user"}})
        return Response.json(200, {"id": OWNER_ID})

    def through(request: Request, route: Any) -> Response:
        return teams._handle(request)  # the Teams part of Graph, on the same host

    graph.add_handlers({
        ("GET", "/users/{user-id}"): user,
        ("GET", "/appCatalogs/teamsApps"): through,
        ("GET", "/users/{user-id}/teamwork/installedApps"): through,
        ("POST", "/users/{user-id}/teamwork/installedApps"): through,
    })
    with FakeBotFramework(test_ca, app_id=CLIENT_ID, tenant_id=TENANT_ID, tokens=entra) as bf:
        bf.add_user(OWNER_ID, installed=preinstalled)
        teams.on_install = bf.install  # a Graph install reaches the Bot Connector's roster
        env = env_for(entra, graph, test_ca,
                      DMARCBOT_TABLES_CONNECTION=azurite.connection_string,
                      DMARCBOT_TABLES_PREFIX=unique_prefix(), DMARCBOT_NAMESERVERS="none",
                      DMARCBOT_OWNERS=f"example.com={OWNER_UPN}", DMARCBOT_SP_SITE_ID=SITE,
                      DMARCBOT_TEAMS_APP_ID=TEAMS_APP, DMARCBOT_BOT_SERVICE_URL=bf.service_url,
                      DMARCBOT_BOT_OPENID_URL=bf.openid_metadata_url)
        env["DMARCBOT_SP_LIST_ID"] = provision(env, graph, site)
        hand_over(entra, site, env["DMARCBOT_SP_LIST_ID"])
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        mailbox_functions.app_store.cache_clear()
        yield bf, site.list_named(DEFAULT_NAME)
        mailbox_functions.app_store.cache_clear()
    assert not bf.errors, bf.errors[0]


def provision(env: dict[str, str], graph: FakeGraph, site: Any) -> str:
    """What the administrator does once (docs/sharepoint.md): the list and its columns."""
    from function_app.settings import app_credential
    from graph.client import connect
    from graph.credentials import credential_for
    from graph.senders_list import SendersList

    async def go() -> str:
        credential = app_credential(env)
        async with connect(credential_for(credential), base_url=graph.base_url,
                           ca_bundle=credential.ca_bundle) as connection:
            return await SendersList(connection, SITE).provision()

    return asyncio.run(go())
