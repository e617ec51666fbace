"""A domain's SPF record expanded the way a receiver evaluates it (RFC 7208 §4.6), counted exactly.

The count is the worst case a receiver can meet: a connection that no mechanism matches, so every
mechanism up to the first `all` is evaluated, includes and redirects recursively. The 10-lookup
limit counts include, a, mx, ptr, exists and redirect (§4.6.4); an `mx` with more than 10 hosts is
a permerror of its own; void lookups (an empty answer or NXDOMAIN) are counted per address family,
because a receiver asks A for an IPv4 connection and AAAA for an IPv6 one, for the `a` name and
for every MX host alike. `exists` always asks A (§5.7). Mechanisms with macros depend on the
message: they cost their lookup and are not expanded.

DNS comes only through the `lookup` coroutine handed in (`DnsEvidence.lookup`). The walk takes
one term at a time, as a receiver does (the counts depend on the order), but asks the questions of
a record's terms as soon as it reads the record: a tree then costs a round trip per level, not one
per lookup.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Protocol

from analysis.spf import (
    MAX_LOOKUPS,
    MAX_MX_HOSTS,
    MAX_VOID_LOOKUPS,
    SpfProblem,
    Term,
    is_sender_id,
    is_spf,
    network,
    parse_spf,
    repair_syntax,
    resembles_spf,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Hard stop for one expansion, far above the RFC's 10, so a hostile tree cannot run away.
EXPANSION_BUDGET = 40

LOOKUP_LIMIT, VOID_LIMIT, MX_LIMIT = "spf.lookup-limit", "spf.void-limit", "spf.mx-limit"
LOOP, TARGET_MISSING, MULTIPLE = "spf.loop", "spf.target-missing", "spf.multiple-records"
SENDER_ID, LOOKALIKE, UNDECODABLE = "spf.sender-id", "spf.lookalike", "spf.undecodable-txt"
TYPE_SPF, SIZE = "spf.type-spf", "spf.size"
EXP_MISSING, EXP_MULTIPLE = "spf.exp-missing", "spf.exp-multiple"
EXISTS_ALL, VOID = "spf.exists-matches-all", "spf.void"


class _Answer(Protocol):
    @property
    def records(self) -> tuple[str, ...]: ...
    @property
    def nxdomain(self) -> bool: ...


Lookup = Callable[[str, str], Awaitable[_Answer]]


@dataclasses.dataclass(frozen=True, slots=True)
class SpfTermCost:
    """One term of the domain's own record and what evaluating it costs and authorises."""

    term: Term
    lookups: int  # counted lookups, its include tree included
    void4: int
    void6: int
    networks: tuple[Network, ...] | None  # what it matches; None when that depends on the message
    dead: bool = False  # matches nothing for any sender: a name with no records, a missing target


@dataclasses.dataclass(frozen=True, slots=True)
class SpfTree:
    """A domain's SPF record with its include tree expanded to networks, counted per RFC 7208."""

    domain: str
    record: str | None
    networks: tuple[Network, ...]
    includes: tuple[str, ...]  # every include/redirect target reached, in order
    lookups: int
    void_lookups: int  # the larger of the IPv4 and IPv6 counts
    all_qualifier: str | None
    errors: tuple[str, ...]  # permerror-class problems: loops, >10 lookups, two records, ...
    temporary: bool  # some part could not be resolved now (timeout, SERVFAIL)
    problems: tuple[SpfProblem, ...] = ()  # every problem found, with code, level and section
    terms: tuple[SpfTermCost, ...] = ()  # the domain's own record, term by term
    void4: int = 0
    void6: int = 0
    #: Records measured besides the published one, each with its terms' costs: the records of a
    #: domain that publishes several (to merge them), or the syntax-repaired record.
    alternatives: tuple[tuple[str, tuple[SpfTermCost, ...]], ...] = ()
    replaced_records: tuple[str, ...] = ()  # TXT/SPF records the advice may remove (Sender ID...)

    def contains(self, ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        return any(address in net for net in self.networks)


@dataclasses.dataclass(frozen=True, slots=True)
class SpfRecords:
    """What a TXT question at one name says about SPF."""

    spf: tuple[str, ...]  # the records a receiver selects (§4.5)
    void: bool  # no TXT at all (NXDOMAIN or an empty answer): a void lookup
    sender_id: tuple[str, ...] = ()
    lookalike: tuple[str, ...] = ()
    undecodable: int = 0


async def spf_records(lookup: Lookup, domain: str) -> SpfRecords:
    answer = await lookup(domain, "TXT")
    texts = answer.records
    return SpfRecords(
        spf=tuple(t for t in texts if is_spf(t)),
        void=not texts,
        sender_id=tuple(t for t in texts if is_sender_id(t)),
        lookalike=tuple(t for t in texts if resembles_spf(t)),
        undecodable=sum(1 for t in texts if "\ufffd" in t and not is_spf(t)),
    )


class SpfWalk:
    """State of one expansion: counts, includes, networks, problems."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._ahead: dict[tuple[str, str], asyncio.Future[_Answer]] = {}  # asked, not yet used
        self.networks: list[Network] = []
        self.includes: list[str] = []
        self.lookups = 0
        self.void4 = 0
        self.void6 = 0
        self.problems: list[SpfProblem] = []
        self.temporary: list[str] = []
        self.stopped = False
        self.opaque = 0  # terms met whose matches are not a plain list of networks

    def problem(self, code: str, level: str, section: str, text: str, domain: str, *,
                permerror: bool = False) -> None:
        self.problems.append(SpfProblem(code, level, section, text, permerror, domain))

    async def lookup(self, name: str, rdtype: str) -> _Answer:
        ahead = self._ahead.pop((name, rdtype), None)
        return await (ahead if ahead is not None else self._lookup(name, rdtype))

    def _read_ahead(self, domain: str, terms: list[Term], chain: tuple[str, ...]) -> None:
        """Ask now what `terms` will ask, as far as the expansion budget lets them go."""
        room = EXPANSION_BUDGET - self.lookups
        for term in terms:
            if term.name in ("ip4", "ip6", "all"):
                continue
            room -= 1
            if room < 0:
                break
            if term.name == "ptr" or term.has_macro:
                continue
            name = term.target or domain
            if term.name in ("include", "redirect"):
                questions = [] if name in chain else [(name, "TXT")]
            elif term.name == "a":
                questions = [(name, "A"), (name, "AAAA")]
            else:
                questions = [(name, "MX" if term.name == "mx" else "A")]
            for question in questions:
                if question not in self._ahead:
                    future = asyncio.ensure_future(self._lookup(*question))
                    future.add_done_callback(_retrieved)  # a failure unused is no error
                    self._ahead[question] = future

    # -- one record ---------------------------------------------------------------------------

    async def record(self, domain: str, text: str, chain: tuple[str, ...], *, top: bool,
                     full: bool = False) -> list[SpfTermCost]:
        """Evaluate one record; for the domain's own record, the cost of each term."""
        spf = parse_spf(text)
        self.problems.extend(dataclasses.replace(p, domain=domain) for p in spf.problems)
        costs: list[SpfTermCost] = []
        if spf.errors and not top:
            self.opaque += 1
            return costs  # a receiver stops at the syntax error: this include is a permerror
        redirect = next((t for t in spf.terms if t.name == "redirect"), None)
        if spf.redirect is None:
            redirect = None
        self._read_ahead(domain, [*spf.evaluated, *([redirect] if redirect else [])], chain)
        for term in spf.evaluated:
            if self.stopped:
                break
            if not top and (term.qualifier == "+") == (term.name == "all"):
                self.opaque += 1  # an include passes only on a "+" match: "-ip4:" or "+all" blur it
            costs.append(await self._measured(domain, term, chain))
        if redirect is not None and not self.stopped:
            costs.append(await self._measured(domain, redirect, chain))
        exp = next((t for t in spf.terms if t.name == "exp"), None)
        if full and exp is not None and not exp.has_macro:
            await self._explanation(domain, exp.target)
        return costs

    async def _measured(self, domain: str, term: Term, chain: tuple[str, ...]) -> SpfTermCost:
        before = (self.lookups, self.void4, self.void6, len(self.networks))
        known, dead = await self._term(domain, term, chain)
        if not known and term.name != "all":
            self.opaque += 1
        networks = tuple(self.networks[before[3]:]) if known else None
        return SpfTermCost(term, self.lookups - before[0], self.void4 - before[1],
                           self.void6 - before[2], networks, dead)

    async def _term(self, domain: str, term: Term, chain: tuple[str, ...]) -> tuple[bool, bool]:
        """Evaluate one term: (what it matches is known, it can never match)."""
        if term.name in ("ip4", "ip6"):
            self.networks.append(network(term))
            return True, False
        if term.name == "all":
            return False, False
        self.lookups += 1
        if self.lookups > EXPANSION_BUDGET:
            self.stopped = True
            self.problem(LOOKUP_LIMIT, "error", "RFC 7208 §4.6.4", f"expansion stopped after "
                         f"{EXPANSION_BUDGET} lookups", domain, permerror=True)
            return False, False
        if term.name == "ptr" or term.has_macro:
            return False, False  # depends on the connecting address or the message
        if term.name in ("include", "redirect"):
            return await self.follow(domain, term.target, chain, term.name)
        if term.name == "a":
            name = term.target or domain
            found = await self._addresses(name, term.cidr4, term.cidr6)
            if not found:
                self.problem(VOID, "warning", "RFC 7208 §4.6.4", f"'{term.text}': {name} has no "
                             "address records, so it matches nothing and every receiver counts a "
                             "void lookup", domain)
            return True, not found
        if term.name == "mx":
            return await self._mx(domain, term)
        return await self._exists(domain, term)

    async def follow(self, domain: str, target: str, chain: tuple[str, ...],
                     how: str) -> tuple[bool, bool]:
        """include: or redirect=: the target's record evaluated in turn (§5.2, §6.1)."""
        if target in chain:
            self.problem(LOOP, "error", "RFC 7208 §4.6.4", f"{how} loop: "
                         f"{' -> '.join((*chain, target))}", domain, permerror=True)
            return False, True
        self.includes.append(target)
        found = await spf_records(self.lookup, target)
        if found.void:
            self._void(both=True)
        if not found.spf:
            section = "RFC 7208 §5.2" if how == "include" else "RFC 7208 §6.1"
            self.problem(TARGET_MISSING, "error", section, f"{how}:{target} has no SPF record "
                         "(permerror)", domain, permerror=True)
            return True, True
        if len(found.spf) > 1:
            self.problem(MULTIPLE, "error", "RFC 7208 §4.5", f"{target} publishes "
                         f"{len(found.spf)} SPF records (permerror)", target, permerror=True)
            return False, True
        opaque = self.opaque
        await self.record(target, found.spf[0], (*chain, target), top=False)
        return self.opaque == opaque, False

    async def _addresses(self, name: str, cidr4: int | None, cidr6: int | None) -> bool:
        """A and AAAA of `name` as networks; each empty family is a void lookup for it."""
        found = False
        for family, cidr in (("A", 32 if cidr4 is None else cidr4),
                             ("AAAA", 128 if cidr6 is None else cidr6)):
            answer = await self.lookup(name, family)
            for address in answer.records:
                found = True
                self.networks.append(ipaddress.ip_network(f"{address}/{cidr}", strict=False))
            if not answer.records:
                if family == "A":
                    self.void4 += 1
                else:
                    self.void6 += 1
                if answer.nxdomain:  # no AAAA either: the name does not exist
                    self.void6 += 1
                    break
        return found

    async def _mx(self, domain: str, term: Term) -> tuple[bool, bool]:
        name = term.target or domain
        answer = await self.lookup(name, "MX")
        hosts = [r.split()[-1].rstrip(".").lower() for r in answer.records]
        hosts = [h for h in hosts if h]  # a null MX ("0 .") names no host
        if not answer.records:
            self._void(both=True)
            self.problem(VOID, "warning", "RFC 7208 §4.6.4", f"'{term.text}': {name} has no MX "
                         "records, so it matches nothing and every receiver counts a void lookup",
                         domain)
            return True, True
        if len(hosts) > MAX_MX_HOSTS:
            self.problem(MX_LIMIT, "error", "RFC 7208 §4.6.4", f"mx:{name} has {len(hosts)} MX "
                         f"hosts (more than {MAX_MX_HOSTS}): the mx mechanism is a permerror",
                         domain, permerror=True)
            return False, False
        found = False
        for host in hosts:
            if await self._addresses(host, term.cidr4, term.cidr6):
                found = True
            else:
                self.problem(VOID, "warning", "RFC 7208 §4.6.4", f"'{term.text}': the MX host "
                             f"{host} has no address records: every receiver counts a void "
                             "lookup for it", domain)
        return True, not found

    async def _exists(self, domain: str, term: Term) -> tuple[bool, bool]:
        answer = await self.lookup(term.target, "A")  # §5.7: A, whatever the connection's family
        if not answer.records:
            self._void(both=True)
            self.problem(VOID, "warning", "RFC 7208 §4.6.4", f"'{term.text}': {term.target} has "
                         "no A record, so it matches nothing and every receiver counts a void "
                         "lookup", domain)
            return False, True
        if term.qualifier in "+?":
            level = "error" if term.qualifier == "+" else "warning"
            self.problem(EXISTS_ALL, level, "RFC 7208 §5.7", f"'{term.text}' names a fixed "
                         f"domain that exists, so it matches every sender (like {term.qualifier}"
                         "all)", domain)
        return False, False

    def _void(self, *, both: bool) -> None:
        self.void4 += 1
        if both:
            self.void6 += 1

    async def _explanation(self, domain: str, target: str) -> None:
        """exp=: one TXT record, or receivers fall back to their default text (§6.2)."""
        answer = await self.lookup(target, "TXT")
        if not answer.records:
            self.problem(EXP_MISSING, "warning", "RFC 7208 §6.2", f"exp={target} has no TXT "
                         "record: receivers ignore the exp modifier", domain)
        elif len(answer.records) > 1:
            self.problem(EXP_MULTIPLE, "warning", "RFC 7208 §6.2", f"exp={target} has "
                         f"{len(answer.records)} TXT records (one is needed): receivers ignore "
                         "the exp modifier", domain)

    # -- the limits --------------------------------------------------------------------------

    def limits(self, domain: str) -> None:
        if self.lookups > MAX_LOOKUPS:
            self.problem(LOOKUP_LIMIT, "error", "RFC 7208 §4.6.4", f"{self.lookups} DNS lookups "
                         f"(limit {MAX_LOOKUPS}): permerror", domain, permerror=True)
        four, six = self.void4 > MAX_VOID_LOOKUPS, self.void6 > MAX_VOID_LOOKUPS
        if four and six:
            self.problem(VOID_LIMIT, "error", "RFC 7208 §4.6.4", f"{max(self.void4, self.void6)}"
                         f" void lookups (limit {MAX_VOID_LOOKUPS}): permerror", domain,
                         permerror=True)
        elif four or six:
            family, count = ("IPv4", self.void4) if four else ("IPv6", self.void6)
            self.problem(VOID_LIMIT, "error" if four else "warning", "RFC 7208 §4.6.4",
                         f"{count} void lookups for mail sent over {family} (limit "
                         f"{MAX_VOID_LOOKUPS}): receivers that count them return permerror for "
                         f"it (names with no {'A' if four else 'AAAA'} record count)", domain,
                         permerror=four)


async def expand(domain: str, lookup: Lookup, *, full: bool = False,
                 temporary: tuple[type[BaseException], ...] = ()) -> SpfTree:
    """Expand `domain`'s SPF record. `full`: also the checks only the domain's own record needs
    (Sender ID and type SPF records, size, the exp target), which cost extra questions."""
    walk = SpfWalk(lookup)
    record: str | None = None
    costs: list[SpfTermCost] = []
    alternatives: list[tuple[str, tuple[SpfTermCost, ...]]] = []
    replaced: list[str] = []
    try:
        found = await spf_records(lookup, domain)
        if full:
            replaced.extend(_record_notes(walk, domain, found))
            replaced.extend(await _legacy_type(walk, lookup, domain))
        if len(found.spf) > 1:
            walk.problem(MULTIPLE, "error", "RFC 7208 §4.5", f"{domain} publishes "
                         f"{len(found.spf)} SPF records (permerror)", domain, permerror=True)
            if full:
                alternatives = await _alternatives(lookup, domain, found.spf)
        elif found.spf:
            record = found.spf[0]
            if full:
                _size(walk, domain, record)
            costs = await walk.record(domain, record, (domain,), top=True, full=full)
            candidate = repair_syntax(record) if full else None
            if candidate is not None:  # what the repaired record would cost, for the advice
                alternatives = await _alternatives(lookup, domain, (candidate,))
    except temporary as exc:
        walk.temporary.append(str(exc))
    walk.limits(domain)
    problems = tuple(dict.fromkeys(walk.problems))
    errors = tuple(p.text for p in problems if p.permerror) + tuple(walk.temporary)
    qualifier = parse_spf(record).all_qualifier if record else None
    return SpfTree(domain, record, tuple(walk.networks), tuple(walk.includes), walk.lookups,
                   max(walk.void4, walk.void6), qualifier, errors, bool(walk.temporary),
                   problems, tuple(costs), walk.void4, walk.void6, tuple(alternatives),
                   tuple(replaced))


def _retrieved(future: asyncio.Future[_Answer]) -> None:
    if not future.cancelled():
        future.exception()


def _record_notes(walk: SpfWalk, domain: str, found: SpfRecords) -> list[str]:
    for text in found.sender_id:
        walk.problem(SENDER_ID, "warning", "RFC 6686", f"a Sender ID record ({text[:40]}…) is "
                     "published: Sender ID is historic and no receiver uses it; remove it",
                     domain)
    for text in found.lookalike:
        walk.problem(LOOKALIKE, "warning", "RFC 7208 §4.5", f"'{text[:40]}' looks like SPF but "
                     "does not start with exactly 'v=spf1 ': receivers discard it", domain)
    if found.undecodable:
        walk.problem(UNDECODABLE, "warning", "RFC 7208 §3", f"{found.undecodable} TXT "
                     "record(s) hold bytes that are not text: receivers cannot read them, and "
                     "one of them may have been meant as SPF", domain)
    return list(found.sender_id)


async def _legacy_type(walk: SpfWalk, lookup: Lookup, domain: str) -> list[str]:
    """DNS type SPF (99): discontinued; receivers read only TXT (§3.1)."""
    answer = await lookup(domain, "SPF")
    if answer.records:
        walk.problem(TYPE_SPF, "warning", "RFC 7208 §3.1", f"{domain} also publishes "
                     f"{len(answer.records)} record(s) of DNS type SPF (99), which receivers no "
                     "longer read: remove them, the TXT record is the one that counts", domain)
    return [f"SPF {r}" for r in answer.records]


def _size(walk: SpfWalk, domain: str, record: str) -> None:
    size = len(record.encode())
    if size > 512:
        walk.problem(SIZE, "warning", "RFC 7208 §3.4", f"the SPF record is {size} bytes (over "
                     "512): the answer may not fit a UDP packet and some receivers fail it",
                     domain)
    elif size > 450:
        walk.problem(SIZE, "info", "RFC 7208 §3.4", f"the SPF record is {size} bytes: keep "
                     "answers under about 450 bytes so the DNS message fits in 512", domain)


async def _alternatives(lookup: Lookup, domain: str, records: tuple[str, ...]
                        ) -> list[tuple[str, tuple[SpfTermCost, ...]]]:
    """Each of several records on its own, so the advice can merge them within the limits."""
    out = []
    for text in records:
        walk = SpfWalk(lookup)
        costs = await walk.record(domain, text, (domain,), top=True)
        out.append((text, tuple(costs)))
    return out
