"""What real Microsoft Graph requires of an app-only token, per request, and the refusals it gives.

Each route family names the Entra application roles (the token's `roles` claim) any one of
which lets the call through, and the narrower grants that can stand in for a tenant-wide role:

* mail: an Exchange Online *RBAC for Applications* assignment scoped to the mailbox
  (`Application Mail.Read` / `Application Mail.ReadWrite`), checked by Exchange, not in the token;
* SharePoint: `Sites.Selected` plus a grant on the site, or `Lists.SelectedOperations.Selected`
  plus a grant on the list (roles `read` < `write` < `manage` < `fullcontrol`).

Sources: the "Permissions" table of each v1.0 reference page (list messages, move, create
mailFolder; list items, create item, update fields, create list, create column, create
permission on a site and on a list; get user; list teamsApps; list/add installedApps), and
"Limit Microsoft Graph access to specific Exchange mailboxes" / "Selected permissions in
OneDrive and SharePoint". The tables are data the fakes and the tests read; the production side
keeps its own list of what dmarcbot asks for (graph.permissions), and a test holds one against
the other through real calls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tests.fakes.odata import GraphError

SITE_ROLES = ("read", "write", "manage", "fullcontrol")  # each includes the ones before it
TENANT_SITE_ROLES = {  # the tenant-wide role that carries each site role
    "read": frozenset({"Sites.Read.All", "Sites.ReadWrite.All", "Sites.Manage.All",
                       "Sites.FullControl.All"}),
    "write": frozenset({"Sites.ReadWrite.All", "Sites.Manage.All", "Sites.FullControl.All"}),
    "manage": frozenset({"Sites.Manage.All", "Sites.FullControl.All"}),
    "fullcontrol": frozenset({"Sites.FullControl.All"}),
}
MAIL_READ = frozenset({"Mail.Read", "Mail.ReadWrite"})
MAIL_WRITE = frozenset({"Mail.ReadWrite"})
USERS_READ = frozenset({"User.ReadBasic.All", "User.Read.All", "User.ReadWrite.All",
                        "Directory.Read.All", "Directory.ReadWrite.All"})
CATALOG_READ = frozenset({"AppCatalog.Read.All", "AppCatalog.ReadWrite.All",
                          "Directory.Read.All", "Directory.ReadWrite.All"})
INSTALLS_READ = frozenset({
    "TeamsAppInstallation.ReadForUser.All", "TeamsAppInstallation.ReadWriteForUser.All",
    "TeamsAppInstallation.ReadWriteSelfForUser.All",
    "TeamsAppInstallation.ReadWriteAndConsentForUser.All",
    "TeamsAppInstallation.ReadWriteAndConsentSelfForUser.All"})
INSTALLS_WRITE = INSTALLS_READ - {"TeamsAppInstallation.ReadForUser.All"}


@dataclass(frozen=True)
class Need:
    """What one request needs. `mail`/`site`/`list_role` name the narrower grant that also
    satisfies it (None: only a tenant-wide role does)."""

    family: str  # "mail" | "sharepoint" | "directory" | "teams"
    roles: frozenset[str]
    mail: str | None = None  # "Mail.Read" | "Mail.ReadWrite" (Exchange RBAC role)
    site_role: str | None = None  # a Sites.Selected grant on the site of at least this role
    list_role: str | None = None  # a Lists.SelectedOperations.Selected grant on the list


_SITE = r"/sites/\{site-id\}"
_LIST = _SITE + r"/lists/\{list-id\}"
_RULES: list[tuple[str, re.Pattern[str], Need]] = []


def _rule(methods: str, template: str, need: Need) -> None:
    for method in methods.split(","):
        _RULES.append((method, re.compile(template + r"$", re.I), need))


def _sp(role: str, *, on_list: bool) -> Need:
    return Need("sharepoint", TENANT_SITE_ROLES[role], site_role=role,
                list_role=role if on_list else None)


_rule("GET", r"/users/\{user-id\}/(messages|mailFolders).*", Need("mail", MAIL_READ,
                                                                  mail="Mail.Read"))
_rule("POST,PATCH,PUT,DELETE", r"/users/\{user-id\}/(messages|mailFolders).*",
      Need("mail", MAIL_WRITE, mail="Mail.ReadWrite"))
_rule("GET", r"/users/\{user-id\}", Need("directory", USERS_READ))
_rule("GET", r"/appCatalogs/teamsApps", Need("teams", CATALOG_READ))
_rule("GET", r"/users/\{user-id\}/teamwork/installedApps", Need("teams", INSTALLS_READ))
_rule("POST", r"/users/\{user-id\}/teamwork/installedApps", Need("teams", INSTALLS_WRITE))
_rule("GET", _SITE, _sp("read", on_list=False))
_rule("GET", _SITE + r"/lists", _sp("read", on_list=False))
_rule("POST", _SITE + r"/lists", _sp("manage", on_list=False))
_rule("GET", _LIST + r"(/columns.*)?", _sp("read", on_list=True))
_rule("POST,PATCH", _LIST + r"/columns.*", _sp("manage", on_list=False))
_rule("GET", _LIST + r"/items.*", _sp("read", on_list=True))
_rule("POST,PATCH", _LIST + r"/items.*", _sp("write", on_list=True))
# Granting selected permissions is itself a full-control operation.
_rule("GET,POST", _LIST + r"/permissions", _sp("fullcontrol", on_list=False))
_rule("PATCH", _LIST + r"/permissions/\{permission-id\}", _sp("fullcontrol", on_list=False))
_rule("GET,POST", _SITE + r"/permissions", Need("sharepoint",
                                                frozenset({"Sites.FullControl.All"})))


def need_for(method: str, template: str) -> Need | None:
    """The need of a routed request (None: no rule; the fakes then refuse nothing extra)."""
    for rule_method, pattern, need in _RULES:
        if rule_method == method.upper() and pattern.match(template):
            return need
    return None


def role_at_least(granted: str | None, wanted: str) -> bool:
    return granted in SITE_ROLES and SITE_ROLES.index(granted) >= SITE_ROLES.index(wanted)


def denied(need: Need, roles: frozenset[str]) -> GraphError:
    """The 403 that Graph answers for this family when the token falls short."""
    if need.family == "mail":
        return GraphError(403, "ErrorAccessDenied",
                          "Access is denied. Check credentials and try again.")
    if need.family == "sharepoint":
        if not roles:
            return GraphError(401, "generalException",
                              "Either scp or roles claim need to be present in the token.")
        return GraphError(403, "accessDenied", "Access denied")
    if need.family == "directory":
        return GraphError(403, "Authorization_RequestDenied",
                          "Insufficient privileges to complete the operation.")
    return GraphError(403, "Forbidden",
                      "Missing role permissions on the request. API requires one of "
                      f"'{', '.join(sorted(need.roles))}'. Roles on the request "
                      f"'{', '.join(sorted(roles))}'.")


def token_roles(claims: dict[str, Any] | None) -> frozenset[str]:
    roles = (claims or {}).get("roles") or []
    return frozenset(r for r in roles if isinstance(r, str))
