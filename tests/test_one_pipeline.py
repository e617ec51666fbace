"""One scheduled step for `dmarcbot run` and the Functions timer.

The same rule chooses the domains to name again and the same loop sends what is due, whether
owners are asked through the outbox with the store's inventory as the record (local), or through
Teams with the SharePoint list as the record (Microsoft 365, every part faked over loopback,
the store on Azurite). Each change to the rule's inputs (what was stored, who owns what, the
clock, a decision) must move both alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from analysis import read_reports
from analysis.catalog import load_catalog
from function_app import connections, mailbox_functions
from function_app.approvals import ApprovalSettings, Outcome, StoreRecords, take_decision
from function_app.notify import Asking
from function_app.outbox import Outbox
from function_app.schedule import Named, domains_to_name, name_and_notify
from function_app.settings import teams_settings
from function_app.teams import ListRecords, inventory_item
from function_app.teams_notify import asking_in_teams, senders_list
from graph.senders_list import SenderItem
from store import SqliteStore
from store.base import InventoryItem, Store
from tests.builders import aggregate_xml, record_xml
from tests.fakes.botframework import FakeBotFramework
from tests.teams_world import (  # noqa: F401 - fixtures used by name
    OWNER_ID,
    OWNER_UPN,
    entra_fixture,
    preinstalled_fixture,
    world_fixture,
)
from tests.test_mailbox_functions import SENDGRID

CATALOG = load_catalog()
T = TypeVar("T")
T0 = dt.datetime(2026, 11, 21, 8, tzinfo=dt.UTC)
COM, ORG = "example.com", "example.org"


def add_sendgrid_day(store: Store, domain: str, day: dt.date) -> None:
    """A day of SendGrid mail for `domain`, not aligned: a sender that needs its owner."""
    begin = int(dt.datetime.combine(day, dt.time(0), dt.UTC).timestamp())
    xml = aggregate_xml(record_xml("198.51.100.10", 9, dkim="fail", spf="fail",
                                   envelope_from="sendgrid.net", header_from=domain,
                                   auth=SENDGRID),
                        domain=domain, report_id=f"{domain}-{day}", begin=begin,
                        end=begin + 86399)
    for report in read_reports(xml):
        assert store.add_report(report) == "stored"


class Side(Protocol):
    store: Store

    def step(self, stored: set[str], now: dt.datetime, settings: ApprovalSettings) -> Named: ...

    def reject(self, domain: str, service: str, now: dt.datetime,
               settings: ApprovalSettings) -> None: ...

    def item(self, domain: str, service: str) -> InventoryItem: ...

    def delivered(self) -> int: ...


class Local:
    """`dmarcbot run`'s adapters: SQLite, the store's inventory, the outbox."""

    def __init__(self, folder: Path) -> None:
        self.store: Store = SqliteStore(folder / "s.sqlite3")
        self.outbox = Outbox(folder / "outbox")

    def step(self, stored: set[str], now: dt.datetime, settings: ApprovalSettings) -> Named:
        return asyncio.run(name_and_notify(
            self.store, CATALOG, None, stored=stored, now=now,
            asking=Asking(StoreRecords(self.store), self.outbox, settings)))

    def reject(self, domain: str, service: str, now: dt.datetime,
               settings: ApprovalSettings) -> None:
        outcome = asyncio.run(take_decision(StoreRecords(self.store), domain, service, "reject",
                                            OWNER_UPN, now, settings))
        assert outcome.changed

    def item(self, domain: str, service: str) -> InventoryItem:
        return self.store.inventory(domain)[domain, service]

    def delivered(self) -> int:
        return len(self.outbox.cards())


class Microsoft365:
    """The Functions timer's adapters: Table Storage, the SharePoint list, Teams."""

    def __init__(self, bf: FakeBotFramework) -> None:
        self.store: Store = mailbox_functions.app_store()
        self.bf = bf

    def step(self, stored: set[str], now: dt.datetime, settings: ApprovalSettings) -> Named:
        async def go() -> Named:
            async with asking_in_teams(teams_settings(), settings) as asking:
                return await name_and_notify(self.store, CATALOG, None, stored=stored,
                                             now=now, asking=asking)

        return self._run(go)

    def reject(self, domain: str, service: str, now: dt.datetime,
               settings: ApprovalSettings) -> None:
        async def go() -> Outcome:
            records = ListRecords(senders_list(teams_settings()))  # in Teams a person is an id
            return await take_decision(records, domain, service, "reject", OWNER_ID, now,
                                       settings)

        assert self._run(go).changed

    def item(self, domain: str, service: str) -> InventoryItem:
        async def go() -> SenderItem | None:
            return await senders_list(teams_settings()).get(domain, service)

        found = self._run(go)
        assert found is not None
        return inventory_item(found, owner="upn")

    def delivered(self) -> int:
        return sum(len(c.activities) for c in self.bf.conversations.values())

    @staticmethod
    def _run(work: Callable[[], Awaitable[T]]) -> T:
        """On a loop of its own, as each timer tick runs (its connections closed after)."""
        async def go() -> T:
            try:
                return await work()
            finally:
                await connections.close_shared()

        return asyncio.run(go())


@pytest.fixture(params=["local", "microsoft365"])
def side(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Side]:
    if request.param == "local":
        local = Local(tmp_path)
        yield local
        local.store.close()
    else:
        bf, _ = request.getfixturevalue("world")
        yield Microsoft365(bf)


def test_both_adapters_follow_the_rule_s_inputs_alike(side: Side) -> None:
    only_com = ApprovalSettings(default_owners={COM: OWNER_UPN}, remind_after_days=7)
    both = dataclasses.replace(only_com, default_owners={COM: OWNER_UPN, ORG: OWNER_UPN})
    for domain in (COM, ORG):
        add_sendgrid_day(side.store, domain, dt.date(2026, 11, 20))

    def step(stored: set[str], now: dt.datetime, settings: ApprovalSettings
             ) -> tuple[set[str], list[tuple[str, str]]]:
        before = side.delivered()
        named = side.step(stored, now, settings)
        sent: list[tuple[str, str]] = [(s.notice, s.item.policy_domain) for s in named.sent]
        assert side.delivered() == before + len(sent)  # what is counted sent was delivered
        return named.domains, sent

    # new reports: both named; only the domain with an owner has someone to ask
    assert step({COM, ORG}, T0, only_com) == ({COM, ORG}, [("ask", COM)])
    assert side.item(COM, "sendgrid").asked_at == "2026-11-21T08:00:00Z"
    assert side.item(ORG, "sendgrid").asked_at is None
    # nothing stored, nothing due: nothing named
    assert step(set(), T0 + dt.timedelta(days=3), only_com) == (set(), [])
    # the other domain gets an owner: its sender is due a first card, so it is named
    assert step(set(), T0 + dt.timedelta(days=3), both) == ({ORG}, [("ask", ORG)])
    assert side.item(ORG, "sendgrid").owner == OWNER_UPN
    # the clock: a week without an answer brings the reminder, and only it
    assert step(set(), T0 + dt.timedelta(days=7), both) == ({COM}, [("remind", COM)])
    assert side.item(COM, "sendgrid").reminded_at == "2026-11-28T08:00:00Z"
    # reports stored again: named, yet nobody is due anything
    assert step({COM}, T0 + dt.timedelta(days=7, hours=1), both) == ({COM}, [])
    # rejected, and seen sending the day after the decision: an alert, once
    side.reject(COM, "sendgrid", T0 + dt.timedelta(days=7, hours=2), both)
    add_sendgrid_day(side.store, COM, dt.date(2026, 11, 29))
    assert step({COM}, T0 + dt.timedelta(days=9), both) == ({COM}, [("alert", COM)])
    assert side.item(COM, "sendgrid").alerted_at == "2026-11-29T00:00:00Z"
    assert step(set(), T0 + dt.timedelta(days=9, hours=1), both) == (set(), [])
    assert side.delivered() == 4


def _item(domain: str, status: str = "Pending", **changes: Any) -> InventoryItem:
    base = InventoryItem(domain, "sendgrid", status, None, "2026-11-01", "2026-11-20", 9, 0,
                         None, None)
    return dataclasses.replace(base, **changes)


def test_the_rule_names_a_domain_only_where_its_outcome_can_change() -> None:
    settings = ApprovalSettings(default_owners={COM: OWNER_UPN, ORG: OWNER_UPN})
    now = T0
    waiting = [
        _item(COM, asked_at="2026-11-20T08:00:00Z"),  # asked yesterday: nothing due
        _item(ORG),  # never asked: a first card
        _item("example.net"),  # nobody owns it: nobody to ask
        _item("example.edu", "Rejected", owner=OWNER_UPN, decided_by=OWNER_UPN,
              decided_at="2026-11-20T08:00:00Z"),  # rejected, not seen since: no alert
    ]
    assert domains_to_name([], waiting, now, settings) == {ORG}
    assert domains_to_name(["example.net"], waiting, now, settings) == {ORG, "example.net"}
    assert domains_to_name([], waiting, now + dt.timedelta(days=7), settings) == {COM, ORG}
    seen_again = dataclasses.replace(waiting[3], last_seen="2026-11-21")
    assert domains_to_name([], [seen_again], now, settings) == {"example.edu"}
