"""The Functions app's mailbox triggers, called as the worker calls them, on Azurite and fakes.

The timer lists the waiting mail and queues one id per e-mail; the queue trigger ingests one;
the timer's next tick names the senders. Settings come from the environment, as in Azure, and
the store is Azure Table Storage (Azurite).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from function_app import connections, mailbox_functions
from function_app.settings import SettingsError
from graph.errors import GraphError
from store.tables import table_store_from_settings
from tests.azurite import unique_prefix
from tests.builders import aggregate_xml, gzipped, record_xml
from tests.fakes.entra import FakeEntra
from tests.fakes.graph import FakeGraph
from tests.fakes.mailbox import FileAttachment
from tests.fakes.tls import TestCA
from tests.mailbox_env import CLIENT_ID, MAILBOX, SECRET, env_for

SENDGRID = ("<spf><domain>sendgrid.net</domain><scope>mfrom</scope><result>pass</result></spf>")


class Out:
    """What the host hands an output binding: something with set()."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, entra: FakeEntra, graph: FakeGraph,
            test_ca: TestCA, azurite: Any) -> Iterator[dict[str, str]]:
    entra.add_client(CLIENT_ID, secret=SECRET)
    graph.add_mailbox(MAILBOX).grant(CLIENT_ID)
    env = env_for(entra, graph, test_ca,
                  DMARCBOT_TABLES_CONNECTION=azurite.connection_string,
                  DMARCBOT_TABLES_PREFIX=unique_prefix(),
                  DMARCBOT_NAMESERVERS="none")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    mailbox_functions.app_store.cache_clear()  # one store per process: this test's settings
    yield env
    mailbox_functions.app_store.cache_clear()


def sendgrid_report(report_id: str, count: int) -> bytes:
    return gzipped(aggregate_xml(
        record_xml("198.51.100.10", count, dkim="fail", spf="fail", envelope_from="sendgrid.net",
                   header_from="example.com", auth=SENDGRID), report_id=report_id))


def queued(out: Out, attempt: int = 1) -> list[QueueMessage]:
    return [QueueMessage(id=f"q{n}", body=body.encode(), dequeue_count=attempt)
            for n, body in enumerate(out.value or [])]


def in_worker(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run as the Functions worker does: every invocation on one event loop, which lives on."""
    async def main() -> None:
        try:
            await scenario()
        finally:
            await connections.close_shared()

    asyncio.run(main())


def test_timer_queues_ids_and_the_queue_trigger_ingests_each_mail(
        app_env: dict[str, str], graph: FakeGraph) -> None:
    box = graph.mailbox(MAILBOX)
    assert box is not None
    for n in range(3):
        box.add_message(internet_message_id=f"<{n}@r>", attachments=[
            FileAttachment(f"{n}.xml.gz", sendgrid_report(f"r{n}", 10 + n))])
    box.add_message(internet_message_id="<junk@r>",
                    attachments=[FileAttachment("x.txt", b"hello")])
    first, second = Out(), Out()

    async def scenario() -> None:
        await mailbox_functions.poll_mailbox(TimerRequest(past_due=False), first)
        messages = queued(first)
        assert len(messages) == 4
        # the host runs up to 4 at once (host.json batchSize)
        await asyncio.gather(*(mailbox_functions.ingest_mail(m) for m in messages))
        # the same ids delivered again (the timer ticked before the queue drained): no change
        await asyncio.gather(*(mailbox_functions.ingest_mail(m)
                               for m in queued(first, attempt=2)))
        # the next tick queues nothing and names the senders of what arrived
        await mailbox_functions.poll_mailbox(TimerRequest(past_due=True), second)

    in_worker(scenario)

    for message in queued(first):  # ids only: nothing of the report travels through the queue
        assert set(json.loads(message.get_body())) == {"id"}
    listing = next(r for r in graph.requests if r.path.endswith("/messages"))
    assert listing.query["$select"] == "id" and listing.query["$top"] == "1000"
    assert [m.internet_message_id for m in box.messages_in("inbox")] == []
    assert len(box.messages_in("Processed")) == 3 and len(box.messages_in("Failed")) == 1
    assert second.value is None
    with table_store_from_settings(app_env) as store:
        assert len(list(store.reports())) == 3
        assert sum(n for _, n in store.rollups()) == 33
        inventory = store.inventory("example.com")
    assert {(key, item.status) for key, item in inventory.items()} == {
        (("example.com", "sendgrid"), "Pending")}
    assert graph.deleted == [] and graph.rejected == []
    # one connection for the whole worker: 4 requests in flight at most, across invocations
    assert graph.max_in_flight[MAILBOX] <= 4
    assert sum(r.path.endswith("/mailFolders") and not r.query for r in graph.requests) <= 2


def test_naming_senders_failing_does_not_lose_the_queued_ids(
        app_env: dict[str, str], graph: FakeGraph, monkeypatch: pytest.MonkeyPatch) -> None:
    graph.mailbox(MAILBOX).add_message(  # type: ignore[union-attr]
        attachments=[FileAttachment("r.xml.gz", sendgrid_report("x", 1))])

    async def broken() -> None:
        raise RuntimeError("DNS fell over")

    monkeypatch.setattr(mailbox_functions, "name_and_ask", broken)
    out = Out()
    in_worker(lambda: mailbox_functions.poll_mailbox(TimerRequest(), out))
    assert len(queued(out)) == 1


def _named_domains(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [int(r.getMessage().split()[4]) for r in caplog.records
            if r.getMessage().startswith("named the senders of ")]


def test_a_tick_names_only_domains_with_reports_since_the_last_tick_that_completed(
        app_env: dict[str, str], graph: FakeGraph, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The mark moves only when a tick's step completes: a failed step loses nothing, and once
    one has, a domain with nothing stored since (an hour's overlap) is not named again."""
    from function_app import schedule

    graph.mailbox(MAILBOX).add_message(  # type: ignore[union-attr]
        attachments=[FileAttachment("r.xml.gz", sendgrid_report("m", 5))])
    caplog.set_level("INFO", logger="dmarcbot")
    first = Out()

    async def failing(*_: object, **__: object) -> object:
        raise RuntimeError("DNS fell over")

    in_worker(lambda: mailbox_functions.poll_mailbox(TimerRequest(), first))
    assert _named_domains(caplog) == [0]  # nothing stored yet; the step completed
    with table_store_from_settings(app_env) as store:
        before = store.naming_mark()
        assert before is not None

    async def ingest_then_fail() -> None:
        await asyncio.gather(*(mailbox_functions.ingest_mail(m) for m in queued(first)))
        with monkeypatch.context() as patched:
            patched.setattr(schedule, "name_and_notify", failing)
            await mailbox_functions.poll_mailbox(TimerRequest(), Out())

    in_worker(ingest_then_fail)
    with table_store_from_settings(app_env) as store:
        assert store.naming_mark() == before  # the step failed: the mark did not move
    in_worker(lambda: mailbox_functions.poll_mailbox(TimerRequest(), Out()))
    assert _named_domains(caplog)[-1] == 1
    with table_store_from_settings(app_env) as store:
        mark = store.naming_mark()
        assert mark is not None and schedule.stored_since(mark, dt.datetime.now(dt.UTC)) < mark
        store.set_naming_mark("2999-01-01T00:00:00Z")  # as if the last step ran long after
    in_worker(lambda: mailbox_functions.poll_mailbox(TimerRequest(), Out()))
    assert _named_domains(caplog)[-1] == 0


def test_the_timer_asks_the_ledger_from_an_hour_before_its_mark() -> None:
    from function_app.schedule import stored_since

    now = dt.datetime(2026, 12, 7, 19, 30, tzinfo=dt.UTC)
    assert stored_since(None, now) == "2026-12-06"  # the first tick: since yesterday
    assert stored_since("2026-12-07T19:15:02Z", now) == "2026-12-07T18:15:02Z"
    assert stored_since("2026-12-07T00:10:00Z", now) == "2026-12-06T23:10:00Z"


def test_the_last_attempt_files_the_mail_under_failed(
        app_env: dict[str, str], graph: FakeGraph) -> None:
    box = graph.mailbox(MAILBOX)
    assert box is not None
    box.add_message(internet_message_id="<x@r>",
                    attachments=[FileAttachment("r.xml.gz", sendgrid_report("x", 1))])
    out = Out()
    in_worker(lambda: mailbox_functions.poll_mailbox(TimerRequest(), out))
    graph.inject(500, path_contains="/$value", times=10)  # not retried by the SDK

    (first,) = queued(out, attempt=1)
    with pytest.raises(GraphError, match="500"):
        in_worker(lambda: mailbox_functions.ingest_mail(first))  # the queue will try again
    assert len(box.messages_in("inbox")) == 1

    (last,) = queued(out, attempt=5)
    in_worker(lambda: mailbox_functions.ingest_mail(last))
    (failed,) = box.messages_in("Failed")
    assert failed.categories == [
        "dmarcbot: gave up after 5 attempts: Microsoft Graph answered 500 InternalServerError"]
    with table_store_from_settings(app_env) as store:
        assert list(store.reports()) == []


def test_the_last_attempt_files_the_mail_even_when_it_cannot_be_read(
        app_env: dict[str, str], graph: FakeGraph) -> None:
    box = graph.mailbox(MAILBOX)
    assert box is not None
    box.add_message(internet_message_id="<y@r>",
                    attachments=[FileAttachment("r.xml.gz", sendgrid_report("y", 1))])
    out = Out()
    in_worker(lambda: mailbox_functions.poll_mailbox(TimerRequest(), out))
    graph.inject(500, method="GET", path_contains="/messages/", times=1)  # the look itself
    (last,) = queued(out, attempt=5)
    in_worker(lambda: mailbox_functions.ingest_mail(last))
    (failed,) = box.messages_in("Failed")
    assert failed.categories[0].startswith("dmarcbot: gave up after 5 attempts: ")


def test_a_queue_message_without_an_id_is_dropped(app_env: dict[str, str],
                                                   graph: FakeGraph) -> None:
    async def scenario() -> None:
        for body in (b"not json", b"[]", b'{"id": 7}', b'{"id": ""}'):
            await mailbox_functions.ingest_mail(QueueMessage(id="q", body=body, dequeue_count=1))

    in_worker(scenario)
    assert graph.requests == []


def test_a_missing_setting_is_named(app_env: dict[str, str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DMARCBOT_MAILBOX")
    with pytest.raises(SettingsError, match="DMARCBOT_MAILBOX is missing"):
        in_worker(lambda: mailbox_functions.poll_mailbox(TimerRequest(), Out()))


def test_a_queued_id_costs_one_read_to_tell_whether_it_still_waits(
        app_env: dict[str, str], graph: FakeGraph) -> None:
    """Each delivery of a queued id reads the message once, by id from the mailbox; the
    source folder's id is asked once per worker, not once per message."""
    box = graph.mailbox(MAILBOX)
    assert box is not None
    graph.folder_scoped_reads_check_folder = False  # the source folder would answer 200
    for n in range(3):
        box.add_message(internet_message_id=f"<w{n}@r>", attachments=[
            FileAttachment(f"{n}.xml.gz", sendgrid_report(f"w{n}", 1))])
    out = Out()

    async def scenario() -> None:
        await mailbox_functions.poll_mailbox(TimerRequest(), out)
        for message in queued(out):
            await mailbox_functions.ingest_mail(message)
        for message in queued(out, attempt=2):  # delivered again: sorted already
            await mailbox_functions.ingest_mail(message)

    graph.requests.clear()
    in_worker(scenario)
    reads = [r for r in graph.requests if r.method == "GET" and "/messages/" in r.path
             and "/attachments" not in r.path and not r.path.endswith("/$value")]
    assert len(reads) == 6 and not any("/mailFolders/" in r.path for r in reads)
    folder_looks = [r.path.rsplit("/", 1)[1] for r in graph.requests
                    if r.method == "GET" and r.query == {"$select": "id"}
                    and "/mailFolders/" in r.path]
    # the source once; the folder the sorted mail is in once, to be sure it is another
    assert folder_looks == ["inbox", box.folder_id("Processed")]
    assert len(box.messages_in("Processed")) == 3 and box.messages_in("inbox") == []
    with table_store_from_settings(app_env) as store:
        assert len(list(store.reports())) == 3
