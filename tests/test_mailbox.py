"""The shared mailbox, read with the real msal and msgraph-sdk from fake Entra ID and Graph.

The fakes are HTTPS servers on loopback that refuse what Graph would not route (the route table
comes from the installed msgraph-sdk), so every request here is one the real service accepts.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from analysis import Limits
from function_app.mailjob import (
    MailResult,
    ingest_message,
    ingest_queued,
    open_mailbox,
    run_mailbox,
)
from function_app.settings import MailboxSettings, SettingsError, mailbox_settings
from graph.client import RetryPolicy
from graph.errors import CredentialError
from graph.mailbox import Mailbox
from store import SqliteStore
from tests.builders import aggregate_xml, forwarded, gzipped, record_xml, report_email, zipped
from tests.fakes.entra import FakeEntra, FakeManagedIdentity
from tests.fakes.graph import FakeGraph
from tests.fakes.identity import FakeIdentityEndpoint
from tests.fakes.mailbox import FileAttachment, ItemAttachment
from tests.fakes.tls import TestCA
from tests.mailbox_env import CLIENT_ID, FAST, MAILBOX, SECRET, env_for


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    with SqliteStore(tmp_path / "s.sqlite3") as s:
        yield s  # type: ignore[misc]


def report(report_id: str, *records: tuple[str, int], org: str = "Example Receiver") -> bytes:
    return aggregate_xml("".join(record_xml(ip, n) for ip, n in records), report_id=report_id,
                         org=org)


def run(settings: MailboxSettings, store: SqliteStore, limits: Limits | None = None,
        retry: RetryPolicy = FAST) -> list[MailResult]:
    async def go() -> list[MailResult]:
        async with open_mailbox(settings, retry=retry) as mailbox:
            return await run_mailbox(mailbox, store, limits or Limits())

    return asyncio.run(go())


def totals(store: SqliteStore) -> tuple[int, int]:
    return len(list(store.reports())), sum(n for _, n in store.rollups())


def folder(graph: FakeGraph, name: str) -> list[str]:
    box = graph.mailbox(MAILBOX)
    assert box is not None
    return [m.internet_message_id for m in box.messages_in(name)]


def add(graph: FakeGraph, *attachments: FileAttachment | ItemAttachment, mid: str,
        body: str = "") -> str:
    box = graph.mailbox(MAILBOX)
    assert box is not None
    return box.add_message(internet_message_id=mid, attachments=attachments, body=body,
                           subject="Report domain: contoso.com")


def assert_well_behaved(graph: FakeGraph) -> None:
    """What every run must hold to: routable requests, immutable ids, 4 in flight, no delete."""
    assert graph.rejected == [] and graph.unimplemented == []
    assert graph.deleted == []
    assert graph.requests
    for request in graph.requests:
        assert request.headers.get("prefer") == 'IdType="ImmutableId"', request.path
        assert request.headers.get("authorization") == "<redacted>"
    assert max(graph.max_in_flight.values()) <= 4


# -- every kind of report e-mail -----------------------------------------------------------------


def test_every_attachment_kind_is_read_and_the_mail_sorted(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    add(graph, FileAttachment("google.com!contoso.com!1.xml", report("x", ("192.0.2.1", 1)),
                              "text/xml"), mid="<xml@r>")
    add(graph, FileAttachment("r.xml.gz", gzipped(report("g", ("192.0.2.2", 2))),
                              "application/gzip"), mid="<gz@r>")
    add(graph, FileAttachment("r.zip", zipped(("a.xml", report("z1", ("192.0.2.3", 4))),
                                              ("b.xml", report("z2", ("192.0.2.4", 8)))),
                              "application/zip"), mid="<zip@r>")
    add(graph, FileAttachment("fwd.eml", report_email(gzipped(report("e", ("192.0.2.5", 16)))),
                              "message/rfc822"), mid="<eml@r>")
    add(graph, ItemAttachment("Report", forwarded(report_email(gzipped(
        report("i", ("192.0.2.6", 32)))))), mid="<item@r>")
    # a logo beside the report is not a report, and that is fine
    add(graph, FileAttachment("logo.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png",
                              is_inline=True),
        FileAttachment("r.xml", report("l", ("192.0.2.7", 64)), "application/octet-stream"),
        mid="<logo@r>")

    results = run(settings, store)

    assert {r.message: r.status for r in results} == {
        "<xml@r>": "processed", "<gz@r>": "processed", "<zip@r>": "processed",
        "<eml@r>": "processed", "<item@r>": "processed", "<logo@r>": "processed"}
    assert totals(store) == (7, 127)
    assert folder(graph, "inbox") == []
    assert len(folder(graph, "Processed")) == 6
    assert_well_behaved(graph)
    # listing asks only for the fields it uses, oldest first, with the attachments' metadata
    listing = next(r for r in graph.requests if r.path.endswith("/messages"))
    assert listing.query["$orderby"] == "receivedDateTime asc"
    assert set(listing.query["$select"].split(",")) == {"id", "internetMessageId", "categories",
                                                        "internetMessageHeaders"}
    assert "contentBytes" not in listing.query["$expand"]


def test_a_report_in_the_body_is_read_from_the_whole_message(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    add(graph, mid="<body@r>", body=report("b", ("192.0.2.9", 5)).decode())
    (result,) = run(settings, store)
    assert result.status == "processed"
    assert totals(store) == (1, 5)


def test_a_bad_report_goes_to_failed_with_the_reason_and_nothing_is_stored(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    truncated = gzipped(report("t", ("192.0.2.1", 3)))[:-40]
    add(graph, FileAttachment("broken.xml.gz", truncated, "application/gzip"), mid="<bad@r>")
    add(graph, FileAttachment("invoice.pdf", b"%PDF-1.7\n" + bytes(100), "application/pdf"),
        mid="<pdf@r>")

    results = {r.message: r for r in run(settings, store)}

    assert results["<bad@r>"].status == "failed"
    assert results["<pdf@r>"].status == "failed"
    assert totals(store) == (0, 0)
    box = graph.mailbox(MAILBOX)
    assert box is not None
    failed = {m.internet_message_id: m.categories for m in box.messages_in("Failed")}
    (bad,) = failed["<bad@r>"]
    assert bad.startswith("dmarcbot: <bad@r>/broken.xml.gz: ") and len(bad) <= 255
    assert failed["<pdf@r>"][0].startswith("dmarcbot: ")
    assert "not a" in failed["<pdf@r>"][0] or "no DMARC" in failed["<pdf@r>"][0]
    assert folder(graph, "inbox") == []
    assert_well_behaved(graph)


def test_a_report_mailed_twice_is_stored_once(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    data = gzipped(report("twice", ("192.0.2.1", 7)))
    add(graph, FileAttachment("a.xml.gz", data), mid="<first@r>")
    add(graph, ItemAttachment("Fwd", report_email(data)), mid="<again@r>")

    results = run(settings, store)

    statuses = Counter(o.status for r in results for o in r.outcomes)
    assert statuses == {"stored": 1, "duplicate": 1}
    assert {r.status for r in results} == {"processed"}
    assert totals(store) == (1, 7)


def test_a_second_run_over_the_same_mail_stores_nothing_twice(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    for n in range(12):
        add(graph, FileAttachment(f"{n}.xml", report(f"r{n}", ("192.0.2.1", n + 1))),
            mid=f"<{n}@r>")
    run(settings, store)
    first = totals(store)
    # a person moves everything back to the inbox, say to try again
    box = graph.mailbox(MAILBOX)
    assert box is not None
    inbox = box.resolve_folder("inbox")
    assert inbox is not None
    for message in box.messages_in("Processed"):
        box.move(box.find(message.id), inbox, new_immutable=False)  # type: ignore[arg-type]
    again = run(settings, store)
    assert {o.status for r in again for o in r.outcomes} == {"duplicate"}
    assert totals(store) == first == (12, 78)
    assert len(folder(graph, "Processed")) == 12


def test_pages_are_followed_oldest_first(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    import datetime as dt

    box = graph.mailbox(MAILBOX)
    assert box is not None
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    for n in reversed(range(120)):  # added newest first
        box.add_message(received=start + dt.timedelta(minutes=n), internet_message_id=f"<{n}@r>",
                        attachments=[FileAttachment("r.xml", report(f"p{n}", ("192.0.2.1", 1)))])

    async def listed() -> list[str | None]:
        async with open_mailbox(settings, retry=FAST) as mailbox:
            return [ref.internet_message_id for ref in await mailbox.messages(page_size=50)]

    assert asyncio.run(listed()) == [f"<{n}@r>" for n in range(120)]
    pages = [r for r in graph.requests if r.path.endswith("/messages")]
    assert len(pages) == 3 and "$skiptoken" in pages[1].query


# -- limits --------------------------------------------------------------------------------------


def test_an_attachment_over_the_size_limit_is_refused_before_download(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    big = gzipped(report("big", *((f"192.0.2.{n}", 1) for n in range(1, 200))))
    add(graph, FileAttachment("big.xml.gz", big), mid="<big@r>")
    (result,) = run(settings, store, Limits(max_input_bytes=len(big) - 1))
    assert result.status == "failed" and "max_input_bytes" in (result.reason or "")
    assert not any(r.path.endswith("/$value") for r in graph.requests)
    assert totals(store) == (0, 0)


def test_a_forwarded_item_is_cut_off_while_streaming_when_too_big(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    mime = report_email(report("fw", *((f"192.0.2.{n}", 1) for n in range(1, 250))),
                        content_type="text/xml", filename="r.xml")
    add(graph, ItemAttachment("Fwd", mime), mid="<fw@r>")
    (result,) = run(settings, store, Limits(max_input_bytes=4096))
    assert result.status == "failed" and "max_input_bytes" in (result.reason or "")
    assert totals(store) == (0, 0)


# -- Graph's ways of saying no -------------------------------------------------------------------


def test_throttling_and_unavailable_answers_are_retried(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    add(graph, FileAttachment("r.xml", report("t", ("192.0.2.1", 2))), mid="<t@r>")
    graph.inject(429, path_contains="/messages", method="GET", headers={"Retry-After": "0"})
    graph.inject(503, path_contains="/$value")
    graph.inject(504, path_contains="/move")
    (result,) = run(settings, store)
    assert result.status == "processed"
    assert totals(store) == (1, 2)
    retried = [r for r in graph.requests if "retry-attempt" in r.headers]
    assert len(retried) == 3


def test_an_expired_token_is_replaced(entra: FakeEntra, settings: MailboxSettings,
                                      graph: FakeGraph, store: SqliteStore) -> None:
    add(graph, FileAttachment("r.xml", report("a", ("192.0.2.1", 1))), mid="<a@r>")
    run(settings, store)
    issued = entra.issued_tokens
    entra.expire_all()  # msal still holds the token in its cache, and believes it good
    add(graph, FileAttachment("r.xml", report("b", ("192.0.2.1", 1))), mid="<b@r>")
    (result,) = run(settings, store)
    assert result.status == "processed"
    assert entra.issued_tokens == issued + 1
    assert totals(store) == (2, 2)


def test_folders_are_reused_and_a_concurrent_create_is_not_an_error(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    box = graph.mailbox(MAILBOX)
    assert box is not None
    box.add_folder("Processed")
    add(graph, FileAttachment("r.xml", report("a", ("192.0.2.1", 1))), mid="<a@r>")
    add(graph, FileAttachment("r.txt", b"not a report"), mid="<b@r>")
    # another instance creates `Failed` between our look and our create: Graph answers 409
    real_find = Mailbox._find_folder
    looks: list[str] = []

    async def racing_find(self: Mailbox, name: str) -> str | None:
        looks.append(name)
        if name == "Failed" and looks.count("Failed") == 1:
            box.add_folder("Failed")  # type: ignore[union-attr]
            return None
        return await real_find(self, name)

    monkeypatch.setattr(Mailbox, "_find_folder", racing_find)
    results = run(settings, store)
    assert sorted(r.status for r in results) == ["failed", "processed"]
    assert [f.display_name for f in box.folders()].count("Processed") == 1
    assert [f.display_name for f in box.folders()].count("Failed") == 1
    assert len(folder(graph, "Failed")) == 1


def test_a_move_that_changes_the_id_is_followed(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    graph.ids_change_on_move = True
    old = add(graph, FileAttachment("r.xml", report("a", ("192.0.2.1", 1))), mid="<a@r>")

    async def go() -> tuple[str, MailResult]:
        async with open_mailbox(settings, retry=FAST) as mailbox:
            (ref,) = await mailbox.messages()
            assert (await ingest_message(mailbox, ref, store, Limits())).status == "processed"
            # the queue delivers the same id again: the old id is gone, which means done
            return ref.id, await ingest_queued(mailbox, ref.id, store, Limits(), attempt=2)

    listed_id, again = asyncio.run(go())
    assert again.status == "skipped"
    (moved,) = graph.mailbox(MAILBOX).messages_in("Processed")  # type: ignore[union-attr]
    assert moved.immutable_id != listed_id and moved.id != old
    assert totals(store) == (1, 1)


def test_a_sorted_message_is_not_waiting_even_where_its_old_folder_still_answers(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    """Graph does not promise a 404 from the source folder for a message that left it: where
    the message is (its parentFolderId) decides, not whether the folder answers."""
    graph.folder_scoped_reads_check_folder = False  # as real Graph may
    add(graph, FileAttachment("r.xml", report("a", ("192.0.2.1", 1))), mid="<a@r>")

    async def go() -> tuple[Any, MailResult]:
        async with open_mailbox(settings, retry=FAST) as mailbox:
            (ref,) = await mailbox.messages()
            assert (await ingest_message(mailbox, ref, store, Limits())).status == "processed"
            # what the old check asked: the source folder still hands the sorted message out
            old_look = await mailbox.graph.call(
                lambda: mailbox._user.mail_folders.by_mail_folder_id("inbox").messages
                .by_message_id(ref.id).get())
            return old_look, await ingest_queued(mailbox, ref.id, store, Limits(), attempt=2)

    old_look, again = asyncio.run(go())
    assert old_look is not None and old_look.internet_message_id == "<a@r>"
    assert again.status == "skipped" and again.reason == "sorted already"
    assert folder(graph, "Processed") == ["<a@r>"] and folder(graph, "inbox") == []
    assert totals(store) == (1, 1)
    assert_well_behaved(graph)


def test_waiting_messages_are_read_by_id_and_the_source_folder_is_asked_once(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    ids = [add(graph, FileAttachment("r.xml", report(f"q{n}", ("192.0.2.1", 1))),
               mid=f"<q{n}@r>") for n in range(3)]

    async def go() -> list[MailResult]:
        async with open_mailbox(settings, retry=FAST) as mailbox:
            listed = await mailbox.message_ids()
            assert len(listed) == len(ids)
            return [await ingest_queued(mailbox, mid, store, Limits(), attempt=1)
                    for mid in listed]

    graph.requests.clear()
    results = asyncio.run(go())
    assert [r.status for r in results] == ["processed"] * 3
    reads = [r for r in graph.requests if r.method == "GET" and "/messages/" in r.path
             and "/attachments" not in r.path and not r.path.endswith("/$value")]
    assert len(reads) == 3  # one read per queued message, as before
    for read in reads:
        assert "/mailFolders/" not in read.path  # asked of the mailbox, not of a folder
        assert "parentFolderId" in read.query["$select"].split(",")
    looks = [r for r in graph.requests if r.method == "GET" and r.path.endswith("/inbox")]
    assert len(looks) == 1 and looks[0].query == {"$select": "id"}
    assert len(folder(graph, "Processed")) == 3
    assert_well_behaved(graph)


def test_a_parent_folder_id_in_another_form_is_resolved_once_before_being_trusted(
        settings: MailboxSettings, graph: FakeGraph) -> None:
    """Exchange can write one folder's id in more than one form: an id that is not the source
    folder's own is asked of Graph, so a waiting message is never taken for a sorted one."""
    mid = add(graph, FileAttachment("r.xml", report("a", ("192.0.2.1", 1))), mid="<a@r>")
    seen = {"id": mid, "internetMessageId": "<a@r>", "categories": [], "attachments": [],
            "parentFolderId": "Inbox"}  # another name for the source folder
    graph.inject(200, method="GET", path_contains=f"/messages/{mid}", times=2, body=seen)

    async def go() -> list[Any]:
        async with open_mailbox(settings, retry=FAST) as mailbox:
            return [await mailbox.waiting_message(mid), await mailbox.waiting_message(mid),
                    await mailbox.waiting_message(mid)]  # the last one: the real answer

    first, second, real = asyncio.run(go())
    assert first is not None and first.internet_message_id == "<a@r>"
    assert second == first and real is not None and real.internet_message_id == "<a@r>"
    folder_looks = [r.path.rsplit("/", 1)[1] for r in graph.requests
                    if r.method == "GET" and "/mailFolders/" in r.path]
    assert folder_looks == ["inbox", "Inbox"]  # the source once, the other form once


# -- credentials ---------------------------------------------------------------------------------


def test_a_certificate_credential_gets_a_token(
        entra: FakeEntra, graph: FakeGraph, test_ca: TestCA, tmp_path: Path,
        store: SqliteStore) -> None:
    cert = test_ca.issue_client_certificate()
    entra.add_client(CLIENT_ID, certificate_pem=cert.cert_pem)
    graph.add_mailbox(MAILBOX).grant(CLIENT_ID)
    pem = tmp_path / "app.pem"
    pem.write_text(cert.private_key_pem + cert.cert_pem)
    env = env_for(entra, graph, test_ca, DMARCBOT_CERTIFICATE_PATH=str(pem))
    del env["DMARCBOT_CLIENT_SECRET"]
    add(graph, FileAttachment("r.xml", report("c", ("192.0.2.1", 3))), mid="<c@r>")
    (result,) = run(mailbox_settings(env), store)
    assert result.status == "processed"


def test_the_managed_identity_vouches_for_the_app(
        entra: FakeEntra, graph: FakeGraph, test_ca: TestCA, store: SqliteStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    identity = FakeManagedIdentity(issuer=f"{entra.authority}/v2.0")
    entra.add_client(CLIENT_ID, federated=[identity.credential()])  # no secret, no certificate
    graph.add_mailbox(MAILBOX).grant(CLIENT_ID)
    add(graph, FileAttachment("r.xml", report("f", ("192.0.2.1", 2))), mid="<f@r>")
    managed_identity = "9d0c8a9e-6f57-4c41-9f3e-2f1d8a7c6b5a"
    with FakeIdentityEndpoint(identity, managed_identity) as endpoint:
        monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint.url)  # what the Functions host sets
        monkeypatch.setenv("IDENTITY_HEADER", endpoint.header)
        env = env_for(entra, graph, test_ca, DMARCBOT_MANAGED_IDENTITY_CLIENT_ID=managed_identity)
        del env["DMARCBOT_CLIENT_SECRET"]
        (result,) = run(mailbox_settings(env), store)
    assert result.status == "processed"
    assert [(q["resource"], q["client_id"]) for q in endpoint.requests] == [
        ("api://AzureADTokenExchange", managed_identity)]


def test_a_refused_secret_names_entras_error_code_and_never_the_secret(
        entra: FakeEntra, graph: FakeGraph, test_ca: TestCA, store: SqliteStore,
        caplog: pytest.LogCaptureFixture) -> None:
    entra.add_client(CLIENT_ID, secret="the-right-one")
    graph.add_mailbox(MAILBOX).grant(CLIENT_ID)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(CredentialError) as raised:
        run(mailbox_settings(env_for(entra, graph, test_ca)), store)
    assert raised.value.code == "invalid_client"
    assert "AADSTS7000215" in str(raised.value) and SECRET not in str(raised.value)
    assert SECRET not in caplog.text
    assert "client secret" in caplog.text  # the warning that secrets are for development only


def test_settings_name_what_is_missing_or_contradictory() -> None:
    with pytest.raises(SettingsError, match="DMARCBOT_CERTIFICATE_PATH"):
        mailbox_settings({"DMARCBOT_TENANT_ID": "t", "DMARCBOT_CLIENT_ID": "c"})
    with pytest.raises(SettingsError, match="DMARCBOT_MAILBOX is missing"):
        mailbox_settings({"DMARCBOT_TENANT_ID": "t", "DMARCBOT_CLIENT_ID": "c",
                          "DMARCBOT_CLIENT_SECRET": "s"})
    with pytest.raises(SettingsError, match="DMARCBOT_TENANT_ID is missing"):
        mailbox_settings({"DMARCBOT_CLIENT_SECRET": "s", "DMARCBOT_MAILBOX": "a@b.c"})
    with pytest.raises(SettingsError, match="use one credential"):
        mailbox_settings({"DMARCBOT_CLIENT_SECRET": "s", "DMARCBOT_CERTIFICATE_PATH": "/x.pem"})


def test_logs_hold_no_secret_token_subject_or_report_content(
        entra: FakeEntra, settings: MailboxSettings, graph: FakeGraph, store: SqliteStore,
        caplog: pytest.LogCaptureFixture) -> None:
    import function_app  # noqa: F401  (quiets httpx and the Azure SDK, as the app does)

    caplog.set_level(logging.DEBUG)
    add(graph, FileAttachment("r.xml", report("secretive", ("198.51.100.77", 9),
                                              org="Confidential Receiver")), mid="<l@r>")
    run(settings, store)
    text = caplog.text
    (message,) = graph.mailbox(MAILBOX).messages_in("Processed")  # type: ignore[union-attr]
    assert "<l@r>" in text  # messages are named by their Message-ID
    for leak in (SECRET, "198.51.100.77", "Confidential Receiver", "Report domain", MAILBOX,
                 message.immutable_id[-12:], message.id[-12:]):
        assert leak not in text, leak


def test_an_existing_folder_is_found_whatever_its_case(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    box = graph.mailbox(MAILBOX)
    assert box is not None
    box.add_folder("processed")  # a person made it, in lower case
    add(graph, FileAttachment("r.xml", report("a", ("192.0.2.1", 1))), mid="<a@r>")
    (result,) = run(settings, store)
    assert result.status == "processed"
    assert [f.display_name for f in box.folders()].count("Processed") == 0
    assert len(box.messages_in("processed")) == 1


def test_a_gateway_error_page_leaves_the_mail_for_the_next_run(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    add(graph, FileAttachment("r.xml", report("a", ("192.0.2.1", 1))), mid="<a@r>")
    add(graph, FileAttachment("r.xml", report("b", ("192.0.2.1", 1))), mid="<b@r>")
    graph.inject(502, path_contains="/move", body="<html><body>Bad gateway</body></html>",
                 headers={"Content-Type": "text/html"})
    results = {r.message: r for r in run(settings, store)}
    assert sorted(r.status for r in results.values()) == ["processed", "retry"]
    (retry,) = [r for r in results.values() if r.status == "retry"]
    assert retry.reason == "Microsoft Graph answered 502"
    assert len(folder(graph, "inbox")) == 1
    assert totals(store) == (2, 2)  # stored already: the next run only moves it


def test_retry_after_is_honoured(settings: MailboxSettings, graph: FakeGraph,
                                 store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    add(graph, FileAttachment("r.xml", report("a", ("192.0.2.1", 1))), mid="<a@r>")
    graph.inject(429, path_contains="/$value", headers={"Retry-After": "2"})
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, *args: object) -> object:
        waits.append(delay)
        return await real_sleep(delay, *args)

    monkeypatch.setattr(asyncio, "sleep", sleep)  # watched, not skipped: the wait is real
    (result,) = run(settings, store)
    assert result.status == "processed"
    assert 2.0 in waits, waits  # exactly the server's 2 s (the backoff alone would be 3 s+)


def test_a_person_s_categories_stay_and_an_old_reason_goes_once_the_mail_is_read(
        settings: MailboxSettings, graph: FakeGraph, store: SqliteStore) -> None:
    box = graph.mailbox(MAILBOX)
    assert box is not None
    box.add_message(internet_message_id="<back@r>", categories=[
        "Finance", "dmarcbot: <back@r>/r.xml: over the limit (max_input_bytes)"],
        attachments=[FileAttachment("r.xml", report("a", ("192.0.2.1", 1)))])
    (result,) = run(settings, store)
    assert result.status == "processed"
    (message,) = box.messages_in("Processed")
    assert message.categories == ["Finance"]


def test_a_category_is_one_line_without_separators_and_fits_outlook() -> None:
    from graph.mailbox import category

    text = category("a, b; c\n" + "\U0001F4E7" * 300)
    assert text.startswith("dmarcbot: a b c \U0001F4E7")
    assert "," not in text and ";" not in text and "\n" not in text
    assert len(text.encode("utf-16-le")) <= 2 * 255


def test_a_pfx_certificate_credential_gets_a_token(
        entra: FakeEntra, graph: FakeGraph, test_ca: TestCA, tmp_path: Path,
        store: SqliteStore) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption,
        load_pem_private_key,
        pkcs12,
    )

    cert = test_ca.issue_client_certificate()
    entra.add_client(CLIENT_ID, certificate_pem=cert.cert_pem)
    graph.add_mailbox(MAILBOX).grant(CLIENT_ID)
    pfx = tmp_path / "app.pfx"
    pfx.write_bytes(pkcs12.serialize_key_and_certificates(
        b"dmarcbot", load_pem_private_key(cert.private_key_pem.encode(), None),  # type: ignore[arg-type]
        x509.load_pem_x509_certificate(cert.cert_pem.encode()), None,
        BestAvailableEncryption(b"pfx-password")))
    env = env_for(entra, graph, test_ca, DMARCBOT_CERTIFICATE_PATH=str(pfx),
                  DMARCBOT_CERTIFICATE_PASSWORD="pfx-password")
    del env["DMARCBOT_CLIENT_SECRET"]
    add(graph, FileAttachment("r.xml", report("p", ("192.0.2.1", 3))), mid="<p@r>")
    (result,) = run(mailbox_settings(env), store)
    assert result.status == "processed"
