"""Retention (issue 14): daily rows and ledger entries of reports past the horizon become monthly
rollups; what naming reads keeps their history; nothing not rolled up is deleted; expiring is
idempotent and a crash half-way loses nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from function_app import pipeline
from function_app.settings import SettingsError, retention_months
from store import SqliteStore
from store.base import LedgerEntry
from store.sqlite_sources import SqliteSources
from tests.builders import aggregate_xml, record_xml
from tests.test_source_aggregates import (
    DOMAINS,
    TRUSTS,
    Delivery,
    add,
    assert_same_naming,
    by_sources,
    generated,
)

#: The generated reports cover 2025-11-28 to about 2026-01-10: this cuts through them.
HORIZON = dt.date(2025, 12, 20)
CUTOFF = int(dt.datetime(2025, 12, 20, tzinfo=dt.UTC).timestamp())


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[SqliteStore, SqliteStore]]:
    """The same history twice: one store to expire, one kept whole as the reference."""
    deliveries = generated(11, 80)
    with SqliteStore(tmp_path / "kept.sqlite3") as kept, \
            SqliteStore(tmp_path / "expired.sqlite3") as expired:
        assert add(kept, deliveries) == add(expired, deliveries)
        yield kept, expired


def naming(store: SqliteStore) -> list[object]:
    return [by_sources(store, d, t) for t in TRUSTS for d in DOMAINS]


def state(store: SqliteStore) -> list[object]:
    """Every row retention touches (the ledger without the moment each report was stored)."""
    db = store._db
    ledger = db.execute("SELECT id, reporter, report_id, policy_domain, begin_ts, end_ts,"
                        " messages, conflict, unverified FROM reports").fetchall()
    return [sorted(ledger)] + [sorted(db.execute(f"SELECT * FROM {table}").fetchall())
                               for table in ("daily_rollups", "monthly_rollups",
                                             "source_rollups", "expired")]


def test_expired_history_still_names_the_same_senders(
        stores: tuple[SqliteStore, SqliteStore]) -> None:
    kept, expired = stores
    before = len(list(expired.reports()))
    gone = expired.expire(HORIZON)
    assert 10 < gone < before
    assert naming(expired) == naming(kept)
    # the days kept are untouched; the days expired are gone from the daily rows
    since = HORIZON.isoformat()
    for trusted in TRUSTS:
        assert list(expired.rollups(since=since, trusted_reporters=trusted)) == list(
            kept.rollups(since=since, trusted_reporters=trusted))
    # what stays before the horizon: reports in conflict, and those that end after it
    left = [e for e in expired.reports() if e.key.begin < CUTOFF]
    assert left and all(e.conflict or e.key.end >= CUTOFF for e in left)
    assert any(e.conflict for e in left)
    # every message is somewhere: in a kept daily row or a monthly one
    db = expired._db
    (daily,) = db.execute("SELECT sum(messages) FROM daily_rollups").fetchone()
    (monthly,) = db.execute("SELECT sum(messages) FROM monthly_rollups").fetchone()
    (whole,) = kept._db.execute("SELECT sum(messages) FROM daily_rollups").fetchone()
    assert daily + monthly == whole and monthly > 0
    # reports in conflict are never expired: they are rolled up into nothing
    def unstamped(entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
        return [dataclasses.replace(e, stored_at="") for e in entries]  # stored a moment apart

    conflicts = unstamped(e for e in kept.reports() if e.conflict)
    assert conflicts and all(e in unstamped(expired.reports()) for e in conflicts)


def test_expiring_again_changes_nothing(stores: tuple[SqliteStore, SqliteStore]) -> None:
    _, expired = stores
    expired.expire(HORIZON)
    after = state(expired)
    assert expired.expire(HORIZON) == 0
    assert expired.expire(HORIZON - dt.timedelta(days=10)) == 0  # an older horizon: no-op
    assert state(expired) == after


def test_a_crash_at_any_batch_then_a_rerun_equals_a_clean_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deliveries = generated(12, 40)
    with SqliteStore(tmp_path / "clean.sqlite3") as clean:
        add(clean, deliveries)
        moves = _count_moves(clean, monkeypatch)
        expected = state(clean)
    assert moves > 3
    for crash_at in range(moves):
        with SqliteStore(tmp_path / f"crash-{crash_at}.sqlite3") as store:
            add(store, deliveries)
            monkeypatch.setattr(SqliteSources, "_move", _crashing_move(crash_at))
            with pytest.raises(KeyboardInterrupt):
                store.expire(HORIZON)
            monkeypatch.undo()
            store.expire(HORIZON)
            assert state(store) == expected, f"crash in move {crash_at}"


def _crashing_move(crash_at: int) -> Callable[..., None]:
    """`SqliteSources._move` whose `crash_at`-th call makes its writes, then the process dies
    (before the transaction commits)."""
    original, calls = SqliteSources._move, [0]

    def move(self: SqliteSources, *args: Any) -> None:
        original(self, *args)
        if calls[0] == crash_at:
            raise KeyboardInterrupt
        calls[0] += 1

    return move


def _count_moves(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> int:
    original, calls = SqliteSources._move, [0]

    def move(self: SqliteSources, *args: Any) -> None:
        calls[0] += 1
        original(self, *args)

    monkeypatch.setattr(SqliteSources, "_move", move)
    store.expire(HORIZON)
    monkeypatch.undo()
    return calls[0]


def test_a_late_copy_of_an_expired_report_adds_nothing(
        stores: tuple[SqliteStore, SqliteStore]) -> None:
    kept, expired = stores
    expired.expire(HORIZON)
    after = state(expired)
    old = aggregate_xml(record_xml("192.0.2.1", 1000), report_id="g-0", domain="a.example")
    assert add(expired, [Delivery(old, None)]) == ["duplicate"]
    assert state(expired) == after
    # reports after the horizon still count, and change both stores alike
    late = [Delivery(aggregate_xml(record_xml("192.0.2.1", 9), report_id="new", domain=d,
                                   begin=1767225600, end=1767311999), None) for d in DOMAINS]
    assert add(expired, late) == add(kept, late) == ["stored", "stored"]
    assert naming(expired) == naming(kept)
    assert_same_naming(kept)


def test_a_conflict_after_expiry_rebuilds_from_the_monthly_rows(
        stores: tuple[SqliteStore, SqliteStore]) -> None:
    kept, expired = stores
    expired.expire(HORIZON)
    recent = next(e for e in kept.reports() if e.key.begin >= CUTOFF
                  and not e.conflict and e.key.policy_domain == "a.example")
    forged = aggregate_xml(record_xml("192.0.2.1", 777), email=recent.key.reporter,
                           report_id=recent.key.report_id, begin=recent.key.begin,
                           end=recent.key.end, domain="a.example")
    assert add(expired, [Delivery(forged, None)]) == add(kept, [Delivery(forged, None)]) == [
        "conflict"]
    assert naming(expired) == naming(kept)


def test_the_setting_names_whole_months() -> None:
    assert retention_months({}) is None
    assert retention_months({"DMARCBOT_RETENTION_MONTHS": " 13 "}) == 13
    for bad in ("0", "1", "-3", "twelve", "1.5"):
        with pytest.raises(SettingsError, match=r"DMARCBOT_RETENTION_MONTHS=.* from 2 to 1200"):
            retention_months({"DMARCBOT_RETENTION_MONTHS": bad})


def test_the_scheduled_step_expires_whole_months(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "s.sqlite3") as store:
        add(store, generated(13, 30))
        assert pipeline.expire_history(store, dt.date(2026, 2, 15), None) == 0
        assert pipeline.expire_history(store, dt.date(2026, 2, 15), 2) > 0
        assert store._sources.horizon() == "2025-12-01"
        december = int(dt.datetime(2025, 12, 1, tzinfo=dt.UTC).timestamp())
        assert all(e.key.end >= december for e in store.reports() if not e.conflict)
