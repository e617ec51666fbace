"""`dmarcbot doctor` against a whole deployment of fakes: healthy, then each fault on its own.

The deployment is built the way docs/deploy.md builds a real one: an administrator's app
provisions the senders list and grants the runtime app `write` on it (`dmarcbot sharepoint`),
the runtime app holds exactly the Graph roles graph.permissions names, Exchange RBAC scopes it
to the DMARC mailbox, Table Storage and the host's queue are Azurite, DNS is knot.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from function_app import doctor_functions
from function_app.cli import main
from function_app.doctor import Check, healthy, run_checks
from tests.azurite import ACCOUNT, KEY, unique_prefix
from tests.fakes.botframework import BOT_SCOPE, FakeBotFramework, FakeTeamsGraph
from tests.fakes.entra import GRAPH_DEFAULT_SCOPE, FakeEntra
from tests.fakes.fixtures import TENANT_ID
from tests.fakes.graph import FakeGraph
from tests.fakes.server import Request, Response
from tests.fakes.sharepoint import FakeSite
from tests.fakes.tls import TestCA
from tests.mailbox_env import CLIENT_ID, MAILBOX, RUNTIME_ROLES, SECRET, env_for

SITE = ("contoso.sharepoint.com,2c1b2f4e-6b8e-4a4f-9a0e-3f1d2c3b4a59,"
        "7d0c6a1e-5f3b-4c2d-8e9f-0a1b2c3d4e5f")
ADMIN_ID, ADMIN_SECRET = "9d3e1f20-7c4b-4a5e-8f6d-1a2b3c4d5e6f", "the-admin-apps-secret"
OWNER = "ann@contoso.com"
TEAMS_APP = "5b6c7d8e-0000-4000-8000-00000000aaaa"


class World:
    def __init__(self, entra: FakeEntra, graph: FakeGraph, site: FakeSite,
                 teams: FakeTeamsGraph, env: dict[str, str]) -> None:
        self.entra, self.graph, self.site, self.teams, self.env = entra, graph, site, teams, env

    def check(self, **changes: str) -> list[Check]:
        env = {**self.env, **changes}
        return asyncio.run(run_checks({k: v for k, v in env.items() if v != "<unset>"},
                                      dns_timeout=0.3))


@pytest.fixture
def entra(test_ca: TestCA) -> Iterator[FakeEntra]:
    with FakeEntra(test_ca, tenant_id=TENANT_ID, scopes=(GRAPH_DEFAULT_SCOPE, BOT_SCOPE)) as fake:
        yield fake
    assert not fake.errors, fake.errors[0]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          entra: FakeEntra, graph: FakeGraph, test_ca: TestCA, azurite: Any,
          dns_server: Any) -> Iterator[World]:
    entra.add_client(CLIENT_ID, secret=SECRET, roles=RUNTIME_ROLES)
    entra.add_client(ADMIN_ID, secret=ADMIN_SECRET, roles={"Sites.Selected"})
    graph.add_mailbox(MAILBOX).grant(CLIENT_ID)
    graph.add_mailbox(OWNER)  # a person's mailbox: the app must not read it
    site = graph.add_site(SITE).grant(ADMIN_ID, "fullcontrol")
    teams = FakeTeamsGraph(test_ca)
    teams.publish_app(TEAMS_APP)

    def through(request: Request, route: Any) -> Response:
        return teams._handle(request)  # the Teams part of Graph, on the same host

    graph.add_handlers({("GET", "/appCatalogs/teamsApps"): through})
    with FakeBotFramework(test_ca, app_id=CLIENT_ID, tenant_id=TENANT_ID, tokens=entra) as bf:
        env = env_for(entra, graph, test_ca,
                      DMARCBOT_TABLES_CONNECTION=azurite.connection_string,
                      DMARCBOT_TABLES_PREFIX=unique_prefix(),
                      AzureWebJobsStorage=azurite.connection_string,
                      DMARCBOT_NAMESERVERS=f"{dns_server.host}:{dns_server.port}",
                      DMARCBOT_OWNERS=f"contoso.com={OWNER}", DMARCBOT_SP_SITE_ID=SITE,
                      DMARCBOT_TEAMS_APP_ID=TEAMS_APP,
                      DMARCBOT_BOT_OPENID_URL=bf.openid_metadata_url)
        # the administrator's steps (docs/deploy.md), as the administrator's app
        admin = {**env, "DMARCBOT_CLIENT_ID": ADMIN_ID, "DMARCBOT_CLIENT_SECRET": ADMIN_SECRET}
        for name, value in admin.items():
            monkeypatch.setenv(name, value)
        assert main(["sharepoint", "provision", "--site", SITE]) == 0
        list_id = capsys.readouterr().out.split("DMARCBOT_SP_LIST_ID=")[1].strip()
        assert main(["sharepoint", "grant", "--site", SITE, "--list", list_id,
                     "--app-id", CLIENT_ID]) == 0
        assert "may now read and write" in capsys.readouterr().out
        env["DMARCBOT_SP_LIST_ID"] = list_id
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield World(entra, graph, site, teams, env)
    assert not bf.errors, bf.errors[0]


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def failed(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks if check.status == "fail"}


def test_a_healthy_deployment_passes_every_check(world: World) -> None:
    checks = world.check()
    assert [c.name for c in checks] == [
        "settings", "graph token", "graph permissions", "bot token", "mailbox",
        "other mailboxes", "senders list", "teams app", "bot keys", "table storage",
        "host queue", "dns"]
    assert {c.name: c.status for c in checks} == dict.fromkeys((c.name for c in checks), "ok")
    assert healthy(checks)
    found = by_name(checks)
    assert "refused, as it should be" in found["other mailboxes"].detail
    assert OWNER in found["other mailboxes"].detail
    assert "nothing tenant-wide" in found["graph permissions"].detail
    assert "Processed is made at the first sort" in found["mailbox"].detail
    # the mailbox was only looked at: nothing created, moved or deleted
    assert not world.graph.deleted
    assert all(r.method == "GET" for r in world.graph.requests if "/users/" in r.path)
    assert not any(SECRET in c.detail or SECRET in c.fix for c in checks)


def test_the_command_line_prints_one_line_per_check_and_exits_by_health(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 12 and all(line.startswith("ok ") for line in lines)

    world.graph.mailbox(MAILBOX).revoke(CLIENT_ID)  # type: ignore[union-attr]
    assert main(["doctor", "--json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["healthy"] is False
    (bad,) = [c for c in answer["checks"] if c["status"] == "fail"]
    assert bad["name"] == "mailbox" and "setup-exchange.ps1" in bad["fix"]


def test_the_function_answers_503_with_the_checks_when_unhealthy(world: World) -> None:
    def call(query: dict[str, str]) -> func.HttpResponse:
        request = func.HttpRequest("GET", "/api/doctor", params=query, body=b"")
        return asyncio.run(doctor_functions.doctor(request))

    healthy_answer = call({})
    assert healthy_answer.status_code == 200
    assert json.loads(healthy_answer.get_body())["healthy"] is True
    world.graph.mailbox(OWNER).grant(CLIENT_ID)  # type: ignore[union-attr]
    # the mailbox to try is a configured owner's: a caller cannot make it probe another
    sick = call({"other": "someone@elsewhere.example"})
    assert sick.status_code == 503
    checks = json.loads(sick.get_body())["checks"]
    assert [c["name"] for c in checks if c["status"] == "fail"] == ["other mailboxes"]


# -- each fault, named -------------------------------------------------------------------------


def test_a_missing_setting_is_named_and_the_rest_waits(world: World) -> None:
    checks = world.check(DMARCBOT_MAILBOX="<unset>")
    bad = failed(checks)
    assert list(bad) == ["settings"] and "DMARCBOT_MAILBOX" in bad["settings"].detail
    assert by_name(checks)["graph token"].status == "skip"


def test_a_placeholder_left_in_the_parameters_is_named(world: World) -> None:
    bad = failed(world.check(DMARCBOT_ADMINS="REPLACE-ME-entra-object-id-of-an-admin"))
    assert list(bad) == ["settings"]
    assert "DMARCBOT_ADMINS" in bad["settings"].detail
    assert "infra/main.parameters.json" in bad["settings"].fix


def test_an_unreadable_certificate_is_a_failed_check_not_a_crash(
        world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DMARCBOT_CLIENT_SECRET")
    monkeypatch.setenv("DMARCBOT_CERTIFICATE_PATH", "/nonexistent/dmarcbot.pem")
    assert main(["doctor"]) == 1
    out, err = capsys.readouterr()
    assert err == ""
    assert "FAIL  graph token" in out and "cannot read the certificate" in out
    assert "fix: check DMARCBOT_CERTIFICATE_PATH" in out


def test_a_wrong_secret_is_explained(world: World) -> None:
    checks = world.check(DMARCBOT_CLIENT_SECRET="not-the-secret")
    bad = failed(checks)
    assert "graph token" in bad
    assert "AADSTS7000215" in bad["graph token"].detail
    assert "secret's value, not its id" in bad["graph token"].fix
    assert by_name(checks)["mailbox"].status == "skip"


def test_an_unknown_app_is_explained(world: World) -> None:
    bad = failed(world.check(DMARCBOT_CLIENT_ID="0f0f0f0f-0000-4000-8000-000000000000"))
    assert "AADSTS700016" in bad["graph token"].detail
    assert "DMARCBOT_CLIENT_ID" in bad["graph token"].fix


def test_a_tenant_wide_mail_role_is_flagged(world: World) -> None:
    world.entra.set_roles(CLIENT_ID, RUNTIME_ROLES | {"Mail.ReadWrite", "Sites.ReadWrite.All"})
    checks = world.check()
    bad = failed(checks)
    assert "Mail.ReadWrite" in bad["graph permissions"].detail
    assert "Sites.ReadWrite.All" in bad["graph permissions"].detail
    # and with Mail.ReadWrite the app reads any mailbox: the scope no longer holds it
    assert "can read" in bad["other mailboxes"].detail


def test_a_missing_role_is_named_with_why_it_is_needed(world: World) -> None:
    world.entra.set_roles(CLIENT_ID, RUNTIME_ROLES - {"AppCatalog.Read.All"})
    bad = failed(world.check())
    assert bad["graph permissions"].detail == "AppCatalog.Read.All missing"
    assert "org app catalog" in bad["graph permissions"].fix
    assert "AppCatalog.Read.All" in bad["teams app"].fix  # Graph refused the catalog too


def test_a_mailbox_outside_the_exchange_scope_is_explained(world: World) -> None:
    world.graph.mailbox(MAILBOX).revoke(CLIENT_ID)  # type: ignore[union-attr]
    bad = failed(world.check())
    assert list(bad) == ["mailbox"]
    assert "403" in bad["mailbox"].detail and "2 hours" in bad["mailbox"].fix


def test_a_list_without_an_index_or_a_column_is_named(world: World) -> None:
    (the_list,) = world.site.lists.values()
    the_list.column("Status").indexed = False  # type: ignore[union-attr]
    the_list.columns = [c for c in the_list.columns if c.name != "AskedAt"]
    bad = failed(world.check())
    assert list(bad) == ["senders list"]
    assert "column AskedAt is missing" in bad["senders list"].detail
    assert "column Status is not indexed" in bad["senders list"].detail
    assert "sharepoint provision" in bad["senders list"].fix


def test_a_list_the_app_was_not_granted_is_explained(world: World) -> None:
    (the_list,) = world.site.lists.values()
    the_list.grants.clear()
    bad = failed(world.check())
    assert list(bad) == ["senders list"]
    assert "sharepoint grant" in bad["senders list"].fix


def test_an_app_missing_from_the_catalog_is_explained(world: World) -> None:
    world.teams.catalog.clear()
    bad = failed(world.check())
    assert list(bad) == ["teams app"]
    assert "dmarcbot teams-app" in bad["teams app"].fix


def test_unreachable_bot_keys_are_named(world: World) -> None:
    bad = failed(world.check(DMARCBOT_BOT_OPENID_URL=world.graph.base_url + "/nothing-here"))
    assert list(bad) == ["bot keys"]


def test_storage_that_does_not_answer_or_refuses_is_named(world: World, azurite: Any) -> None:
    closed = (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
              f"TableEndpoint=http://127.0.0.1:9/{ACCOUNT};"
              f"QueueEndpoint=http://127.0.0.1:9/{ACCOUNT};")  # port 9: nobody listens
    bad = failed(world.check(DMARCBOT_TABLES_CONNECTION=closed, AzureWebJobsStorage=closed))
    assert list(bad) == ["table storage", "host queue"]
    assert "can reach it" in bad["table storage"].fix and "can reach it" in bad["host queue"].fix
    wrong_key = re.sub(r"AccountKey=[^;]+", "AccountKey=" + "A" * 86 + "==",
                       azurite.connection_string)
    bad = failed(world.check(DMARCBOT_TABLES_CONNECTION=wrong_key, AzureWebJobsStorage=wrong_key))
    assert list(bad) == ["table storage", "host queue"]
    assert "Table Data Contributor" in bad["table storage"].fix
    assert "Queue Data Contributor" in bad["host queue"].fix
    bad = failed(world.check(AzureWebJobsStorage="<unset>"))
    assert list(bad) == ["host queue"] and "AzureWebJobsStorage" in bad["host queue"].detail


def test_a_silent_resolver_is_named(world: World, dns_blackhole: Any) -> None:
    bad = failed(world.check(
        DMARCBOT_NAMESERVERS=f"{dns_blackhole.host}:{dns_blackhole.port}"))
    assert list(bad) == ["dns"] and "_dmarc.contoso.com" in bad["dns"].detail


def test_lookups_turned_off_skip_the_dns_check(world: World) -> None:
    checks = world.check(DMARCBOT_NAMESERVERS="none")
    assert by_name(checks)["dns"].status == "skip" and healthy(checks)


def test_without_teams_only_the_mailbox_side_is_checked(world: World) -> None:
    world.entra.set_roles(CLIENT_ID, ())  # the mail side needs no Graph role at all
    checks = world.check(DMARCBOT_SP_SITE_ID="<unset>")
    assert healthy(checks)
    statuses = {c.name: c.status for c in checks}
    assert statuses["bot token"] == statuses["senders list"] == statuses["teams app"] == "skip"
    assert statuses["mailbox"] == statuses["graph permissions"] == "ok"


def test_grant_raises_a_lesser_grant_rather_than_adding_a_second(
        world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (the_list,) = world.site.lists.values()
    the_list.grants[CLIENT_ID] = "read"  # an earlier, narrower grant
    monkeypatch.setenv("DMARCBOT_CLIENT_ID", ADMIN_ID)
    monkeypatch.setenv("DMARCBOT_CLIENT_SECRET", ADMIN_SECRET)
    args = ["sharepoint", "grant", "--site", SITE, "--list", the_list.id, "--app-id", CLIENT_ID]
    assert main(args) == 0
    assert "may now read and write" in capsys.readouterr().out
    assert the_list.grants == {CLIENT_ID: "write"}
    assert [r.method for r in world.graph.requests if r.path.endswith("/permissions")
            or "/permissions/" in r.path][-2:] == ["GET", "PATCH"]
    assert main(args) == 0
    assert "could already" in capsys.readouterr().out
    assert healthy(world.check())
