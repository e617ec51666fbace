"""`dmarcbot doctor`: is this deployment ready for its first report, and if not, what to fix.

Every check reads, none writes: it may run against production at any time. One line per check
says what was found and, when it failed, what to do. The same checks run from the command line
(the settings as environment variables) and behind the `doctor` function (the app's settings).
A check that depends on an earlier one that failed is skipped, so the first failure is the one
to fix first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from function_app import settings as app_settings
from function_app.settings import SettingsError

Status = Literal["ok", "fail", "skip"]

__all__ = ["Check", "Status", "healthy", "run_checks"]

# A doctor answers in seconds: storage that does not answer at once is reported, not retried
# for a minute as the app's own clients are.
_QUICK: dict[str, Any] = {"retry_total": 0, "connection_timeout": 5, "read_timeout": 10}
_SETTINGS_FIX = ("set it in infra/main.parameters.json and deploy again, or in the Function "
                 "App's settings (docs/azure.md lists them all)")

# What Entra ID's AADSTS codes mean for the one who set the app up, and what to do.
AADSTS_FIXES = {
    "700016": "the app registration is not in this tenant: check DMARCBOT_CLIENT_ID and "
              "DMARCBOT_TENANT_ID",
    "90002": "the tenant does not exist: check DMARCBOT_TENANT_ID",
    "7000215": "the client secret is wrong: use the secret's value, not its id",
    "7000222": "the client secret has expired: create a new one (or move to the managed "
               "identity)",
    "700027": "the certificate is not registered on the app, or its signature is wrong: upload "
              "the public certificate to the app registration",
    "700024": "the client assertion is outside its validity: check the machine's clock",
    "70021": "no federated credential on the app registration matches the managed identity: "
             "run scripts/setup-entra.sh (the subject is the identity's principal id)",
    "700212": "the federated credential's audience is not api://AzureADTokenExchange",
    "500011": "the resource (Graph or the Bot Framework) is not in the tenant",
    "7000218": "no credential was sent: set DMARCBOT_MANAGED_IDENTITY_CLIENT_ID, "
               "DMARCBOT_CERTIFICATE_PATH or DMARCBOT_CLIENT_SECRET",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """One question about the deployment and its answer."""

    name: str
    status: Status
    detail: str  # what was found: counts, names, error codes; never secrets or contents
    fix: str = ""  # what to do when it failed

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def healthy(checks: list[Check]) -> bool:
    return all(check.status != "fail" for check in checks)


class _Failed(Exception):
    """A check's failure, with what to fix."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail, self.fix = detail, fix


async def run_checks(environ: Mapping[str, str], *, other_mailbox: str | None = None,
                     dns_timeout: float = 3.0) -> list[Check]:
    """Every check, in the order a deployment is built; later ones skip when what they need
    failed. `other_mailbox` is one the app must not be able to read (default: an owner's)."""
    return await _Doctor(environ, other_mailbox, dns_timeout).run()


_AFTER = "needs the checks above to pass first"
_NO_TEAMS = "owners are not asked in Teams yet (DMARCBOT_SP_SITE_ID is empty)"


class _Doctor:
    def __init__(self, env: Mapping[str, str], other_mailbox: str | None,
                 dns_timeout: float) -> None:
        self.env = env
        self.other_mailbox = other_mailbox
        self.dns_timeout = dns_timeout
        self.checks: list[Check] = []
        self.settings: dict[str, Any] = {}
        self.credential: Any = None
        self.graph: Any = None

    async def run(self) -> list[Check]:
        from graph.client import connect

        settings_ok = await self._check("settings", self._settings)
        teams = "teams" in self.settings
        teams_why = _NO_TEAMS if settings_ok and not teams else _AFTER
        graph_ok = await self._when(settings_ok, "graph token", self._graph_token)
        if graph_ok:
            mailbox = self.settings["mailbox"]
            self.graph = connect(self.credential, base_url=mailbox.graph_url,
                                 ca_bundle=mailbox.credential.ca_bundle)
        try:
            await self._when(graph_ok, "graph permissions", self._graph_permissions)
            await self._when(graph_ok and teams, "bot token", self._bot_token, teams_why)
            await self._when(graph_ok, "mailbox", self._mailbox)
            await self._when(graph_ok, "other mailboxes", self._other_mailbox)
            await self._when(graph_ok and teams, "senders list", self._senders_list, teams_why)
            await self._when(graph_ok and teams, "teams app", self._teams_app, teams_why)
            await self._when(teams, "bot keys", self._bot_keys, teams_why)
        finally:
            if self.graph is not None:
                await self.graph.aclose()
        await self._check("table storage", self._tables)
        await self._check("host queue", self._queue)
        await self._when(settings_ok, "dns", self._dns)
        return self.checks

    # -- plumbing --------------------------------------------------------------------------------

    async def _check(self, name: str, probe: Callable[[], Awaitable[str]]) -> bool:
        from function_app.mailjob import one_line
        from graph.errors import GraphError
        from store import StoreError

        try:
            detail = await probe()
        except _Failed as exc:
            self.checks.append(Check(name, "fail", exc.detail, exc.fix))
            return False
        except (SettingsError, StoreError, GraphError, ValueError, OSError) as exc:
            self.checks.append(Check(name, "fail", one_line(exc), ""))
            return False
        status: Status = "skip" if detail.startswith("skipped:") else "ok"
        self.checks.append(Check(name, status, detail.removeprefix("skipped: ")))
        return True

    async def _when(self, ready: bool, name: str, probe: Callable[[], Awaitable[str]],
                    why: str = _AFTER) -> bool:
        if ready:
            return await self._check(name, probe)
        self.checks.append(Check(name, "skip", why))
        return False

    # -- the checks ------------------------------------------------------------------------------

    async def _settings(self) -> str:
        env = self.env
        placeholders = sorted(name for name, value in env.items() if "REPLACE-ME" in value)
        if placeholders:
            raise _Failed(f"app setting {placeholders[0]} still holds a REPLACE-ME placeholder",
                          _SETTINGS_FIX)
        try:
            self._read_settings(env)
        except SettingsError as exc:
            raise _Failed(str(exc), _SETTINGS_FIX) from None
        credential = self.settings["mailbox"].credential
        teams = "owners asked in Teams" if "teams" in self.settings else "Teams not set up"
        return f"{credential.kind} credential for app {credential.client_id}; {teams}"

    def _read_settings(self, env: Mapping[str, str]) -> None:
        from analysis import Limits
        from analysis.dnsevidence import make_resolver

        self.settings["mailbox"] = app_settings.mailbox_settings(env)
        self.settings["approvals"] = app_settings.approval_settings(env)
        try:
            Limits.from_env(env)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        servers = app_settings.nameservers(env)
        if servers:
            try:
                make_resolver(servers)
            except ValueError as exc:
                raise SettingsError(f"app setting DMARCBOT_NAMESERVERS: {exc}") from None
        self.settings["nameservers"] = servers
        if app_settings.teams_configured(env):
            self.settings["teams"] = app_settings.teams_settings(env)

    async def _graph_token(self) -> str:
        from graph.client import graph_scope
        from graph.credentials import credential_for
        from graph.errors import CredentialError

        app = self.settings["mailbox"].credential
        try:
            self.credential = credential_for(app)  # reads a certificate file, if one is set
        except CredentialError as exc:
            raise _Failed(str(exc), "check DMARCBOT_CERTIFICATE_PATH and "
                                    "DMARCBOT_CERTIFICATE_PASSWORD") from None
        scope = graph_scope(self.settings["mailbox"].graph_url)
        self.settings["graph_token"] = await self._token(scope, "Microsoft Graph")
        return f"Entra ID issued a token for Microsoft Graph ({app.kind} credential)"

    async def _bot_token(self) -> str:
        from graph.bot_connector import BOT_SCOPE

        await self._token(BOT_SCOPE, "the Bot Framework")
        return "Entra ID issued a token for the Bot Framework"

    async def _token(self, scope: str, what: str) -> str:
        from graph.errors import CredentialError

        try:
            token = await self.credential.get_token(scope)
        except CredentialError as exc:
            fix = AADSTS_FIXES.get(exc.aadsts or "", "check the app registration and its "
                                   "credential (docs/deploy.md, steps 2 and 4)")
            raise _Failed(f"no token for {what}: {exc}", fix) from None
        return str(token.token)

    async def _graph_permissions(self) -> str:
        from graph.health import token_claims
        from graph.permissions import TEAMS_ROLES, missing_roles, unwanted_roles

        claims = token_claims(self.settings["graph_token"])
        if not claims:
            return "skipped: the token cannot be read, so its roles cannot be checked"
        roles = frozenset(r for r in claims.get("roles") or [] if isinstance(r, str))
        unwanted = unwanted_roles(roles)
        missing = missing_roles(roles, teams="teams" in self.settings)
        problems = []
        if unwanted:
            problems.append(f"tenant-wide {', '.join(unwanted)} granted")
        if missing:
            problems.append(f"{', '.join(missing)} missing")
        if problems:
            fixes = []
            if unwanted:
                fixes.append("remove the tenant-wide roles from the app registration (mailbox "
                             "access comes from the Exchange scope, the list from its own grant)")
            if missing:
                fixes.append("grant and consent " + "; ".join(
                    f"{role} ({TEAMS_ROLES[role]})" for role in missing)
                    + ": scripts/setup-entra.sh")
            raise _Failed("; ".join(problems), "; ".join(fixes))
        return f"roles {', '.join(sorted(roles)) or 'none'}; nothing tenant-wide"

    async def _mailbox(self) -> str:
        from graph.errors import GraphError
        from graph.health import folder_by_name, mail_folder

        mailbox = self.settings["mailbox"]
        try:
            source = await mail_folder(self.graph, mailbox.address, mailbox.folders.source)
        except GraphError as exc:
            raise _Failed(f"cannot read {mailbox.address}: {exc}", _mail_fix(exc)) from None
        found = []
        for name in (mailbox.folders.processed, mailbox.folders.failed):
            exists = await folder_by_name(self.graph, mailbox.address, name)
            found.append(f"{name} {'exists' if exists else 'is made at the first sort'}")
        count = source.get("totalItemCount")
        waiting = f"{count} messages" if isinstance(count, int) else "messages"
        return (f"{mailbox.address}: {mailbox.folders.source} holds {waiting}; "
                + "; ".join(found))

    async def _other_mailbox(self) -> str:
        from graph.errors import GraphError
        from graph.health import mail_folder

        other = self.other_mailbox or self._someone_else()
        if other is None:
            return ("skipped: no other mailbox to try; give one with --other-mailbox to prove "
                    "the Exchange scope holds the app to the DMARC mailbox")
        try:
            await mail_folder(self.graph, other, "inbox")
        except GraphError as exc:
            if exc.status == 403:
                return f"{other}: refused, as it should be"
            if exc.status == 404:
                return f"skipped: {other} has no mailbox; try another with --other-mailbox"
            raise
        raise _Failed(f"the app can read {other}'s mailbox",
                      "limit the app to the DMARC mailbox: an Exchange management scope "
                      "(scripts/setup-exchange.ps1) and no Mail.* role in Entra ID")

    def _someone_else(self) -> str | None:
        mine = self.settings["mailbox"].address.casefold()
        approvals = self.settings["approvals"]
        people = [*approvals.default_owners.values(), *sorted(approvals.admins)]
        return next((p for p in people if "@" in p and p.casefold() != mine), None)

    async def _senders_list(self) -> str:
        from graph.errors import GraphError
        from graph.senders_list import SendersList

        teams = self.settings["teams"]
        senders = SendersList(self.graph, teams.site_id, teams.list_id)
        try:
            problems = await senders.column_problems()
        except GraphError as exc:
            fix = ("grant the app write on the list: dmarcbot sharepoint grant"
                   if exc.status in (401, 403) else
                   "check DMARCBOT_SP_SITE_ID and DMARCBOT_SP_LIST_ID (dmarcbot sharepoint "
                   "provision prints the list id)")
            raise _Failed(f"cannot read the senders list: {exc}", fix) from None
        if problems:
            raise _Failed("; ".join(problems),
                          "run dmarcbot sharepoint provision again (it adds what is missing)")
        return "every column is there, filtered ones indexed, ItemKey unique"

    async def _teams_app(self) -> str:
        from graph.bot_connector import catalog_app_id
        from graph.errors import GraphError

        external = self.settings["teams"].teams_app_id
        try:
            found = await catalog_app_id(self.graph, external)
        except GraphError as exc:
            raise _Failed(f"cannot read the org app catalog: {exc}",
                          "grant AppCatalog.Read.All (scripts/setup-entra.sh)") from None
        if found is None:
            raise _Failed(f"no app with manifest id {external} in the org app catalog",
                          "build it with dmarcbot teams-app and upload it in the Teams admin "
                          "center (Manage apps > Upload new app)")
        return f"manifest id {external} is in the org app catalog"

    async def _bot_keys(self) -> str:
        from graph.errors import GraphError
        from graph.health import openid_keys

        teams = self.settings["teams"]
        ca = teams.credential.ca_bundle
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else True
        try:
            keys = await openid_keys(teams.openid_metadata_url, verify)
        except GraphError as exc:
            raise _Failed(f"{exc}", "let the app reach the Bot Framework's OpenID metadata "
                                    "(outbound HTTPS), or fix DMARCBOT_BOT_OPENID_URL") from None
        if keys == 0:
            raise _Failed("the Bot Framework's key set is empty",
                          "check DMARCBOT_BOT_OPENID_URL")
        return f"the Bot Framework's OpenID metadata lists {keys} signing key(s)"

    async def _tables(self) -> str:
        from store.tables import table_store_from_settings

        def read() -> str:
            store = table_store_from_settings(self.env, **_QUICK)
            try:
                return store.probe()
            finally:
                store.close()

        return await self._storage(read, "Table", "DMARCBOT_TABLES_*")

    async def _queue(self) -> str:
        from function_app.mailjob import MAIL_QUEUE
        from store import host_queue

        return await self._storage(lambda: host_queue.probe(self.env, MAIL_QUEUE, **_QUICK),
                                   "Queue", "AzureWebJobsStorage")

    @staticmethod
    async def _storage(probe: Callable[[], str], service: str, settings: str) -> str:
        from store import StorageRefused, StoreError

        try:
            return await asyncio.to_thread(probe)
        except StoreError as exc:
            if isinstance(exc, StorageRefused) and exc.status in (401, 403):
                fix = (f"give the identity Storage {service} Data Contributor on the account "
                       "(infra/main.json does; a new role takes a few minutes)")
            else:
                fix = f"check {settings} (the account) and that the app can reach it"
            raise _Failed(str(exc), fix) from None

    async def _dns(self) -> str:
        import dns.exception

        from analysis.dnsevidence import DnsEvidence, DnsTemporaryError, make_resolver

        servers = self.settings["nameservers"]
        if servers is None:
            return "skipped: DNS lookups are off (DMARCBOT_NAMESERVERS=none)"
        fix = "let the app reach a DNS resolver, or set DMARCBOT_NAMESERVERS"
        try:
            resolver = make_resolver(servers, timeout=self.dns_timeout)
        except dns.exception.DNSException as exc:  # no system resolver configured
            raise _Failed(f"no DNS resolver ({type(exc).__name__})", fix) from None
        domains = sorted(self.settings["approvals"].default_owners) or ["microsoft.com"]
        name = f"_dmarc.{domains[0]}"
        evidence = DnsEvidence(resolver)
        try:  # the way naming asks (analysis.dnsclient): a negative answer is an answer too
            await evidence.lookup(name, "TXT")
        except DnsTemporaryError as exc:
            raise _Failed(f"the resolver did not answer ({exc})", fix) from None
        finally:
            evidence.close()
        return f"the resolver answered for {name}"


def _mail_fix(exc: Any) -> str:
    if exc.status == 403:
        return ("assign the app Application Mail.ReadWrite scoped to this mailbox "
                "(scripts/setup-exchange.ps1); a new assignment takes up to 2 hours to apply")
    if exc.status == 404:
        return "check DMARCBOT_MAILBOX and DMARCBOT_MAILBOX_FOLDER"
    return "see the error code in Microsoft Graph's documentation"


