"""The mailbox functions: a timer lists new report e-mails, a queue trigger ingests each one.

Queue messages carry message ids only (a queue message is at most 64 KB, and report contents
stay in the mailbox until read). Settings are read when a function runs, never at import.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import typing

import azure.functions as func

from analysis import Limits
from analysis.catalog import load_catalog
from analysis.dnsevidence import DnsEvidence, make_resolver
from function_app import connections, mailjob
from function_app.pipeline import domains_stored_since
from function_app.settings import (
    SettingsError,
    approval_settings,
    mailbox_settings,
    nameservers,
    teams_configured,
    teams_settings,
)
from store import Store

log = logging.getLogger("dmarcbot.functions")

bp = func.Blueprint()


@bp.function_name("poll_mailbox")
@bp.timer_trigger(arg_name="timer", schedule="%DMARCBOT_POLL_SCHEDULE%", run_on_startup=False,
                  use_monitor=True)
@bp.queue_output(arg_name="mail", queue_name=mailjob.MAIL_QUEUE, connection="AzureWebJobsStorage")
# typing.List, not list: Microsoft's worker (azure-functions-runtime) refuses a builtin generic
# inside func.Out[...] ("invalid non-type annotation"); tests/test_worker_index.py checks it
async def poll_mailbox(timer: func.TimerRequest,
                       mail: func.Out[typing.List[str]]) -> None:  # noqa: UP006
    """Queue every waiting report e-mail, then the scheduled step over what was stored since
    the last one that completed (`name_and_ask`).

    A message queued twice (still waiting from the last tick) is harmless: the second attempt
    finds it sorted already, or finds its reports stored already.
    """
    mailbox = connections.shared_mailbox(mailbox_settings())
    ids = await mailbox.message_ids()
    if ids:
        mail.set([json.dumps({"id": message_id}) for message_id in ids])
    log.info("queued %d report e-mails%s", len(ids), " (past due)" if timer.past_due else "")
    try:
        await name_and_ask()
    except Exception as exc:  # the queue output is only written if this function returns
        log.error("naming senders or asking owners failed (%s); the next tick tries again",
                  type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG))


async def name_and_ask() -> None:
    """The scheduled step (`schedule.name_and_notify`) over Table Storage, owners asked in
    Teams when it is configured.

    The queue trigger, not this timer, stores what the timer queued, so the timer cannot tell
    what was stored since its last tick: it asks the ledger what was stored since shortly
    before the last tick whose step completed (`schedule.stored_since`), and moves that mark
    only once this step has, so a tick that failed loses nothing.
    """
    from function_app.schedule import name_and_notify, stored_since  # cards load on first use

    store = app_store()
    now = dt.datetime.now(dt.UTC)
    stored = domains_stored_since(store, stored_since(store.naming_mark(), now))
    step = functools.partial(name_and_notify, store, load_catalog(), dns_evidence(store),
                             stored=stored, now=now)
    if not teams_configured():
        named = await step(asking=None)
    else:
        from function_app.teams_notify import asking_in_teams

        async with asking_in_teams(teams_settings(), approval_settings()) as asking:
            named = await step(asking=asking)
        log.info("sent %d cards to owners", len(named.sent))
    store.set_naming_mark(now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    log.info("named the senders of %d domains", len(named.domains))


@bp.function_name("ingest_mail")
@bp.queue_trigger(arg_name="msg", queue_name=mailjob.MAIL_QUEUE, connection="AzureWebJobsStorage")
async def ingest_mail(msg: func.QueueMessage) -> None:
    """Read, store and sort one e-mail; an error leaves it to the queue's next attempt."""
    message_id = queued_id(msg.get_body())
    if message_id is None:
        log.error("queue message %s is not {\"id\": ...}; dropped", msg.id)
        return
    mailbox = connections.shared_mailbox(mailbox_settings())
    result = await mailjob.ingest_queued(mailbox, message_id, app_store(), Limits.from_env(),
                                         attempt=msg.dequeue_count or 1)
    log.info("%s %s", result.status, result.message)


def queued_id(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    message_id = value.get("id") if isinstance(value, dict) else None
    return message_id if isinstance(message_id, str) and message_id else None


@functools.cache
def app_store() -> Store:
    """The app's store, Azure Table Storage (store.tables names its settings), one per process:
    its clients, credential and tables are made once, not per invocation."""
    from store.tables import table_store_from_settings

    return table_store_from_settings(os.environ)


def dns_evidence(store: Store) -> DnsEvidence:
    servers = nameservers()
    try:
        resolver = None if servers is None else make_resolver(servers)
    except ValueError as exc:
        raise SettingsError(f"app setting DMARCBOT_NAMESERVERS: {exc}") from None
    return DnsEvidence(resolver, cache=store)
