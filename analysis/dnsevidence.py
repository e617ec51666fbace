"""DNS evidence: reverse DNS, SPF trees, DKIM selectors and DMARC records, looked up concurrently.

The only I/O in `analysis/` goes to the resolvers handed in (`Resolver`: `make_resolver`'s
`Nameservers` or a dnspython resolver's settings), so tests point it at a real server on
loopback and the command line at the user's resolvers (or none: `--offline`).
Answers are cached with their TTL in a `DnsCache` (the store's, across runs); NXDOMAIN and
"no such record" are cached as negative answers, while timeouts and SERVFAIL are never cached:
they raise `DnsTemporaryError` so the caller can say "try again", not "no record".

Reports come from anyone, so the DNS they can cause is bounded (`DnsBudget`): a deadline per
run (checked before every question is sent), a failed question is remembered for a few minutes
(never as an answer) rather than asked again, a resolver that stops answering is probed and then
left alone for the run, and a PTR answer's names are followed only a few at a time. A question
that was not sent raises `DnsNotAsked`, so the caller reports "not looked up", never "no record".
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import gc
import ipaddress
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.zone

if TYPE_CHECKING:
    import dns.rdata
    import dns.rdtypes.ANY.SOA
    import dns.rdtypes.mxbase

from analysis.dnsclient import UdpClient, question_wire
from analysis.dnswire import Reply
from analysis.dnswire import text as record_text
from analysis.records.dmarc import DmarcPolicy, is_dmarc, parse_dmarc
from analysis.spf import is_spf
from analysis.spftree import SpfTree as SpfTree
from analysis.spftree import expand as expand_spf

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: How long an NXDOMAIN / no-data answer is trusted when the server gives no SOA minimum.
NEGATIVE_TTL = 300
#: No answer is trusted longer than a day, whatever TTL a (possibly hostile) server gives.
MAX_TTL = 86400
_MAX_CNAME_HOPS = 8
#: RFC 9989 tree walk: at most this many DMARC queries, and long names are cut to 7 labels.
_WALK_QUERIES = 8
_WALK_LABELS = 7
#: Names of one PTR answer that are forward-confirmed (A/AAAA asked). FCrDNS needs only the
#: name that leads back; a hostile reverse zone lists 20 names per address to multiply the work.
MAX_PTR_NAMES = 3
#: Names of one PTR answer kept at all (RFC 7208 §5.5 looks at the first 10).
KEEP_PTR_NAMES = 10
#: How long a timeout or SERVFAIL is remembered as a failure (never as an answer): RFC 2308 §7.1
#: caps it at five minutes, and RFC 9520 asks resolvers to remember failures this way.
FAILURE_TTL = 300
#: Timeouts in a row after which the resolver is probed (`PROBE`); one that does not answer the
#: probe is not asked again this run. Half the default in-flight window: a whole wave of silence.
BREAKER_TIMEOUTS = 32
#: A question any working recursive resolver answers from its cache, whatever the report holds.
PROBE = (".", "NS")
#: The store's cache keeps "this resolver did not answer" under this kind (no query asks for it),
#: so the next run within FAILURE_TTL probes once instead of sending a wave into the silence.
RESOLVER_DOWN = "RESOLVER-DOWN"
#: Why a question was not sent (`DnsNotAsked.kind`).
NOT_ASKED_BUDGET = "budget"
NOT_ASKED_DOWN = "resolver down"


class DnsTemporaryError(Exception):
    """A timeout or SERVFAIL: the answer is unknown, not negative. Never cached."""


class DnsTimeout(DnsTemporaryError):
    """Every server was asked and none answered in time."""


class DnsNotAsked(DnsTemporaryError):
    """The question was not sent: the run's DNS budget is spent, or the resolver is down."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclasses.dataclass
class DnsBudget:
    """The DNS one run may spend on evidence: sources per domain, and seconds in all.

    The seconds run from the first domain's share; each domain gets an equal share of what is
    left when it starts (`next_share`), so time a quiet domain leaves over goes to the rest and
    one hostile domain cannot starve them. `clock` is injectable: tests count steps.
    """

    max_sources: int = 2000
    seconds: float = 240.0
    clock: Callable[[], float] = time.monotonic
    _deadline: float | None = dataclasses.field(default=None, init=False, repr=False)
    domains_left: int = dataclasses.field(default=0, init=False)

    def plan(self, domains: int) -> None:
        """At least `domains` more domains will ask for a share this run."""
        self.domains_left = max(self.domains_left, domains)

    def run_deadline(self) -> float:
        if self._deadline is None:
            self._deadline = self.clock() + self.seconds
        return self._deadline

    def next_share(self) -> float:
        """The deadline of the next domain: an equal part of the run's time still left."""
        end = self.run_deadline()
        now = self.clock()
        share = max(0.0, end - now) / max(1, self.domains_left)
        self.domains_left = max(0, self.domains_left - 1)
        return now + share


#: (clock, deadline) of the evidence being gathered in this task, if it has one.
_DEADLINE: contextvars.ContextVar[tuple[Callable[[], float], float] | None] = (
    contextvars.ContextVar("dns_deadline", default=None))


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """Records of one type at one name, as text (TXT strings joined), after following CNAMEs."""

    name: str
    rdtype: str
    records: tuple[str, ...]
    canonical: str  # the name the answer was found at (differs when a CNAME was followed)
    nxdomain: bool
    expires: float

    @property
    def negative(self) -> bool:
        return not self.records


class DnsCache(Protocol):
    """Where answers outlive the process; the store implements it, `MemoryCache` in tests."""

    def get_answer(self, name: str, rdtype: str, now: float) -> Answer | None: ...

    def get_answers(self, keys: Collection[tuple[str, str]], now: float
                    ) -> dict[tuple[str, str], Answer]:
        """The fresh answers among these (name, rdtype), in as few reads as the cache can: a
        warm run reads 17,000 for 10,000 sources."""
        ...

    def put_answer(self, answer: Answer) -> None: ...
    def flush(self) -> None:
        """Write what `put_answer` kept back (a remote store writes answers in batches)."""


class MemoryCache:
    """A cache for one process (tests, benchmarks); the store's outlives runs."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, str], Answer] = {}

    def get_answer(self, name: str, rdtype: str, now: float) -> Answer | None:
        answer = self._answers.get((name, rdtype))
        return answer if answer is not None and answer.expires > now else None

    def get_answers(self, keys: Collection[tuple[str, str]], now: float
                    ) -> dict[tuple[str, str], Answer]:
        return {key: answer for key in keys
                if (answer := self._answers.get(key)) is not None and answer.expires > now}

    def put_answer(self, answer: Answer) -> None:
        self._answers[answer.name, answer.rdtype] = answer

    def flush(self) -> None:
        pass  # nothing is kept back


@dataclasses.dataclass(frozen=True, slots=True)
class Reverse:
    """PTR names of an IP, and those whose A/AAAA lead back to it (forward-confirmed)."""

    ip: str
    names: tuple[str, ...]
    confirmed: tuple[str, ...]
    errors: tuple[str, ...] = ()
    #: Why some of its questions were not sent (`DnsNotAsked.kind`), when some were not.
    not_asked: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DkimKey:
    selector: str
    domain: str
    target: str | None  # where `<selector>._domainkey.<domain>` points by CNAME, if it does
    record: str | None  # the TXT found (at the target when a CNAME was followed)
    temporary: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class DmarcRecord:
    """The result of RFC 9989's tree walk for one domain, and what else its names hold."""

    domain: str
    found_at: str | None  # the domain whose `_dmarc` record applies, None when none does
    record: str | None
    tags: dict[str, str]
    queries: int
    errors: tuple[str, ...]
    temporary: bool = False
    #: Every TXT string at `_dmarc.<domain>` as published: DMARC or not, one or several.
    own: tuple[str, ...] = ()
    #: DMARC records published at `<domain>` itself, where receivers never look.
    apex: tuple[str, ...] = ()

    @property
    def parsed(self) -> DmarcPolicy | None:
        return parse_dmarc(self.record) if self.record is not None else None


@dataclasses.dataclass(frozen=True, slots=True)
class ReportDestination:
    """What DNS says about one `rua`/`ruf` host, for the policy published at `policy_domain`.

    None means the lookup failed (timeout, SERVFAIL, not asked): unknown, not negative.
    """

    policy_domain: str
    host: str
    external: bool | None  # other Organizational Domain than the policy's (RFC 9990 §3)
    authorised: bool | None  # `<policy_domain>._report._dmarc.<host>` holds v=DMARC1
    mx: bool | None  # the host has MX records
    exists: bool | None = None  # the host exists at all (False: NXDOMAIN)


def answers_from_zone(text: str, *, expires: float) -> list[Answer]:
    """Answers for every record set of a zone file (all names absolute), for seeding a cache."""
    zone = dns.zone.from_text(text, origin=dns.name.root, relativize=False, check_origin=False)
    answers = []
    for name, node in zone.nodes.items():
        owner = name.to_text(omit_final_dot=True).lower()
        for rdataset in node.rdatasets:
            rdtype = dns.rdatatype.to_text(rdataset.rdtype)
            answers.append(Answer(owner, rdtype, tuple(record_text(r) for r in rdataset), owner,
                                  False, expires))
    # A name with a CNAME answers every type through its target, as a resolver would.
    by_name = {(a.name, a.rdtype): a for a in answers}
    for a in [a for a in answers if a.rdtype == "CNAME"]:
        target = a.records[0].lower()
        for (known, rdtype), found in list(by_name.items()):
            if known == target and rdtype != "CNAME":
                answers.append(Answer(a.name, rdtype, found.records, target, False, expires))
    return answers


class Resolver(Protocol):
    """Where questions go: `make_resolver`'s `Nameservers`, or a dnspython resolver (tests
    point one at their own server). Only these settings are read: the questions themselves go
    through `analysis.dnsclient`."""

    @property
    def nameservers(self) -> Sequence[Any]: ...  # addresses (str() of each)

    @property
    def port(self) -> int: ...

    @property
    def timeout(self) -> float: ...  # seconds to wait for one answer


@dataclasses.dataclass(frozen=True, slots=True)
class Nameservers:
    """Recursive resolvers to ask, and how long to wait for each answer."""

    nameservers: tuple[str, ...]
    port: int = 53
    timeout: float = 2.0


def make_resolver(nameservers: Iterable[str] = (), timeout: float = 2.0) -> Nameservers:
    """`IP` or `IP:PORT` nameservers (the system's when none are given: raises dnspython's
    `NoResolverConfiguration` when it has none). dnspython's resolver is loaded only to read
    the system's configuration: it pulls in DNS-over-HTTPS, a tenth of a second at start-up."""
    servers = list(nameservers)
    if not servers:
        import dns.resolver

        system = dns.resolver.Resolver(configure=True)
        return Nameservers(tuple(str(s) for s in system.nameservers), system.port, timeout)
    hosts, ports = [], set()
    for server in servers:
        host, port = _host_port(server)
        hosts.append(host)
        ports.add(port)
    if len(ports) > 1:
        raise ValueError("all --nameserver entries must use the same port")
    return Nameservers(tuple(hosts), ports.pop(), timeout)


def _host_port(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [::1]:5353
        host, _, port = text[1:].partition("]:")
        return _address(host, text), int(port) if port.isdigit() else 53
    if text.count(":") == 1:  # 127.0.0.1:5353
        host, _, port = text.partition(":")
        if not port.isdigit():
            raise ValueError(f"nameserver {text!r}: port is not a number")
        return _address(host, text), int(port)
    return _address(text, text), 53


def _address(host: str, original: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"nameserver {original!r} is not an IP address (IP or IP:PORT)") from None


_frozen_lock = threading.Lock()
_frozen = 0  # heap_frozen blocks open, in any thread


@contextlib.contextmanager
def heap_frozen() -> Iterator[None]:
    """Keep the cyclic garbage collector off the objects alive on entry while a naming step
    runs. A full collection scans every live object: with a domain's sources and the catalog
    loaded it stalls the event loop for tens of milliseconds, and every DNS answer that
    arrives meanwhile waits (1 % of 17,000 answers took three round trips; issue 12's bench).
    Objects made inside are collected as usual; the others go back to it on the way out."""
    global _frozen
    with _frozen_lock:
        if _frozen == 0:
            gc.freeze()
        _frozen += 1
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen -= 1
            if _frozen == 0:
                gc.unfreeze()


class DnsEvidence:
    """Looks up evidence with at most `concurrency` queries in flight; caches what it may.

    With `resolver=None` only the cache answers and anything it does not hold does not exist:
    the demo runs this way on answers it seeds itself.
    """

    def __init__(self, resolver: Resolver | None, *,
                 cache: DnsCache | None = None,
                 concurrency: int = 64, clock: Callable[[], float] = time.time,
                 budget: DnsBudget | None = None) -> None:
        self.resolver = resolver
        self.cache = cache if cache is not None else MemoryCache()
        #: The run's budget; None until someone sets it (the pipeline, from the settings), and
        #: `run_budget()` falls back to the defaults.
        self.budget = budget
        self.concurrency = concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._clock = clock
        self._inflight: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self._clients: dict[str, UdpClient] = {}
        #: (name, rdtype) -> (until, why): failures remembered this run, never as answers.
        self._failures: dict[tuple[str, str], tuple[float, str]] = {}
        self._timeouts_in_row = 0
        self._down = False  # the resolver did not answer a probe: not asked again this run
        self._marker_read = False
        self._probing: asyncio.Future[bool] | None = None
        self.queries = 0  # sent to the network (cache misses), for tests and benchmarks
        self.probes = 0  # of them, probes of a resolver that stopped answering

    def run_budget(self) -> DnsBudget:
        if self.budget is None:
            self.budget = DnsBudget()
        return self.budget

    @contextlib.contextmanager
    def deadline(self, at: float, clock: Callable[[], float] | None = None) -> Iterator[None]:
        """Questions sent from inside this block (and tasks it starts) stop at `at`."""
        token = _DEADLINE.set((clock or self.run_budget().clock, at))
        try:
            yield
        finally:
            _DEADLINE.reset(token)

    # -- one query ---------------------------------------------------------------------------

    async def lookup(self, name: str, rdtype: str) -> Answer:
        """The records of `rdtype` at `name`; negative answers come back empty, not raised."""
        self._bind_loop()
        key = (name.lower().rstrip("."), rdtype)
        now = self._clock()
        cached = self.cache.get_answer(key[0], rdtype, now)
        if cached is not None:
            return cached
        failed = self._failures.get(key)
        if failed is not None and failed[0] > now:
            raise DnsTemporaryError(f"{key[0]} {rdtype}: {failed[1]} (remembered for "
                                    f"{FAILURE_TTL // 60} minutes, not asked again)")
        pending = self._inflight.get(key)
        if pending is not None:  # the same question is already on the wire: share its answer
            return await asyncio.shield(pending)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer = await self._query(*key)
        except DnsTemporaryError as exc:
            if not isinstance(exc, DnsNotAsked):
                self._failures[key] = (self._clock() + FAILURE_TTL,
                                       "timed out" if isinstance(exc, DnsTimeout) else "failed")
            future.set_exception(exc)
            future.exception()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters get it from shield
            raise
        else:
            future.set_result(answer)
            self.cache.put_answer(answer)
            return answer
        finally:
            del self._inflight[key]

    def _bind_loop(self) -> None:
        # Futures, semaphores and sockets belong to one event loop; a new loop gets new ones.
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._slots = asyncio.Semaphore(self.concurrency)
            self._inflight = {}
            self._clients = {}
            self._probing = None

    async def _query(self, name: str, rdtype: str, depth: int = 0) -> Answer:
        if self.resolver is None:
            return self._nothing(name, rdtype)
        try:
            question_wire(name, rdtype)
        except dns.exception.DNSException:  # a name DNS cannot carry (too long, bad escape)
            return self._nothing(name, rdtype)
        if self._resolver_unsettled():
            await self._resolver_settled()
        self._may_ask(name, rdtype)
        async with self._slots:
            # the wait for a slot may have outlasted the deadline, or the resolver
            if self._resolver_unsettled():
                await self._resolver_settled()
            self._may_ask(name, rdtype)
            self.queries += 1
            try:
                response = await self._exchange(name, rdtype)
            except DnsTimeout:
                self._timeouts_in_row += 1
                timed_out = True
            except DnsTemporaryError:
                self._timeouts_in_row = 0  # SERVFAIL: the resolver answers
                raise
            else:
                self._timeouts_in_row = 0
                timed_out = False
        if timed_out:
            if self._timeouts_in_row >= BREAKER_TIMEOUTS:
                await self._probe()
            raise DnsTimeout(f"{name} {rdtype}: timed out")
        now = self._clock()
        negative = (NEGATIVE_TTL if response.negative_ttl is None
                    else min(response.negative_ttl, MAX_TTL))
        if response.rcode == dns.rcode.NXDOMAIN:
            return Answer(name, rdtype, (), name, True, now + negative)
        if response.broken:  # a CNAME loop or an over-long chain in the answer
            return self._nothing(name, rdtype)
        canonical = response.canonical
        ttl = min(response.ttl, MAX_TTL)
        if response.records is None:
            if canonical != name and depth < _MAX_CNAME_HOPS:
                # A CNAME whose target lives elsewhere: ask for the target directly (not via
                # `lookup`, whose in-flight sharing would wait on itself in a CNAME loop).
                target = await self._query(canonical, rdtype, depth + 1)
                return dataclasses.replace(target, name=name,
                                           expires=min(target.expires, now + ttl))
            return Answer(name, rdtype, (), name, False, now + negative)
        return Answer(name, rdtype, response.records, canonical, False, now + ttl)

    async def _exchange(self, name: str, rdtype: str) -> Reply:
        """One question to the configured servers in turn: UDP, then TCP if truncated.

        The resolver object only holds the configuration (servers, port, timeout): its
        per-question sockets and bookkeeping cost more CPU than the round trip when thousands of
        lookups are in flight (see `analysis.dnsclient`).
        """
        assert self.resolver is not None
        failure = "timed out"
        for server in self.resolver.nameservers:
            try:
                response = await self._client(str(server)).query(name, rdtype,
                                                                 self.resolver.timeout)
            except dns.exception.Timeout:
                continue
            except (OSError, dns.exception.DNSException) as exc:
                failure = f"failed ({type(exc).__name__})"
                continue
            if response.rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return response
            failure = f"{dns.rcode.to_text(dns.rcode.Rcode.make(response.rcode))} from every server"
        if failure == "timed out":
            raise DnsTimeout(f"{name} {rdtype}: timed out")
        raise DnsTemporaryError(f"{name} {rdtype}: {failure}")

    # -- the budget and the circuit breaker --------------------------------------------------

    def _nothing(self, name: str, rdtype: str) -> Answer:
        return Answer(name, rdtype, (), name, True, self._clock() + NEGATIVE_TTL)

    def _resolver_unsettled(self) -> bool:
        """A probe is due (the resolver was silent a few minutes ago) or under way."""
        return not self._marker_read or (self._probing is not None
                                         and not self._probing.done())

    async def _resolver_settled(self) -> None:
        if not self._marker_read:
            self._marker_read = True
            if self.cache.get_answer(self._resolver_key(), RESOLVER_DOWN,
                                     self._clock()) is not None:
                await self._probe()  # it was silent a few minutes ago: one question first
        elif self._probing is not None and not self._probing.done():
            await asyncio.shield(self._probing)

    def _may_ask(self, name: str, rdtype: str) -> None:
        """Raise `DnsNotAsked` when the deadline has passed or the resolver is down."""
        if self._down:
            raise DnsNotAsked(NOT_ASKED_DOWN, f"{name} {rdtype}: not asked (the resolver "
                              "stopped answering; not asked again this run)")
        limit = _DEADLINE.get()
        if limit is not None and limit[0]() >= limit[1]:
            raise DnsNotAsked(NOT_ASKED_BUDGET, f"{name} {rdtype}: not asked (the run's time "
                              "for DNS ran out)")

    async def _probe(self) -> bool:
        """One question every working resolver answers: does it still answer at all?"""
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(self._run_probe())
        return await asyncio.shield(self._probing)

    async def _run_probe(self) -> bool:
        self.queries += 1
        self.probes += 1
        try:
            await self._exchange(*PROBE)
        except DnsTimeout:
            self._down = True
            key = self._resolver_key()
            self.cache.put_answer(Answer(key, RESOLVER_DOWN, ("timed out",), key, False,
                                         self._clock() + FAILURE_TTL))
            return False
        except DnsTemporaryError:
            pass  # SERVFAIL for the root: broken, but answering; the failures say the rest
        self._timeouts_in_row = 0
        return True

    def _resolver_key(self) -> str:
        if self.resolver is None:
            return "resolver:none"
        servers = ",".join(str(s) for s in self.resolver.nameservers)
        return f"resolver:{servers}@{self.resolver.port}"

    def _client(self, server: str) -> UdpClient:
        client = self._clients.get(server)
        if client is None:
            client = self._clients[server] = UdpClient(server, self.resolver.port)  # type: ignore[union-attr]
        return client

    def close(self) -> None:
        """Close the sockets; call it inside the event loop that used them."""
        for client in self._clients.values():
            client.close()
        self._clients = {}

    # -- reverse DNS -------------------------------------------------------------------------

    async def reverse(self, ip: str, prefer: Callable[[str], bool] | None = None) -> Reverse:
        """PTR names of `ip`; a name is confirmed when its A/AAAA records include `ip` again.

        Only `MAX_PTR_NAMES` names are followed, those `prefer` likes first (names that could
        name a service), then in name order; `KEEP_PTR_NAMES` are kept.
        """
        address = parse_ip(ip)
        try:
            ptr = await self.lookup(reverse_name(address), "PTR")
        except DnsNotAsked as exc:
            return Reverse(ip, (), (), (), exc.kind)
        except DnsTemporaryError as exc:
            return Reverse(ip, (), (), (str(exc),))
        names = _ptr_names(ptr, prefer)
        family = "AAAA" if address.version == 6 else "A"
        followed = names[:MAX_PTR_NAMES]
        answers: list[Answer | BaseException]
        if len(followed) == 1:  # the usual case: the question asked here, with no task
            try:
                answers = [await self.lookup(followed[0], family)]
            except Exception as exc:  # as `gather(return_exceptions=True)` would give it
                answers = [exc]
        else:
            answers = await asyncio.gather(*(self.lookup(n, family) for n in followed),
                                           return_exceptions=True)
        return _confirmed(ip, names, followed, answers)

    def cached_reverses(self, ips: Iterable[str], prefer: Callable[[str], bool] | None = None
                        ) -> dict[str, Reverse]:
        """`reverse` from fresh cached answers alone, for each of `ips` whose answers are all
        cached. It needs no task and reads the cache twice (the PTRs, then the names they
        give): a warm run names 10,000 sources without scheduling 17,000 lookups."""
        now = self._clock()
        addresses = {ip: parse_ip(ip) for ip in ips}
        ptr_of = {ip: reverse_name(address) for ip, address in addresses.items()}
        ptrs = self.cache.get_answers([(name, "PTR") for name in ptr_of.values()], now)
        followed: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {}
        for ip, name in ptr_of.items():
            ptr = ptrs.get((name, "PTR"))
            if ptr is not None:
                names = _ptr_names(ptr, prefer)
                family = "AAAA" if addresses[ip].version == 6 else "A"
                followed[ip] = names, names[:MAX_PTR_NAMES], family
        forward = self.cache.get_answers(
            {(name, family) for _, asked, family in followed.values() for name in asked}, now)
        out = {}
        for ip, (names, asked, family) in followed.items():
            answers: list[Answer | BaseException] = [
                a for name in asked if (a := forward.get((name, family))) is not None]
            if len(answers) == len(asked):
                out[ip] = _confirmed(ip, names, asked, answers)
        return out

    # -- SPF ---------------------------------------------------------------------------------

    async def spf_record(self, domain: str) -> tuple[str | None, str | None]:
        """(record, problem): the one SPF record of `domain`, or why there is none usable."""
        answer = await self.lookup(domain, "TXT")
        records = [r for r in answer.records if is_spf(r)]
        if not records:
            return None, None
        if len(records) > 1:
            return None, f"{domain} publishes {len(records)} SPF records (permerror)"
        return records[0], None

    async def spf_tree(self, domain: str, *, full: bool = False) -> SpfTree:
        """Expand `domain`'s SPF record as a receiver evaluates it (`analysis.spftree`).

        `full` adds what only the domain's own record needs (Sender ID and type SPF records,
        its size, its exp= target): the posture check asks for it, service lookups do not.
        """
        return await expand_spf(domain, self.lookup, full=full, temporary=(DnsTemporaryError,))

    # -- DKIM and DMARC ----------------------------------------------------------------------

    async def dkim_key(self, selector: str, domain: str) -> DkimKey:
        """`<selector>._domainkey.<domain>`: its CNAME target (the vendor) and its key record."""
        name = f"{selector}._domainkey.{domain}".lower()
        try:
            answer = await self.lookup(name, "TXT")
            target = answer.canonical if answer.canonical != name else None
            if target is None and not answer.records:
                cname = await self.lookup(name, "CNAME")  # a dangling CNAME still names a vendor
                target = cname.records[0].rstrip(".").lower() if cname.records else None
        except DnsTemporaryError:
            return DkimKey(selector, domain, None, None, temporary=True)
        record = next((r for r in answer.records if "p=" in r or r.startswith("v=DKIM1")), None)
        return DkimKey(selector, domain, target, record)

    async def dmarc(self, domain: str) -> DmarcRecord:
        """The record that applies to `domain` (RFC 9989 §4.10.1), wherever it is published.

        The domain's own `_dmarc` record applies when there is exactly one; otherwise the tree
        walk finds its Organizational Domain's record, or the Public Suffix Domain's (§4.10.2).
        What `_dmarc.<domain>` and `<domain>` hold is kept, so the posture can say what to fix.
        """
        domain = domain.lower().rstrip(".")
        try:
            own = await self.lookup(f"_dmarc.{domain}", "TXT")
            apex = await self.lookup(domain, "TXT")  # asked for SPF anyway: from the cache
        except DnsTemporaryError as exc:
            return DmarcRecord(domain, None, None, {}, 1, (str(exc),), temporary=True)
        at_apex = tuple(r for r in apex.records if is_dmarc(r))
        found = [r for r in own.records if is_dmarc(r)]
        if len(found) == 1:
            return DmarcRecord(domain, domain, found[0], dmarc_tags(found[0]), 1, (),
                               own=own.records, apex=at_apex)
        # Two or more records at the domain's own name are discarded (§4.10 step 2): `own`
        # keeps them for the posture, and the walk goes on to the parents.
        try:
            walked, queries, errors = await self._walk(domain, include_start=False)
        except DnsTemporaryError as exc:
            return DmarcRecord(domain, None, None, {}, 1, (str(exc),), temporary=True,
                               own=own.records, apex=at_apex)
        chosen = _policy_domain(domain, walked)
        if chosen is None:
            return DmarcRecord(domain, None, None, {}, 1 + queries, tuple(errors),
                               own=own.records, apex=at_apex)
        at, record = chosen
        return DmarcRecord(domain, at, record, dmarc_tags(record), 1 + queries, tuple(errors),
                           own=own.records, apex=at_apex)

    async def _walk(self, domain: str, *, include_start: bool
                    ) -> tuple[list[tuple[str, str]], int, list[str]]:
        """RFC 9989 §4.10's DNS tree walk: (name, record) of every single valid record found,
        longest name first, stopping at psd=y or psd=n; the queries sent; discarded names."""
        labels = domain.split(".")
        targets: list[list[str]] = [labels] if include_start else []
        rest = labels[1:] if len(labels) <= _WALK_LABELS + 1 else labels[-_WALK_LABELS:]
        while rest:
            targets.append(rest)
            rest = rest[1:]
        walked: list[tuple[str, str]] = []
        errors: list[str] = []
        queries = 0
        for parts in targets[: _WALK_QUERIES - (0 if include_start else 1)]:
            at = ".".join(parts)
            queries += 1
            answer = await self.lookup(f"_dmarc.{at}", "TXT")
            records = [r for r in answer.records if is_dmarc(r)]
            if len(records) > 1:
                errors.append(f"_dmarc.{at} has {len(records)} DMARC records: receivers discard "
                              "them all")
                continue
            if records:
                walked.append((at, records[0]))
                if parse_dmarc(records[0]).choice("psd") in ("y", "n"):
                    break
        return walked, queries, errors

    async def organizational_domain(self, domain: str) -> str:
        """`domain`'s Organizational Domain by the tree walk of RFC 9989 §4.10.2.

        Raises `DnsTemporaryError` when the walk could not be completed.
        """
        domain = domain.lower().rstrip(".")
        walked, _, _ = await self._walk(domain, include_start=True)
        if not walked:
            return domain
        at, record = walked[-1]
        psd = parse_dmarc(record).choice("psd")
        if psd == "y" and at != domain:
            return ".".join(domain.split(".")[-len(at.split(".")) - 1:])
        return at

    async def report_authorised(self, domain: str, destination: str) -> bool | None:
        """Whether `destination`'s owner accepts reports about `domain` (RFC 9990 §3).

        One question: a wildcard `*._report._dmarc.<destination>` answers it too (DNS
        synthesises it), and only TXT strings that are DMARC records count (§3 step 6).
        """
        try:
            answer = await self.lookup(f"{domain}._report._dmarc.{destination}", "TXT")
        except DnsTemporaryError:
            return None
        return any(is_dmarc(r) for r in answer.records)

    async def report_destination(self, policy_domain: str, host: str) -> ReportDestination:
        """Whether reports for the record at `policy_domain` can reach `host` (RFC 9990 §3)."""
        policy_domain, host = policy_domain.lower().rstrip("."), host.lower().rstrip(".")
        external: bool | None
        try:
            external = (host != policy_domain and await self.organizational_domain(host)
                        != await self.organizational_domain(policy_domain))
        except DnsTemporaryError:
            external = None
        authorised = (await self.report_authorised(policy_domain, host) if external
                      else None)
        try:
            mx = await self.lookup(host, "MX")
            has_mx: bool | None = bool(mx.records)
            exists: bool | None = bool(mx.records) or not mx.nxdomain
        except DnsTemporaryError:
            has_mx = exists = None
        return ReportDestination(policy_domain, host, external, authorised, has_mx, exists)


@functools.lru_cache(maxsize=65_536)  # more than a year-old domain's sources (~12 MB when full)
def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address parsed once, not at each step that needs it (planning, the cache, reverse
    DNS, each network index): parsing, at a few microseconds, cost more than the lookups."""
    return ipaddress.ip_address(text)


def _ptr_names(ptr: Answer, prefer: Callable[[str], bool] | None) -> tuple[str, ...]:
    if not ptr.records:
        return ()
    ranked = sorted({n.rstrip(".").lower() for n in ptr.records},
                    key=lambda n: (prefer is not None and not prefer(n), n))
    return tuple(ranked[:KEEP_PTR_NAMES])


def _confirmed(ip: str, names: tuple[str, ...], followed: tuple[str, ...],
               answers: Iterable[Answer | BaseException]) -> Reverse:
    """The names whose forward answer holds `ip` again (compared as addresses)."""
    if not names:
        return Reverse(ip, (), ())
    address = parse_ip(ip)
    confirmed, errors, not_asked = [], [], None
    for name, answer in zip(followed, answers, strict=True):
        if isinstance(answer, DnsNotAsked):
            not_asked = answer.kind
        elif isinstance(answer, DnsTemporaryError):
            errors.append(str(answer))
        elif isinstance(answer, BaseException):
            raise answer
        elif any(a == ip or parse_ip(a) == address for a in answer.records):
            confirmed.append(name)
    return Reverse(ip, names, tuple(confirmed), tuple(errors), not_asked)


def reverse_name(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """`192.0.2.1` -> `1.2.0.192.in-addr.arpa` (and the nibble form for IPv6)."""
    if address.version == 4:
        return ".".join(reversed(str(address).split("."))) + ".in-addr.arpa"
    return ".".join(reversed(address.exploded.replace(":", ""))) + ".ip6.arpa"


def dmarc_tags(record: str) -> dict[str, str]:
    """`v=DMARC1; p=none; rua=mailto:a@b` -> {"v": "DMARC1", "p": "none", "rua": ...}.

    Names lower-case, the first of duplicated tags; `analysis.records.dmarc` has the rest.
    """
    policy = parse_dmarc(record, lenient=True)
    tags = {"v": "DMARC1"}
    for name, value in policy.tags:
        tags.setdefault(name, value)
    return tags


def _policy_domain(domain: str, walked: list[tuple[str, str]]) -> tuple[str, str] | None:
    """Of the records a policy walk found, the one that applies (RFC 9989 §4.10.1-4.10.2):
    psd=n marks the Organizational Domain; psd=y puts it one label below (its own record if it
    has one, else the PSD's applies); otherwise the record with the fewest labels."""
    if not walked:
        return None
    at, record = walked[-1]
    if parse_dmarc(record).choice("psd") == "y":
        below = ".".join(domain.split(".")[-len(at.split(".")) - 1:])
        return next(((a, r) for a, r in walked if a == below), (at, record))
    return at, record


