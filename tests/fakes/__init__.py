"""Loopback fakes of Microsoft endpoints (Entra ID token endpoint, Graph mail) for real clients.

Fixtures live in ``tests.fakes.fixtures`` (a pytest plugin module).
"""

from tests.fakes.entra import FakeEntra, FakeManagedIdentity, FederatedCredential
from tests.fakes.graph import FakeGraph, GraphRequest, Rejection
from tests.fakes.mailbox import FakeFolder, FakeMailbox, FakeMessage, FileAttachment, ItemAttachment
from tests.fakes.routes import Route, RouteError, RouteTable
from tests.fakes.tls import ClientCertificate, TestCA

__all__ = [
    "ClientCertificate",
    "FakeEntra",
    "FakeFolder",
    "FakeGraph",
    "FakeMailbox",
    "FakeManagedIdentity",
    "FakeMessage",
    "FederatedCredential",
    "FileAttachment",
    "GraphRequest",
    "ItemAttachment",
    "Rejection",
    "Route",
    "RouteError",
    "RouteTable",
    "TestCA",
]
