"""The Functions app's mailbox triggers, called as the worker calls them, on Azurite and fakes.

The timer lists the waiting mail and queues one id per e-mail; the queue trigger ingests one;
the timer's next tick names the senders. Settings come from the environment, as in Azure, and
the store is Azure Table Storage (Azurite).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from function_app import mailbox_functions
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
            test_ca: TestCA, azurite: Any) -> dict[str, str]:
    entra.add_client(CLIENT_ID, secret=SECRET)
    graph.add_mailbox(MAILBOX)
    env = env_for(entra, graph, test_ca,
                  DMARCBOT_TABLES_CONNECTION=azurite.connection_string,
                  DMARCBOT_TABLES_PREFIX=unique_prefix(),
                  DMARCBOT_NAMESERVERS="none")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def sendgrid_report(report_id: str, count: int) -> bytes:
    return gzipped(aggregate_xml(
        record_xml("198.51.100.10", count, dkim="fail", spf="fail", envelope_from="sendgrid.net",
                   header_from="example.com", auth=SENDGRID), report_id=report_id))


def queued(out: Out, attempt: int = 1) -> list[QueueMessage]:
    return [QueueMessage(id=f"q{n}", body=body.encode(), dequeue_count=attempt)
            for n, body in enumerate(out.value or [])]


def test_timer_queues_ids_and_the_queue_trigger_ingests_each_mail(
        app_env: dict[str, str], graph: FakeGraph) -> None:
    box = graph.mailbox(MAILBOX)
    assert box is not None
    for n in range(3):
        box.add_message(internet_message_id=f"<{n}@r>", attachments=[
            FileAttachment(f"{n}.xml.gz", sendgrid_report(f"r{n}", 10 + n))])
    box.add_message(internet_message_id="<junk@r>",
                    attachments=[FileAttachment("x.txt", b"hello")])

    out = Out()
    asyncio.run(mailbox_functions.poll_mailbox(TimerRequest(past_due=False), out))
    messages = queued(out)
    assert len(messages) == 4
    for message in messages:  # ids only: nothing of the report travels through the queue
        assert set(json.loads(message.get_body())) == {"id"}
        asyncio.run(mailbox_functions.ingest_mail(message))
    # the same ids delivered again (the timer ticked before the queue drained): no change
    for message in queued(out, attempt=2):
        asyncio.run(mailbox_functions.ingest_mail(message))

    assert [m.internet_message_id for m in box.messages_in("inbox")] == []
    assert len(box.messages_in("Processed")) == 3 and len(box.messages_in("Failed")) == 1
    with table_store_from_settings(app_env) as store:
        assert len(list(store.reports())) == 3
        assert sum(n for _, n in store.rollups()) == 33

    # the next tick queues nothing and names the senders of what arrived
    out = Out()
    asyncio.run(mailbox_functions.poll_mailbox(TimerRequest(past_due=True), out))
    assert out.value is None
    with table_store_from_settings(app_env) as store:
        inventory = store.inventory("example.com")
    assert {(key, item.status) for key, item in inventory.items()} == {
        (("example.com", "sendgrid"), "Pending")}
    assert graph.deleted == [] and graph.rejected == []


def test_the_last_attempt_files_the_mail_under_failed(
        app_env: dict[str, str], graph: FakeGraph) -> None:
    box = graph.mailbox(MAILBOX)
    assert box is not None
    box.add_message(internet_message_id="<x@r>",
                    attachments=[FileAttachment("r.xml.gz", sendgrid_report("x", 1))])
    out = Out()
    asyncio.run(mailbox_functions.poll_mailbox(TimerRequest(), out))
    graph.inject(500, path_contains="/$value", times=10)  # not retried by the SDK

    (first,) = queued(out, attempt=1)
    with pytest.raises(GraphError, match="500"):
        asyncio.run(mailbox_functions.ingest_mail(first))  # the queue will try again
    assert len(box.messages_in("inbox")) == 1

    (last,) = queued(out, attempt=5)
    asyncio.run(mailbox_functions.ingest_mail(last))
    (failed,) = box.messages_in("Failed")
    assert failed.categories == [
        "dmarcbot: gave up after 5 attempts: Microsoft Graph answered 500 InternalServerError"]
    with table_store_from_settings(app_env) as store:
        assert list(store.reports()) == []


def test_a_queue_message_without_an_id_is_dropped(app_env: dict[str, str],
                                                   graph: FakeGraph) -> None:
    for body in (b"not json", b"[]", b'{"id": 7}', b'{"id": ""}'):
        asyncio.run(mailbox_functions.ingest_mail(QueueMessage(id="q", body=body,
                                                               dequeue_count=1)))
    assert graph.requests == []


def test_a_missing_setting_is_named(app_env: dict[str, str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DMARCBOT_MAILBOX")
    with pytest.raises(SettingsError, match="DMARCBOT_MAILBOX is missing"):
        asyncio.run(mailbox_functions.poll_mailbox(TimerRequest(), Out()))
