"""The app registration and mailbox every Graph test uses, on the fakes of Entra ID and Graph."""

from __future__ import annotations

import pytest

from function_app.settings import MailboxSettings, mailbox_settings
from graph.client import RetryPolicy
from tests.fakes.entra import FakeEntra
from tests.fakes.fixtures import TENANT_ID
from tests.fakes.graph import FakeGraph
from tests.fakes.tls import TestCA

MAILBOX = "dmarc@contoso.com"
CLIENT_ID = "3f1c1a52-5b1e-4b7b-9a59-6b0c4ad0e0d1"
SECRET = "dev-secret-that-must-never-be-logged"
FAST = RetryPolicy(max_retries=2, delay=0)  # kiota still sleeps 0.25-1.25 s per retry


def env_for(entra: FakeEntra, graph: FakeGraph, test_ca: TestCA, **extra: str) -> dict[str, str]:
    """The app settings that point dmarcbot at the fakes, as they would be set in Azure."""
    return {
        "DMARCBOT_TENANT_ID": TENANT_ID,
        "DMARCBOT_CLIENT_ID": CLIENT_ID,
        "DMARCBOT_CLIENT_SECRET": SECRET,
        "DMARCBOT_MAILBOX": MAILBOX,
        "DMARCBOT_GRAPH_URL": graph.base_url,
        "DMARCBOT_AUTHORITY_HOST": entra.authority.rsplit("/", 1)[0],
        "DMARCBOT_CA_BUNDLE": str(test_ca.ca_pem),
        **extra,
    }


@pytest.fixture
def settings(entra: FakeEntra, graph: FakeGraph, test_ca: TestCA) -> MailboxSettings:
    """Mailbox settings for MAILBOX, readable by CLIENT_ID with SECRET."""
    entra.add_client(CLIENT_ID, secret=SECRET)
    graph.add_mailbox(MAILBOX)
    return mailbox_settings(env_for(entra, graph, test_ca))
