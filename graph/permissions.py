"""The Microsoft Graph permissions dmarcbot's app registration needs, and the ones it must not have.

One list, read by `dmarcbot doctor` and by scripts/setup-entra.sh's test: a permission added
to the code is added here, and the script, the docs and the doctor follow. Mail access is not
here on purpose: it is an Exchange Online RBAC for Applications assignment scoped to the one
mailbox, which no token shows (docs/azure.md).
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["TEAMS_ROLES", "TENANT_WIDE_ROLES", "missing_roles", "unwanted_roles"]

TEAMS_ROLES = MappingProxyType({
    "User.ReadBasic.All": "find an owner's Entra object id from their UPN, and name deciders",
    "AppCatalog.Read.All": "find dmarcbot's Teams app in the org app catalog to install it",
    "TeamsAppInstallation.ReadWriteSelfForUser.All":
        "install dmarcbot for an owner who has never used it",
    "Lists.SelectedOperations.Selected":
        "read and write the items of the one SharePoint list it is granted",
})
"""Application roles needed once owners are asked in Teams (DMARCBOT_SP_SITE_ID set)."""

TENANT_WIDE_ROLES = frozenset({
    # every mailbox in the tenant: the Exchange RBAC scope is meant to hold the app to one
    "Mail.Read", "Mail.ReadBasic", "Mail.ReadBasic.All", "Mail.ReadWrite", "Mail.Send",
    # every site in the tenant: the selected grant is meant to hold it to one list
    "Sites.Read.All", "Sites.ReadWrite.All", "Sites.Manage.All", "Sites.FullControl.All",
    "Files.Read.All", "Files.ReadWrite.All",
})
"""Roles that reach every mailbox or site: they add to any narrower grant, so their presence
undoes the least-privilege setup."""


def missing_roles(roles: frozenset[str], *, teams: bool) -> list[str]:
    """The needed roles a token lacks, in the order of TEAMS_ROLES."""
    return [role for role in TEAMS_ROLES if teams and role not in roles]


def unwanted_roles(roles: frozenset[str]) -> list[str]:
    return sorted(roles & TENANT_WIDE_ROLES)
