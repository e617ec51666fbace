"""A stand-in for the Azure CLI (`az`), for running scripts/setup-entra.sh for real under bash.

It implements only the subcommands that script uses, with the real ones' option names, output
shapes (`-o json`, `-o tsv`, `--query` through the JMESPath library az itself uses) and
refusals. The behaviour mirrors azure-cli's `role` module (command_modules/role/custom.py):

* `az ad app list --display-name X` matches by *prefix* (`startswith(displayName,'X')`), so
  "dmarcbot" also finds "dmarcbot-admin";
* `az ad app create` with the display name of exactly one existing app patches that app
  instead of creating a second one (and warns); with two or more it refuses;
* `az ad app permission add` appends the ids it is given without looking for duplicates;
* an unknown command or option, or a missing required option, exits 2 as argparse does;
  not being logged in exits 1 with az's "Please run 'az login'" message; an object that
  does not exist exits 3 (az's code for a 404).

State lives in a JSON file named by FAKE_AZ_STATE; every call's argv is appended to its
"calls" list (refused calls too), so a test can check order and count.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_ENV = "FAKE_AZ_STATE"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

# Microsoft Graph's application roles as its service principal publishes them (appRoles
# id/value). The ids were cross-checked in several public dumps of Graph's appRoles; the
# script looks every id up by value, so it does not depend on them. Tenant-wide roles are
# seeded too, so that a script that asked for one would find it and be caught by the test.
GRAPH_APP_ROLES = {
    "User.ReadBasic.All": "97235f07-e226-4f63-ace3-39588e11d3a1",
    "AppCatalog.Read.All": "e12dae10-5a57-4817-b79d-dfbec5348930",
    "TeamsAppInstallation.ReadWriteSelfForUser.All": "908de74d-f8b2-4d6b-a9ed-2a17b3b78179",
    "Lists.SelectedOperations.Selected": "23c5a9bd-d900-4ecf-be26-a0689755d9e5",
    "Mail.ReadWrite": "e2a3a72e-5f79-4c64-b1b1-878b674786c9",
    "Mail.Read": "810c84a8-4a9e-49e6-bf7d-12d183f40d01",
    "Sites.Selected": "883ea226-0bf2-4a8f-9f9d-92c9162a727d",
}
# Delegated scopes share values with application roles but have other ids: a script that
# looked in oauth2PermissionScopes instead of appRoles would pick these.
GRAPH_SCOPES = {
    "User.ReadBasic.All": "b340eb25-3456-403f-be2f-af7a0d370277",
    "User.Read": "e1fe6dd8-ba31-4d61-89e7-88639da4683d",
}


class AzError(Exception):
    """A refusal: message to stderr, exit code as the real az gives it."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Opt:
    names: tuple[str, ...]  # the first is the canonical long name
    kind: str = "value"  # "value" | "flag" | "multi" (nargs='+')
    required: bool = False
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    handler: Callable[[dict[str, Any], dict[str, Any]], Any]
    opts: tuple[Opt, ...] = field(default_factory=tuple)


GLOBAL_OPTS = (
    Opt(("--output", "-o"), choices=("json", "jsonc", "tsv", "none")),
    Opt(("--query",)),
    Opt(("--only-show-errors",), kind="flag"),
    Opt(("--verbose",), kind="flag"),
    Opt(("--debug",), kind="flag"),
)


def new_state(*, tenant_id: str, logged_in: bool = True,
              deployments: dict[tuple[str, str], dict[str, str]] | None = None,
              apps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A tenant with Microsoft Graph's service principal, optionally some apps and ARM
    deployments ((resource group, name) -> outputs)."""
    graph_sp = {
        "id": str(uuid.uuid4()), "appId": GRAPH_APP_ID, "displayName": "Microsoft Graph",
        "servicePrincipalType": "Application",
        "appRoles": [{"allowedMemberTypes": ["Application"], "description": value,
                      "displayName": value, "id": role_id, "isEnabled": True,
                      "origin": "Application", "value": value}
                     for value, role_id in GRAPH_APP_ROLES.items()],
        "oauth2PermissionScopes": [{"adminConsentDescription": value, "id": scope_id,
                                    "isEnabled": True, "type": "User", "value": value}
                                   for value, scope_id in GRAPH_SCOPES.items()],
        "appRoleAssignedTo": [],
    }
    return {
        "account": {"environmentName": "AzureCloud", "id": str(uuid.uuid4()),
                    "isDefault": True, "name": "Contoso subscription", "state": "Enabled",
                    "tenantId": tenant_id,
                    "user": {"name": "admin@contoso.onmicrosoft.com", "type": "user"}}
        if logged_in else None,
        "tenant_id": tenant_id,
        "apps": list(apps or []),
        "sps": [graph_sp],
        "deployments": [{"resourceGroup": rg, "name": name, "outputs": outputs}
                        for (rg, name), outputs in (deployments or {}).items()],
        "consents": [],  # {"appId", "roles": [...]} per admin-consent call
        "calls": [],
    }


def new_app(display_name: str, *, sign_in_audience: str = "AzureADMyOrg") -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "appId": str(uuid.uuid4()), "displayName": display_name,
            "signInAudience": sign_in_audience, "identifierUris": [],
            "requiredResourceAccess": [], "passwordCredentials": [], "keyCredentials": [],
            "federatedIdentityCredentials": []}


# --- helpers -------------------------------------------------------------------------------

_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def _not_found(identifier: str) -> AzError:
    return AzError(f"Resource '{identifier}' does not exist or one of its queried "
                   "reference-property objects are not present.", 3)


def _app(state: dict[str, Any], identifier: str) -> dict[str, Any]:
    """az's _resolve_application: an appId or an object id (identifier URIs are not faked)."""
    if not _GUID.match(identifier):
        raise AzError(f"fake az: identifier URIs are not implemented ('{identifier}')")
    for app in state["apps"]:
        if identifier in (app["appId"], app["id"]):
            return app
    raise _not_found(identifier)


def _sp(state: dict[str, Any], identifier: str) -> dict[str, Any]:
    for sp in state["sps"]:
        if identifier in (sp["appId"], sp["id"]):
            return sp
    raise _not_found(identifier)


def _warn(args: dict[str, Any], message: str) -> None:
    if not args.get("--only-show-errors"):
        print(f"WARNING: {message}", file=sys.stderr)


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    """What Graph returns for an application or service principal (no fake-internal keys)."""
    hidden = {"federatedIdentityCredentials", "appRoleAssignedTo"}
    return {key: value for key, value in obj.items() if key not in hidden}


_ODATA_EQ = re.compile(r"^\s*(appId|displayName)\s+eq\s+'([^']*)'\s*$")


def _odata(items: list[dict[str, Any]], expression: str) -> list[dict[str, Any]]:
    """The only $filter forms the fake knows; anything else is refused, not guessed at."""
    match = _ODATA_EQ.match(expression)
    if not match:
        raise AzError(f"fake az: --filter {expression!r} is not implemented")
    key, value = match.groups()
    return [item for item in items if item.get(key) == value]


# --- handlers ------------------------------------------------------------------------------

def account_show(state: dict[str, Any], args: dict[str, Any]) -> Any:
    return state["account"]


def deployment_group_show(state: dict[str, Any], args: dict[str, Any]) -> Any:
    for dep in state["deployments"]:
        if (dep["resourceGroup"], dep["name"]) == (args["--resource-group"], args["--name"]):
            return {
                "id": f"/subscriptions/{state['account']['id']}/resourceGroups/"
                      f"{dep['resourceGroup']}/providers/Microsoft.Resources/deployments/"
                      f"{dep['name']}",
                "name": dep["name"], "resourceGroup": dep["resourceGroup"],
                "properties": {"provisioningState": "Succeeded",
                               "outputs": {key: {"type": "String", "value": value}
                                           for key, value in dep["outputs"].items()}},
            }
    raise AzError(f"(DeploymentNotFound) Deployment '{args['--name']}' could not be found.", 3)


def ad_app_list(state: dict[str, Any], args: dict[str, Any]) -> Any:
    apps = state["apps"]
    if args.get("--filter"):
        apps = _odata(apps, args["--filter"])
    if args.get("--app-id"):
        apps = [app for app in apps if app["appId"] == args["--app-id"]]
    if args.get("--display-name"):  # startswith, as az builds the filter
        apps = [app for app in apps if app["displayName"].startswith(args["--display-name"])]
    return [_public(app) for app in apps]


def ad_app_create(state: dict[str, Any], args: dict[str, Any]) -> Any:
    name = args["--display-name"]
    same = [app for app in state["apps"] if app["displayName"] == name]
    if len(same) > 1:
        raise AzError(f"More than one application have the same display name '{name}': (id) "
                      + ", ".join(app["id"] for app in same) + ", please remove them first.")
    if same:
        _warn(args, f"Found an existing application instance: (id) {same[0]['id']}. "
              "We will patch it.")
        if args.get("--sign-in-audience"):
            same[0]["signInAudience"] = args["--sign-in-audience"]
        return _public(same[0])
    app = new_app(name, sign_in_audience=args.get("--sign-in-audience") or "AzureADMyOrg")
    state["apps"].append(app)
    return _public(app)


def ad_app_show(state: dict[str, Any], args: dict[str, Any]) -> Any:
    return _public(_app(state, args["--id"]))


def ad_sp_list(state: dict[str, Any], args: dict[str, Any]) -> Any:
    sps = state["sps"]
    if args.get("--filter"):
        sps = _odata(sps, args["--filter"])
    if args.get("--display-name"):
        sps = [sp for sp in sps if sp["displayName"].startswith(args["--display-name"])]
    return [_public(sp) for sp in sps]


def ad_sp_create(state: dict[str, Any], args: dict[str, Any]) -> Any:
    app = _app(state, args["--id"])
    if any(sp["appId"] == app["appId"] for sp in state["sps"]):
        raise AzError("The service principal cannot be created, updated, or restored because "
                      "the service principal name "
                      f"{app['appId']} is already in use.")
    sp = {"id": str(uuid.uuid4()), "appId": app["appId"], "displayName": app["displayName"],
          "servicePrincipalType": "Application", "appRoles": [],
          "oauth2PermissionScopes": [], "appRoleAssignedTo": []}
    state["sps"].append(sp)
    return _public(sp)


def ad_sp_show(state: dict[str, Any], args: dict[str, Any]) -> Any:
    return _public(_sp(state, args["--id"]))


def ad_app_permission_list(state: dict[str, Any], args: dict[str, Any]) -> Any:
    return _app(state, args["--id"])["requiredResourceAccess"]


def ad_app_permission_add(state: dict[str, Any], args: dict[str, Any]) -> Any:
    access = []
    for item in args["--api-permissions"]:
        parts = item.split("=")
        if len(parts) != 2:
            raise AzError("Usage error: Please provide both permission id and type, such as "
                          "`--api-permissions e1fe6dd8-ba31-4d61-89e7-88639da4683d=Scope`", 2)
        access.append({"id": parts[0], "type": parts[1]})
    app = _app(state, args["--id"])
    resource = _sp(state, args["--api"])  # Graph refuses ids of an API it does not know
    known = {role["id"] for role in resource["appRoles"]} | {
        scope["id"] for scope in resource["oauth2PermissionScopes"]}
    for entry in access:
        if entry["type"] not in ("Role", "Scope") or entry["id"] not in known:
            raise AzError(f"Property requiredResourceAccess.resourceAccess has an invalid "
                          f"value: {entry['id']}={entry['type']}", 1)
    required = app["requiredResourceAccess"]
    existing = next((e for e in required if e["resourceAppId"] == args["--api"]), None)
    if existing:
        existing["resourceAccess"] += access  # az does not deduplicate
    else:
        required.append({"resourceAppId": args["--api"], "resourceAccess": access})
    _warn(args, f"Invoking `az ad app permission grant --id {args['--id']} --api "
          f"{args['--api']}` is needed to make the change effective")
    return None


def ad_app_permission_admin_consent(state: dict[str, Any], args: dict[str, Any]) -> Any:
    app = _app(state, args["--id"])
    client = next((sp for sp in state["sps"] if sp["appId"] == app["appId"]), None)
    if client is None:
        raise AzError(f"Service principal for application {app['appId']} does not exist: "
                      f"create it with `az ad sp create --id {app['appId']}`")
    granted = []
    for required in app["requiredResourceAccess"]:
        resource = _sp(state, required["resourceAppId"])
        for entry in required["resourceAccess"]:
            if entry["type"] == "Role":
                grant = {"principalId": client["id"], "appRoleId": entry["id"]}
                if grant not in resource["appRoleAssignedTo"]:
                    resource["appRoleAssignedTo"].append(grant)
                granted.append(entry["id"])
    state["consents"].append({"appId": app["appId"], "roles": granted})
    return None


def _fic_params(raw: str) -> dict[str, Any]:
    text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AzError(f"Failed to parse string as JSON: {text}\nError detail: {exc}") from exc
    if not isinstance(params, dict):
        raise AzError("--parameters must be a JSON object")
    for key in ("name", "issuer", "subject", "audiences"):
        if key not in params:
            raise AzError(f"(Request_BadRequest) Property '{key}' is required.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{2,119}", params["name"]):
        raise AzError(f"(Request_BadRequest) Invalid name '{params['name']}'.")
    unknown = set(params) - {"name", "issuer", "subject", "audiences", "description"}
    if unknown:
        raise AzError(f"(Request_BadRequest) Invalid property {sorted(unknown)[0]!r}.")
    return params


def _store_fic(app: dict[str, Any], params: dict[str, Any], *, replace: str | None) -> Any:
    others = [c for c in app["federatedIdentityCredentials"] if c["name"] != replace]
    for cred in others:
        if cred["name"] == params["name"]:
            raise AzError(f"(Request_BadRequest) FederatedIdentityCredential with name "
                          f"{params['name']} already exists.")
        if (cred["issuer"], cred["subject"]) == (params["issuer"], params["subject"]):
            raise AzError("(Request_BadRequest) FederatedIdentityCredential with the same "
                          "issuer and subject already exists.")
    cred = {"id": str(uuid.uuid4()), "name": params["name"], "issuer": params["issuer"],
            "subject": params["subject"], "audiences": list(params["audiences"]),
            "description": params.get("description")}
    app["federatedIdentityCredentials"] = [*others, cred]
    return cred


def ad_app_fic_list(state: dict[str, Any], args: dict[str, Any]) -> Any:
    return _app(state, args["--id"])["federatedIdentityCredentials"]


def ad_app_fic_create(state: dict[str, Any], args: dict[str, Any]) -> Any:
    app = _app(state, args["--id"])
    return _store_fic(app, _fic_params(args["--parameters"]), replace=None)


def ad_app_fic_update(state: dict[str, Any], args: dict[str, Any]) -> Any:
    app = _app(state, args["--id"])
    ident = args["--federated-credential-id"]
    if not any(ident in (c["id"], c["name"]) for c in app["federatedIdentityCredentials"]):
        raise _not_found(ident)
    name = next(c["name"] for c in app["federatedIdentityCredentials"]
                if ident in (c["id"], c["name"]))
    _store_fic(app, _fic_params(args["--parameters"]), replace=name)
    return None


_APP_PROPS = (Opt(("--identifier-uris",), kind="multi"), Opt(("--is-fallback-public-client",)),
              Opt(("--sign-in-audience",), choices=(
                  "AzureADMyOrg", "AzureADMultipleOrgs", "AzureADandPersonalMicrosoftAccount",
                  "PersonalMicrosoftAccount")),
              Opt(("--key-value",)), Opt(("--key-type",)), Opt(("--key-usage",)),
              Opt(("--start-date",)), Opt(("--end-date",)), Opt(("--key-display-name",)),
              Opt(("--web-home-page-url",)), Opt(("--web-redirect-uris",), kind="multi"),
              Opt(("--enable-id-token-issuance",)), Opt(("--enable-access-token-issuance",)),
              Opt(("--public-client-redirect-uris",), kind="multi"), Opt(("--app-roles",)),
              Opt(("--optional-claims",)), Opt(("--required-resource-accesses",)))
_ID = Opt(("--id",), required=True)

COMMANDS: dict[tuple[str, ...], Command] = {
    ("account", "show"): Command(account_show, (Opt(("--subscription", "--name", "-n", "-s")),)),
    ("deployment", "group", "show"): Command(deployment_group_show, (
        Opt(("--resource-group", "-g"), required=True), Opt(("--name", "-n"), required=True))),
    ("ad", "app", "list"): Command(ad_app_list, (
        Opt(("--display-name",)), Opt(("--filter",)), Opt(("--app-id",)),
        Opt(("--identifier-uri",)), Opt(("--all",), kind="flag"),
        Opt(("--show-mine",), kind="flag"))),
    ("ad", "app", "create"): Command(ad_app_create, (
        Opt(("--display-name",), required=True), *_APP_PROPS)),
    ("ad", "app", "show"): Command(ad_app_show, (_ID,)),
    ("ad", "sp", "list"): Command(ad_sp_list, (
        Opt(("--display-name",)), Opt(("--filter",)), Opt(("--spn",)),
        Opt(("--all",), kind="flag"), Opt(("--show-mine",), kind="flag"))),
    ("ad", "sp", "create"): Command(ad_sp_create, (_ID,)),
    ("ad", "sp", "show"): Command(ad_sp_show, (_ID,)),
    ("ad", "app", "permission", "list"): Command(ad_app_permission_list, (_ID,)),
    ("ad", "app", "permission", "add"): Command(ad_app_permission_add, (
        _ID, Opt(("--api",), required=True),
        Opt(("--api-permissions",), kind="multi", required=True))),
    ("ad", "app", "permission", "admin-consent"): Command(ad_app_permission_admin_consent,
                                                         (_ID,)),
    ("ad", "app", "federated-credential", "list"): Command(ad_app_fic_list, (_ID,)),
    ("ad", "app", "federated-credential", "create"): Command(ad_app_fic_create, (
        _ID, Opt(("--parameters",), required=True))),
    ("ad", "app", "federated-credential", "update"): Command(ad_app_fic_update, (
        _ID, Opt(("--federated-credential-id",), required=True),
        Opt(("--parameters",), required=True))),
}
GROUPS = {words[:i] for words in COMMANDS for i in range(len(words))}


# --- argv parsing, output --------------------------------------------------------------------

def parse(argv: list[str]) -> tuple[tuple[str, ...], Command, dict[str, Any]]:
    words: list[str] = []
    for token in argv:
        if token.startswith("-"):
            break
        words.append(token)
    for n in range(len(words), 0, -1):
        if tuple(words[:n]) in COMMANDS:
            key = tuple(words[:n])
            break
    else:
        group = max((g for g in GROUPS if tuple(words[:len(g)]) == g), key=len, default=())
        bad = words[len(group)] if len(words) > len(group) else ""
        where = " ".join(("az", *group))
        raise AzError(f"{where}: '{bad}' is not in the '{where}' command group. "
                      f"See '{where} --help'.", 2)
    command = COMMANDS[key]
    rest = argv[len(key):]
    by_name = {name: opt for opt in (*command.opts, *GLOBAL_OPTS) for name in opt.names}
    args: dict[str, Any] = {}
    i = 0
    while i < len(rest):
        token, value = rest[i], None
        if token.startswith("--") and "=" in token:
            token, value = token.split("=", 1)
        opt = by_name.get(token)
        if opt is None:
            raise AzError(f"unrecognized arguments: {' '.join(rest[i:])}", 2)
        i += 1
        if opt.kind == "flag":
            args[opt.names[0]] = True
            continue
        if opt.kind == "multi":
            values = [value] if value is not None else []
            while i < len(rest) and not rest[i].startswith("-"):
                values.append(rest[i])
                i += 1
            if not values:
                raise AzError(f"argument {opt.names[0]}: expected at least one argument", 2)
            args[opt.names[0]] = values
            continue
        if value is None:
            if i >= len(rest):
                raise AzError(f"argument {'/'.join(opt.names)}: expected one argument", 2)
            value = rest[i]
            i += 1
        if opt.choices and value not in opt.choices:
            raise AzError(f"argument {'/'.join(opt.names)}: invalid choice: '{value}'", 2)
        args[opt.names[0]] = value
    missing = [opt.names[0] for opt in command.opts if opt.required and opt.names[0] not in args]
    if missing:
        raise AzError("the following arguments are required: " + ", ".join(missing), 2)
    return key, command, args


def _tsv_cell(value: Any) -> str:
    """knack's TsvOutput._dump_obj: lists print their length, dicts nothing."""
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, dict):
        return ""
    return value if isinstance(value, str) else str(value)


def _tsv_row(value: Any) -> str:
    if isinstance(value, dict):
        return "\t".join(_tsv_cell(v) for v in value.values()) + "\n"
    if isinstance(value, list):
        return "\t".join(_tsv_cell(v) for v in value) + "\n"
    return ("" if value is None else _tsv_cell(value)) + "\n"


def render(result: Any, args: dict[str, Any]) -> str:
    if args.get("--query"):
        import jmespath  # az's own --query engine

        try:
            result = jmespath.search(args["--query"], result,
                                     jmespath.Options(dict_cls=OrderedDict))
        except jmespath.exceptions.JMESPathError as exc:
            raise AzError(f"argument --query: invalid jmespath_type value: "
                          f"'{args['--query']}' ({exc})", 2) from exc
    output = args.get("--output", "json")
    if output == "none" or (result is None and not args.get("--query")):
        return ""
    if output == "tsv":
        rows = result if isinstance(result, list) else [result]
        return "".join(_tsv_row(row) for row in rows)
    return json.dumps(result, indent=2) + "\n"


def main(argv: list[str]) -> int:
    path = Path(os.environ[STATE_ENV])
    state = json.loads(path.read_text())
    state["calls"].append(argv)
    code = 0
    try:
        _key, command, args = parse(argv)
        if state["account"] is None:
            raise AzError("Please run 'az login' to setup account.")
        sys.stdout.write(render(command.handler(state, args), args))
    except AzError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        code = exc.code
    path.write_text(json.dumps(state, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
