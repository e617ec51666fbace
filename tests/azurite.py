"""Session fixtures for Azurite, Azure Storage's emulator, on loopback and in memory.

Loaded from ``tests/conftest.py`` with ``pytest_plugins``. Azurite is installed by
``bash tests/install-test-deps.sh``; a missing Azurite fails the tests that need it (never a
skip). Telemetry is always off.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import queue
import re
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from store.tables import TableStore

AZURITE = Path(__file__).resolve().parent / "azurite" / "node_modules" / ".bin" / "azurite"
#: Azurite's published development account and key (the same on every machine; not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at "
                        r"(https?)://127\.0\.0\.1:(\d+)")


@dataclasses.dataclass(frozen=True, slots=True)
class Azurite:
    scheme: str
    blob_port: int
    queue_port: int
    table_port: int

    def endpoint(self, port: int) -> str:
        return f"{self.scheme}://127.0.0.1:{port}/{ACCOUNT}"

    @property
    def table_endpoint(self) -> str:
        return self.endpoint(self.table_port)

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol={self.scheme};AccountName={ACCOUNT};AccountKey={KEY};"
                f"BlobEndpoint={self.endpoint(self.blob_port)};"
                f"QueueEndpoint={self.endpoint(self.queue_port)};"
                f"TableEndpoint={self.table_endpoint};")


@contextlib.contextmanager
def running_azurite(extra: Sequence[str] = (), timeout: float = 30.0) -> Iterator[Azurite]:
    """Start Azurite on three free ports; stop it on exit.

    `--inMemoryPersistence` cannot go with `--location`, so the working folder is its cwd.
    """
    if not AZURITE.exists():
        pytest.fail(f"Azurite is not installed at {AZURITE}: run bash tests/install-test-deps.sh",
                    pytrace=False)
    with tempfile.TemporaryDirectory(prefix="azurite-") as workdir:
        process = subprocess.Popen(
            [str(AZURITE), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
             "--inMemoryPersistence", "--blobPort", "0", "--queuePort", "0", "--tablePort", "0",
             "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
             *extra],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue[str | None] = queue.Queue()

        def drain() -> None:  # also keeps reading afterwards, so Azurite never blocks on output
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, daemon=True).start()
        try:
            yield _wait_listening(process, lines, timeout)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_listening(process: subprocess.Popen[str], lines: queue.Queue[str | None],
                    timeout: float) -> Azurite:
    ports: dict[str, int] = {}
    scheme = "http"
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while len(ports) < 3:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"Azurite did not start within {timeout:.0f} s; it said: "
                        f"{''.join(seen)[-2000:]}", pytrace=False)
        if line is None:
            process.wait(5)
            pytest.fail(f"Azurite exited ({process.returncode}) before listening: "
                        f"{''.join(seen)[-2000:]}", pytrace=False)
        seen.append(line)
        if match := _LISTENING.search(line):
            ports[match[1]] = int(match[3])
            scheme = match[2]
    return Azurite(scheme, ports["Blob"], ports["Queue"], ports["Table"])


def unique_prefix() -> str:
    """A table prefix no other test uses: a letter, then letters and digits."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite over http with the development key: ``.connection_string``, ``.table_port`` …"""
    with running_azurite() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def azurite_oauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Azurite, Path]]:
    """Azurite over https that takes bearer tokens (`--oauth basic`), and its CA file.

    Azurite only accepts tokens over https; the certificate comes from a throw-away test CA.
    """
    import trustme

    folder = tmp_path_factory.mktemp("azurite-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(folder / "ca.pem")
    cert.private_key_pem.write_to_path(folder / "key.pem")
    for pem in cert.cert_chain_pems:
        pem.write_to_path(folder / "cert.pem", append=True)
    with running_azurite(["--oauth", "basic", "--cert", str(folder / "cert.pem"),
                          "--key", str(folder / "key.pem")]) as emulator:
        yield emulator, folder / "ca.pem"


def bearer_token(audience: str = "https://storage.azure.com", lifetime: int = 3600) -> str:
    """A token `--oauth basic` accepts: Azurite checks issuer, audience and times, not the
    signature, which is why a stub credential can stand in for a managed identity."""
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    tenant = "00000000-0000-0000-0000-000000000001"
    claims = {"aud": audience, "iss": f"https://sts.windows.net/{tenant}/", "tid": tenant,
              "oid": "00000000-0000-0000-0000-000000000002", "iat": now - 60, "nbf": now - 60,
              "exp": now + lifetime}
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{part({'sig': 'none'})}"


@pytest.fixture
def table_store(azurite: Azurite) -> Iterator[TableStore]:
    """A TableStore on tables of its own (a fresh prefix), so tests never see each other's data."""
    from store.tables import TableStore

    with TableStore.from_connection_string(azurite.connection_string,
                                           prefix=unique_prefix()) as store:
        yield store
