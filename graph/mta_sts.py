"""The MTA-STS policy file over HTTPS (RFC 8461 §3.3): the one fetch `dmarcbot posture` makes
outside Microsoft's cloud.

Why here: `analysis/` must stay free of HTTP (the rules for the file are in
`analysis.records.mtasts`, which judges what this module brings back), `function_app/` wires
adapters but never talks HTTP itself (the design's package table), and `graph/` is where every
HTTP client of the app lives, with its TLS contexts and timeouts (the bot's key fetch in
`graph.bot_auth` reaches beyond Graph too). This module moves bytes only:
no rule of RFC 8461 is decided here beyond the ones about fetching (HTTPS, certificate valid for
`mta-sts.<domain>`, no redirects, no caching, a size and time limit).

It connects to an address that DNS gave the policy host through the posture's own resolver
(`DnsEvidence`, handed the answer by `analysis.posture`), not the system's, and validates the
certificate against the host name, as a sending MTA does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import zlib
from collections.abc import Sequence

import httpx

from analysis.records.mtasts import (
    FETCH_TIMEOUT,
    MAX_POLICY_BYTES,
    WELL_KNOWN,
    PolicyResponse,
    policy_url,
)

__all__ = ["HttpsPolicyFetcher"]

#: Addresses tried at most when the first ones refuse the connection.
MAX_ADDRESSES = 4
_USER_AGENT = "dmarcbot-posture (MTA-STS policy check)"


class HttpsPolicyFetcher:
    """`analysis.records.mtasts.PolicyFetcher` over httpx.

    `verify`: the trusted CAs (default: the Mozilla bundle httpx ships, as senders use a set
    "similar to those in widely deployed Web browsers", §3.3); `port` is 443 except in tests.
    """

    def __init__(self, *, verify: ssl.SSLContext | None = None, port: int = 443,
                 timeout: float = FETCH_TIMEOUT, max_bytes: int = MAX_POLICY_BYTES) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"MTA-STS fetch port {port} is not 1..65535")
        if timeout <= 0 or max_bytes <= 0:
            raise ValueError(f"MTA-STS fetch timeout ({timeout}) and size limit ({max_bytes}) "
                             "must be positive")
        self._verify = verify if verify is not None else httpx.create_ssl_context()
        self._port = port
        self._timeout = timeout
        self._max_bytes = max_bytes

    async def fetch(self, host: str, addresses: Sequence[str]) -> PolicyResponse:
        """GET the policy from the first of `addresses` that accepts a connection."""
        url = policy_url(host)
        usable = [a for a in addresses if _is_address(a)][:MAX_ADDRESSES]
        if not usable:
            return PolicyResponse(url, "no-address", f"{host} has no usable address")
        response = PolicyResponse(url, "connect", "no address accepted a connection")
        try:
            async with asyncio.timeout(self._timeout):
                for address in usable:
                    response = await self._fetch_from(host, address, url)
                    if response.failure != "connect":
                        break
        except TimeoutError:
            return PolicyResponse(url, "timeout", f"no complete answer within "
                                  f"{self._timeout:g} s")
        return response

    async def _fetch_from(self, host: str, address: str, url: str) -> PolicyResponse:
        target = httpx.URL(scheme="https", host=address, port=self._port, path=WELL_KNOWN)
        # one client per fetch: a pooled connection to the same address must never carry
        # another host's certificate check; trust_env=False: no proxy stands between
        async with httpx.AsyncClient(verify=self._verify, timeout=self._timeout,
                                     follow_redirects=False, trust_env=False) as client:
            try:
                async with client.stream(
                        "GET", target, extensions={"sni_hostname": host},
                        headers={"Host": host, "Accept": "text/plain",
                                 "Accept-Encoding": "identity", "Cache-Control": "no-cache",
                                 "User-Agent": _USER_AGENT}) as answer:
                    return await self._read(url, answer)
            except httpx.ConnectError as exc:
                return _connect_failure(url, address, exc)
            except httpx.TimeoutException:
                return PolicyResponse(url, "timeout", f"{address} did not answer within "
                                      f"{self._timeout:g} s")
            except httpx.HTTPError as exc:
                return PolicyResponse(url, "protocol", f"the answer from {address} broke "
                                      f"off or is not HTTP ({type(exc).__name__})")

    async def _read(self, url: str, answer: httpx.Response) -> PolicyResponse:
        head = PolicyResponse(url, status=answer.status_code, reason=answer.reason_phrase,
                              content_type=answer.headers.get("content-type"),
                              location=answer.headers.get("location"))
        if answer.status_code != 200:
            return head  # nothing in the body can count (§3.3): not read
        declared = answer.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            return _too_big(url, f"it declares {int(declared):,} bytes", self._max_bytes)
        body = bytearray()
        async for chunk in answer.aiter_raw():
            body += chunk
            if len(body) > self._max_bytes:
                return _too_big(url, "it goes on past the limit",
                                self._max_bytes)
        encoding = answer.headers.get("content-encoding", "identity").strip().lower()
        try:
            data = _decoded(bytes(body), encoding, self._max_bytes)
        except zlib.error:
            return PolicyResponse(url, "protocol", f"the {encoding} body does not decode")
        if data is None:
            return PolicyResponse(url, "protocol", f"the body is sent as {encoding}, which "
                                  "is not read (identity was asked for)")
        if len(data) > self._max_bytes:
            return _too_big(url, "decoded, it goes past the limit", self._max_bytes)
        return PolicyResponse(url, status=head.status, reason=head.reason,
                              content_type=head.content_type, location=head.location,
                              body=data)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _decoded(body: bytes, encoding: str, limit: int) -> bytes | None:
    """The body without its content coding, never more than `limit` + 1 bytes of it."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return None
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, by its header
    return inflater.decompress(body, limit + 1)


def _too_big(url: str, why: str, limit: int) -> PolicyResponse:
    return PolicyResponse(url, "size", f"the policy is too large ({why}; limit "
                          f"{limit:,} bytes)")


def _connect_failure(url: str, address: str, exc: httpx.ConnectError) -> PolicyResponse:
    """Name what failed: the certificate, the TLS handshake, or the connection itself."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = (cause.verify_message or str(cause)).rstrip(".")
            return PolicyResponse(url, "certificate", f"the certificate is not accepted ({why})")
        if isinstance(cause, ssl.SSLError):
            return PolicyResponse(url, "tls", f"the TLS handshake with {address} failed "
                                  f"({cause.reason or type(cause).__name__})")
        cause = cause.__cause__ or cause.__context__
    return PolicyResponse(url, "connect", f"{address} refused or dropped the connection")
