"""Name the service behind each sending source, and say what to do about it.

Evidence, strongest first (DESIGN.md, "Identification"): a DKIM `d=` that passed; the CNAME
target of the DKIM selector; the SPF (return-path) domain that passed; the source IP inside a
service's published SPF networks; forward-confirmed reverse DNS. Each piece found in the catalog
adds weight to its service; low-confidence catalog facts weigh less. The DNS part is gathered
first (`gather_evidence`, concurrent, within the run's `DnsBudget`); naming and verdicts are pure
functions of it. A source whose reverse DNS was not looked up says so (`Identification.dns`) and
is judged on the report's own evidence and the catalog's SPF networks, never on a guess.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import json
import re
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from analysis.catalog import Catalog, Fact, Service
from analysis.dnsevidence import (
    NOT_ASKED_DOWN,
    DnsBudget,
    DnsEvidence,
    Network,
    Reverse,
    parse_ip,
)
from analysis.rollup import RollupKey, SourceRollup

UNKNOWN = "unknown"
VERDICTS = ("compliant", "needs-dkim", "needs-spf", "forwarded", "impostor", "unknown")

#: Weight of one piece of evidence, by kind; low-confidence facts count `LOW_FACTOR` as much.
WEIGHTS = {
    "dkim_domain": 0.9,
    "dkim_cname_suffix": 0.85,
    "return_path_domain": 0.75,
    "spf_network": 0.6,
    "rdns_suffix": 0.5,
}
LOW_FACTOR = 0.6
#: Below this confidence a source is not named (it stays "unknown").
MIN_CONFIDENCE = 0.45
#: Share of a service's messages that must pass with aligned DKIM to call it compliant.
COMPLIANT_SHARE = 0.9
_FORWARD_REASONS = ("forwarded", "trusted_forwarder", "mailing_list")
#: Categories whose infrastructure relays other senders' mail (forwarding, lists).
_INDIRECT = frozenset({"mailbox", "forwarder", "list-server"})

#: What became of a source's reverse DNS (`Identification.dns`, `senders --json` "dns").
DNS_LOOKED_UP = "looked up"
DNS_FAILED = "failed for now"  # a timeout or SERVFAIL: try again later
DNS_BUDGET = "not looked up (budget)"  # beyond the cap, a /64 already asked, or out of time
DNS_DOWN = "not looked up (resolver not answering)"
DNS_OFFLINE = "not looked up (offline)"


@dataclasses.dataclass(frozen=True, slots=True)
class SourceActivity:
    """What the reports say about one source IP sending as one policy domain."""

    domain: str
    ip: str
    messages: int
    dmarc_pass: int
    dkim_aligned_pass: int
    spf_aligned_pass: int
    #: (d=, selector, result) -> messages
    dkim: tuple[tuple[tuple[str, str, str], int], ...]
    #: (SPF domain, scope, result) -> messages
    spf: tuple[tuple[tuple[str, str, str], int], ...]
    #: reason ("type" or "type:comment") -> messages
    reasons: tuple[tuple[str, int], ...]
    header_from: tuple[str, ...]
    first_day: str = ""  # YYYY-MM-DD, UTC
    last_day: str = ""


def activities_from_rollups(rows: Iterable[tuple[RollupKey, int]]) -> list[SourceActivity]:
    """Fold daily rollup rows into one activity per (policy domain, source IP)."""
    acc: dict[tuple[str, str], _Fold] = {}
    reasons_of: dict[str, tuple[str, ...]] = {}  # each reasons JSON decoded once
    for key, messages in rows:
        f = acc.get((key.policy_domain, key.source_ip))
        if f is None:
            f = acc[key.policy_domain, key.source_ip] = _Fold(key.day)
        f.add(key, messages, reasons_of)
    return [f.activity(domain, ip) for (domain, ip), f in sorted(acc.items())]


def activities_from_sources(rows: Iterable[SourceRollup]) -> list[SourceActivity]:
    """The activities `activities_from_rollups` gives for the daily rows these source rollups
    fold, read from a domain's distinct patterns instead of its days (issue 14)."""
    acc: dict[tuple[str, str], _Fold] = {}
    reasons_of: dict[str, tuple[str, ...]] = {}
    for row in rows:
        key = row.key
        f = acc.get((key.policy_domain, key.source_ip))
        if f is None:
            f = acc[key.policy_domain, key.source_ip] = _Fold(key.day)
        f.add(key, row.messages, reasons_of)
        if row.last_day > f.last:
            f.last = row.last_day
    return [f.activity(domain, ip) for (domain, ip), f in sorted(acc.items())]


class _Fold:
    """One source's rows summed; plain dicts, as Counters cost more than the sums."""

    __slots__ = (
        "dkim",
        "dkim_pass",
        "dmarc_pass",
        "first",
        "header_from",
        "last",
        "messages",
        "reasons",
        "spf",
        "spf_pass",
    )

    def __init__(self, day: str) -> None:
        self.messages = self.dmarc_pass = self.dkim_pass = self.spf_pass = 0
        self.first = self.last = day
        self.dkim: dict[tuple[str, str, str], int] = {}
        self.spf: dict[tuple[str, str, str], int] = {}
        self.reasons: dict[str, int] = {}
        self.header_from: dict[str, int] = {}

    def add(self, key: RollupKey, messages: int, reasons_of: dict[str, tuple[str, ...]]
            ) -> None:
        if key.day < self.first:
            self.first = key.day
        elif key.day > self.last:
            self.last = key.day
        self.messages += messages
        if key.dkim_aligned or key.spf_aligned:
            self.dmarc_pass += messages
        if key.dkim_aligned:
            self.dkim_pass += messages
        if key.spf_aligned:
            self.spf_pass += messages
        counts = self.dkim
        for result in key.dkim:
            counts[result] = counts.get(result, 0) + messages
        counts = self.spf
        for result in key.spf:
            counts[result] = counts.get(result, 0) + messages
        if key.reasons:
            reasons = reasons_of.get(key.reasons)
            if reasons is None:
                reasons = reasons_of[key.reasons] = tuple(json.loads(key.reasons))
            for reason in reasons:
                self.reasons[reason] = self.reasons.get(reason, 0) + messages
        self.header_from[key.header_from] = self.header_from.get(key.header_from, 0) + messages

    def activity(self, domain: str, ip: str) -> SourceActivity:
        return SourceActivity(
            domain=domain, ip=ip, messages=self.messages, dmarc_pass=self.dmarc_pass,
            dkim_aligned_pass=self.dkim_pass, spf_aligned_pass=self.spf_pass,
            dkim=tuple(sorted(self.dkim.items())), spf=tuple(sorted(self.spf.items())),
            reasons=tuple(sorted(self.reasons.items())),
            # most first; among equals by name, so any order of rows gives the same activity
            header_from=tuple(sorted(self.header_from,
                                     key=lambda h: (-self.header_from[h], h))),
            first_day=self.first, last_day=self.last)


# -- evidence -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class EvidenceBundle:
    """The DNS facts gathered for a set of activities. Empty when working offline."""

    reverse: dict[str, Reverse]  # ip -> reverse DNS
    dkim_targets: dict[tuple[str, str], str]  # (selector, d=) -> CNAME target
    service_networks: dict[str, tuple[Network, ...]]  # service key -> its SPF networks
    temporary: tuple[str, ...] = ()  # lookups that failed for now (timeouts, SERVFAIL)
    #: ip -> (status, why) for sources whose reverse DNS was not (wholly) looked up this run
    not_looked_up: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    is_offline: bool = False
    #: policy domain (or its own return-path domain) -> the networks of its SPF record, only for
    #: records whose every term could be expanded (no macros, ptr or exists; no errors)
    domain_networks: dict[str, tuple[Network, ...]] = dataclasses.field(default_factory=dict)

    @classmethod
    def offline(cls) -> EvidenceBundle:
        return cls({}, {}, {}, is_offline=True)

    def dns_status(self, ip: str) -> tuple[str, str]:
        """(status, why) of one source's reverse DNS, as `Identification.dns` shows it."""
        if self.is_offline:
            return DNS_OFFLINE, "--offline: only the evidence inside the reports"
        skipped = self.not_looked_up.get(ip)
        if skipped is not None:
            return skipped
        found = self.reverse.get(ip)
        if found is not None and found.errors:
            return DNS_FAILED, "; ".join(found.errors[:2])
        return DNS_LOOKED_UP, ""


class Signed(NamedTuple):
    """What one source's passing authentication says of its domain's own names, with its
    messages: what the domain's own DNS facts are gathered for (its return paths' SPF records,
    its DKIM selectors' targets). A kept source keeps it (analysis.remembered), so those facts
    are gathered for the whole domain without decoding every source named before."""

    domain: str
    dkim: tuple[tuple[str, str, int], ...]  # (d=, selector, messages) that passed
    spf: tuple[tuple[str, int], ...]  # (own return-path name, messages) that passed


def signed(activity: SourceActivity) -> Signed:
    a = activity
    return Signed(
        a.domain,
        tuple((d, sel, n) for (d, sel, result), n in a.dkim
              if sel and result == "pass" and own(a.domain, d.lower())),
        tuple((name, n) for (d, _, result), n in a.spf
              if result == "pass" and (name := d.lower()) != a.domain and own(a.domain, name)))


@dataclasses.dataclass(frozen=True, slots=True)
class LookupPlan:
    """Which sources of one domain get their reverse DNS looked up this run, and which not."""

    ips: tuple[str, ...]  # most mail first
    skipped: dict[str, str]  # ip -> why not
    selectors: tuple[tuple[str, str], ...]  # (selector, d=), most mail first


def plan_lookups(activities: Sequence[SourceActivity], max_sources: int,
                 context: Sequence[Signed] = ()) -> LookupPlan:
    """The sources that matter: by messages, at most `max_sources`, an IPv6 /64 counting once.

    A /64 is one subnet (RFC 4291), so one operator's: its addresses share the reverse zone's
    delegation. Each /64 (and each IPv4 address) first gets one lookup, its busiest address, in
    order of its whole volume; only room left under the cap goes to further addresses of a /64,
    busiest first, so a flood from one /64 cannot crowd out other networks. A PTR proves only
    the address it confirms: an address not looked up is not given its neighbour's name. Only
    the domain's own passing DKIM selectors are asked (anyone can point their own at a vendor),
    at most `max_sources` of them, of `context` (sources named before, not looked up now) too.
    """
    units: dict[str, list[SourceActivity]] = defaultdict(list)
    volumes: Counter[str] = Counter()
    for a in activities:
        try:
            address = parse_ip(a.ip)
        except ValueError:
            continue
        unit = (str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
                if address.version == 6 else a.ip)
        units[unit].append(a)
        volumes[unit] += a.messages
    ranked = sorted(units.items(), key=lambda kv: (-volumes[kv[0]], kv[0]))
    ips: list[str] = []
    skipped: dict[str, str] = {}
    neighbours: list[tuple[SourceActivity, str, str]] = []
    for rank, (unit, members) in enumerate(ranked):
        if len(members) > 1:
            members.sort(key=lambda a: (-a.messages, a.ip))
        if rank >= max_sources:
            for a in members:
                skipped[a.ip] = f"beyond the {max_sources:,} sources with the most mail"
            continue
        ips.append(members[0].ip)
        neighbours.extend((a, unit, members[0].ip) for a in members[1:])
    neighbours.sort(key=lambda x: (-x[0].messages, x[0].ip))
    room = max(0, max_sources - len(ips))
    ips.extend(a.ip for a, _, _ in neighbours[:room])
    for a, unit, first in neighbours[room:]:
        skipped[a.ip] = (f"the {max_sources:,}-source cap was reached; an IPv6 /64 counts once "
                         f"({unit}: {first} was looked up)")
    volume: Counter[tuple[str, str]] = Counter()
    for signs in (*map(signed, activities), *context):
        for d, sel, n in signs.dkim:
            volume[sel, d] += n
    selectors = tuple(k for k, _ in sorted(volume.items(), key=lambda kv: (-kv[1], kv[0]))
                      [:max_sources])
    return LookupPlan(tuple(ips), skipped, selectors)


T = TypeVar("T")
R = TypeVar("R")


async def each(items: Sequence[T], work: Callable[[T], Awaitable[R]], width: int) -> list[R]:
    """`work` on every item, `width` at a time, the results in order: with twice the DNS
    concurrency the slots stay full, and 10,000 sources need no task each (creating them held
    the first question back by a third of a second)."""
    pending = iter(enumerate(items))
    done: dict[int, R] = {}

    async def worker() -> None:
        for i, item in pending:
            done[i] = await work(item)

    await asyncio.gather(*(worker() for _ in range(min(width, len(items)))))
    return [done[i] for i in range(len(items))]


async def gather_evidence(activities: Sequence[SourceActivity], dns: DnsEvidence,
                          catalog: Catalog, context: Sequence[Signed] = ()
                          ) -> EvidenceBundle:
    """Look up, concurrently, what `identify` can use for these activities, within the run's
    DNS budget: the catalog's SPF trees once, then domain by domain each its share of time.

    `context`: the domain's other sources, named before and kept (analysis.remembered). Their
    reverse DNS is not looked up, but the facts of the whole domain (its own SPF record, its
    DKIM selectors) are gathered for them too, so the bundle is the one naming all would give.
    """
    budget: DnsBudget = dns.run_budget()
    by_domain: dict[str, list[SourceActivity]] = defaultdict(list)
    for a in activities:
        by_domain[a.domain].append(a)
    kept: dict[str, list[Signed]] = defaultdict(list)
    for signs in context:
        kept[signs.domain].append(signs)
        by_domain.setdefault(signs.domain, [])
    budget.plan(len(by_domain))
    includes = sorted({(s.key, f.value) for s in catalog.services
                       for f in s.facts("spf_include")})
    own_names = own_spf_names([*map(signed, activities), *context])
    with dns.deadline(budget.run_deadline()):
        spf_results, own_results = await asyncio.gather(
            asyncio.gather(*(dns.spf_tree(include) for _, include in includes)),
            asyncio.gather(*(dns.spf_tree(name) for name in own_names)))
    temporary: list[str] = []
    networks: dict[str, list[Network]] = defaultdict(list)
    for (key, _), tree in zip(includes, spf_results, strict=True):
        networks[key].extend(tree.networks)
        if tree.temporary:
            temporary.append(f"SPF of {tree.domain}")
    domain_networks: dict[str, tuple[Network, ...]] = {}
    for name, tree in zip(own_names, own_results, strict=True):
        if tree.temporary:
            temporary.append(f"SPF of {name}")
        elif tree.record is not None and not tree.errors and not _OPAQUE_SPF.search(tree.record):
            domain_networks[name] = tuple(tree.networks)
    def could_name(host: str) -> bool:
        return bool(catalog.match_suffix("rdns_suffix", host))

    targets: dict[tuple[str, str], str] = {}
    reverse: dict[str, Reverse] = {}
    skipped: dict[str, tuple[str, str]] = {}
    for domain in sorted(by_domain):
        plan = plan_lookups(by_domain[domain], budget.max_sources, kept[domain])
        for ip, why in plan.skipped.items():
            skipped.setdefault(ip, (DNS_BUDGET, why))
        # what the cache already answers needs no task
        reverse.update(dns.cached_reverses([ip for ip in plan.ips if ip not in reverse],
                                           could_name))
        to_ask = [ip for ip in plan.ips if ip not in reverse]
        with dns.deadline(budget.next_share()):
            reverse_results, dkim_results = await asyncio.gather(
                each(to_ask, lambda ip: dns.reverse(ip, could_name), 2 * dns.concurrency),
                asyncio.gather(*(dns.dkim_key(sel, d) for sel, d in plan.selectors
                                 if (sel, d) not in targets)),
            )
        for selector, found in zip([k for k in plan.selectors if k not in targets],
                                   dkim_results, strict=True):
            if found.target:
                targets[selector] = found.target
            if found.temporary:
                temporary.append(f"DKIM {selector[0]}._domainkey.{selector[1]}")
        for r in reverse_results:
            reverse[r.ip] = r
            if r.not_asked is not None:
                skipped[r.ip] = ((DNS_DOWN, "the resolver stopped answering; not asked again "
                                  "this run") if r.not_asked == NOT_ASKED_DOWN else
                                 (DNS_BUDGET, "the run's time for DNS ran out"))
            elif r.errors:
                temporary.append(f"reverse DNS of {r.ip}")
    for ip in [ip for ip in skipped if ip in reverse and reverse[ip].not_asked is None]:
        del skipped[ip]  # looked up for another domain of the same run after all
    return EvidenceBundle(reverse, targets, {k: tuple(v) for k, v in networks.items()},
                          tuple(temporary), skipped, domain_networks=domain_networks)


#: SPF terms whose matches are no plain list of networks (or that pass every address: `+all`):
#: such a record cannot say "not here".
_OPAQUE_SPF = re.compile(
    r"(?i)(?:^|\s)(?:[-+~?]?(?:exists:|ptr(?:[:/\s]|$))|\+?all(?:\s|$))|%\{")
#: Own return-path domains per policy domain whose SPF is expanded besides the domain's own.
MAX_OWN_SPF = 4


def own_spf_names(sources: Sequence[Signed]) -> list[str]:
    """The policy domains, and for each its busiest own return-path domains that passed SPF:
    the records a report's "SPF pass" for the domain can be checked against."""
    names: dict[str, None] = {}
    volume: dict[str, Counter[str]] = defaultdict(Counter)
    for signs in sources:
        names.setdefault(signs.domain, None)
        for name, n in signs.spf:
            volume[signs.domain][name] += n
    for counter in volume.values():  # ties by name: any order of sources gives the same names
        for name, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_OWN_SPF]:
            names.setdefault(name, None)
    return list(names)


class NetworkIndex:
    """Which services' SPF networks hold an IP, in a few dict lookups per address."""

    def __init__(self, service_networks: dict[str, tuple[Network, ...]]) -> None:
        # per IP version: {(prefix length, network bits): services}, and (length, shift) pairs
        self._by_prefix: dict[int, dict[tuple[int, int], set[str]]] = {4: {}, 6: {}}
        for key, networks in service_networks.items():
            for net in networks:
                bits = net.max_prefixlen - net.prefixlen
                self._by_prefix[net.version].setdefault(
                    (net.prefixlen, int(net.network_address) >> bits), set()).add(key)
        self._shifts = {version: sorted({(length, width - length) for length, _ in table})
                        for version, width, table in ((4, 32, self._by_prefix[4]),
                                                      (6, 128, self._by_prefix[6]))}

    def services(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> set[str]:
        address = parse_ip(ip) if isinstance(ip, str) else ip
        value = int(address)
        table = self._by_prefix[address.version]
        found: set[str] = set()
        for length, shift in self._shifts[address.version]:
            hit = table.get((length, value >> shift))
            if hit:
                found |= hit
        return found


@dataclasses.dataclass(frozen=True, slots=True)
class Identification:
    """The service behind one source, how sure we are, and why."""

    activity: SourceActivity
    service_key: str  # UNKNOWN when nothing names it
    platform_key: str | None  # the infrastructure it sent through, when that is another service
    confidence: float
    evidence: tuple[str, ...]
    ptr: str | None  # the forward-confirmed reverse name (else the first PTR), if any
    ptr_confirmed: bool = False
    dns: str = DNS_LOOKED_UP  # what became of its reverse DNS (DNS_* above)
    dns_note: str = ""  # why, when it was not looked up or failed
    #: The best guess when the evidence is too weak to name it (below MIN_CONFIDENCE), else None.
    candidate: str | None = None
    #: The service whose signature (the domain's own DKIM) survived on mail someone else relayed.
    forwarded_from: str | None = None
    #: An own domain the report says passed SPF from this IP, though its SPF record does not
    #: hold the IP (checked in DNS): the claim is not taken as proof of anyone.
    spf_disputed: str | None = None
    #: An unnamed source's IP is inside the policy domain's own SPF record (a server the domain
    #: authorised); not asked for named sources.
    in_domain_spf: bool = False
    #: The organisation the domain delegated its DKIM key to (selector CNAME) when it is also
    #: the one whose return path passed SPF: a service sending directly, not a forwarder.
    delegated: str | None = None


class Identifier:
    """Names sources from an evidence bundle; build once per run, call per source."""

    def __init__(self, catalog: Catalog, bundle: EvidenceBundle) -> None:
        self.catalog = catalog
        self.bundle = bundle
        self.networks = NetworkIndex(bundle.service_networks)
        self._own = {name: NetworkIndex({name: networks})
                     for name, networks in bundle.domain_networks.items()}

    def identify(self, activity: SourceActivity) -> Identification:
        found = _Scores()
        for (d, selector, result), _ in activity.dkim:
            if result != "pass":
                continue
            for service, fact in self.catalog.match_suffix("dkim_domain", d):
                found.add(service, fact, "dkim_domain", f"DKIM d={d} passed")
            target = self.bundle.dkim_targets.get((selector, d))
            # Only the domain's own selectors count: anyone can point their own selector at a
            # vendor's name to borrow its identity.
            if target and own(activity.domain, d):
                for service, fact in self.catalog.match_suffix("dkim_cname_suffix", target):
                    found.add(service, fact, "dkim_cname_suffix",
                              f"DKIM selector {selector}._domainkey.{d} points to {target}")
        delegated = self._delegated(activity)
        if delegated is not None:
            found.extra.append(f"{activity.domain}'s DKIM key is hosted by {delegated}, whose "
                               "return path passed SPF: a service sending directly")
        for (d, _, result), _ in activity.spf:
            if result == "pass" and d:
                for service, fact in self.catalog.match_suffix("return_path_domain", d):
                    found.add(service, fact, "return_path_domain",
                              f"SPF passed for return-path domain {d}")
        address = parse_ip(activity.ip)  # parsed once for every index below
        holders = self.networks.services(address)
        for key in sorted(holders):
            service = self.catalog.get(key)
            includes = service.facts("spf_include")
            include = max(includes, key=lambda f: f.confidence == "high") if includes else None
            found.add(service, include, "spf_network",
                      f"{activity.ip} is in {service.name}'s SPF networks")
        reverse = self.bundle.reverse.get(activity.ip)
        ptr = None
        if reverse is not None:
            ptr = (reverse.confirmed or reverse.names or (None,))[0]
            for name in reverse.confirmed:
                for service, fact in self.catalog.match_suffix("rdns_suffix", name):
                    found.add(service, fact, "rdns_suffix",
                              f"reverse DNS {name} (forward-confirmed)")
        # only an address outside every service's networks can make an SPF pass a false claim
        disputed = None if holders else self._disputed_spf(activity, address)
        if disputed is not None:
            found.drop_unbacked(
                f"the report says SPF passed for {disputed} from {activity.ip}, but {disputed}'s "
                "SPF record does not hold that address: the claim proves nobody")
        status, note = self.bundle.dns_status(activity.ip)
        decided = found.decide(self.catalog, activity, ptr,
                               infrastructure_known=not self.bundle.is_offline, known={
                                   "ptr_confirmed": reverse is not None
                                   and bool(reverse.confirmed),
                                   "dns": status, "dns_note": note, "spf_disputed": disputed,
                                   "delegated": delegated})
        own_spf = self._own.get(activity.domain)
        if (decided.service_key == UNKNOWN and own_spf is not None
                and own_spf.services(address)):  # asked of unnamed sources only: they need it
            decided = dataclasses.replace(decided, in_domain_spf=True, evidence=(
                *decided.evidence, f"{activity.ip} is listed in {activity.domain}'s own SPF "
                "record"))
        return decided

    def _delegated(self, activity: SourceActivity) -> str | None:
        """The organisation hosting the domain's passing DKIM key, when its return path passed
        SPF for the same mail: the key and the envelope are one sender's."""
        envelopes = [_organisation(d) for (d, _, result), _ in activity.spf
                     if result == "pass" and d and not own(activity.domain, d.lower())]
        if not envelopes:
            return None  # the usual case: no one else's envelope passed
        hosts = {_organisation(target) for (d, selector, result), _ in activity.dkim
                 if result == "pass" and own(activity.domain, d.lower())
                 and (target := self.bundle.dkim_targets.get((selector, d))) is not None}
        return next((e for e in envelopes if e in hosts), None)

    def _disputed_spf(self, activity: SourceActivity,
                      address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        """An own domain the report says passed SPF from an address its SPF record lacks."""
        if not self._own:
            return None
        for (d, _, result), _ in activity.spf:
            if result != "pass":
                continue
            name = d.lower()
            index = self._own.get(name)
            if index is not None and own(activity.domain, name) and not index.services(address):
                return name
        return None


class _Scores:
    """Evidence per service: the strongest weight per kind, combined as independent signals."""

    def __init__(self) -> None:
        self.weights: dict[str, dict[str, float]] = defaultdict(dict)
        self.notes: dict[str, list[str]] = defaultdict(list)
        self.extra: list[str] = []  # notes about the source itself, kept whoever is named

    def drop_unbacked(self, why: str) -> None:
        """Forget the services no infrastructure evidence backs (their servers, their PTR)."""
        for key in [k for k, kinds in self.weights.items() if not kinds.keys() & _INFRASTRUCTURE]:
            del self.weights[key]
            self.extra.extend(f"{n} (not counted)" for n in self.notes.pop(key, []))
        self.extra.append(why)

    def add(self, service: Service, fact: Fact | None, kind: str, note: str) -> None:
        weight = WEIGHTS[kind] * (LOW_FACTOR if fact and fact.confidence == "low" else 1.0)
        kinds = self.weights[service.key]
        kinds[kind] = max(kinds.get(kind, 0.0), weight)
        if note not in self.notes[service.key]:
            self.notes[service.key].append(note + ("" if weight >= WEIGHTS[kind] else
                                                   " (low-confidence fact)"))

    def score(self, key: str) -> float:
        miss = 1.0
        for weight in self.weights[key].values():
            miss *= 1.0 - weight
        return 1.0 - miss

    def decide(self, catalog: Catalog, activity: SourceActivity, ptr: str | None, *,
               infrastructure_known: bool = True, known: dict[str, Any] | None = None,
               ) -> Identification:
        """The service named, with `known` (what the caller found out about the source) as
        the rest of its fields."""
        extra = tuple(self.extra)
        fields = known or {}
        if not self.weights:
            return Identification(activity, UNKNOWN, None, 0.0, extra, ptr, **fields)
        forwarded = looks_forwarded(activity)
        ranked = sorted(self.weights, key=lambda k: (
            -self.score(k),
            # on equal evidence (shared infrastructure), a forwarder explains forwarded mail
            not (forwarded and catalog.get(k).forwarder),
            catalog.get(k).forwarder,
            k))
        best = ranked[0]
        if forwarded and catalog.get(best).category == "mailbox":
            # Shared infrastructure: a list or forwarding service with evidence of its own
            # explains forwarded mail better than the mailbox product next to it.
            relays = [k for k in ranked if catalog.get(k).forwarder
                      and self.weights[k].keys() - {"spf_network"}]
            best = relays[0] if relays else best
        confidence = round(self.score(best), 3)
        if confidence < MIN_CONFIDENCE:
            notes = tuple(n for k in ranked for n in self.notes[k]) + extra
            return Identification(activity, UNKNOWN, None, confidence, notes, ptr,
                                  candidate=best, **fields)
        platform = catalog.get(best).platform
        content = {"dkim_domain", "dkim_cname_suffix", "return_path_domain"}
        infrastructure = [k for k in ranked[1:] if self.weights[k].keys() & _INFRASTRUCTURE]
        if (infrastructure_known and platform is None and not infrastructure
                and self.weights[best].keys() <= _SIGNATURES and relayed(activity)):
            # The domain's own signature names who wrote it; the address is none of that
            # service's and SPF fails: a forwarder or alias passed it on (DKIM survives that).
            name = catalog.get(best).name
            notes = (*self.notes[best], f"{name} signed it, but {activity.ip} is none of "
                     f"{name}'s servers and SPF does not align: someone else passed it on")
            return Identification(activity, UNKNOWN, None, 0.0, notes + extra, ptr,
                                  forwarded_from=best, **fields)
        if platform is None and self.weights[best].keys() <= content and infrastructure:
            platform = infrastructure[0]
            if (catalog.get(platform).category in _INDIRECT
                    and activity.spf_aligned_pass == 0):
                # A mailbox provider relayed a message another service signed: forwarding.
                forwarders = [k for k in infrastructure if catalog.get(k).forwarder]
                via = forwarders[0] if forwarders else platform
                notes = (*self.notes[via], f"the original sender, {catalog.get(best).name}, "
                         "signed it (its DKIM signature survived forwarding)")
                return Identification(activity, via, None, round(self.score(via), 3), notes,
                                      ptr, **fields)
        notes = tuple(self.notes[best]) + tuple(
            n for k in ([platform] if platform else []) for n in self.notes[k]) + extra
        return Identification(activity, best, platform, confidence, notes, ptr, **fields)


#: Evidence kinds that say whose servers sent it, and those that say who signed it.
_INFRASTRUCTURE = frozenset({"spf_network", "rdns_suffix"})
_SIGNATURES = frozenset({"dkim_domain", "dkim_cname_suffix"})


@functools.lru_cache(maxsize=4096)
def _organisation(name: str) -> str:
    """The last two labels: close enough to tell one operator's names from another's here."""
    return ".".join(name.lower().rstrip(".").split(".")[-2:])


def relayed(activity: SourceActivity) -> bool:
    """Most of its mail keeps the domain's aligned DKIM while SPF never aligns."""
    return activity.dkim_aligned_pass * 2 >= activity.messages > 0 and not activity.spf_aligned_pass


def receiver_says_forwarded(activity: SourceActivity) -> bool:
    """Most of its mail carries a receiver's forwarding reason, or an ARC override."""
    forwarded = sum(n for reason, n in activity.reasons
                    if reason.startswith(_FORWARD_REASONS) or _arc_override(reason))
    return forwarded * 2 >= activity.messages > 0


def _arc_override(reason: str) -> bool:
    # Google writes "local_policy:arc=pass"; Fastmail "Policy overriden using trusted ARC chain".
    text = reason.lower()
    return text.startswith("local_policy") and ("arc=pass" in text or "trusted arc" in text)


def own(domain: str, name: str) -> bool:
    """`name` is the policy domain, one of its subdomains, or a parent of it (a subdomain's
    organisation signs as its parent; a name of one label is a TLD and never anyone's own)."""
    return (name == domain or name.endswith("." + domain)
            or ("." in name and domain.endswith("." + name)))


def signed_by_owner(activity: SourceActivity) -> bool:
    """The message carries the domain's own DKIM signature (valid or broken in transit)."""
    return any(own(activity.domain, d) for (d, _, _), _ in activity.dkim)


def foreign_envelope(activity: SourceActivity) -> bool:
    """SPF passed only for someone else's envelope domain: another party handed it on."""
    passing = [d for (d, _, result), _ in activity.spf if result == "pass" and d]
    return (activity.spf_aligned_pass == 0 and bool(passing)
            and not any(own(activity.domain, d) for d in passing))


def looks_forwarded(activity: SourceActivity) -> bool:
    """The receiver said so, or the classic shapes: the domain's own signature arrives with
    someone else's envelope, or its aligned DKIM survives while SPF fails."""
    if receiver_says_forwarded(activity):
        return True
    if signed_by_owner(activity) and foreign_envelope(activity):
        return True
    return dkim_survives(activity)


def dkim_survives(activity: SourceActivity) -> bool:
    """The classic forward: the domain's aligned DKIM passes for most of it, SPF never aligns
    and passes for none of the domain's own names."""
    return (activity.dkim_aligned_pass * 2 >= activity.messages
            and activity.spf_aligned_pass == 0
            and not any(own(activity.domain, d)
                        for (d, _, result), _ in activity.spf if result == "pass"))
