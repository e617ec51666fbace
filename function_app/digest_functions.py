"""The weekly digest: each domain's owner gets the week's picture and the next step."""

from __future__ import annotations

import datetime as dt
import logging

import azure.functions as func

from analysis.catalog import load_catalog
from function_app.mailbox_functions import app_store, dns_evidence
from function_app.settings import approval_settings, teams_configured, teams_settings

log = logging.getLogger("dmarcbot.functions")

bp = func.Blueprint()


@bp.function_name("send_digests")
@bp.timer_trigger(arg_name="timer", schedule="%DMARCBOT_DIGEST_SCHEDULE%", run_on_startup=False,
                  use_monitor=True)
async def send_digests(timer: func.TimerRequest) -> None:
    """One digest card per domain with a default owner (DMARCBOT_OWNERS), in Teams."""
    if not teams_configured():
        log.info("Teams approvals are not configured (DMARCBOT_SP_SITE_ID); no digests sent")
        return
    from function_app import teams_notify

    store = app_store()
    sent = await teams_notify.send_digests(teams_settings(), store, load_catalog(),
                                           dns_evidence(store), approval_settings(),
                                           dt.datetime.now(dt.UTC).date())
    log.info("sent %d weekly digests", sent)
