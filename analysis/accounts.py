"""Whose account at a service sent a source's mail: the domain's own, or one it cannot tie.

A vendor's network proves the vendor, never the customer's account: every tenant of Microsoft 365
and every SendGrid user sends from the same servers (issue 12). What ties mail to the domain's
own account is aligned authentication, the domain's own delegated records (its DKIM selectors'
CNAMEs into the vendor, which name its tenant), or an account identity already tied to the
domain by such evidence. Everything else is another account, or an account nothing proves.

Account identities are the per-customer names a vendor signs or bounces with under its own
domain (`<tenant>.onmicrosoft.com`, `<x>.gappssmtp.com`): a `dkim_domain` fact of the catalog
with labels in front. A vendor's shared name (`sendgrid.net` itself) identifies nobody.
Pure: values in, values out.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping

from analysis.catalog import Catalog
from analysis.identify import UNKNOWN, Identification, SourceActivity, own

OWN = "own"  # aligned authentication or an identity tied to the domain
OTHER = "other"  # an account identity that is not the domain's (another tenant)
UNPROVEN = "unproven"  # the vendor's shared identity or its network alone

#: A CNAME target holds the tenant after this label (legacy Microsoft 365, most vendors).
_DOMAINKEY = "._domainkey."
#: Microsoft 365's newer DKIM CNAMEs (from May 2025) name the tenant's initial domain prefix:
#: `selector1-<dom>._domainkey.<prefix>.<c>-v1.dkim.mail.microsoft` signs as
#: `<prefix>.onmicrosoft.com` (learn.microsoft.com, email-authentication-dkim-configure).
_MICROSOFT_NEW = ".dkim.mail.microsoft"


#: (kind, name) -> the (service key, fact value) pairs the catalog matches it with
Memo = dict[tuple[str, str], tuple[tuple[str, str], ...]]


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    """What a source's evidence says about the account it was sent from."""

    kind: str  # OWN, OTHER or UNPROVEN
    identity: str | None  # the account identity in the evidence (e.g. a tenant), if any
    proof: str  # one sentence: what ties it to the domain, or what is missing


@dataclasses.dataclass(frozen=True, slots=True)
class DomainAccounts:
    """One policy domain's own accounts, as its aligned sources and its DNS show them."""

    domain: str
    #: services at which the domain's own account is proven
    proven: frozenset[str] = frozenset()
    #: account identities tied to the domain (its tenants), per service
    identities: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    #: services whose identities come from the domain's own DNS (selector CNAMEs): there, an
    #: identity outside them is another tenant even when SPF passes through shared servers
    pinned: frozenset[str] = frozenset()
    #: catalog lookups already made this run ((kind, name) -> matching (service, fact value))
    memo: Memo = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def tied(self, service: str, identity: str) -> bool:
        return identity in self.identities.get(service, frozenset())

    def signed_by_own_account(self, activity: SourceActivity, elsewhere: str) -> bool:
        """A DKIM signature of one of the domain's own accounts at another service than
        `elsewhere` (its Microsoft 365 tenant, say) passed: the domain's mail, relayed there."""
        tied = {n for key, names in self.identities.items() if key != elsewhere for n in names}
        return any(result == "pass" and d.lower() in tied for (d, _, result), _ in activity.dkim)


def identities_of(activity: SourceActivity, catalog: Catalog, service: str | None = None,
                  memo: Memo | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tenants, identities) that passed, none of them the domain's own names; with `service`,
    only those under that service's own names (or its platform's).

    Tenants are per-customer signing domains under a vendor's signing domain (a DKIM `d=` such
    as `<tenant>.onmicrosoft.com`): they name an account, so one that is not the domain's is
    another account. Identities add the per-customer return-path names under a vendor's
    domain (`<portal>.<x>.hubspotemail.net`); those can tie mail to an account the domain's
    aligned mail already uses, but a vendor may share them, so they never name another one.
    """
    keys = None
    if service is not None and service != UNKNOWN:
        keys = {service, catalog.get(service).platform}
    memo = {} if memo is None else memo
    tenants: dict[str, None] = {}
    names: dict[str, None] = {}
    for (d, _, result), _ in activity.dkim:
        name = d.lower()
        if result == "pass" and not own(activity.domain, name) and _under(
                catalog, memo, "dkim_domain", name, keys):
            tenants.setdefault(name, None)
            names.setdefault(name, None)
    for (d, _, result), _ in activity.spf:
        name = d.lower()
        if (result == "pass" and name and not own(activity.domain, name)
                and (_under(catalog, memo, "return_path_domain", name, keys)
                     or _under(catalog, memo, "dkim_domain", name, keys))):
            names.setdefault(name, None)
    return tuple(tenants), tuple(names)


def _under(catalog: Catalog, memo: Memo, kind: str, name: str,
           keys: set[str | None] | None) -> bool:
    """`name` has labels in front of a vendor's own name of this kind (not the name itself),
    of one of the services `keys` when given."""
    found = memo.get((kind, name))
    if found is None:
        found = memo[kind, name] = tuple((service.key, fact.value) for service, fact
                                         in catalog.match_suffix(kind, name))
    return any(name != value and (keys is None or key in keys) for key, value in found)


def tenants_from_dns(domain: str, targets: Mapping[tuple[str, str], str], catalog: Catalog
                     ) -> dict[str, set[str]]:
    """service -> account identities the domain's own DKIM selector CNAMEs point into."""
    out: dict[str, set[str]] = defaultdict(set)
    for (_, d), target in targets.items():
        if not own(domain, d):
            continue
        services = catalog.match_suffix("dkim_cname_suffix", target)
        if not services:
            continue
        identity = _identity_in_target(target)
        for service, _ in services:
            out[service.key].update([identity] if identity else [])
            out.setdefault(service.key, set())
    return out


def _identity_in_target(target: str) -> str | None:
    target = target.lower().rstrip(".")
    if target.endswith(_MICROSOFT_NEW) and _DOMAINKEY in target:
        prefix = target.split(_DOMAINKEY, 1)[1].split(".", 1)[0]
        return f"{prefix}.onmicrosoft.com"
    if _DOMAINKEY in target:
        return target.split(_DOMAINKEY, 1)[1] or None
    return None


_ALIGNED_DKIM = Account(OWN, None, "signs with the domain's own name (aligned DKIM)")


def mostly_aligned(activity: SourceActivity) -> bool:
    """At least half of its mail passes DMARC by aligned DKIM or aligned SPF."""
    return activity.dmarc_pass * 2 >= activity.messages > 0


#: What one direct source proves of the domain's own account at its service: (service key,
#: the account identities it showed). A domain's accounts are the union of its sources' claims,
#: so a kept source keeps its claim (analysis.remembered) and is not judged again for it.
Claim = tuple[str, tuple[str, ...]]


def account_claim(identification: Identification, catalog: Catalog,
                  pinned: Mapping[str, set[str]], memo: Memo | None = None) -> Claim | None:
    """What a source that sent directly proves of its domain's own account, if anything.
    `pinned`: the identities the domain's own DNS names (`tenants_from_dns`)."""
    a, key = identification.activity, identification.service_key
    if key == UNKNOWN or not mostly_aligned(a):
        return None
    tenants, seen = identities_of(a, catalog, key, memo)
    if a.dkim_aligned_pass * 2 < a.messages and key in pinned and set(tenants) - pinned[key]:
        return None  # SPF alone, through shared servers, by a tenant the DNS does not name
    return key, seen


def accounts_from_claims(domain: str, pinned: Mapping[str, set[str]], claims: Iterable[Claim],
                         memo: Memo | None = None) -> DomainAccounts:
    identities: dict[str, set[str]] = defaultdict(set)
    proven: set[str] = set(pinned)
    for key, named in pinned.items():
        identities[key] |= named
    for key, seen in claims:
        proven.add(key)
        identities[key] |= set(seen)
    return DomainAccounts(domain, frozenset(proven),
                          {k: frozenset(v) for k, v in identities.items()},
                          frozenset(pinned), {} if memo is None else memo)


def account_of(identification: Identification, catalog: Catalog,
               accounts: DomainAccounts | None) -> Account:
    """The account a named source's mail came from, by its own evidence and the domain's."""
    a, key = identification.activity, identification.service_key
    if a.dkim_aligned_pass * 2 >= a.messages > 0:
        return _ALIGNED_DKIM
    ctx = accounts or DomainAccounts(a.domain)
    tenants, names = identities_of(a, catalog, key, ctx.memo)
    tied = [n for n in names if ctx.tied(key, n)]
    foreign = [n for n in tenants if not ctx.tied(key, n)]
    if tied:
        return Account(OWN, tied[0], f"signed by {tied[0]}, {a.domain}'s own account")
    if mostly_aligned(a):
        if foreign and key in ctx.pinned:
            return Account(OTHER, foreign[0], (
                f"{foreign[0]} is not the account {a.domain}'s DKIM records point to; SPF "
                f"passes only because {a.domain}'s SPF record includes the vendor's shared "
                "servers"))
        return Account(OWN, foreign[0] if foreign else None,
                       f"uses {a.domain} as return path and passes SPF (aligned)")
    if foreign:
        return Account(OTHER, foreign[0], f"sent from the account {foreign[0]}, which nothing "
                       f"ties to {a.domain}")
    return Account(UNPROVEN, None, f"nothing ties it to an account of {a.domain}: no aligned "
                   "DKIM or SPF, no identity of the domain's own")
