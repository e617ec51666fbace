"""From daily rollups to named senders with verdicts: the one entry point the shells call."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from analysis.accounts import Claim
from analysis.catalog import Catalog
from analysis.dnsevidence import DnsEvidence, heap_frozen
from analysis.identify import (
    EvidenceBundle,
    Identifier,
    NetworkIndex,
    SourceActivity,
    activities_from_rollups,
    gather_evidence,
)
from analysis.remembered import Kept, decode
from analysis.rollup import RollupKey
from analysis.verdicts import (
    MICROSOFT_365,
    Member,
    ServiceVerdict,
    SourceVerdict,
    judge,
    judge_again,
    lines,
    member_of,
)

__all__ = ["analyse_activities", "analyse_rollups"]


async def analyse_activities(activities: list[SourceActivity], catalog: Catalog,
                             dns: DnsEvidence | None, *, kept: Sequence[Kept] = ()
                             ) -> tuple[list[SourceVerdict], list[ServiceVerdict], EvidenceBundle]:
    """Name and judge every source on its own evidence, then group them into lines per
    (domain, service, account). `dns=None` works offline: only the evidence inside the reports
    (DKIM and SPF domains) is used. Returns the verdicts of `activities`, the lines and the
    evidence.

    `kept`: sources of one domain named and judged before whose reports have not changed
    (analysis.remembered). They are not named or judged again: their members count in the
    lines and their claims in the domain's accounts, and only the few a line shows in full are
    decoded and judged again. The lines are those of naming all of them now as long as the
    domain's accounts are the ones the kept sources were judged against (the caller compares
    `naming_context`).

    The heap is frozen meanwhile (`heap_frozen`): the sources, the catalog and the modules
    outlive the step, and full collections re-scanning them stalled the answers in flight."""
    with heap_frozen():
        bundle = (await gather_evidence(activities, dns, catalog,
                                        [k.signed for k in kept]) if dns is not None
                  else EvidenceBundle.offline())
        identifier = Identifier(catalog, bundle)
        m365 = bundle.service_networks.get(MICROSOFT_365)
        m365_index = NetworkIndex({MICROSOFT_365: m365}) if m365 else None
        named = [identifier.identify(a) for a in activities]
        claims: dict[str, list[Claim]] = {k.member.domain: [] for k in kept}
        for k in kept:
            if k.member.claim is not None:
                claims[k.member.domain].append(k.member.claim)
        judging = judge(named, catalog, m365_index, bundle.dkim_targets, kept_claims=claims)
        by_source = {(v.identification.activity.domain, v.identification.activity.ip): v
                     for v in judging.verdicts}
        kept_by_source = {(k.member.domain, k.member.ip): k for k in kept}

        def detail(member: Member) -> SourceVerdict:
            found = by_source.get((member.domain, member.ip))
            if found is None:
                identification = decode(member.domain, kept_by_source[member.domain, member.ip])
                found = judge_again(identification, catalog, m365_index, bundle.dkim_targets,
                                    judging.accounts[member.domain])
            return found

        members = [*(k.member for k in kept), *map(member_of, judging.verdicts)]
        return judging.verdicts, lines(members, catalog, detail), bundle


async def analyse_rollups(rows: Iterable[tuple[RollupKey, int]], catalog: Catalog,
                          dns: DnsEvidence | None
                          ) -> tuple[list[SourceVerdict], list[ServiceVerdict], EvidenceBundle]:
    return await analyse_activities(activities_from_rollups(rows), catalog, dns)
