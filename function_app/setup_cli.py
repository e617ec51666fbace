"""The administrator's commands: build the Teams app, provision the SharePoint list and grant it,
and check a deployment (`dmarcbot teams-app`, `sharepoint provision|grant`, `doctor`).

Kept apart from the daily commands in `cli.py`: they run once per deployment, as whoever sets
it up, and they load Microsoft's SDKs only when run.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from function_app import aio

if TYPE_CHECKING:
    from analysis import Limits


def _usage(message: str) -> Exception:
    from function_app.cli import UsageError

    return UsageError(message)


# -- teams-app ---------------------------------------------------------------------------------


def cmd_teams_app(args: argparse.Namespace, limits: Limits) -> int:
    """Build the Teams app package; the checks and the zip live in `teams_package`."""
    from importlib.metadata import PackageNotFoundError, version

    from function_app import teams_package as tp

    app_version = args.app_version
    if app_version is None:
        try:
            app_version = version("dmarcbot")
        except PackageNotFoundError:
            raise _usage("dmarcbot is not installed, so it has no version to give the app: "
                         "pass --app-version X.Y.Z") from None
        if not tp.SEMVER.fullmatch(app_version):
            raise _usage(f"dmarcbot's version {app_version} is not X.Y.Z, as Teams wants: pass "
                         "--app-version X.Y.Z") from None
    try:
        manifest = tp.build_manifest(
            app_id=args.app_id, manifest_id=args.manifest_id, host=args.host,
            version=app_version, developer_name=args.developer,
            website_url=args.website, privacy_url=args.privacy_url, terms_url=args.terms_url)
        tp.write_package(tp.package_bytes(manifest), Path(args.out), force=args.force)
    except tp.PackageError as exc:
        raise _usage(str(exc)) from None
    print(f"wrote {args.out}: Teams app {manifest['version']}, manifest "
          f"{manifest['manifestVersion']}, bot {manifest['bots'][0]['botId']}")
    print("upload it to the org app catalog in the Teams admin center, then set this app setting:")
    print(f"DMARCBOT_TEAMS_APP_ID={manifest['id']}")
    return 0


# -- sharepoint provision | grant --------------------------------------------------------------


def cmd_sharepoint(args: argparse.Namespace, limits: Limits) -> int:
    """Provision the senders list, or grant an app `write` on it, as an administrator's app."""
    from function_app.settings import SettingsError, app_credential, graph_url
    from graph.errors import GraphError

    try:
        credential = app_credential()
    except SettingsError as exc:
        raise _usage(f"{exc} (the administrator's app: docs/deploy.md, step 5)") from None
    try:
        if args.action == "provision":
            list_id = aio.run(_provision(credential, graph_url(), args.site, args.title))
            print(f"the senders list {args.title!r} is ready; set this app setting:")
            print(f"DMARCBOT_SP_LIST_ID={list_id}")
        else:
            granted = aio.run(_grant(credential, graph_url(), args.site, args.list,
                                     args.app_id))
            print(f"app {args.app_id} {'may now' if granted else 'could already'} read and "
                  "write the senders list, and nothing else of the site")
    except GraphError as exc:
        hint = (" (the administrator's app needs Sites.Selected with fullcontrol on the site)"
                if exc.status in (401, 403) else "")
        raise _usage(f"{args.site}: {exc}{hint}") from None
    return 0


async def _provision(credential: Any, url: str, site: str, title: str) -> str:
    from graph.client import connect
    from graph.credentials import credential_for
    from graph.senders_list import SendersList

    async with connect(credential_for(credential), base_url=url,
                       ca_bundle=credential.ca_bundle) as graph:
        return await SendersList(graph, site).provision(title)


async def _grant(credential: Any, url: str, site: str, list_id: str, app_id: str) -> bool:
    from graph.client import connect
    from graph.credentials import credential_for
    from graph.senders_list import SendersList

    async with connect(credential_for(credential), base_url=url,
                       ca_bundle=credential.ca_bundle) as graph:
        return await SendersList(graph, site, list_id).grant(app_id, "write")


# -- doctor ------------------------------------------------------------------------------------


MARKS = {"ok": "ok  ", "fail": "FAIL", "skip": "skip"}


def cmd_doctor(args: argparse.Namespace, limits: Limits) -> int:
    """Every check of the deployment, one line each; exit 0 only when none failed."""
    from function_app.doctor import healthy, run_checks

    checks = aio.run(run_checks(os.environ, other_mailbox=args.other_mailbox))
    if args.json:
        print(json.dumps({"healthy": healthy(checks),
                          "checks": [c.as_dict() for c in checks]}, ensure_ascii=False))
    else:
        width = max(len(c.name) for c in checks)
        for check in checks:
            print(f"{MARKS[check.status]}  {check.name:<{width}}  {check.detail}")
            if check.fix:
                print(f"      {'':<{width}}  fix: {check.fix}")
    return 0 if healthy(checks) else 1


# -- the parsers -------------------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    """The setup commands' parsers, added to `dmarcbot`'s subcommands."""
    p = sub.add_parser("teams-app", help="build the Teams app package for the org app catalog")
    p.add_argument("--app-id", required=True, metavar="GUID",
                   help="the app registration's client id: the bot's id")
    p.add_argument("--out", required=True, metavar="FILE.zip", help="where to write the package")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--manifest-id", metavar="GUID",
                   help="the app's id in the catalog, for DMARCBOT_TEAMS_APP_ID "
                        "(default: --app-id)")
    p.add_argument("--host", metavar="NAME",
                   help="the Function App's host name, e.g. dmarcbot-xyz.azurewebsites.net")
    p.add_argument("--app-version", metavar="X.Y.Z",
                   help="the app's version; raise it for each update (default: dmarcbot's)")
    p.add_argument("--developer", default="dmarcbot", metavar="NAME",
                   help="publisher shown in Teams (default: dmarcbot)")
    p.add_argument("--website", metavar="URL", help="https page the app links to (default: the"
                   " Function App's https://HOST/)")
    p.add_argument("--privacy-url", metavar="URL", help="privacy statement (default: --website)")
    p.add_argument("--terms-url", metavar="URL", help="terms of use (default: --website)")
    p.set_defaults(handler=cmd_teams_app)

    p = sub.add_parser("sharepoint", help="provision the senders list, or grant an app write on"
                       " it (run as the administrator's app: DMARCBOT_* credential settings)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("provision", help="create the list, or add what an upgrade needs")
    q.add_argument("--site", required=True, metavar="SITE_ID",
                   help="host,site-collection-id,web-id (docs/deploy.md shows how to find it)")
    q.add_argument("--title", default="Authorized senders", help="the list's title")
    q.set_defaults(handler=cmd_sharepoint)
    q = actions.add_parser("grant", help="give the runtime app write on the list alone")
    q.add_argument("--site", required=True, metavar="SITE_ID")
    q.add_argument("--list", required=True, metavar="LIST_ID", help="as provision printed it")
    q.add_argument("--app-id", required=True, metavar="GUID",
                   help="the runtime app registration's client id")
    q.set_defaults(handler=cmd_sharepoint)

    p = sub.add_parser("doctor", help="check a deployment: settings, tokens, permissions, the "
                       "mailbox, the list, Teams, storage, DNS")
    p.add_argument("--other-mailbox", metavar="ADDRESS",
                   help="a mailbox the app must NOT read (default: an owner's or an admin's)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(handler=cmd_doctor)
