"""infra/main.json, checked offline against the Azure management SDKs' own models.

ARM accepts a template whose property names are wrong and fails, or silently ignores them, only
at deployment. Each resource body is therefore walked against the model that Microsoft generates
for that resource type and API version (the `azure-mgmt-*` packages), and any key the model does
not declare fails with its path. The SDKs' own `deserialize` ignores unknown keys, which is why
the walk is ours.
"""

from __future__ import annotations

import copy
import importlib
import json
import pkgutil
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE: dict[str, Any] = json.loads((ROOT / "infra" / "main.json").read_text())
PARAMETERS: dict[str, Any] = json.loads((ROOT / "infra" / "main.parameters.json").read_text())
SAMPLE: dict[str, str] = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
AZURE_MD = (ROOT / "docs" / "azure.md").read_text()

# ARM's own keys on a resource; everything else is the body the resource provider receives.
ENVELOPE = {"type", "apiVersion", "name", "dependsOn", "comments", "scope", "condition", "copy",
            "metadata"}

# Resource type -> (SDK package, the model of the body ARM sends).
MODELS: dict[str, tuple[str, str]] = {
    "Microsoft.Web/serverfarms": ("azure.mgmt.web", "AppServicePlan"),
    "Microsoft.Web/sites": ("azure.mgmt.web", "Site"),
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": (
        "azure.mgmt.web", "CsmPublishingCredentialsPoliciesEntity"),
    "Microsoft.Storage/storageAccounts": ("azure.mgmt.storage", "StorageAccountCreateParameters"),
    "Microsoft.Storage/storageAccounts/blobServices/containers": (
        "azure.mgmt.storage", "BlobContainer"),
    "Microsoft.ManagedIdentity/userAssignedIdentities": ("azure.mgmt.msi", "Identity"),
    "Microsoft.OperationalInsights/workspaces": ("azure.mgmt.loganalytics", "Workspace"),
    "Microsoft.Insights/components": (
        "azure.mgmt.applicationinsights", "ApplicationInsightsComponent"),
    "Microsoft.Authorization/roleAssignments": (
        "azure.mgmt.authorization", "RoleAssignmentCreateParameters"),
    "Microsoft.BotService/botServices": ("azure.mgmt.botservice", "Bot"),
    "Microsoft.BotService/botServices/channels": ("azure.mgmt.botservice", "BotChannel"),
}

# Every DMARCBOT_* setting of local.settings.sample.json that the template deliberately leaves
# unset (an unset setting takes dmarcbot's default), and why.
NOT_SET_BY_TEMPLATE: dict[str, str] = {
    "DMARCBOT_CLIENT_SECRET": "development tenants only; production uses the federated credential",
    "DMARCBOT_CERTIFICATE_PATH": "the certificate credential; exactly one credential may be set",
    "DMARCBOT_CERTIFICATE_PASSWORD": "belongs to the certificate credential",
    "DMARCBOT_TABLES_CONNECTION": "Azurite and development; it conflicts with the account URL",
    "DMARCBOT_CA_BUNDLE": "a TLS-inspecting proxy on a developer's network; Functions has none",
    "DMARCBOT_NAMESERVERS": "the platform's resolver is the one to use in Azure",
    "DMARCBOT_RETENTION_MONTHS": "unset keeps every report; expiring history is the owner's call",
    "DMARCBOT_GRAPH_URL": "national clouds only; the default is the public cloud's",
    "DMARCBOT_AUTHORITY_HOST": "national clouds only; the default is the public cloud's",
    "DMARCBOT_BOT_SERVICE_URL": "national clouds only; the default is the public cloud's",
    "DMARCBOT_BOT_OPENID_URL": "national clouds only; the default is the public cloud's",
    "DMARCBOT_TRUSTED_AUTHSERV_IDS": "the mailbox is Exchange Online's, whose own header is trusted"
                                     " without naming it",
}

STORAGE_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88",  # Storage Queue Data Contributor
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor
}
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"


def resources_of(type_: str) -> list[dict[str, Any]]:
    """The template's resources of one type."""
    return [r for r in TEMPLATE["resources"] if r["type"] == type_]


def the(type_: str) -> dict[str, Any]:
    """The template's one resource of a type."""
    (found,) = resources_of(type_)
    return found


def app_settings() -> dict[str, str]:
    """The Function App's app settings, by name."""
    site = the("Microsoft.Web/sites")
    return {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}


def is_expression(value: object) -> bool:
    """An ARM template expression; a leading `[[` escapes a literal bracket."""
    return isinstance(value, str) and value.startswith("[") and not value.startswith("[[")


def all_strings(node: object) -> list[str]:
    """Every string in a JSON tree, keys included."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [k, *all_strings(v)]]
    if isinstance(node, list):
        return [s for v in node for s in all_strings(v)]
    return []


# --- What the SDKs know --------------------------------------------------------------------------

def sdk_versions(package: str) -> dict[str, ModuleType]:
    """API version -> models module, as the SDK records them.

    Multi-API SDKs keep one `vYYYY_MM_DD` subpackage per API version. Single-API SDKs describe
    exactly one version: the default `api_version` of their client configuration.
    """
    pkg = importlib.import_module(package)
    versioned = [m.name for m in pkgutil.iter_modules(pkg.__path__)
                 if re.fullmatch(r"v\d{4}_\d\d_\d\d(_preview)?", m.name)]
    if versioned:
        return {name[1:].replace("_", "-"): importlib.import_module(f"{package}.{name}.models")
                for name in versioned}
    config_module = importlib.import_module(f"{package}._configuration")
    (config,) = [c for n, c in vars(config_module).items() if n.endswith("Configuration")
                 and getattr(c, "__module__", "") == config_module.__name__]
    default = config(credential=object(), subscription_id="0").api_version
    return {default: importlib.import_module(f"{package}.models")}


def model_for(resource: dict[str, Any]) -> type:
    """The SDK model for a template resource's type at its apiVersion."""
    package, name = MODELS[resource["type"]]
    versions = sdk_versions(package)
    assert resource["apiVersion"] in versions, (
        f"{resource['type']}@{resource['apiVersion']}: {package} knows {sorted(versions)}")
    return getattr(versions[resource["apiVersion"]], name)


# --- The strict checker --------------------------------------------------------------------------

@dataclass(frozen=True)
class T:
    """A normalised field type: kind is model, tree (msrest's flattened `properties.`), list,
    dict, or a leaf (str, int, float, bool, any)."""

    kind: str
    of: Any = None


LEAVES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float),
                                      "bool": (bool,), "any": (object,)}
PLACEHOLDERS: dict[str, Any] = {"str": "x", "int": 1, "float": 1.0, "bool": True, "any": "x"}
MSREST_LEAVES = {"str": "str", "iso-8601": "str", "rfc-1123": "str", "duration": "str",
                 "date": "str", "base64": "str", "bytearray": "str", "int": "int", "long": "int",
                 "float": "float", "bool": "bool", "object": "any"}


def msrest_type(spec: str, namespace: ModuleType) -> T:
    """`str`, `[Sku]`, `{UserAssignedIdentity}` ... as a T."""
    if spec.startswith("[") and spec.endswith("]"):
        return T("list", msrest_type(spec[1:-1], namespace))
    if spec.startswith("{") and spec.endswith("}"):
        return T("dict", msrest_type(spec[1:-1], namespace))
    if spec in MSREST_LEAVES:
        return T(MSREST_LEAVES[spec])
    return T("model", getattr(namespace, spec))


def hint_type(hint: Any) -> T:
    """A hybrid (TypeSpec) model's annotation as a T; enums are strings on the wire."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        options = [a for a in args if a is not type(None)]
        return T("str") if str in options else hint_type(options[0])
    if origin is typing.Literal:
        return T("str")
    if origin is list:
        return T("list", hint_type(args[0]))
    if origin is dict:
        return T("dict", hint_type(args[1]))
    if hint is typing.Any:
        return T("any")
    if isinstance(hint, type) and hint.__name__ in {"str", "int", "float", "bool"}:
        return T(hint.__name__)
    if isinstance(hint, type) and hint.__name__ == "datetime":
        return T("str")
    return T("model", hint)


def fields_of(model: type, value: dict[str, Any]) -> tuple[type, dict[str, T]]:
    """The wire keys a model declares, after picking a polymorphic subtype by its discriminator."""
    namespace = importlib.import_module(model.__module__.rsplit(".", 1)[0])
    if hasattr(model, "_attribute_map"):  # msrest model: keys like `properties.serverFarmId`
        for attr, subtypes in getattr(model, "_subtype_map", {}).items():
            wire = model._attribute_map[attr]["key"]
            if value.get(wire) in subtypes:
                model = getattr(namespace, subtypes[value[wire]])
        tree: dict[str, Any] = {}
        for entry in model._attribute_map.values():
            *parents, leaf = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", entry["key"])]
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = msrest_type(entry["type"], namespace)

        def as_t(node: dict[str, Any]) -> dict[str, T]:
            return {k: v if isinstance(v, T) else T("tree", as_t(v)) for k, v in node.items()}
        return model, as_t(tree)
    model()  # a hybrid model computes its field table on first construction
    rest_fields = model._attr_to_rest_field
    discriminator = next((f for f in rest_fields.values() if f._is_discriminator), None)
    if discriminator is not None and hasattr(model, "__mapping__"):
        model = model.__mapping__.get(value.get(discriminator._rest_name), model)
        model()
    hints = typing.get_type_hints(model, localns={"_models": namespace})
    rest_fields = model._attr_to_rest_field
    return model, {f._rest_name: hint_type(hints[attr]) for attr, f in rest_fields.items()}


def check(value: Any, t: T, path: str, problems: list[str], owner: str = "") -> Any:
    """Append every unknown key and mistyped value under `path` to `problems`.

    Returns the value with each ARM expression replaced by a placeholder of its field's type,
    ready for the SDK's own deserializer. An expression stands for any leaf value or free-form
    map (tags); where a model or list is expected it would hide keys, and is reported.
    """
    if t.kind == "dict" and is_expression(value):
        return {}
    if t.kind in LEAVES:
        if is_expression(value):
            return PLACEHOLDERS[t.kind]
        if not isinstance(value, LEAVES[t.kind]) or (t.kind in {"int", "float"}
                                                      and isinstance(value, bool)):
            problems.append(f"{path}: {value!r} is not {t.kind}")
        return value
    if t.kind == "list":
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, not {value!r}")
            return value
        return [check(v, t.of, f"{path}[{i}]", problems, owner) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        problems.append(f"{path}: expected an object, not {value!r}")
        return value
    if t.kind == "dict":
        return {k: check(v, t.of, f"{path}.{k}", problems, owner) for k, v in value.items()}
    if t.kind == "model":
        model, fields = fields_of(t.of, value)
        owner = model.__name__
    else:  # a flattened level of the owner's own keys
        fields = t.of
    out = {}
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{path}.{key}: unknown to {owner}")
        else:
            out[key] = check(item, fields[key], f"{path}.{key}", problems, owner)
    return out


def body_of(resource: dict[str, Any]) -> dict[str, Any]:
    """What ARM sends the resource provider: the resource without ARM's own keys."""
    return {k: v for k, v in resource.items() if k not in ENVELOPE}


def problems_in(body: dict[str, Any], model: type) -> tuple[list[str], Any]:
    """The checker's findings for one body, and the body with placeholders for expressions."""
    problems: list[str] = []
    concrete = check(body, T("model", model), model.__name__, problems)
    return problems, concrete


def sdk_round_trip(model: type, concrete: dict[str, Any]) -> dict[str, Any]:
    """The body as the SDK reads it and writes it back; msrest raises on values it cannot convert.

    A round trip equal to the body means the SDK's own code kept every key and value.
    """
    if hasattr(model, "_attribute_map"):
        # msrest's deserializer pops discriminators from its input: give it a copy.
        return model.deserialize(copy.deepcopy(concrete)).serialize(keep_readonly=True)
    return model(copy.deepcopy(concrete)).as_dict()


# --- The template's shape ------------------------------------------------------------------------

def test_template_has_arm_shape() -> None:
    assert TEMPLATE["$schema"].endswith("/deploymentTemplate.json#")
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", TEMPLATE["contentVersion"])
    for section in ("parameters", "variables", "outputs"):
        assert isinstance(TEMPLATE[section], dict)
    assert isinstance(TEMPLATE["resources"], list) and TEMPLATE["resources"]
    for resource in TEMPLATE["resources"]:
        assert {"type", "apiVersion", "name"} <= resource.keys()
    assert PARAMETERS["$schema"].endswith("/deploymentParameters.json#")


def references(kind: str, node: object) -> set[str]:
    """Names used as `parameters('x')` or `variables('x')` anywhere in a JSON tree."""
    return {m for s in all_strings(node) for m in re.findall(rf"\b{kind}\('([^']+)'\)", s)}


def test_every_reference_resolves_and_every_parameter_is_used() -> None:
    body = {k: v for k, v in TEMPLATE.items() if k != "parameters"}
    defaults = {k: v.get("defaultValue") for k, v in TEMPLATE["parameters"].items()}
    used = references("parameters", body) | references("parameters", defaults)
    assert used <= TEMPLATE["parameters"].keys(), used - TEMPLATE["parameters"].keys()
    assert TEMPLATE["parameters"].keys() <= used, TEMPLATE["parameters"].keys() - used
    variables = references("variables", TEMPLATE)
    assert variables <= TEMPLATE["variables"].keys(), variables - TEMPLATE["variables"].keys()
    assert TEMPLATE["variables"].keys() <= variables, TEMPLATE["variables"].keys() - variables


def test_parameters_file_fits_the_template() -> None:
    given = PARAMETERS["parameters"]
    declared = TEMPLATE["parameters"]
    assert given.keys() <= declared.keys(), given.keys() - declared.keys()
    required = {name for name, p in declared.items() if "defaultValue" not in p}
    assert required <= given.keys(), required - given.keys()
    for name, entry in given.items():
        value, spec = entry["value"], declared[name]
        assert isinstance(value, {"string": str, "int": int, "object": dict}[spec["type"]]), name
        assert value in spec.get("allowedValues", [value]), name
        assert spec.get("minValue", value) <= value <= spec.get("maxValue", value), name
    placeholders = [n for n, e in given.items() if "REPLACE-ME" in str(e["value"])]
    assert "appClientId" in placeholders and "mailbox" in placeholders


def split_arguments(text: str) -> list[str]:
    """The top-level, comma-separated arguments of an ARM function call's inside."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "([":
            depth += 1
        elif not quoted and char in ")]":
            depth -= 1
        if char == "," and depth == 0 and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


def resource_key(resource: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """(type, name segments as expression text), the way a resourceId() call spells them."""
    name = resource["name"]
    if not is_expression(name):
        return resource["type"], tuple(f"'{part}'" for part in name.split("/"))
    inner = name[1:-1]
    call = re.fullmatch(r"format\((.*)\)", inner)
    if call is None:
        return resource["type"], (inner,)
    pattern, *args = split_arguments(call.group(1))
    segments = [re.sub(r"^\{(\d)\}$", lambda m: args[int(m.group(1))], part) for part in
                pattern.strip("'").split("/")]
    return resource["type"], tuple(s if s in args else f"'{s}'" for s in segments)


def dependency_key(dependency: str) -> tuple[str, tuple[str, ...]]:
    """(type, name segments) of a `[resourceId(...)]` or `[extensionResourceId(...)]` entry."""
    call = re.fullmatch(r"\[(resourceId|extensionResourceId)\((.*)\)\]", dependency)
    assert call, f"dependsOn entry not resolvable here: {dependency}"
    args = split_arguments(call.group(2))
    if call.group(1) == "extensionResourceId":
        args = args[1:]
    return args[0].strip("'"), tuple(args[1:])


def test_every_depends_on_targets_a_resource_of_the_template() -> None:
    keys = {resource_key(r) for r in TEMPLATE["resources"]}
    for resource in TEMPLATE["resources"]:
        for dependency in resource.get("dependsOn", []):
            assert dependency_key(dependency) in keys, (resource["name"], dependency)


# --- Against the SDKs ----------------------------------------------------------------------------

@pytest.mark.parametrize("resource", TEMPLATE["resources"], ids=lambda r: r["type"])
def test_type_and_api_version_are_known_to_the_sdk(resource: dict[str, Any]) -> None:
    assert resource["type"] in MODELS
    model_for(resource)


@pytest.mark.parametrize("resource", TEMPLATE["resources"], ids=lambda r: r["type"])
def test_body_loads_into_the_sdk_model_with_no_unknown_key(resource: dict[str, Any]) -> None:
    model = model_for(resource)
    problems, concrete = problems_in(body_of(resource), model)
    assert problems == []
    assert sdk_round_trip(model, concrete) == concrete


def test_sites_model_has_flex_function_app_config() -> None:
    site = the("Microsoft.Web/sites")
    model = model_for(site)
    _, fields = fields_of(model, body_of(site))
    _, properties = fields_of(fields["properties"].of, {})
    assert "functionAppConfig" in properties


def test_checker_names_a_misspelt_key_a_wrong_type_and_an_unknown_subtype_key() -> None:
    site = json.loads(json.dumps(the("Microsoft.Web/sites")))
    scale = site["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    scale["maximumInstanceCont"] = scale.pop("maximumInstanceCount")
    site["properties"]["httpsOnly"] = "yes"
    problems, _ = problems_in(body_of(site), model_for(site))
    assert problems == [
        "Site.properties.httpsOnly: 'yes' is not bool",
        "Site.properties.functionAppConfig.scaleAndConcurrency.maximumInstanceCont: "
        "unknown to FunctionsScaleAndConcurrency",
    ]
    channel = json.loads(json.dumps(the("Microsoft.BotService/botServices/channels")))
    channel["properties"]["properties"]["isEnabld"] = True
    problems, _ = problems_in(body_of(channel), model_for(channel))
    assert problems == ["BotChannel.properties.properties.isEnabld: "
                        "unknown to MsTeamsChannelProperties"]
    identity = json.loads(json.dumps(the("Microsoft.ManagedIdentity/userAssignedIdentities")))
    identity["properties"] = {"isolationScope": "None", "clientID": "x"}
    problems, _ = problems_in(body_of(identity), model_for(identity))
    assert problems == ["Identity.properties.clientID: unknown to Identity"]


# --- What the app needs --------------------------------------------------------------------------

def test_settings_match_the_sample_and_the_docs() -> None:
    sample = {k for k in SAMPLE if k.startswith("DMARCBOT_")}
    documented = set(re.findall(r"^\| `(DMARCBOT_\w+)` \|", AZURE_MD, flags=re.MULTILINE))
    assert documented == sample
    template = {k for k in app_settings() if k.startswith("DMARCBOT_")}
    assert template <= sample, template - sample
    assert not template & NOT_SET_BY_TEMPLATE.keys()
    missing = sample - template - NOT_SET_BY_TEMPLATE.keys()
    assert not missing, f"set these in infra/main.json or say why not: {missing}"


def test_host_settings_fit_flex_consumption_and_identity_storage() -> None:
    settings = app_settings()
    assert settings["PYTHON_SCRIPT_FILE_NAME"] == SAMPLE["PYTHON_SCRIPT_FILE_NAME"]
    assert (ROOT / settings["PYTHON_SCRIPT_FILE_NAME"]).is_file()
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__clientId",
            "APPLICATIONINSIGHTS_CONNECTION_STRING", "DMARCBOT_TABLES_ACCOUNT_URL",
            "DMARCBOT_TABLES_CLIENT_ID", "DMARCBOT_MANAGED_IDENTITY_CLIENT_ID"} <= settings.keys()
    flex_deprecated = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION",
                       "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT", "WEBSITE_RUN_FROM_PACKAGE",
                       "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
                       "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD", "AzureWebJobsStorage"}
    assert not flex_deprecated & settings.keys()
    assert "linuxFxVersion" not in the("Microsoft.Web/sites")["properties"]["siteConfig"]


def test_site_runs_on_flex_consumption_with_the_graph_bound_scale() -> None:
    plan = the("Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = the("Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"]["name"] == "python"
    version = TEMPLATE["parameters"]["pythonVersion"]
    assert set(version["allowedValues"]) <= {"3.11", "3.12"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    scale = config["scaleAndConcurrency"]
    assert [group["name"] for group in scale["alwaysReady"]] == ["http"]
    assert TEMPLATE["parameters"]["botAlwaysReadyInstances"]["defaultValue"] == 1
    maximum = TEMPLATE["parameters"]["maximumInstanceCount"]
    assert scale["maximumInstanceCount"] == "[parameters('maximumInstanceCount')]"
    host = json.loads((ROOT / "host.json").read_text())
    # One ingest_mail instance x batchSize messages at once = Graph's 4 per app per mailbox.
    assert maximum["defaultValue"] * host["extensions"]["queues"]["batchSize"] <= 4
    assert (maximum["minValue"], maximum["maxValue"]) == (1, 1000)


def test_site_is_https_only_tls12_and_ftp_off() -> None:
    site = the("Microsoft.Web/sites")
    assert site["properties"]["httpsOnly"] is True
    assert site["properties"]["siteConfig"]["minTlsVersion"] == "1.2"
    assert site["properties"]["siteConfig"]["ftpsState"] == "Disabled"
    (ftp,) = [p for p in resources_of("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
              if p["name"].endswith("'ftp')]")]
    assert ftp["properties"]["allow"] is False


def test_storage_account_takes_no_keys_and_no_anonymous_reads() -> None:
    properties = the("Microsoft.Storage/storageAccounts")["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["allowBlobPublicAccess"] is False
    container = the("Microsoft.Storage/storageAccounts/blobServices/containers")
    assert container["properties"]["publicAccess"] == "None"


def role_guid(assignment: dict[str, Any]) -> str:
    """The built-in role GUID a role assignment grants, through the template's variables."""
    key = re.fullmatch(r"\[subscriptionResourceId\('Microsoft.Authorization/roleDefinitions', "
                       r"variables\('roleIds'\)\.(\w+)\)\]",
                       assignment["properties"]["roleDefinitionId"])
    assert key, assignment["properties"]["roleDefinitionId"]
    return TEMPLATE["variables"]["roleIds"][key.group(1)]


def test_role_assignments_are_deterministic_and_grant_the_storage_roles() -> None:
    assignments = resources_of("Microsoft.Authorization/roleAssignments")
    for assignment in assignments:
        assert assignment["name"].startswith("[guid(")
        assert assignment["properties"]["principalType"] == "ServicePrincipal"
    on_storage = {role_guid(a) for a in assignments
                  if a["scope"].startswith("[format('Microsoft.Storage/storageAccounts/")}
    assert on_storage == STORAGE_ROLES
    on_insights = {role_guid(a) for a in assignments
                   if a["scope"].startswith("[format('Microsoft.Insights/components/")}
    assert on_insights == {MONITORING_METRICS_PUBLISHER}
    assert len({a["name"] for a in assignments}) == len(assignments)


def test_bot_is_single_tenant_points_at_bot_messages_and_has_teams() -> None:
    bot = the("Microsoft.BotService/botServices")
    assert bot["kind"] == "azurebot"
    assert bot["properties"]["msaAppType"] == "SingleTenant"
    assert bot["properties"]["msaAppId"] == "[parameters('appClientId')]"
    assert bot["properties"]["msaAppTenantId"] == "[parameters('tenantId')]"
    endpoint = re.fullmatch(r"\[format\('(https://\{0\}[^']*)'.*\]", bot["properties"]["endpoint"])
    assert endpoint and endpoint.group(1).endswith("/api/messages")
    code = (ROOT / "function_app" / "bot_functions.py").read_text()
    assert '@bp.function_name("bot_messages")' in code and 'route="messages"' in code
    host = json.loads((ROOT / "host.json").read_text())
    assert "routePrefix" not in host.get("extensions", {}).get("http", {})
    (channel,) = resources_of("Microsoft.BotService/botServices/channels")
    assert channel["properties"]["channelName"] == "MsTeamsChannel"
    assert channel["name"].endswith("'MsTeamsChannel')]")


def test_outputs_give_what_the_entra_setup_needs() -> None:
    assert {"functionAppName", "functionAppHostName", "managedIdentityClientId",
            "managedIdentityPrincipalId", "botMessagingEndpoint"} <= TEMPLATE["outputs"].keys()
    for output in TEMPLATE["outputs"].values():
        assert output["type"] == "string"

