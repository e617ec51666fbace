"""The mailbox job: report e-mails in the shared mailbox become stored reports and sorted mail.

Each message goes through the same steps, each safe to repeat: download its attachments, read
and store every report in them (the store ignores a report it already has), then move the
message to `Processed`, or to `Failed` with the reason. A crash anywhere leaves the message in
the source folder, and the next attempt finishes the job with the same totals. Mail is never
deleted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from analysis import Limits
from analysis.mailauth import mail_evidence
from analysis.model import MailEvidence
from function_app.pipeline import Outcome, ingest_input
from function_app.settings import MailboxSettings
from graph.client import GraphConnection, RetryPolicy, connect
from graph.credentials import credential_for
from graph.errors import GraphError, TooLarge
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
    graph = _connect(settings, retry, http_client)
    async with graph:
        yield Mailbox(graph, settings.address, settings.folders)


def _connect(settings: MailboxSettings, retry: RetryPolicy | None,
             http_client: Any) -> GraphConnection:
    credential = credential_for(settings.credential, http_client=http_client)
    return connect(credential, base_url=settings.graph_url,
                   ca_bundle=settings.credential.ca_bundle, retry=retry or RetryPolicy())


# Reading and storing reports is CPU and (for Table Storage) blocking I/O: it runs on one
# thread of its own, so Graph requests keep flowing meanwhile, and the store is used by one
# thread at a time.
_STORE_THREAD = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dmarcbot-store")


async def ingest_message(mailbox: Mailbox, ref: MailRef, store: Store,
                         limits: Limits) -> MailResult:
    """Store every report in one message, then sort it. Graph errors propagate (retry later)."""
    outcomes: list[Outcome] = []
    limit = limits.max_input_bytes
    parts: list[tuple[str, Callable[[], Awaitable[bytes]]]] = [
        (f"{ref.label}/{a.name}", functools.partial(mailbox.attachment_bytes, ref, a, limit))
        for a in ref.attachments]
    if not parts:  # a report sent as the body: read the whole message
        parts = [(ref.label, functools.partial(mailbox.message_bytes, ref, limit))]
    loop = asyncio.get_running_loop()
    for label, download in parts:
        try:
            data = await download()
        except TooLarge as exc:
            outcomes.append(Outcome(label, "rejected", reason=f"{label}: {exc}", rule="limit"))
            continue
        outcomes += await loop.run_in_executor(_STORE_THREAD, _ingest, data, store, limits,
                                               label, mail_evidence(ref.headers))
    reason = _failure(outcomes)
    await mailbox.mark(ref, reason)
    await mailbox.move(ref, "failed" if reason else "processed")
    status: MailStatus = "failed" if reason else "processed"
    log.info("%s %s: %d reports stored, %d duplicates", status, ref.label,
             sum(o.status == "stored" for o in outcomes),
             sum(o.status == "duplicate" for o in outcomes))
    return MailResult(ref.label, status, tuple(outcomes), reason)


def _ingest(data: bytes, store: Store, limits: Limits, label: str,
            mail: MailEvidence) -> list[Outcome]:
    return list(ingest_input(data, store, limits, name=label, mail=mail))


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
    """One queued message: as `ingest_message`, if it still waits to be sorted.

    A failure raises so the queue tries again, except on the last attempt, which files the
    message under `Failed` with the error instead of leaving it for the poison queue (and the
    timer re-queueing it forever).
    """
    try:
        ref = await mailbox.waiting_message(message_id)
        if ref is None:
            return MailResult(MailRef(message_id).label, "skipped", reason="sorted already")
        return await ingest_message(mailbox, ref, store, limits)
    except Exception as exc:
        if attempt < max_attempts:
            raise
        ref = MailRef(message_id)  # enough to label and move it, whatever failed above
        reason = f"gave up after {attempt} attempts: {one_line(exc)}"
        log.error("%s: gave up after %d attempts (%s %s)", ref.label, attempt,
                  type(exc).__name__, getattr(exc, "code", None) or "")
        await mailbox.mark(ref, reason)
        await mailbox.move(ref, "failed")
        return MailResult(ref.label, "failed", reason=reason)


async def run_mailbox(mailbox: Mailbox, store: Store, limits: Limits, *,
                      workers: int = 8) -> list[MailResult]:
    """Every message waiting in the mailbox, listed first, then ingested concurrently.

    The connection's pool keeps at most 4 requests in flight; more workers than that keep
    all 4 busy while one waits for its reports to be stored. A message whose Graph calls fail
    stays where it is for the next run.
    """
    waiting = await mailbox.messages()
    queue: asyncio.Queue[MailRef] = asyncio.Queue()
    for ref in waiting:
        queue.put_nowait(ref)
    results: list[MailResult] = []

    async def worker() -> None:
        while not queue.empty():
            ref = queue.get_nowait()
            try:
                results.append(await ingest_message(mailbox, ref, store, limits))
            except GraphError as exc:
                log.warning("%s left for the next run: %s", ref.label, exc)
                results.append(MailResult(ref.label, "retry", reason=one_line(exc)))

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results


def one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
