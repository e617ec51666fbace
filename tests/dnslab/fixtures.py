"""Session fixtures for a real DNS server on loopback.

Loaded from ``tests/conftest.py`` with ``pytest_plugins = ["tests.dnslab.fixtures"]`` (pytest only
reads conftest.py files of folders it collects tests from, so these live in a plugin module).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dnslab.blackhole import BlackHole
from tests.dnslab.server import KnotNotInstalledError, KnotServer, KnotStartError


@pytest.fixture(scope="session")
def dns_server() -> Iterator[KnotServer]:
    """knotd serving tests/dnslab/zones; ``.host``, ``.port``, ``.resolver(lifetime=2.0)``."""
    server = KnotServer()
    try:
        server.start()
    except KnotNotInstalledError as exc:
        pytest.fail(str(exc), pytrace=False)
    except KnotStartError as exc:
        pytest.fail(f"knotd did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dns_blackhole() -> Iterator[BlackHole]:
    """A UDP+TCP port on 127.0.0.1 that reads queries and never answers (timeouts)."""
    with BlackHole() as hole:
        yield hole
