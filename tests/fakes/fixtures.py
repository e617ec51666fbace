"""pytest fixtures for the Microsoft fakes; add ``"tests.fakes.fixtures"`` to pytest_plugins.

``test_ca`` and ``graph_routes`` are per session (key generation and the route table are the
slow parts); ``entra`` and ``graph`` are per test, so no state leaks between tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.entra import FakeEntra
from tests.fakes.graph import FakeGraph
from tests.fakes.routes import RouteTable
from tests.fakes.tls import TestCA

TENANT_ID = "11111111-2222-4333-8444-555555555555"


@pytest.fixture(scope="session", name="test_ca")
def test_ca_fixture() -> Iterator[TestCA]:
    """CA + RSA server certificate for 127.0.0.1; ``.ca_pem`` path, ``.client_context()``."""
    with TestCA() as ca:
        yield ca


@pytest.fixture(scope="session", name="graph_routes")
def graph_routes_fixture() -> RouteTable:
    """Graph v1.0 routes harvested from the installed msgraph-sdk (JSON-cached)."""
    return RouteTable.load()


@pytest.fixture(name="entra")
def entra_fixture(test_ca: TestCA) -> Iterator[FakeEntra]:
    """HTTPS token endpoint for tenant TENANT_ID; register apps with ``add_client``."""
    with FakeEntra(test_ca, tenant_id=TENANT_ID) as fake:
        yield fake
    assert not fake.errors, fake.errors[0]


@pytest.fixture(name="graph")
def graph_fixture(test_ca: TestCA, entra: FakeEntra,
                  graph_routes: RouteTable) -> Iterator[FakeGraph]:
    """HTTPS fake Graph accepting only live tokens issued by ``entra``."""
    with FakeGraph(tokens=entra, tls=test_ca, routes=graph_routes) as fake:
        yield fake
    assert not fake.errors, fake.errors[0]
