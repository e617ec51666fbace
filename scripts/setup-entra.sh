#!/usr/bin/env bash
# dmarcbot's Entra ID setup, with the Azure CLI: the single-tenant app registration, its
# service principal, the federated credential that lets the Function App's managed identity
# sign in as the app (no secret, no certificate), and the Microsoft Graph application
# permissions with admin consent. Idempotent: it finds what exists and creates only what is
# missing, so it is safe to run again (for example after a step failed half-way).
#
# Run it as someone who may create app registrations and grant tenant-wide admin consent
# (Privileged Role Administrator, or Global Administrator). docs/azure.md explains each step.
set -euo pipefail

readonly GRAPH_APP_ID=00000003-0000-0000-c000-000000000000

# The Microsoft Graph *application* roles dmarcbot needs: exactly the keys of
# graph.permissions.TEAMS_ROLES (tests/test_setup_scripts.py holds one to the other).
# Never any Mail.* or Sites.*.All role here: mailbox access is an Exchange Online RBAC for
# Applications assignment scoped to the one mailbox (scripts/setup-exchange.ps1), and list
# access is a grant on the one SharePoint list (docs/sharepoint.md). A tenant-wide role
# would add to those narrow grants and reach every mailbox or site in the tenant.
GRAPH_ROLES=(
    User.ReadBasic.All                            # an owner's object id from their UPN; deciders' names
    AppCatalog.Read.All                           # find dmarcbot's Teams app in the org catalog
    TeamsAppInstallation.ReadWriteSelfForUser.All # install dmarcbot for an owner who never used it
    Lists.SelectedOperations.Selected             # items of the one list it is granted, no other
)

usage() {
    cat <<'EOF'
Usage: scripts/setup-entra.sh [--name NAME] (PRINCIPAL_ID | --principal-id PRINCIPAL_ID
                              | --resource-group RG --deployment NAME | --app-only)

Creates or completes dmarcbot's app registration in the signed-in tenant (az login first).

  PRINCIPAL_ID, --principal-id ID
                    the Function App managed identity's principal (object) id: the output
                    managedIdentityPrincipalId of the infra/main.json deployment
  --resource-group RG --deployment NAME
                    read managedIdentityPrincipalId and managedIdentityClientId from that
                    deployment's outputs instead
  --app-only        only the app registration, its service principal and Graph permissions,
                    without the federated credential: for the first run, before the infra
                    deployment that needs the client id exists
  --name NAME       display name of the app registration (default: dmarcbot)
  -h, --help        this help

It never creates a client secret or a certificate.
EOF
}

die() {
    echo "setup-entra.sh: $*" >&2
    exit 1
}

name=dmarcbot
principal_id=""
mi_client_id=""
resource_group=""
deployment=""
app_only=0
while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --name) (($# >= 2)) || die "--name needs a value"; name=$2; shift 2 ;;
        --principal-id) (($# >= 2)) || die "--principal-id needs a value"; principal_id=$2; shift 2 ;;
        --resource-group) (($# >= 2)) || die "--resource-group needs a value"; resource_group=$2; shift 2 ;;
        --deployment) (($# >= 2)) || die "--deployment needs a value"; deployment=$2; shift 2 ;;
        --app-only) app_only=1; shift ;;
        -*) die "unknown option $1 (see --help)" ;;
        *)
            [[ -z $principal_id ]] || die "unexpected argument $1 (see --help)"
            principal_id=$1
            shift
            ;;
    esac
done

guid_re='^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$'
# The name also names the federated credential ("<name>-function"), whose names allow only
# letters, digits, '-' and '_'; it also keeps the --query strings below free of quotes.
[[ $name =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$ ]] ||
    die "--name must be letters, digits, '-' or '_' (at most 100): got '$name'"
if [[ -n $resource_group || -n $deployment ]]; then
    [[ -n $resource_group && -n $deployment ]] ||
        die "--resource-group and --deployment go together"
    [[ -z $principal_id ]] || die "give the principal id or --resource-group/--deployment, not both"
fi
if ((app_only)); then
    [[ -z $principal_id && -z $resource_group ]] ||
        die "--app-only takes no principal id: it skips the federated credential"
elif [[ -z $principal_id && -z $resource_group ]]; then
    die "the managed identity's principal id is missing: pass it (deployment output managedIdentityPrincipalId), or --resource-group RG --deployment NAME, or --app-only before the deployment exists"
fi

command -v az >/dev/null 2>&1 ||
    die "the Azure CLI (az) is not installed or not on PATH"
tenant_id=$(az account show --query tenantId -o tsv 2>/dev/null) ||
    die "not logged in to Azure: run 'az login' as an admin of the tenant first"
[[ $tenant_id =~ $guid_re ]] || die "az account show gave no tenant id"

if [[ -n $resource_group ]]; then
    outputs="properties.outputs"
    principal_id=$(az deployment group show --resource-group "$resource_group" --name "$deployment" \
        --query "$outputs.managedIdentityPrincipalId.value" -o tsv) ||
        die "could not read deployment '$deployment' in resource group '$resource_group'"
    mi_client_id=$(az deployment group show --resource-group "$resource_group" --name "$deployment" \
        --query "$outputs.managedIdentityClientId.value" -o tsv) ||
        die "could not read deployment '$deployment' in resource group '$resource_group'"
fi
if ((!app_only)); then
    [[ $principal_id =~ $guid_re ]] ||
        die "the managed identity's principal id must be a GUID: got '$principal_id'"
fi

# 1. The app registration. `az ad app list --display-name` matches by prefix ("dmarcbot"
# also finds "dmarcbot-admin"), so the query keeps exact matches only.
app_ids=$(az ad app list --display-name "$name" --query "[?displayName=='$name'].appId" -o tsv)
app_count=$(grep -c . <<<"$app_ids" || true)
if ((app_count > 1)); then
    die "$app_count app registrations are named '$name': delete the extra ones or pick another --name"
elif ((app_count == 1)); then
    app_id=$app_ids
    audience=$(az ad app show --id "$app_id" --query signInAudience -o tsv)
    [[ $audience == AzureADMyOrg ]] ||
        die "app registration '$name' ($app_id) is not single-tenant (signInAudience $audience): dmarcbot needs AzureADMyOrg"
    echo "app registration '$name' exists: $app_id"
else
    app_id=$(az ad app create --display-name "$name" --sign-in-audience AzureADMyOrg \
        --query appId -o tsv)
    echo "created app registration '$name': $app_id"
fi

# 2. Its service principal (the "enterprise app"): admin consent and Exchange need it.
sp_id=$(az ad sp list --filter "appId eq '$app_id'" --query "[].id" -o tsv)
if [[ -z $sp_id ]]; then
    sp_id=$(az ad sp create --id "$app_id" --query id -o tsv)
    echo "created service principal: $sp_id"
else
    echo "service principal exists: $sp_id"
fi

# 3. The federated credential: tokens of the managed identity stand in for a client secret.
if ((!app_only)); then
    issuer="https://login.microsoftonline.com/$tenant_id/v2.0"
    cred_name="$name-function"
    params=$(printf '{"name": "%s", "issuer": "%s", "subject": "%s", "audiences": ["api://AzureADTokenExchange"], "description": "%s"}' \
        "$cred_name" "$issuer" "$principal_id" "the Function App managed identity of dmarcbot")
    same=$(az ad app federated-credential list --id "$app_id" \
        --query "[?issuer=='$issuer' && subject=='$principal_id'].name" -o tsv)
    named=$(az ad app federated-credential list --id "$app_id" \
        --query "[?name=='$cred_name'].name" -o tsv)
    if [[ -n $same ]]; then
        echo "federated credential for the managed identity exists: $same"
    elif [[ -n $named ]]; then
        # Same name, another identity: the infra was deployed anew. Point it at this one.
        az ad app federated-credential update --id "$app_id" \
            --federated-credential-id "$cred_name" --parameters "$params" -o none
        echo "federated credential $cred_name now trusts managed identity $principal_id"
    else
        az ad app federated-credential create --id "$app_id" --parameters "$params" -o none
        echo "created federated credential $cred_name for managed identity $principal_id"
    fi
fi

# 4. Microsoft Graph application permissions, then admin consent.
have=$(az ad app permission list --id "$app_id" \
    --query "[?resourceAppId=='$GRAPH_APP_ID'].resourceAccess[] | [?type=='Role'].id" -o tsv)
wanted=()
for role in "${GRAPH_ROLES[@]}"; do
    role_id=$(az ad sp show --id "$GRAPH_APP_ID" \
        --query "appRoles[?value=='$role'].id" -o tsv)
    [[ $role_id =~ $guid_re ]] || die "Microsoft Graph has no application role $role"
    wanted+=("$role_id")
    if grep -qxF "$role_id" <<<"$have"; then
        echo "Graph permission $role is requested already"
    else
        az ad app permission add --id "$app_id" --api "$GRAPH_APP_ID" \
            --api-permissions "$role_id=Role" --only-show-errors -o none
        echo "requested Graph permission $role"
    fi
done
# A Graph role the app asks for beyond these is one dmarcbot does not need; a tenant-wide
# one would undo the mailbox and list scoping. Say so, but leave removing it to the admin.
while IFS= read -r role_id; do
    [[ -n $role_id ]] || continue
    if ! printf '%s\n' "${wanted[@]}" | grep -qxF "$role_id"; then
        extra=$(az ad sp show --id "$GRAPH_APP_ID" --query "appRoles[?id=='$role_id'].value" -o tsv)
        echo "warning: the app also asks for Graph application permission ${extra:-$role_id}, which dmarcbot does not need; remove it: az ad app permission delete --id $app_id --api $GRAPH_APP_ID --api-permissions $role_id" >&2
    fi
done <<<"$have"
# Consent is granted again on every run: it is idempotent, and it covers a run that stopped
# between adding a permission and consenting to it.
az ad app permission admin-consent --id "$app_id" ||
    die "admin consent failed; a new service principal can take a minute to replicate: run this script again"
echo "admin consent granted for ${#GRAPH_ROLES[@]} Graph application permissions"

cat <<EOF

Done.
  Client id (DMARCBOT_CLIENT_ID):         $app_id
  Tenant id (DMARCBOT_TENANT_ID):         $tenant_id
  Service principal object id:            $sp_id

Next:
EOF
if ((app_only)); then
    cat <<EOF
  1. Deploy infra/main.json with appClientId=$app_id (infra/README.md).
  2. Run this script again with the deployment, to add the federated credential:
       scripts/setup-entra.sh --name $name --resource-group RG --deployment DEPLOYMENT
EOF
else
    cat <<EOF
  1. Exchange Online PowerShell: scope the app to the DMARC mailbox only.
       ./scripts/setup-exchange.ps1 -AppId $app_id -ServicePrincipalObjectId $sp_id -Mailbox <dmarc mailbox> -OtherMailbox <any other mailbox>
  2. The Function App's settings (infra/main.json sets them from its parameters):
       DMARCBOT_CLIENT_ID=$app_id
       DMARCBOT_TENANT_ID=$tenant_id
       DMARCBOT_MANAGED_IDENTITY_CLIENT_ID=${mi_client_id:-<the deployment output managedIdentityClientId>}
EOF
fi
