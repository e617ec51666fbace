"""checkdmarc (the reference open-source checker) as a differential oracle, over real DNS.

Records are served by the project's real DNS server (knotd, tests/dnslab) on loopback; checkdmarc
is pointed at it and at nothing else, and its answer is reduced to a `Verdict` that tests compare
with dmarcbot's findings.

API::

    from tests.checkdmarc_oracle import OracleDNS, Verdict, check, txt

    zone = {                                       # owner name -> rdata lines ("TYPE rdata")
        "example.test": [txt("v=spf1 mx -all"), "MX 10 mx.example.test."],
        "mx.example.test": ["A 192.0.2.1"],
        "_dmarc.example.test": [txt("v=DMARC1; p=reject")],
    }
    with OracleDNS(zone) as server:               # its own knotd serving only these records
        spf = check("spf", "example.test", server)       # -> Verdict
        dmarc = check("dmarc", "example.test", server)
        spf.valid, spf.error, spf.warnings, spf.raw
        server.resolver()                         # dnspython async resolver for dmarcbot's side

    check("spf", "toomany.spf.test", dns_server)  # or the session `dns_server` fixture's zones

- `check(kind, domain, server)`: kind is "spf" (checkdmarc.spf.check_spf), "dmarc"
  (checkdmarc.dmarc.check_dmarc) or "tlsrpt" (checkdmarc.smtp_tls_reporting
  .check_smtp_tls_reporting); `server` is anything with `.host` and `.port` (`OracleDNS`,
  `tests.dnslab.server.KnotServer`). Extra keyword arguments go to the checkdmarc function.
- `Verdict`: `valid` (checkdmarc's own flag), `error` (its error text, or None), `warnings` (its
  warning texts, whitespace-normalised, in order), `raw` (its whole result dict), and
  `has_error(text)` / `has_warning(text)` (case-insensitive substring tests).
- `txt(*strings)`: one TXT rdata line; each argument is one character-string (str is UTF-8
  encoded, bytes are taken as they are: undecodable TXT is possible), escaped for the zone file
  and split at 255 bytes the way a DNS operator's tooling would.
- `OracleDNS(zone, *, include_lab_zones=False)`: a context manager; with `include_lab_zones` the
  server also carries every tests/dnslab/zones/*.zone file.

How checkdmarc is pointed at the server: its `nameservers=` argument takes
`dns.nameserver.Nameserver` objects as well as address strings (checkdmarc.utils
._nameservers_to_resolver_input passes them through), and `Do53Nameserver(host, port)` carries the
port, which a plain address string cannot. checkdmarc keeps a process-wide answer cache
(`checkdmarc.utils.DNS_CACHE`) and a list of recently failed nameservers; both are emptied before
each check, because two servers in one test run may serve the same name differently. While a check
runs, an audit hook refuses any socket connection or datagram to an address other than loopback,
so a code path that ignores `nameservers=` fails the test instead of reaching the network.
"""

from __future__ import annotations

import ipaddress
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import dns.asyncresolver
import dns.name
import dns.nameserver
import dns.resolver

from tests.dnslab.server import ZONES_DIR, KnotServer

ORACLE_TIMEOUT = 2.0  # seconds per lookup; knot on loopback answers in well under a millisecond
_MAX_STRING = 255  # RFC 1035 §3.3.14: one TXT character-string is at most 255 bytes


@dataclass(frozen=True)
class Verdict:
    """checkdmarc's answer for one record, reduced to what a comparison needs."""

    valid: bool
    error: str | None
    warnings: tuple[str, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    def has_error(self, text: str) -> bool:
        return self.error is not None and text.lower() in self.error.lower()

    def has_warning(self, text: str) -> bool:
        return any(text.lower() in warning.lower() for warning in self.warnings)


# -- zone data --------------------------------------------------------------------------------


def _escape(data: bytes) -> str:
    out = []
    for byte in data:
        if byte in (0x22, 0x5C):  # " and \
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


def txt(*strings: str | bytes) -> str:
    """One TXT rdata line; an argument over 255 bytes becomes several character-strings."""
    if not strings:
        raise ValueError("txt() needs at least one character-string")
    parts: list[str] = []
    for value in strings:
        data = value.encode() if isinstance(value, str) else value
        chunks = [data[i : i + _MAX_STRING] for i in range(0, len(data), _MAX_STRING)] or [b""]
        parts.extend(f'"{_escape(chunk)}"' for chunk in chunks)
    return "TXT " + " ".join(parts)


def zone_text(zone: Mapping[str, Sequence[str]]) -> str:
    """Zone-file lines for `zone` (owner names made absolute, each rdata line as given)."""
    lines: list[str] = []
    for owner, rdatas in zone.items():
        name = dns.name.from_text(owner).to_text()  # raises on a name DNS cannot carry
        if not rdatas:
            raise ValueError(f"zone name {owner!r} has no records (an empty list serves nothing)")
        lines.extend(f"{name} 300 {rdata}" for rdata in rdatas)
    return "\n".join(lines) + "\n"


class OracleDNS:
    """A knotd of its own on loopback serving `zone` (and, on request, the lab zones)."""

    def __init__(
        self, zone: Mapping[str, Sequence[str]], *, include_lab_zones: bool = False
    ) -> None:
        self.zone = dict(zone)
        self.include_lab_zones = include_lab_zones
        self._dir: Path | None = None
        self._server: KnotServer | None = None

    @property
    def host(self) -> str:
        return self._running().host

    @property
    def port(self) -> int:
        return self._running().port

    def _running(self) -> KnotServer:
        if self._server is None:
            raise RuntimeError("OracleDNS is not running: use it as a context manager")
        return self._server

    def resolver(self, lifetime: float = ORACLE_TIMEOUT) -> dns.asyncresolver.Resolver:
        return self._running().resolver(lifetime)

    def sync_resolver(self, lifetime: float = ORACLE_TIMEOUT) -> dns.resolver.Resolver:
        return self._running().sync_resolver(lifetime)

    def __enter__(self) -> OracleDNS:
        self._dir = Path(tempfile.mkdtemp(prefix="dmarcbot-oracle-"))
        (self._dir / "oracle.zone").write_text(zone_text(self.zone))
        if self.include_lab_zones:
            for path in ZONES_DIR.glob("*.zone"):
                shutil.copy(path, self._dir / path.name)
        self._server = KnotServer(self._dir, ipv6=False)
        try:
            self._server.start()
        except Exception:
            self._server = None
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# -- no network but loopback ------------------------------------------------------------------

_guard = threading.local()
_hook_installed = False
_hook_lock = threading.Lock()


class NetworkEscapeError(RuntimeError):
    """checkdmarc tried to reach an address other than loopback during an oracle check."""


def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        address = address[0]
    if not isinstance(address, str):
        return True  # AF_UNIX paths and the like: not the network
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return address == "localhost"


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not getattr(_guard, "active", False):
        return
    if event in ("socket.connect", "socket.sendto") and not _is_loopback(args[1]):
        raise NetworkEscapeError(f"oracle check tried {event} to {args[1]!r}; only loopback")
    if event == "socket.getaddrinfo" and not _is_loopback(args[0]):
        raise NetworkEscapeError(f"oracle check tried to resolve {args[0]!r} outside the lab")


@contextmanager
def _loopback_only() -> Iterator[None]:
    global _hook_installed
    with _hook_lock:
        if not _hook_installed:  # audit hooks cannot be removed: install once, switch per check
            sys.addaudithook(_audit)
            _hook_installed = True
    _guard.active = True
    try:
        yield
    finally:
        _guard.active = False


# -- the checks -------------------------------------------------------------------------------


def _checker(kind: str) -> Callable[..., Mapping[str, Any]]:
    if kind == "spf":
        from checkdmarc.spf import check_spf  # type: ignore[import-untyped]

        return check_spf
    if kind == "dmarc":
        from checkdmarc.dmarc import check_dmarc  # type: ignore[import-untyped]

        return check_dmarc
    if kind == "tlsrpt":
        from checkdmarc.smtp_tls_reporting import check_smtp_tls_reporting  # type: ignore[import-untyped]

        return check_smtp_tls_reporting
    raise ValueError(f"unknown oracle check {kind!r}: use 'spf', 'dmarc' or 'tlsrpt'")


def _forget() -> None:
    import checkdmarc.utils  # type: ignore[import-untyped]

    checkdmarc.utils.DNS_CACHE.clear()
    checkdmarc.utils._NAMESERVER_FAILURES.clear()


def _text(value: object) -> str:
    return " ".join(str(value).split())


def check(kind: str, domain: str, server: Any, **kwargs: Any) -> Verdict:
    """checkdmarc's verdict on `domain`'s `kind` record, asking only `server` (host, port)."""
    checker = _checker(kind)
    nameserver = dns.nameserver.Do53Nameserver(server.host, server.port)
    _forget()
    with _loopback_only():
        raw = checker(
            domain,
            nameservers=[nameserver],
            timeout=ORACLE_TIMEOUT,
            retries=0,
            **kwargs,
        )
    error = raw.get("error")
    warnings = raw.get("warnings") or []
    return Verdict(
        valid=bool(raw.get("valid")),
        error=None if error is None else _text(error),
        warnings=tuple(_text(warning) for warning in warnings),
        raw=raw,
    )
