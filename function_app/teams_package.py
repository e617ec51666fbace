"""The Teams app package an admin uploads to the org app catalog: `manifest.json` and two icons.

Teams reaches owners only through an app in the catalog: its bot (`bots[0].botId`, the app
registration's client id) sends the approval cards, and `webApplicationInfo.id` (the same client
id) is what lets the app install *itself* for an owner with the Graph permission
`TeamsAppInstallation.ReadWriteSelfForUser.All`. The catalog knows the app by the manifest `id`
(its `externalId`), which is what `DMARCBOT_TEAMS_APP_ID` must hold.

`build_manifest` and `package_bytes` are pure: the same arguments give the same bytes (fixed
member order and timestamps), so a package can be rebuilt and compared. Every problem with an
argument is a `PackageError` whose one-line message names the command line's flag.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: The newest numbered (not preview) manifest schema in the pinned npm package
#: `@microsoft/app-manifest` (tests/teams_manifest/package.json), which the tests validate against.
MANIFEST_VERSION = "1.30"
SCHEMA_URL = (f"https://developer.microsoft.com/json-schemas/teams/v{MANIFEST_VERSION}"
              "/MicrosoftTeams.schema.json")
ACCENT_COLOR = "#1E5A8A"  # also the colour icon's background (tests/teams_icons.py draws both)
COLOR_ICON = "color.png"
OUTLINE_ICON = "outline.png"
DEFAULT_DEVELOPER = "dmarcbot"

NAME_SHORT = "dmarcbot"
NAME_FULL = "dmarcbot: approve the services that send e-mail as your company"
DESCRIPTION_SHORT = "Approve or reject the services that send e-mail in your company's name."
DESCRIPTION_FULL = (
    "Newsletters, invoices, support tickets and sales tools often send e-mail as your company's "
    "own domain. Your IT team uses dmarcbot to find every one of those services from the reports "
    "that mail receivers send back, and to learn which of them the business really uses.\n\n"
    "When dmarcbot finds a new service that belongs to your area, it sends you a card in this "
    "chat. Choose Approve if your team uses that service, Reject if it should not send as the "
    "company, or Not mine to pass the question to its real owner. Your answer goes into the "
    "company's list of authorized senders, and IT uses that list to stop impostors who send "
    "as the company.\n\n"
    "You never need to type anything to the bot: just answer the cards."
)

#: The zip's members, in this order, all at its root.
MEMBERS = ("manifest.json", COLOR_ICON, OUTLINE_ICON)
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can record: no build-time clock

_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
SEMVER = re.compile(r"(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class PackageError(ValueError):
    """An argument Teams would refuse, or an output that cannot be written: one line."""


def guid(text: str, flag: str) -> str:
    """The GUID in its lower-case form, as the Entra portal shows client ids."""
    value = text.strip()
    if not _GUID.fullmatch(value):
        raise PackageError(f"{flag} {text!r} is not a GUID (the app registration's client id, "
                           "like 00000000-0000-0000-0000-000000000000)")
    return value.lower()


def host_name(text: str, flag: str = "--host") -> str:
    """A bare DNS host name: `validDomains` takes names, not URLs, ports, paths or wildcards."""
    value = text.strip().lower().removesuffix(".")
    labels = value.split(".")
    if (len(value) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels)
            or labels[-1].isdigit()):
        raise PackageError(f"{flag} {text!r} is not a host name: give the name alone, like "
                           "dmarcbot-xyz.azurewebsites.net (no https://, port, path or *)")
    return value


def https_url(text: str, flag: str) -> str:
    """An absolute https URL: Teams shows these links in the app's details."""
    value = text.strip()
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        host = None
    else:
        if parts.scheme != "https":
            host = None
    if not host or len(value) > 2048 or any(c.isspace() for c in value):
        raise PackageError(f"{flag} {text!r} is not an https URL (like https://contoso.com/it)")
    return value


def app_version(text: str, flag: str = "--app-version") -> str:
    """MAJOR.MINOR.PATCH: Teams takes an upload as an update only if this number grows."""
    value = text.strip()
    if not SEMVER.fullmatch(value):
        raise PackageError(f"{flag} {text!r} is not a version like 1.2.3")
    return value


def build_manifest(*, app_id: str, version: str, manifest_id: str | None = None,
                   host: str | None = None, website_url: str | None = None,
                   developer_name: str = DEFAULT_DEVELOPER, privacy_url: str | None = None,
                   terms_url: str | None = None) -> dict[str, Any]:
    """The manifest of a personal-scope bot that sends owners cards with `Action.Execute`.

    `manifest_id` defaults to the app id: one id for the admin to copy everywhere. The developer
    links default to the website, and the website to the Function App's address. The bot takes
    no commands and is not notification-only, because owners act on its cards.
    `webApplicationInfo` holds the id alone: dmarcbot uses no single sign-on, so there is no
    `resource` (an Application ID URI the app registration would have to expose).
    """
    app_id = guid(app_id, "--app-id")
    manifest_id = app_id if manifest_id is None else guid(manifest_id, "--manifest-id")
    developer = developer_name.strip()
    if not 0 < len(developer) <= 32:
        raise PackageError(f"--developer {developer_name!r} must be 1 to 32 characters")
    host = None if host is None else host_name(host)
    if website_url is None and host is None:
        raise PackageError("give --website https://… (the page the app's details link to), "
                           "or --host to link to the Function App")
    website = https_url(f"https://{host}/" if website_url is None else website_url, "--website")
    manifest: dict[str, Any] = {
        "$schema": SCHEMA_URL,
        "manifestVersion": MANIFEST_VERSION,
        "version": app_version(version),
        "id": manifest_id,
        "developer": {
            "name": developer,
            "websiteUrl": website,
            "privacyUrl": website if privacy_url is None else https_url(privacy_url,
                                                                        "--privacy-url"),
            "termsOfUseUrl": website if terms_url is None else https_url(terms_url,
                                                                         "--terms-url"),
        },
        "name": {"short": NAME_SHORT, "full": NAME_FULL},
        "description": {"short": DESCRIPTION_SHORT, "full": DESCRIPTION_FULL},
        "icons": {"color": COLOR_ICON, "outline": OUTLINE_ICON},
        "accentColor": ACCENT_COLOR,
        "bots": [{
            "botId": app_id,
            "scopes": ["personal"],
            "supportsFiles": False,
            "isNotificationOnly": False,
        }],
        "permissions": ["identity"],
        "validDomains": [host],
        "webApplicationInfo": {"id": app_id},
    }
    if host is None:
        del manifest["validDomains"]
    return manifest


def icon_bytes(name: str) -> bytes:
    """One of the package's icons, as shipped in `function_app/teams_app/`."""
    return (resources.files("function_app") / "teams_app" / name).read_bytes()


def package_bytes(manifest: dict[str, Any]) -> bytes:
    """The zip Teams takes: manifest.json and both icons at its root, and nothing else."""
    buffer = io.BytesIO()
    contents = {
        "manifest.json": (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode(),
        COLOR_ICON: icon_bytes(COLOR_ICON),
        OUTLINE_ICON: icon_bytes(OUTLINE_ICON),
    }
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in MEMBERS:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, whatever builds it
            info.external_attr = 0o644 << 16
            archive.writestr(info, contents[name])
    return buffer.getvalue()


def write_package(data: bytes, out: Path, *, force: bool = False) -> None:
    """Write the package whole or not at all; an existing file is replaced only with `force`.

    The package is the one thing an admin uploads: a typo in `--out` must not silently replace
    another file, and an interrupted run must not leave half a zip under the real name.
    """
    folder = out.parent
    if not folder.is_dir():
        raise PackageError(f"--out {str(out)!r}: the folder {str(folder)!r} does not exist")
    if out.is_dir():
        raise PackageError(f"--out {str(out)!r} is a folder: give the zip file's name")
    if out.exists() and not force:
        raise PackageError(f"--out {str(out)!r} exists: add --force to replace it")
    temporary = folder / f".{out.name}.{os.getpid()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, out)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise PackageError(f"--out {str(out)!r}: {exc.strerror or exc}") from None
