"""Where the command line keeps its data, and the app settings the Azure Functions app reads."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from function_app.approvals import ApprovalSettings
    from graph.credentials import AppCredential
    from graph.mailbox import Folders

DB_ENV = "DMARCBOT_DB"


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user's data directory for dmarcbot, following each platform's convention."""
    env = os.environ if environ is None else environ
    if sys.platform == "win32" and env.get("LOCALAPPDATA"):
        return Path(env["LOCALAPPDATA"]) / "dmarcbot"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "dmarcbot"
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dmarcbot"


def default_db_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(DB_ENV):
        return Path(env[DB_ENV])
    return data_dir(env) / "dmarcbot.sqlite3"


# -- the Functions app and `dmarcbot run --source graph` ----------------------------------------
#
# Every app setting is documented in local.settings.sample.json and docs/azure.md. They are read
# when a function first needs them, never at import time, and a missing or contradictory one is
# named in a one-line SettingsError.


class SettingsError(Exception):
    """An app setting is missing or wrong; the message names it."""


_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_CREDENTIAL_SETTINGS = ("DMARCBOT_CERTIFICATE_PATH", "DMARCBOT_MANAGED_IDENTITY_CLIENT_ID",
                        "DMARCBOT_CLIENT_SECRET")


def _required(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"app setting {name} is missing: {what}")
    return value


def app_credential(environ: Mapping[str, str] | None = None) -> AppCredential:
    """Who the app is and how it proves it (the mailbox, the list and the bot share it)."""
    from graph.credentials import PUBLIC_AUTHORITY, AppCredential

    env = os.environ if environ is None else environ
    given = [name for name in _CREDENTIAL_SETTINGS if env.get(name, "").strip()]
    if not given:
        raise SettingsError("no credential for Microsoft Graph: set DMARCBOT_CERTIFICATE_PATH "
                            "(production), DMARCBOT_MANAGED_IDENTITY_CLIENT_ID (federated "
                            "credential) or DMARCBOT_CLIENT_SECRET (development only)")
    if len(given) > 1:
        raise SettingsError(f"app settings {' and '.join(given)} are both set: use one credential")
    ca_bundle = env.get("DMARCBOT_CA_BUNDLE", "").strip()
    certificate = env.get("DMARCBOT_CERTIFICATE_PATH", "").strip()
    return AppCredential(
        tenant_id=_required(env, "DMARCBOT_TENANT_ID", "the Entra tenant id"),
        client_id=_required(env, "DMARCBOT_CLIENT_ID", "the app registration's client id"),
        certificate=Path(certificate) if certificate else None,
        certificate_password=env.get("DMARCBOT_CERTIFICATE_PASSWORD") or None,
        managed_identity_client_id=env.get("DMARCBOT_MANAGED_IDENTITY_CLIENT_ID", "").strip()
        or None,
        secret=env.get("DMARCBOT_CLIENT_SECRET") or None,
        authority_host=env.get("DMARCBOT_AUTHORITY_HOST", "").strip() or PUBLIC_AUTHORITY,
        ca_bundle=Path(ca_bundle) if ca_bundle else None,
    )


def graph_url(environ: Mapping[str, str] | None = None) -> str:
    from graph.client import GRAPH_V1

    env = os.environ if environ is None else environ
    return env.get("DMARCBOT_GRAPH_URL", "").strip() or GRAPH_V1


def mailbox_settings(environ: Mapping[str, str] | None = None) -> MailboxSettings:
    """Which mailbox to read, as which app, with which credential."""
    from graph.mailbox import Folders

    env = os.environ if environ is None else environ
    credential = app_credential(env)
    address = _required(env, "DMARCBOT_MAILBOX", "the shared mailbox's address")
    if "@" not in address and not _GUID.fullmatch(address):
        raise SettingsError("app setting DMARCBOT_MAILBOX is neither an e-mail address nor an "
                            f"object id: {address!r}")
    folders = [env.get(name, "").strip() for name in (
        "DMARCBOT_MAILBOX_FOLDER", "DMARCBOT_PROCESSED_FOLDER", "DMARCBOT_FAILED_FOLDER")]
    chosen = Folders(source=folders[0] or "inbox", processed=folders[1] or "Processed",
                     failed=folders[2] or "Failed")
    names = [chosen.source.casefold(), chosen.processed.casefold(), chosen.failed.casefold()]
    if len(set(names)) < 3:
        raise SettingsError("app settings DMARCBOT_MAILBOX_FOLDER, DMARCBOT_PROCESSED_FOLDER and "
                            "DMARCBOT_FAILED_FOLDER must name three different folders")
    return MailboxSettings(address, chosen, credential, graph_url(env))


@dataclasses.dataclass(frozen=True, slots=True)
class MailboxSettings:
    address: str
    folders: Folders
    credential: AppCredential
    graph_url: str


def nameservers(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """DNS servers for sender evidence: DMARCBOT_NAMESERVERS (comma-separated `IP[:PORT]`).

    Unset means the system's resolvers; `none` means no lookups (the reports' own evidence only).
    """
    env = os.environ if environ is None else environ
    value = env.get("DMARCBOT_NAMESERVERS", "").strip()
    if value.lower() == "none":
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _names(env: Mapping[str, str], name: str) -> frozenset[str]:
    return frozenset(part.strip().lower().rstrip(".") for part in env.get(name, "").split(",")
                     if part.strip())


def trusted_authserv_ids(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """DMARCBOT_TRUSTED_AUTHSERV_IDS: the receiving servers whose RFC 8601
    Authentication-Results headers are believed (Exchange Online's own form always is)."""
    return _names(os.environ if environ is None else environ, "DMARCBOT_TRUSTED_AUTHSERV_IDS")


def trusted_reporters(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """DMARCBOT_TRUSTED_REPORTERS: reporter domains believed even when the e-mail that brought
    their report could not be verified (a reporter whose mail does not pass DMARC)."""
    return _names(os.environ if environ is None else environ, "DMARCBOT_TRUSTED_REPORTERS")


def retention_months(environ: Mapping[str, str] | None = None) -> int | None:
    """DMARCBOT_RETENTION_MONTHS: whole months of daily rows and ledger entries kept before they
    are folded into monthly rollups (issue 14); unset keeps everything."""
    env = os.environ if environ is None else environ
    raw = env.get("DMARCBOT_RETENTION_MONTHS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 2 <= int(raw) <= 1200:
        raise SettingsError(f"app setting DMARCBOT_RETENTION_MONTHS={raw!r} is not a whole "
                            "number of months from 2 to 1200")
    return int(raw)


def approval_settings(environ: Mapping[str, str] | None = None) -> ApprovalSettings:
    """Default owners per domain, admins, and the days before a reminder.

    DMARCBOT_OWNERS `contoso.com=ann@contoso.com,...`; DMARCBOT_ADMINS `sec@contoso.com,...`;
    DMARCBOT_REMIND_AFTER_DAYS (default 7).
    """
    from function_app.approvals import ApprovalSettings, parse_owners

    env = os.environ if environ is None else environ
    try:
        owners = parse_owners(env.get("DMARCBOT_OWNERS", ""))
    except ValueError as exc:
        raise SettingsError(f"app setting DMARCBOT_OWNERS: {exc}") from None
    admins = frozenset(a.strip().lower() for a in env.get("DMARCBOT_ADMINS", "").split(",")
                       if a.strip())
    days = env.get("DMARCBOT_REMIND_AFTER_DAYS", "").strip() or "7"
    if not days.isdigit() or int(days) < 1:
        raise SettingsError(f"app setting DMARCBOT_REMIND_AFTER_DAYS is not a whole number of "
                            f"days, at least 1: {days!r}")
    return ApprovalSettings(owners, admins, int(days))


def default_outbox(environ: Mapping[str, str] | None = None) -> Path:
    """Where the local mode writes its cards: DMARCBOT_OUTBOX, else the data directory's."""
    env = os.environ if environ is None else environ
    return Path(env["DMARCBOT_OUTBOX"]) if env.get("DMARCBOT_OUTBOX") else data_dir(env) / "outbox"


@dataclasses.dataclass(frozen=True, slots=True)
class TeamsSettings:
    """The SharePoint list of senders and the bot (the app registration is the bot's id)."""

    credential: AppCredential
    graph_url: str
    site_id: str
    list_id: str
    openid_metadata_url: str
    teams_app_id: str  # the app's id in its Teams manifest (the org catalog's externalId)
    service_url: str  # the Bot Connector's, until Teams tells us the user's own


def teams_settings(environ: Mapping[str, str] | None = None) -> TeamsSettings:
    from graph.bot_auth import DEFAULT_OPENID_METADATA_URL

    env = os.environ if environ is None else environ
    return TeamsSettings(
        credential=app_credential(env), graph_url=graph_url(env),
        site_id=_required(env, "DMARCBOT_SP_SITE_ID", "the SharePoint site of the senders list"),
        list_id=_required(env, "DMARCBOT_SP_LIST_ID", "the senders list's id (docs/sharepoint.md"
                          " provisions it)"),
        openid_metadata_url=env.get("DMARCBOT_BOT_OPENID_URL", "").strip()
        or DEFAULT_OPENID_METADATA_URL,
        teams_app_id=_required(env, "DMARCBOT_TEAMS_APP_ID", "the id in the Teams app's manifest"),
        service_url=env.get("DMARCBOT_BOT_SERVICE_URL", "").strip() or PUBLIC_SERVICE_URL,
    )


PUBLIC_SERVICE_URL = "https://smba.trafficmanager.net/teams/"


def teams_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether owners are asked in Teams (a SharePoint site is set) or not yet."""
    env = os.environ if environ is None else environ
    return bool(env.get("DMARCBOT_SP_SITE_ID", "").strip())
