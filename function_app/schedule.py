"""The scheduled step after ingest, the same for `dmarcbot run` and the Functions timer: choose
the domains whose senders are named again, name them, and ask their owners what is due.

Only the adapters differ: what counts as stored since the last run (the CLI knows what it
stored; the timer reads the ledger), and where owners are asked (`notify.Asking`: the outbox
and the store's inventory, or Teams and the SharePoint list).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from function_app.approvals import ApprovalSettings, due
from function_app.notify import Asking, Sent, notify
from function_app.pipeline import identify_domains

if TYPE_CHECKING:
    from analysis.catalog import Catalog
    from analysis.dnsevidence import DnsEvidence
    from analysis.verdicts import ServiceVerdict
    from store.base import InventoryItem, Store


def domains_to_name(stored: Iterable[str], waiting: Iterable[InventoryItem],
                    now: dt.datetime, settings: ApprovalSettings) -> set[str]:
    """The domains whose senders are named again in this run.

    Naming reads a domain's history and spends DNS, so it is done only where its outcome can
    change: where reports were stored since the last run (a new sender, new volumes, a rejected
    sender seen sending again), and where an owner is due a card now (a reminder, a first card
    that did not go out, an owner named since), because the card is built from the sender's
    verdict. Everywhere else the verdicts would come out as they are.
    """
    return set(stored) | {item.policy_domain for item in waiting
                          if due(item, now, settings) is not None}


#: How far before the last scheduled step that completed the timer asks the ledger again: a
#: report stamped as stored just before that step began may have committed while it read (a
#: large one writes its rows first; a function runs 10 minutes at most).
MARK_OVERLAP = dt.timedelta(hours=1)


def stored_since(mark: str | None, now: dt.datetime) -> str:
    """Where the timer asks the ledger which domains have new reports from (ISO 8601, UTC): an
    hour before the last step that completed (`Store.naming_mark`), else the start of
    yesterday. A step that fails does not move the mark, so the next one loses nothing."""
    if mark is None:
        return (now.date() - dt.timedelta(days=1)).isoformat()
    when = dt.datetime.fromisoformat(mark.replace("Z", "+00:00")) - MARK_OVERLAP
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True, slots=True)
class Named:
    domains: set[str]
    verdicts: list[ServiceVerdict]
    sent: list[Sent]


async def name_and_notify(store: Store, catalog: Catalog, dns: DnsEvidence | None, *,
                          stored: Iterable[str], now: dt.datetime,
                          asking: Asking[Any] | None) -> Named:
    """Name the senders of the domains `domains_to_name` chooses, then send what is due.

    Without `asking` (the Functions without Teams) nobody is asked, so nobody waits: only the
    domains with new reports are named.
    """
    waiting = await asking.records.waiting() if asking is not None else ()
    domains = domains_to_name(stored, waiting,
                              now, asking.settings if asking else ApprovalSettings())
    verdicts = await identify_domains(store, catalog, dns, domains)
    sent = await notify(asking, verdicts, now) if asking is not None else []
    return Named(domains, verdicts, sent)
