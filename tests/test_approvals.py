"""Owners' decisions: who is asked when, who may decide, and that a decision is taken once."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from function_app.approvals import (
    ApprovalSettings,
    Refused,
    StoreRecords,
    decide,
    due,
    noticed,
    parse_owners,
    take_decision,
)
from store import SqliteStore
from store.base import InventoryItem

NOW = dt.datetime(2026, 11, 29, 9, 0, tzinfo=dt.UTC)
SETTINGS = ApprovalSettings(default_owners={"contoso.com": "ann@contoso.com"},
                            admins=frozenset({"sec@contoso.com"}), remind_after_days=7)


def item(**changes: object) -> InventoryItem:
    base = InventoryItem("contoso.com", "sendgrid", "Pending", None, "2026-11-01", "2026-11-28",
                         100, 90, None, None)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_an_owner_is_asked_once_then_reminded_after_the_set_days() -> None:
    fresh = item()
    assert due(fresh, NOW, SETTINGS) == "ask"
    asked = noticed(fresh, "ask", NOW, SETTINGS)
    assert asked.owner == "ann@contoso.com" and asked.asked_at == "2026-11-29T09:00:00Z"
    assert due(asked, NOW + dt.timedelta(days=6, hours=23), SETTINGS) is None
    assert due(asked, NOW + dt.timedelta(days=7), SETTINGS) == "remind"
    reminded = noticed(asked, "remind", NOW + dt.timedelta(days=7), SETTINGS)
    assert due(reminded, NOW + dt.timedelta(days=8), SETTINGS) is None
    assert due(reminded, NOW + dt.timedelta(days=14), SETTINGS) == "remind"


def test_nobody_is_asked_without_an_owner() -> None:
    assert due(item(policy_domain="fabrikam.com"), NOW, SETTINGS) is None


def test_a_rejected_sender_that_keeps_sending_alerts_once_per_day_seen() -> None:
    rejected = item(status="Rejected", owner="ann@contoso.com", decided_by="ann@contoso.com",
                    decided_at="2026-11-20T10:00:00Z", last_seen="2026-11-20")
    assert due(rejected, NOW, SETTINGS) is None  # not seen since
    sending = dataclasses.replace(rejected, last_seen="2026-11-28")
    assert due(sending, NOW, SETTINGS) == "alert"
    alerted = noticed(sending, "alert", NOW, SETTINGS)
    assert due(alerted, NOW, SETTINGS) is None
    assert due(dataclasses.replace(alerted, last_seen="2026-11-30"), NOW, SETTINGS) == "alert"
    assert due(item(status="Approved", decided_at="2026-11-20T10:00:00Z"), NOW, SETTINGS) is None


def test_only_the_owner_or_an_admin_decides() -> None:
    with pytest.raises(Refused) as refused:
        decide(item(), "approve", "mallory@contoso.com", NOW, SETTINGS)
    assert refused.value.code == "not-owner" and "ann@contoso.com" in str(refused.value)
    assert decide(item(), "approve", "ANN@contoso.com", NOW, SETTINGS).status == "Approved"
    assert decide(item(), "reject", "sec@contoso.com", NOW, SETTINGS).status == "Rejected"
    owned = item(owner="bob@contoso.com")
    with pytest.raises(Refused):
        decide(owned, "approve", "ann@contoso.com", NOW, SETTINGS)  # the default is not the owner


def test_not_mine_hands_the_sender_to_someone_else_who_is_asked_afresh() -> None:
    asked = noticed(item(), "ask", NOW, SETTINGS)
    handed = decide(asked, "notmine", "ann@contoso.com", NOW, SETTINGS,
                    new_owner="carl@contoso.com")
    assert (handed.status, handed.owner, handed.asked_at) == ("Pending", "carl@contoso.com", None)
    assert due(handed, NOW, SETTINGS) == "ask"
    for bad in (None, "carl", "a b@c.d"):
        with pytest.raises(Refused) as refused:
            decide(asked, "notmine", "ann@contoso.com", NOW, SETTINGS, new_owner=bad)
        assert refused.value.code == "no-owner"


def test_a_double_click_decides_once_and_a_late_rival_loses(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.sqlite3") as store:
        store.note_seen("contoso.com", "sendgrid", "2026-11-01", "2026-11-28", 100, 90)
        records = StoreRecords(store)
        first = asyncio.run(take_decision(records, "contoso.com", "sendgrid", "approve",
                                          "ann@contoso.com", NOW, SETTINGS))
        again = asyncio.run(take_decision(records, "contoso.com", "sendgrid", "reject",
                                          "sec@contoso.com", NOW, SETTINGS))
        assert first.changed and not again.changed
        assert again.item.status == "Approved" and again.item.decided_by == "ann@contoso.com"
        with pytest.raises(Refused, match="no sender"):
            asyncio.run(take_decision(records, "contoso.com", "mailchimp", "approve",
                                      "ann@contoso.com", NOW, SETTINGS))

        class Racing(StoreRecords):
            """Someone else decides between our read and our write."""

            async def save(self, item: InventoryItem, *, if_status: str) -> bool:
                rival = dataclasses.replace(item, status="Rejected", decided_by="sec@contoso.com")
                self.store.update_item(rival, if_status=if_status)
                return await super().save(item, if_status=if_status)

        store.note_seen("contoso.com", "mailchimp", "2026-11-01", "2026-11-28", 5, 5)
        lost = asyncio.run(take_decision(Racing(store), "contoso.com", "mailchimp", "approve",
                                         "ann@contoso.com", NOW, SETTINGS))
        assert not lost.changed and lost.item.status == "Rejected"


def test_default_owners_are_read_from_one_line() -> None:
    assert parse_owners("Contoso.com=ann@contoso.com, fabrikam.com=bob@fabrikam.com") == {
        "contoso.com": "ann@contoso.com", "fabrikam.com": "bob@fabrikam.com"}
    with pytest.raises(ValueError, match="DOMAIN=OWNER"):
        parse_owners("contoso.com:ann@contoso.com")
