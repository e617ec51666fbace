#Requires -Version 5.1
#Requires -Modules ExchangeOnlineManagement
<#
.SYNOPSIS
    dmarcbot's Exchange Online setup: the app may read and sort mail in the DMARC mailbox, and
    in no other mailbox.

.DESCRIPTION
    Uses RBAC for Applications in Exchange Online. It registers the app's service principal
    with Exchange, creates a management scope that matches only the DMARC mailbox, and assigns
    the "Application Mail.ReadWrite" role to the app within that scope. Then it checks with
    Test-ServicePrincipalAuthorization that the DMARC mailbox is in scope and that another
    mailbox is not.

    Idempotent: what exists is reused, so the script is safe to run again, for example to
    repeat the checks after the assignment has had time to apply.

    Exchange RBAC replaces any Entra ID mail permission: the app registration must have no
    Microsoft Graph Mail.* application permission, which would reach every mailbox whatever
    this scope says (scripts/setup-entra.sh requests none).

    Exit codes: 0 both checks passed; 1 the DMARC mailbox is not in scope (yet); 2 the other
    mailbox is in scope too; 3 bad input.

.PARAMETER AppId
    The app registration's client id (printed by scripts/setup-entra.sh).
.PARAMETER ServicePrincipalObjectId
    The object id of the app's service principal (the enterprise app), not of the app
    registration (printed by scripts/setup-entra.sh).
.PARAMETER Mailbox
    The primary SMTP address of the mailbox that receives the DMARC reports.
.PARAMETER OtherMailbox
    Any other mailbox: the app must not be in scope for it, which proves the scope holds.
.PARAMETER Name
    Prefix of the names given to the Exchange objects (default dmarcbot).

.EXAMPLE
    ./scripts/setup-exchange.ps1 -AppId 5700b0a7-e38c-455f-b398-0090187999e3 -ServicePrincipalObjectId e8851de8-9843-4d47-8365-7553ff822997 -Mailbox dmarc@contoso.com -OtherMailbox someone.else@contoso.com
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [ValidatePattern('^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$')]
    [string] $AppId,

    [Parameter(Mandatory = $true)]
    [ValidatePattern('^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$')]
    [string] $ServicePrincipalObjectId,

    # No quotes or spaces: the address goes inside the scope's OPATH filter.
    [Parameter(Mandatory = $true)]
    [ValidatePattern('^[^@\s''"]+@[^@\s''"]+$')]
    [string] $Mailbox,

    [Parameter(Mandatory = $true)]
    [ValidatePattern('^[^@\s''"]+@[^@\s''"]+$')]
    [string] $OtherMailbox,

    [ValidatePattern('^[A-Za-z0-9][A-Za-z0-9_-]{0,50}$')]
    [string] $Name = "dmarcbot"
)

# Strict about variables (typos), not about properties of objects Exchange returns.
Set-StrictMode -Version 1.0
$ErrorActionPreference = "Stop"

# Read, move, categorize and create folders: a read-only role cannot move messages.
$role = "Application Mail.ReadWrite"
$scopeName = "$Name-mailbox"
$assignmentName = "$Name-mail"
$filter = "PrimarySmtpAddress -eq '$Mailbox'"

function Stop-Setup {
    param([string] $Message, [int] $Code)
    Write-Host "setup-exchange.ps1: $Message" -ForegroundColor Red
    exit $Code
}

if ($Mailbox -eq $OtherMailbox) {
    Stop-Setup -Message "-OtherMailbox must be another mailbox than -Mailbox: it proves the scope holds" -Code 3
}

# Connect once; reuse a connection this session already has.
$connected = @(Get-ConnectionInformation | Where-Object { $_.State -eq "Connected" -and -not $_.IsEopSession })
if ($connected.Count -eq 0) {
    Connect-ExchangeOnline -ShowBanner:$false
}

# The scope filter matches the primary SMTP address only: check that is what we were given.
$target = @(Get-Mailbox -Identity $Mailbox -ErrorAction SilentlyContinue)
if ($target.Count -ne 1) {
    Stop-Setup -Message "no mailbox $Mailbox in this organization" -Code 3
}
if ([string] $target[0].PrimarySmtpAddress -ne $Mailbox) {
    Stop-Setup -Message "-Mailbox must be the primary SMTP address: $($target[0].PrimarySmtpAddress)" -Code 3
}

# 1. The app's service principal, as Exchange knows it.
$sp = @(Get-ServicePrincipal | Where-Object { $_.AppId -eq $AppId })
if ($sp.Count -eq 0) {
    New-ServicePrincipal -AppId $AppId -ObjectId $ServicePrincipalObjectId -DisplayName $Name | Out-Null
    Write-Host "Created the Exchange service principal for $AppId"
}
elseif ($sp[0].ObjectId -ne $ServicePrincipalObjectId) {
    Stop-Setup -Message "Exchange knows app $AppId with object id $($sp[0].ObjectId), not $ServicePrincipalObjectId; -ServicePrincipalObjectId is the enterprise app's object id" -Code 3
}
else {
    Write-Host "The Exchange service principal for $AppId exists"
}

# 2. A scope that matches only the DMARC mailbox.
$scope = @(Get-ManagementScope | Where-Object { $_.Name -eq $scopeName })
if ($scope.Count -eq 0) {
    New-ManagementScope -Name $scopeName -RecipientRestrictionFilter $filter | Out-Null
    Write-Host "Created management scope $scopeName ($filter)"
}
elseif ([string] $scope[0].RecipientFilter -ne $filter) {
    Set-ManagementScope -Identity $scopeName -RecipientRestrictionFilter $filter
    Write-Host "Management scope $scopeName now matches $Mailbox"
}
else {
    Write-Host "Management scope $scopeName exists"
}

# 3. The role, for the app, within that scope.
$assignment = @(Get-ManagementRoleAssignment -Role $role | Where-Object { $_.Name -eq $assignmentName })
if ($assignment.Count -eq 0) {
    # -App takes the service principal (its ObjectId, as the cmdlet reference asks).
    New-ManagementRoleAssignment -Name $assignmentName -App $ServicePrincipalObjectId -Role $role -CustomResourceScope $scopeName | Out-Null
    Write-Host "Assigned $role to $AppId within $scopeName"
}
elseif ("$($assignment[0].CustomResourceScope)" -ne $scopeName) {
    # A stale assignment of the same name (another app's, or an older scope): the checks below
    # would fail with a misleading message, so say what is wrong here.
    Write-Error ("Role assignment $assignmentName exists but is scoped to " +
        "'$($assignment[0].CustomResourceScope)', not $scopeName. Remove it " +
        "(Remove-ManagementRoleAssignment -Identity $assignmentName) or pass another -Name.")
    exit 3
}
else {
    Write-Host "Role assignment $assignmentName exists"
}

# 4. The checks. Test-ServicePrincipalAuthorization lists each role the app holds, and
# InScope says whether the given mailbox falls within that role's scope.
$mine = @(Test-ServicePrincipalAuthorization -Identity $AppId -Resource $Mailbox |
    Where-Object { $_.RoleName -eq $role })
$other = @(Test-ServicePrincipalAuthorization -Identity $AppId -Resource $OtherMailbox |
    Where-Object { $_.RoleName -eq $role })
$inScope = @($mine | Where-Object { [string] $_.InScope -eq "True" }).Count -gt 0
$otherInScope = @($other | Where-Object { [string] $_.InScope -eq "True" }).Count -gt 0
if ($inScope) {
    Write-Host "OK: $role is in scope for $Mailbox"
}
if (-not $otherInScope) {
    Write-Host "OK: $role is not in scope for $OtherMailbox"
}
if (-not $inScope) {
    Stop-Setup -Message "FAILED: $role is not in scope for $Mailbox. A new assignment can take 30 minutes to 2 hours to apply (Exchange caches permissions); run this script again later. If it still fails, compare the scope's filter with the mailbox: Get-ManagementScope $scopeName | Format-List" -Code 1
}
if ($otherInScope) {
    Stop-Setup -Message "FAILED: $role is in scope for $OtherMailbox too, so the app can reach other mailboxes. Look for another assignment of this role to the app: Get-ManagementRoleAssignment -Role '$role' | Format-List" -Code 2
}
Write-Host "Done: the app can reach $Mailbox and not $OtherMailbox."
