"""From daily rollups to named senders with verdicts: the one entry point the shells call."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from analysis.catalog import Catalog
from analysis.dnsevidence import DnsEvidence, heap_frozen
from analysis.identify import (
    EvidenceBundle,
    Identification,
    Identifier,
    NetworkIndex,
    SourceActivity,
    activities_from_rollups,
    gather_evidence,
)
from analysis.rollup import RollupKey
from analysis.verdicts import (
    MICROSOFT_365,
    ServiceVerdict,
    SourceVerdict,
    judge_sources,
    service_verdicts,
)

__all__ = ["analyse_activities", "analyse_rollups"]


async def analyse_activities(activities: list[SourceActivity], catalog: Catalog,
                             dns: DnsEvidence | None, *, kept: Sequence[Identification] = ()
                             ) -> tuple[list[SourceVerdict], list[ServiceVerdict], EvidenceBundle]:
    """Name and judge every source on its own evidence, then group them into lines per
    (domain, service, account). `dns=None` works offline: only the evidence inside the reports
    (DKIM and SPF domains) is used.

    `kept`: sources named before whose reports have not changed (analysis.remembered); they are
    not named again, only judged again with the others, in the order of their addresses as if
    all had been named now.

    The heap is frozen meanwhile (`heap_frozen`): the sources, the catalog and the modules
    outlive the step, and full collections re-scanning them stalled the answers in flight."""
    with heap_frozen():
        bundle = (await gather_evidence(activities, dns, catalog,
                                        [k.activity for k in kept]) if dns is not None
                  else EvidenceBundle.offline())
        identifier = Identifier(catalog, bundle)
        m365 = bundle.service_networks.get(MICROSOFT_365)
        m365_index = NetworkIndex({MICROSOFT_365: m365}) if m365 else None
        named = [identifier.identify(a) for a in activities]
        if kept:
            named = sorted([*kept, *named], key=lambda i: (i.activity.domain, i.activity.ip))
        sources = judge_sources(named, catalog, m365_index, bundle.dkim_targets)
        return sources, service_verdicts(sources, catalog), bundle


async def analyse_rollups(rows: Iterable[tuple[RollupKey, int]], catalog: Catalog,
                          dns: DnsEvidence | None
                          ) -> tuple[list[SourceVerdict], list[ServiceVerdict], EvidenceBundle]:
    return await analyse_activities(activities_from_rollups(rows), catalog, dns)
