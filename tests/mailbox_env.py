"""The app registration and mailbox every Graph test uses, on the fakes of Entra ID and Graph."""

from __future__ import annotations

import pytest

from function_app.settings import MailboxSettings, mailbox_settings
from graph.client import RetryPolicy
from graph.permissions import TEAMS_ROLES
from tests.fakes.entra import FakeEntra
from tests.fakes.fixtures import TENANT_ID
from tests.fakes.graph import FakeGraph
from tests.fakes.sharepoint import FakeSite
from tests.fakes.tls import TestCA

MAILBOX = "dmarc@contoso.com"
CLIENT_ID = "3f1c1a52-5b1e-4b7b-9a59-6b0c4ad0e0d1"
SECRET = "dev-secret-that-must-never-be-logged"
RUNTIME_ROLES = frozenset(TEAMS_ROLES)  # what scripts/setup-entra.sh consents to
# A test that provisions the senders list with the runtime app's own credential holds
# Sites.Selected with a site grant for that step, then `hand_over` leaves it what production has.
PROVISIONING_ROLES = RUNTIME_ROLES | {"Sites.Selected"}
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
    entra.add_client(CLIENT_ID, secret=SECRET, roles=RUNTIME_ROLES)
    graph.add_mailbox(MAILBOX).grant(CLIENT_ID)
    return mailbox_settings(env_for(entra, graph, test_ca))


def hand_over(entra: FakeEntra, site: FakeSite, list_id: str) -> None:
    """The provisioning is done: the runtime app keeps `write` on the one list and the roles
    production gives it, nothing more (tokens issued before carry the old roles: expired)."""
    entra.set_roles(CLIENT_ID, RUNTIME_ROLES)
    entra.expire_all()
    site.grants.pop(CLIENT_ID, None)
    found = site.list(list_id)
    assert found is not None
    found.grant(CLIENT_ID, "write")
