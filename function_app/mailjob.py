"""The mailbox job: report e-mails in the shared mailbox become stored reports and sorted mail.

Each message goes through the same steps, each safe to repeat: download its attachments, read
and store every report in them (the store ignores a report it already has), then move the
message to `Processed`, or to `Failed` with the reason. A crash anywhere leaves the message in
the source folder, and the next attempt finishes the job with the same totals. Mail is never
deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from analysis import Limits
from function_app.pipeline import Outcome, ingest_input
from function_app.settings import MailboxSettings
from graph.client import GraphConnection, RetryPolicy, connect
from graph.credentials import credential_for
from graph.errors import GraphError, NotFound, TooLarge
from graph.mailbox import Mailbox, MailRef
from store import Store

log = logging.getLogger("dmarcbot.mailbox")

MAIL_QUEUE = "dmarcbot-mail"
# After this many attempts the host moves a queue message to the poison queue; the last attempt
# files the e-mail under `Failed` instead. Equal to host.json's extensions.queues.maxDequeueCount
# (a test keeps the two in step).
MAX_DEQUEUE_COUNT = 5

MailStatus = Literal["processed", "failed", "skipped", "retry"]


@dataclasses.dataclass(frozen=True, slots=True)
class MailResult:
    """What became of one message: sorted, skipped (sorted already), or left for a retry."""

    message: str  # the message's label (its Message-ID), never its subject
    status: MailStatus
    outcomes: tuple[Outcome, ...] = ()
    reason: str | None = None


@contextlib.asynccontextmanager
async def open_mailbox(settings: MailboxSettings, *, retry: RetryPolicy | None = None,
                       http_client: Any = None) -> AsyncIterator[Mailbox]:
    """The configured mailbox over a Graph connection that lives as long as the block."""
    credential = credential_for(settings.credential, http_client=http_client)
    graph: GraphConnection = connect(credential, base_url=settings.graph_url,
                                     ca_bundle=settings.credential.ca_bundle,
                                     retry=retry or RetryPolicy())
    async with graph:
        yield Mailbox(graph, settings.address, settings.folders)


async def ingest_mail(mailbox: Mailbox, ref: MailRef, store: Store, limits: Limits) -> MailResult:
    """Store every report in one message, then sort it. Graph errors propagate (retry later)."""
    outcomes: list[Outcome] = []
    if not ref.attachments:  # a report sent as the body: read the whole message
        data = await _download(mailbox.message_bytes(ref, limits.max_input_bytes), ref.label,
                               outcomes)
        if data is not None:
            outcomes.extend(ingest_input(data, store, limits, name=ref.label))
    for attachment in ref.attachments:
        label = f"{ref.label}/{attachment.name}"
        data = await _download(mailbox.attachment_bytes(ref, attachment, limits.max_input_bytes),
                               label, outcomes)
        if data is not None:
            outcomes.extend(ingest_input(data, store, limits, name=label))
    reason = _failure(outcomes)
    await mailbox.move(ref, "failed" if reason else "processed", reason=reason)
    status: MailStatus = "failed" if reason else "processed"
    log.info("%s %s: %d reports stored, %d duplicates", status, ref.label,
             sum(o.status == "stored" for o in outcomes),
             sum(o.status == "duplicate" for o in outcomes))
    return MailResult(ref.label, status, tuple(outcomes), reason)


async def _download(request: Any, label: str, outcomes: list[Outcome]) -> bytes | None:
    try:
        return await request
    except TooLarge as exc:
        outcomes.append(Outcome(label, "rejected", reason=f"{label}: {exc}", rule="limit"))
        return None


def _failure(outcomes: list[Outcome]) -> str | None:
    """Why the message belongs in `Failed`, or None when every report in it was read.

    A part that is not a report (a logo, a signature) is ignored when the message has reports;
    a part that broke a limit or is damaged fails the message, even if other parts were stored
    (those stay stored: each report is whole).
    """
    refused = [o for o in outcomes if o.status == "rejected" and o.rule != "not-a-report"]
    if refused:
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        return f"{refused[0].reason}{more}"
    if not any(o.status in ("stored", "duplicate") for o in outcomes):
        reasons = [o.reason for o in outcomes if o.reason]
        return reasons[0] if len(reasons) == 1 else "no DMARC or TLS report in the message"
    return None


async def ingest_queued(mailbox: Mailbox, message_id: str, store: Store, limits: Limits, *,
                        attempt: int, max_attempts: int = MAX_DEQUEUE_COUNT) -> MailResult:
    """One queued message: as `ingest_mail`, after checking it still waits to be sorted.

    A failure raises so the queue tries again, except on the last attempt, which files the
    message under `Failed` with the error instead of leaving it for the poison queue.
    """
    try:
        ref = await mailbox.message(message_id)
    except NotFound:
        return MailResult(f"message {message_id[-12:]}", "skipped", reason="no longer in the "
                          "mailbox")
    if not await mailbox.waiting(ref):
        return MailResult(ref.label, "skipped", reason="sorted already")
    try:
        return await ingest_mail(mailbox, ref, store, limits)
    except Exception as exc:
        if attempt < max_attempts:
            raise
        reason = f"gave up after {attempt} attempts: {_one_line(exc)}"
        log.error("%s: %s", ref.label, reason)
        await mailbox.move(ref, "failed", reason=reason)
        return MailResult(ref.label, "failed", reason=reason)


async def run_mailbox(mailbox: Mailbox, store: Store, limits: Limits, *,
                      workers: int = 8) -> list[MailResult]:
    """Every message waiting in the mailbox, listed and ingested concurrently.

    Listing pages and the messages' downloads overlap; the Graph connection's pool keeps at
    most 4 requests in flight, and more workers than that keep all 4 busy while one parses.
    A message whose Graph calls fail stays where it is for the next run.
    """
    queue: asyncio.Queue[MailRef | None] = asyncio.Queue(maxsize=workers * 4)
    results: list[MailResult] = []

    async def lister() -> None:
        try:
            async for ref in mailbox.messages():
                await queue.put(ref)
        finally:
            for _ in range(workers):
                await queue.put(None)

    async def worker() -> None:
        while (ref := await queue.get()) is not None:
            try:
                results.append(await ingest_mail(mailbox, ref, store, limits))
            except GraphError as exc:
                log.warning("%s left for the next run: %s", ref.label, exc)
                results.append(MailResult(ref.label, "retry", reason=_one_line(exc)))

    tasks = [asyncio.create_task(lister())]
    tasks += [asyncio.create_task(worker()) for _ in range(workers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return results


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
