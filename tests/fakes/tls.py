"""A throw-away certificate authority for the loopback fakes.

msal only talks https, so the Entra fake needs a server certificate the client trusts; the
certificate credential needs an RSA key pair (trustme's default EC keys fail RS256/PS256).
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes


@dataclass(frozen=True)
class ClientCertificate:
    """An RSA key and certificate as msal's certificate credential wants them."""

    private_key_pem: str
    cert_pem: str
    sha1_thumbprint: str  # hex, upper case, as Entra shows it
    sha256_thumbprint: str  # hex, upper case

    def __iter__(self) -> Iterator[str]:
        """Unpacks as (private_key_pem, cert_pem, sha1, sha256)."""
        return iter((self.private_key_pem, self.cert_pem, self.sha1_thumbprint,
                     self.sha256_thumbprint))


class TestCA:
    """CA plus an RSA server certificate for 127.0.0.1 and localhost.

    ``ca_pem`` is a file path, because requests/msal want a path for ``verify``.
    Call ``close()`` (or use as a context manager) to remove the temp directory.
    """

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self._ca = trustme.CA()
        self._server = self._ca.issue_cert("127.0.0.1", "localhost",
                                           key_type=trustme.KeyType.RSA)
        self._dir = Path(tempfile.mkdtemp(prefix="dmarcbot-ca-"))
        self.ca_pem: Path = self._dir / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_pem))

    def server_context(self) -> ssl.SSLContext:
        """Server-side context presenting the 127.0.0.1/localhost certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server.configure_cert(ctx)
        return ctx

    def server_context_for(self, *names: str) -> ssl.SSLContext:
        """Server-side context presenting a certificate for `names` (host names a test's DNS
        points at loopback)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ca.issue_cert(*names, key_type=trustme.KeyType.RSA).configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """Client-side context trusting only this CA (for httpx ``verify=``)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_pem))
        return ctx

    def issue_client_certificate(self, common_name: str = "dmarcbot-test-app") -> ClientCertificate:
        """An RSA key + certificate for an app registration's certificate credential."""
        leaf = self._ca.issue_cert(f"{common_name}.invalid", common_name=common_name,
                                   key_type=trustme.KeyType.RSA)
        cert_pem = leaf.cert_chain_pems[0].bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        return ClientCertificate(
            private_key_pem=leaf.private_key_pem.bytes().decode(),
            cert_pem=cert_pem.decode(),
            sha1_thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),
            sha256_thumbprint=cert.fingerprint(hashes.SHA256()).hex().upper(),
        )

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> TestCA:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
