"""Crash consistency: the ingest stopped at every step boundary, then run again, loses nothing.

A crash is a `BaseException` no `except Exception` sees, as when the worker process dies. For
each boundary in turn (after a download, in the middle of storing a report, after storing one,
before and after the failure reason is set, after the move) the queued mail is ingested up to
that boundary, the process "dies", and the queue delivers the message again. The totals must
equal a clean run's, every e-mail must end in the folder a clean run puts it in, and no e-mail
is ever deleted.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analysis import AggregateReport, Limits
from analysis.model import Report
from analysis.volume import VolumeCheck
from function_app.mailjob import ingest_queued, open_mailbox
from function_app.settings import MailboxSettings
from graph.mailbox import Mailbox
from store import SqliteStore, Store
from store.tables import TableStore
from tests.azurite import unique_prefix
from tests.builders import aggregate_xml, gzipped, record_xml, report_email, zipped
from tests.fakes.graph import FakeGraph
from tests.fakes.mailbox import FileAttachment, ItemAttachment
from tests.mailbox_env import CLIENT_ID, FAST


class Crash(BaseException):
    """The process dies here."""


class Crasher:
    """Counts step boundaries as they pass and dies at the `at`-th (0: never)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.passed: list[str] = []

    def boundary(self, name: str) -> None:
        self.passed.append(name)
        if len(self.passed) == self.at:
            raise Crash(name)


class CrashingStore:
    """A store that can die half-way through a report, or just after storing one."""

    def __init__(self, inner: Store, crasher: Crasher) -> None:
        self.inner = inner
        self.crasher = crasher

    def add_report(self, report: Report, *, unverified: str | None = None,
                   volume: VolumeCheck | None = None) -> str:
        if isinstance(report, AggregateReport):
            records = report.records

            def dying() -> Iterator[Any]:
                for n, record in enumerate(records):
                    if n == 1:
                        self.crasher.boundary("mid-store")
                    yield record

            report = dataclasses.replace(report, records=dying())
        status = self.inner.add_report(report, unverified=unverified, volume=volume)
        self.crasher.boundary("after store")
        return status

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def seed(graph: FakeGraph, address: str) -> None:
    box = graph.add_mailbox(address).grant(CLIENT_ID)
    two = [record_xml("192.0.2.1", 3), record_xml("192.0.2.2", 4)]
    box.add_message(internet_message_id="<pair@r>", attachments=[
        FileAttachment("a.xml.gz", gzipped(aggregate_xml("".join(two), report_id="a"))),
        FileAttachment("b.zip", zipped(
            ("b1.xml", aggregate_xml("".join(two), report_id="b1")),
            ("b2.xml", aggregate_xml(record_xml("192.0.2.3", 5), report_id="b2"))))])
    box.add_message(internet_message_id="<again@r>", attachments=[ItemAttachment(
        "Fwd", report_email(gzipped(aggregate_xml("".join(two), report_id="a"))))])
    box.add_message(internet_message_id="<bad@r>", attachments=[
        FileAttachment("c.xml.gz", gzipped(aggregate_xml("".join(two), report_id="c"))[:-30])])


def ingest_with_crash(settings: MailboxSettings, store: Store, crasher: Crasher,
                      monkeypatch: pytest.MonkeyPatch) -> int:
    """Every waiting e-mail through the queue path; a crash means a redelivery. Returns crashes."""
    real_download, real_mark, real_move = Mailbox._download, Mailbox.mark, Mailbox.move

    async def download(self: Mailbox, path: str, limit: int) -> bytes:
        data = await real_download(self, path, limit)
        crasher.boundary("after fetch")
        return data

    async def mark(self: Mailbox, ref: Any, reason: str | None) -> None:
        crasher.boundary("before mark")
        await real_mark(self, ref, reason)
        crasher.boundary("after mark")

    async def move(self: Mailbox, ref: Any, to: Any) -> None:
        await real_move(self, ref, to)
        crasher.boundary("after move")

    monkeypatch.setattr(Mailbox, "_download", download)
    monkeypatch.setattr(Mailbox, "mark", mark)
    monkeypatch.setattr(Mailbox, "move", move)
    crashing = CrashingStore(store, crasher)

    async def list_ids() -> list[str]:
        async with open_mailbox(settings, retry=FAST) as mailbox:
            return await mailbox.message_ids()

    async def deliver(message_id: str, attempt: int) -> None:
        async with open_mailbox(settings, retry=FAST) as mailbox:  # a fresh worker process
            await ingest_queued(mailbox, message_id, crashing, Limits(), attempt=attempt)

    crashes = 0
    for message_id in asyncio.run(list_ids()):
        for attempt in (1, 2):
            try:
                asyncio.run(deliver(message_id, attempt))
                break
            except Crash:
                crashes += 1
    return crashes


def snapshot(graph: FakeGraph, address: str, store: Store) -> dict[str, object]:
    box = graph.mailbox(address)
    assert box is not None
    return {
        "folders": {folder: sorted((m.internet_message_id, tuple(m.categories))
                                   for m in box.messages_in(folder))
                    for folder in ("inbox", "Processed", "Failed")},
        "reports": sorted((e.key.report_id, e.records, e.messages) for e in store.reports()),
        "rollups": sorted((repr(key), n) for key, n in store.rollups()),
    }


@pytest.mark.parametrize("kind", ["sqlite", "tables"])
def test_a_crash_at_any_step_then_a_retry_equals_a_clean_run(
        kind: str, settings: MailboxSettings, graph: FakeGraph, tmp_path: Path, azurite: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def new_store(n: int) -> Store:
        if kind == "sqlite":
            return SqliteStore(tmp_path / f"{n}.sqlite3")
        return TableStore.from_connection_string(azurite.connection_string,
                                                 prefix=unique_prefix())

    def one_run(at: int) -> tuple[dict[str, object], Crasher, int]:
        address = f"dmarc{at}@contoso.com"
        seed(graph, address)
        crasher = Crasher(at)
        store = new_store(at)
        with monkeypatch.context() as patch:
            crashes = ingest_with_crash(dataclasses.replace(settings, address=address), store,
                                        crasher, patch)
        result = snapshot(graph, address, store)
        store.close()
        return result, crasher, crashes

    clean, walk, crashes = one_run(0)
    assert crashes == 0
    assert clean["folders"] == {
        "inbox": [],
        "Processed": [("<again@r>", ()), ("<pair@r>", ())],
        "Failed": [("<bad@r>", (clean["folders"]["Failed"][0][1][0],))],  # type: ignore[index]
    }
    assert [r[0] for r in clean["reports"]] == ["a", "b1", "b2"]  # type: ignore[union-attr]
    boundaries = set(walk.passed)
    assert boundaries == {"after fetch", "mid-store", "after store", "before mark", "after mark",
                          "after move"}

    for at in range(1, len(walk.passed) + 1):
        result, crasher, crashes = one_run(at)
        assert crashes == 1, (at, crasher.passed[-1])
        assert result == clean, (at, crasher.passed[at - 1])
    assert graph.deleted == []
