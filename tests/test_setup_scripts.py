"""The admin's setup scripts, tested as far as a real tool allows on this machine.

* scripts/setup-entra.sh runs for real under bash, against a fake `az` (tests/fake_az) that
  keeps a tenant's state in a JSON file and behaves like azure-cli's role module. bash -n and
  shellcheck check every scripts/*.sh.
* scripts/setup-exchange.ps1 cannot run: there is no PowerShell here, and Microsoft's package
  feed is out of reach. It is parsed with the tree-sitter PowerShell grammar, and every cmdlet
  call is checked against the parameters Microsoft's cmdlet reference documents. That proves
  the script is well-formed and calls cmdlets as documented, not that Exchange accepts it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from graph.permissions import TEAMS_ROLES, TENANT_WIDE_ROLES
from tests.fake_az.fake_az import GRAPH_APP_ID, GRAPH_APP_ROLES, STATE_ENV, new_app, new_state

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
ENTRA = SCRIPTS / "setup-entra.sh"
EXCHANGE = SCRIPTS / "setup-exchange.ps1"
FAKE_AZ = ROOT / "tests" / "fake_az" / "fake_az.py"

TENANT = "3f1e2d4c-5b6a-4789-8a9b-0c1d2e3f4a5b"
PRINCIPAL = "6d1f0b52-93c4-4e8a-9b7d-2a5c8e4f1b03"  # the managed identity's principal id
MI_CLIENT = "0b7e9c21-4d3a-4f56-8e91-7c2b5a6d8e4f"  # its client id
ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
WRITES = ("create", "add", "update", "delete")


# --- setup-entra.sh: the role list ----------------------------------------------------------

def graph_roles(text: str) -> list[str]:
    """The entries of the script's GRAPH_ROLES=( ... ) array, comments dropped."""
    match = re.search(r"^GRAPH_ROLES=\(\n(.*?)^\)", text, re.M | re.S)
    assert match, "no GRAPH_ROLES=( ... ) array in scripts/setup-entra.sh"
    return [line.split("#", 1)[0].strip() for line in match.group(1).splitlines()
            if line.split("#", 1)[0].strip()]


def test_graph_roles_are_exactly_the_teams_roles() -> None:
    roles = graph_roles(ENTRA.read_text())
    assert len(roles) == len(set(roles)), roles
    assert set(roles) == set(TEAMS_ROLES)


def test_no_tenant_wide_role_in_the_entra_script() -> None:
    text = ENTRA.read_text()
    assert [role for role in sorted(TENANT_WIDE_ROLES) if role in text] == []


# --- every shell script: bash -n and shellcheck --------------------------------------------

SHELL_SCRIPTS = sorted(SCRIPTS.glob("*.sh"))


def test_there_are_shell_scripts() -> None:
    assert ENTRA in SHELL_SCRIPTS


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shell_script_parses_and_lints_clean(script: Path) -> None:
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: run tests/install-test-deps.sh"
    lint = subprocess.run([shellcheck, "--severity=style", "--format=gcc", str(script)],
                          capture_output=True, text=True)
    assert (lint.returncode, lint.stdout, lint.stderr) == (0, "", "")


# --- setup-entra.sh against the fake az -------------------------------------------------------

@dataclass
class AzLab:
    """A PATH with the fake `az` on it and the tenant state it keeps."""

    home: Path
    bin_dir: Path
    state_path: Path

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text())

    def seed(self, state: dict[str, Any]) -> None:
        self.state_path.write_text(json.dumps(state))

    def run(self, *args: str, script: Path = ENTRA,
            path: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {"PATH": path if path is not None else f"{self.bin_dir}:{os.environ['PATH']}",
               "HOME": str(self.home), STATE_ENV: str(self.state_path), "LANG": "C.UTF-8"}
        return subprocess.run(["bash", str(script), *args], env=env, capture_output=True,
                              text=True)

    def calls(self) -> list[list[str]]:
        return self.state()["calls"]


@pytest.fixture
def az(tmp_path: Path) -> Iterator[AzLab]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "az"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_AZ}" "$@"\n')
    wrapper.chmod(0o755)
    lab = AzLab(tmp_path, bin_dir, tmp_path / "az-state.json")
    # "dmarcbot-admin" (docs/sharepoint.md) shares the prefix that `az ad app list
    # --display-name dmarcbot` matches on; the script must leave it alone.
    lab.seed(new_state(tenant_id=TENANT, apps=[new_app("dmarcbot-admin")], deployments={
        ("rg-dmarc", "main"): {"managedIdentityPrincipalId": PRINCIPAL,
                               "managedIdentityClientId": MI_CLIENT,
                               "functionAppName": "dmarcbot-func-x"}}))
    yield lab


def dmarcbot_app(state: dict[str, Any]) -> dict[str, Any]:
    apps = [app for app in state["apps"] if app["displayName"] == "dmarcbot"]
    assert len(apps) == 1, apps
    return apps[0]


def printed(stdout: str, label: str) -> str:
    match = re.search(rf"^\s*{re.escape(label)}\s+(\S+)$", stdout, re.M)
    assert match, f"{label!r} not printed:\n{stdout}"
    return match.group(1)


def assert_set_up(lab: AzLab, result: subprocess.CompletedProcess[str], *,
                  principal: str = PRINCIPAL) -> None:
    """Everything dmarcbot needs is in the fake tenant, once, and the printout says so."""
    assert result.returncode == 0, result.stderr
    state = lab.state()
    app = dmarcbot_app(state)
    assert app["signInAudience"] == "AzureADMyOrg"
    assert app["passwordCredentials"] == [] and app["keyCredentials"] == []  # nothing secret
    graph = next(sp for sp in state["sps"] if sp["appId"] == GRAPH_APP_ID)
    value_of = {role["id"]: role["value"] for role in graph["appRoles"]}

    # requiredResourceAccess: exactly the TEAMS_ROLES, as application roles on Graph
    assert [entry["resourceAppId"] for entry in app["requiredResourceAccess"]] == [GRAPH_APP_ID]
    access = app["requiredResourceAccess"][0]["resourceAccess"]
    assert sorted((value_of[a["id"]], a["type"]) for a in access) == sorted(
        (role, "Role") for role in TEAMS_ROLES)

    # admin consent after the last permission was added, covering all of them
    calls = [" ".join(call) for call in state["calls"]]
    consents = [i for i, call in enumerate(calls) if call.startswith(
        "ad app permission admin-consent")]
    adds = [i for i, call in enumerate(calls) if call.startswith("ad app permission add")]
    assert consents and (not adds or max(adds) < max(consents))
    sps = [sp for sp in state["sps"] if sp["appId"] == app["appId"]]
    assert len(sps) == 1
    granted = {g["appRoleId"] for g in graph["appRoleAssignedTo"]
               if g["principalId"] == sps[0]["id"]}
    assert {value_of[role_id] for role_id in granted} == set(TEAMS_ROLES)

    # one federated credential, trusting the managed identity
    creds = app["federatedIdentityCredentials"]
    assert [(c["issuer"], c["subject"], c["audiences"]) for c in creds] == [
        (ISSUER, principal, ["api://AzureADTokenExchange"])]

    # the "dmarcbot-admin" app that shares the prefix is untouched
    other = next(a for a in state["apps"] if a["displayName"] == "dmarcbot-admin")
    assert other["requiredResourceAccess"] == [] and other["federatedIdentityCredentials"] == []

    out = result.stdout
    assert printed(out, "Client id (DMARCBOT_CLIENT_ID):") == app["appId"]
    assert printed(out, "Tenant id (DMARCBOT_TENANT_ID):") == TENANT
    assert printed(out, "Service principal object id:") == sps[0]["id"]
    assert f"DMARCBOT_CLIENT_ID={app['appId']}" in out
    assert f"DMARCBOT_TENANT_ID={TENANT}" in out
    assert (f"setup-exchange.ps1 -AppId {app['appId']} "
            f"-ServicePrincipalObjectId {sps[0]['id']} ") in out


def test_first_run_from_the_deployment_sets_everything_up(az: AzLab) -> None:
    result = az.run("--resource-group", "rg-dmarc", "--deployment", "main")
    assert_set_up(az, result)
    assert f"DMARCBOT_MANAGED_IDENTITY_CLIENT_ID={MI_CLIENT}" in result.stdout


def test_second_run_finds_everything_and_creates_nothing(az: AzLab) -> None:
    first = az.run(PRINCIPAL)
    assert_set_up(az, first)
    before = az.state()
    done = len(before["calls"])
    second = az.run(PRINCIPAL)
    assert_set_up(az, second)
    after = az.state()
    assert after["apps"] == before["apps"] and after["sps"] == before["sps"]
    new_calls = after["calls"][done:]
    assert [c for c in new_calls if any(word in c[:4] for word in WRITES)] == []
    assert "<the deployment output managedIdentityClientId>" in second.stdout


def test_app_only_first_then_the_credential(az: AzLab) -> None:
    """The infra deployment needs the client id, and the credential needs the deployment."""
    first = az.run("--app-only")
    assert first.returncode == 0, first.stderr
    app = dmarcbot_app(az.state())
    assert app["federatedIdentityCredentials"] == []
    assert f"appClientId={app['appId']}" in first.stdout
    second = az.run("--principal-id", PRINCIPAL)
    assert_set_up(az, second)
    assert dmarcbot_app(az.state())["appId"] == app["appId"]


def test_a_new_managed_identity_replaces_the_credential(az: AzLab) -> None:
    assert_set_up(az, az.run(PRINCIPAL))
    newer = "5e4d3c2b-1a09-4877-a665-544332211000"
    assert_set_up(az, az.run(newer), principal=newer)


def test_an_extra_graph_role_is_reported_not_kept_quiet(az: AzLab) -> None:
    state = az.state()
    app = new_app("dmarcbot")
    app["requiredResourceAccess"] = [{"resourceAppId": GRAPH_APP_ID, "resourceAccess": [
        {"id": GRAPH_APP_ROLES["Mail.ReadWrite"], "type": "Role"}]}]
    state["apps"].append(app)
    az.seed(state)
    result = az.run(PRINCIPAL)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^warning: .*Mail\.ReadWrite, which dmarcbot does not need",
                     result.stderr, re.M)


def test_a_multi_tenant_app_of_that_name_is_refused(az: AzLab) -> None:
    state = az.state()
    state["apps"].append(new_app("dmarcbot", sign_in_audience="AzureADMultipleOrgs"))
    az.seed(state)
    result = az.run(PRINCIPAL)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not single-tenant" in result.stderr


def one_line_failure(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert result.stdout == ""


def test_not_logged_in_fails_with_one_line(az: AzLab) -> None:
    state = az.state()
    state["account"] = None
    az.seed(state)
    one_line_failure(az.run(PRINCIPAL), "az login")
    assert [c[:2] for c in az.calls()] == [["account", "show"]]


def test_missing_principal_id_fails_with_one_line_before_any_az_call(az: AzLab) -> None:
    one_line_failure(az.run(), "principal id is missing")
    one_line_failure(az.run("--name", "dmarcbot"), "principal id is missing")
    one_line_failure(az.run("not-a-guid"), "must be a GUID")
    one_line_failure(az.run("--resource-group", "rg-dmarc"), "go together")
    assert [c for c in az.calls() if c[:2] != ["account", "show"]] == []


def test_missing_az_fails_with_one_line(az: AzLab) -> None:
    bare = "/usr/bin:/bin"
    assert shutil.which("az", path=bare) is None
    one_line_failure(az.run(PRINCIPAL, path=bare), "Azure CLI (az) is not installed")


def test_help(az: AzLab) -> None:
    result = az.run("--help")
    assert result.returncode == 0 and "Usage: scripts/setup-entra.sh" in result.stdout
    assert az.calls() == []


def test_the_checks_catch_a_script_missing_a_role(az: AzLab, tmp_path: Path) -> None:
    """The end-to-end assertions can fail: a copy of the script without one role fails them."""
    text = ENTRA.read_text()
    broken = tmp_path / "setup-entra.sh"
    broken.write_text(re.sub(r"^\s*AppCatalog\.Read\.All\b.*\n", "", text, count=1, flags=re.M))
    assert broken.read_text() != text
    with pytest.raises(AssertionError):
        assert_set_up(az, az.run(PRINCIPAL, script=broken))


# --- the fake az refuses what the real one refuses ------------------------------------------

def run_az(lab: AzLab, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], STATE_ENV: str(lab.state_path)}
    return subprocess.run([str(lab.bin_dir / "az"), *args], env=env, capture_output=True,
                          text=True)


@pytest.mark.parametrize("argv", [
    ["ad", "app", "frobnicate", "--id", "x"],
    ["ad", "app", "create", "--display-name", "x", "--secret", "y"],
    ["ad", "app", "permission", "add", "--id", "x"],
    ["ad", "app", "list", "--query", "[?"],
    ["ad", "app", "create", "--display-name", "x", "--sign-in-audience", "Everyone"],
])
def test_fake_az_refuses_like_argparse(az: AzLab, argv: list[str]) -> None:
    result = run_az(az, *argv)
    assert result.returncode == 2, result
    assert result.stderr.startswith("ERROR: ")


def test_fake_az_output_shapes(az: AzLab) -> None:
    tsv = run_az(az, "ad", "sp", "show", "--id", GRAPH_APP_ID, "--query",
                 "appRoles[?value=='User.ReadBasic.All'].[id, isEnabled]", "-o", "tsv")
    assert tsv.stdout == f"{GRAPH_APP_ROLES['User.ReadBasic.All']}\tTrue\n"
    listed = run_az(az, "ad", "app", "list", "--display-name", "dmarc")
    assert [app["displayName"] for app in json.loads(listed.stdout)] == ["dmarcbot-admin"]
    missing = run_az(az, "ad", "app", "show", "--id", PRINCIPAL)
    assert missing.returncode == 3 and "does not exist" in missing.stderr


# --- setup-exchange.ps1, statically ----------------------------------------------------------

COMMON = {"Debug", "ErrorAction", "ErrorVariable", "InformationAction", "InformationVariable",
          "OutVariable", "OutBuffer", "PipelineVariable", "Verbose", "WarningAction",
          "WarningVariable"}
# Cmdlet -> documented parameters, from Microsoft's cmdlet reference (learn.microsoft.com,
# powershell/module/exchangepowershell/<cmdlet>: the Syntax sections); New-ManagementRoleAssignment
# is its "App" parameter set. The PowerShell built-ins are from their own reference pages.
CMDLET_PARAMS: dict[str, set[str]] = {
    "Connect-ExchangeOnline": {
        "ConnectionUri", "AzureADAuthorizationEndpointUri", "ExchangeEnvironmentName",
        "PSSessionOption", "DelegatedOrganization", "Prefix", "CommandName", "FormatTypeName",
        "AccessToken", "AppId", "BypassMailboxAnchoring", "Certificate", "CertificateFilePath",
        "CertificatePassword", "CertificateThumbprint", "Credential", "Device", "DisableWAM",
        "EnableErrorReporting", "InlineCredential", "LogDirectoryPath", "LogLevel",
        "ManagedIdentity", "ManagedIdentityAccountId", "Organization", "PageSize", "ShowBanner",
        "ShowProgress", "SkipLoadingCmdletHelp", "SkipLoadingFormatData", "TrackPerformance",
        "UseMultithreading", "UserPrincipalName"},
    "Get-ConnectionInformation": {"ConnectionId", "ModulePrefix"},
    "Get-Mailbox": {"Identity", "Anr", "Filter", "RecipientTypeDetails", "ResultSize"},
    "Get-ServicePrincipal": {"Identity", "Organization"},
    "New-ServicePrincipal": {"AppId", "ObjectId", "ServiceId", "Confirm", "DisplayName",
                             "Organization", "WhatIf"},
    "Get-ManagementScope": {"Identity", "DomainController", "Exclusive", "Orphan"},
    "New-ManagementScope": {"Name", "RecipientRestrictionFilter", "RecipientRoot", "Confirm",
                            "DomainController", "Exclusive", "Force", "WhatIf"},
    "Set-ManagementScope": {"Identity", "RecipientRestrictionFilter", "RecipientRoot",
                            "Confirm", "DomainController", "Force", "Name", "WhatIf"},
    "Get-ManagementRoleAssignment": {
        "Identity", "AssignmentMethod", "Role", "RoleAssignee", "RoleAssigneeType", "Enabled",
        "Delegating", "Exclusive", "CustomRecipientWriteScope", "GetEffectiveUsers",
        "RecipientWriteScope", "WritableRecipient"},
    "New-ManagementRoleAssignment": {"Name", "Role", "App", "CustomResourceScope", "Confirm",
                                     "Delegating", "Force", "RecipientAdministrativeUnitScope",
                                     "RecipientGroupScope", "WhatIf"},
    "Test-ServicePrincipalAuthorization": {"Identity", "Confirm", "Resource", "WhatIf"},
    "Where-Object": {"FilterScript", "Property", "Value"},
    "Out-Null": {"InputObject"},
    "Set-StrictMode": {"Version", "Off"},
    "Write-Host": {"Object", "NoNewline", "Separator", "ForegroundColor", "BackgroundColor"},
    "Write-Error": {"Message", "Category", "ErrorId", "TargetObject"},
}
# Entra ID consent has no place in the Exchange script (mail access is Exchange RBAC only).
ENTRA_CONSENT = ("az ad app permission", "admin-consent", "New-MgServicePrincipalAppRoleAssignment",
                 "New-MgOauth2PermissionGrant", "Update-MgApplication", "requiredResourceAccess",
                 "Connect-MgGraph", "New-AzADAppPermission")


def _parser() -> Any:
    import tree_sitter
    import tree_sitter_powershell

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[tuple[str, str | None], ...]  # (parameter, its argument's text or None)
    splat: bool

    def arg(self, param: str) -> str | None:
        return next((value for p, value in self.args if p.lower() == param.lower()), None)


def ps_tree(text: str) -> Any:
    return _parser().parse(text.encode())


def ps_calls(tree: Any) -> list[Call]:
    """Every command in the script with its named parameters and their arguments."""
    calls: list[Call] = []

    def walk(node: Any) -> None:
        if node.type == "command":
            name = next(c for c in node.children if c.type == "command_name").text.decode()
            elements = next((c for c in node.children if c.type == "command_elements"), None)
            items = [c for c in (elements.children if elements else [])
                     if c.type != "command_argument_sep"]
            args: list[tuple[str, str | None]] = []
            splat = False
            for i, item in enumerate(items):
                text = item.text.decode()
                if item.type == "command_parameter":
                    nxt = items[i + 1] if i + 1 < len(items) else None
                    value = (nxt.text.decode() if nxt is not None
                             and nxt.type != "command_parameter" else None)
                    args.append((text.lstrip("-").rstrip(":"), value))
                elif re.match(r"@\w", text):
                    splat = True
            calls.append(Call(name, tuple(args), splat))
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    return calls


def ps_functions(tree: Any) -> dict[str, set[str]]:
    """The script's own functions and the parameters their param() blocks declare."""
    found: dict[str, set[str]] = {}

    def walk(node: Any) -> None:
        if node.type == "function_statement":
            name = next(c for c in node.children if c.type == "function_name").text.decode()
            params: set[str] = set()
            stack = list(node.children)
            while stack:
                child = stack.pop()
                if child.type == "script_parameter":
                    var = next(c for c in child.children if c.type == "variable")
                    params.add(var.text.decode().lstrip("$"))
                stack.extend(child.children)
            found[name] = params
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    return found


def ps_assignments(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^\$(\w+) = (.+)$", text, re.M)}


@pytest.fixture(scope="module")
def exchange() -> tuple[str, Any]:
    text = EXCHANGE.read_text()
    return text, ps_tree(text)


def test_exchange_script_parses(exchange: tuple[str, Any]) -> None:
    _text, tree = exchange
    assert not tree.root_node.has_error
    assert ps_tree("if ($x -eq { ").root_node.has_error  # the parser does reject bad syntax


def test_exchange_script_parameters(exchange: tuple[str, Any]) -> None:
    _text, tree = exchange
    block = next(n for n in tree.root_node.children if n.type == "param_block")
    params = {}
    for node in block.children:
        if node.type != "parameter_list":
            continue
        for param in (c for c in node.children if c.type == "script_parameter"):
            var = next(c for c in param.children if c.type == "variable").text.decode()
            params[var.lstrip("$")] = param.text.decode()
    assert set(params) == {"AppId", "ServicePrincipalObjectId", "Mailbox", "OtherMailbox", "Name"}
    for required in ("AppId", "ServicePrincipalObjectId", "Mailbox", "OtherMailbox"):
        assert "Mandatory = $true" in params[required], required
    assert params["Name"].endswith('$Name = "dmarcbot"')


def test_exchange_script_calls_cmdlets_as_documented(exchange: tuple[str, Any]) -> None:
    _text, tree = exchange
    own = ps_functions(tree)
    known = {**CMDLET_PARAMS, **own}
    calls = ps_calls(tree)
    assert calls
    for call in calls:
        assert call.name in known, f"{call.name}: not in the table of documented cmdlets"
        assert not call.splat, f"{call.name}: splatting hides its parameters from this check"
        allowed = {p.lower() for p in known[call.name] | COMMON}
        bad = [p for p, _value in call.args if p.lower() not in allowed]
        assert bad == [], f"{call.name} -{bad[0] if bad else ''}: not a documented parameter"


def test_exchange_script_does_what_the_runbook_says(exchange: tuple[str, Any]) -> None:
    text, tree = exchange
    calls = ps_calls(tree)
    values = ps_assignments(text)

    def resolve(value: str | None) -> str | None:
        return values.get(value[1:], value) if value and value.startswith("$") else value

    def only(name: str) -> Call:
        found = [c for c in calls if c.name == name]
        assert len(found) == 1, (name, found)
        return found[0]

    assert only("Connect-ExchangeOnline")
    sp = only("New-ServicePrincipal")
    assert (sp.arg("AppId"), sp.arg("ObjectId")) == ("$AppId", "$ServicePrincipalObjectId")

    scope = only("New-ManagementScope")
    mailbox_only = '''"PrimarySmtpAddress -eq '$Mailbox'"'''
    assert resolve(scope.arg("RecipientRestrictionFilter")) == mailbox_only
    assert only("Set-ManagementScope").arg("RecipientRestrictionFilter") == \
        scope.arg("RecipientRestrictionFilter")

    assign = only("New-ManagementRoleAssignment")
    assert resolve(assign.arg("Role")) == '"Application Mail.ReadWrite"'
    assert assign.arg("CustomResourceScope") == scope.arg("Name")
    assert assign.arg("App") in ("$AppId", "$ServicePrincipalObjectId")

    checks = [c for c in calls if c.name == "Test-ServicePrincipalAuthorization"]
    assert sorted((c.arg("Identity"), c.arg("Resource")) for c in checks) == [
        ("$AppId", "$Mailbox"), ("$AppId", "$OtherMailbox")]
    assert "InScope" in text and "RoleName" in text  # the output properties it reads

    # the first check's failure exits non-zero and names the cache delay
    failed = re.search(r"if \(-not \$inScope\) \{\n(.*?)\n\}", text, re.S)
    assert failed and "30 minutes to 2 hours" in failed.group(1)
    assert re.search(r"-Code [1-9]", failed.group(1))
    assert "exit $Code" in text


def test_exchange_script_grants_no_entra_mail_permission(exchange: tuple[str, Any]) -> None:
    text, _tree = exchange
    assert [word for word in ENTRA_CONSENT if word.lower() in text.lower()] == []
    # every Mail.* in it is Exchange's "Application Mail.ReadWrite" role, nothing else
    for match in re.finditer(r"Mail\.\w+", text):
        assert text[max(0, match.start() - 12):match.start()] == "Application ", match
        assert match.group() == "Mail.ReadWrite"
