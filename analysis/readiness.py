"""What the next DMARC policy would meet, line by line: readiness, blockers, what it stops.

Lines come from `analysis.verdicts` (one per service, account and verdict). Readiness is about the
domain's own mail: the lines of its own accounts (`ServiceVerdict.needs_decision`) that are
approved, or compliant and not rejected. A blocker is mail of the domain's own, or maybe its own,
that the next policy would fail:

- the domain's own account of a service, approved or awaiting a decision, without aligned DKIM;
- the failing part of that account when the account as a whole is compliant (its own line, so
  an approved, compliant service cannot hide the sources that would fail);

Another account of a named service whose failing mail may be a second account of the domain's own
("SendGrid — not signed for contoso.com") does not block: nothing the domain owner does in
dmarcbot could settle it (the decisions are the own account's), so as a blocker it would hold the
domain at p=none for good. It is listed with its question to answer before the next step.

Impostor lines never block: enforcement is meant to stop them. Forwarded lines never block: the
forwarders are not the domain's to fix, and only the domain's aligned DKIM survives them. Lines
under `BLOCKER_SHARE` of the domain's mail never block. Pure: values in, values out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from analysis.verdicts import ServiceVerdict

#: A line (or a failing part of one) below this share of the domain's mail does not block.
BLOCKER_SHARE = 0.005
#: How the failing part of the domain's own account is named, per source verdict.
_PART = {"needs-dkim": "own account, not signed for {domain}",
         "needs-spf": "own account, not in {domain}'s SPF record"}


@dataclasses.dataclass(frozen=True, slots=True)
class PostureLine:
    """One line as the next policy would meet it (`posture --json` `lines`)."""

    line_name: str
    service_key: str
    account: str
    verdict: str
    status: str | None  # the decision of the domain's own account line; None on other lines
    messages: int
    sources: int
    dmarc_pass: int
    dkim_aligned_pass: int
    considered: bool  # counted in readiness
    blocker: bool
    stopped_by_enforcement: bool  # fails DMARC and is not the domain's: enforcement stops it
    question: str | None  # what to ask before the line can be settled (unknown lines)
    part_of: str | None = None  # the failing part of a line: that line's name (counted there)


@dataclasses.dataclass(frozen=True, slots=True)
class LineReadiness:
    considered: int  # messages of the domain's own lines that are approved or compliant
    ready: int  # of those, the messages passing with aligned DKIM
    blockers: tuple[str, ...]  # "<line name>: what it is and what to do"
    lines: tuple[PostureLine, ...]


def judge_lines(services: Sequence[ServiceVerdict], statuses: Mapping[str, str]
                ) -> LineReadiness:
    """Readiness, blockers and every line's part in them, for one domain's lines.

    `statuses`: service key -> the inventory status of the domain's own account there.
    """
    total = sum(s.messages for s in services) or 1
    considered = ready = 0
    blockers: list[str] = []
    lines: list[PostureLine] = []
    for s in services:
        if s.needs_decision:
            status = statuses.get(s.service_key)
            rejected = status == "Rejected"
            counted = not rejected and (status == "Approved" or s.verdict == "compliant")
            if counted:
                considered += s.messages
                ready += s.dkim_aligned_pass
            blocking = (not rejected and s.verdict != "compliant"
                        and s.messages / total >= BLOCKER_SHARE)
            if blocking:
                blockers.append(_own_blocker(s, status))
            stopped = rejected and s.dmarc_pass * 2 < s.messages
            lines.append(_line(s, status, counted, blocking, stopped, None))
            if not rejected and s.verdict == "compliant":
                for part, why in _failing_parts(s, total):
                    lines.append(part)
                    if part.blocker:
                        blockers.append(why)
        elif s.verdict == "impostor":
            lines.append(_line(s, None, False, False, True, None))
        elif s.verdict == "forwarded":
            lines.append(_line(s, None, False, False, False, None))
        else:  # what the evidence cannot settle: a question, never a blocker
            lines.append(_line(s, None, False, False, False, s.advice))
    return LineReadiness(considered, ready, tuple(blockers), tuple(lines))


def _line(s: ServiceVerdict, status: str | None, considered: bool, blocker: bool,
          stopped: bool, question: str | None) -> PostureLine:
    return PostureLine(s.line_name, s.service_key, s.account, s.verdict, status, s.messages,
                       s.source_count, s.dmarc_pass, s.dkim_aligned_pass, considered, blocker,
                       stopped, question)


def _own_blocker(s: ServiceVerdict, status: str | None) -> str:
    if status == "Approved":
        return (f"{s.line_name}: {s.messages:,} messages, {pct(s.dkim_aligned_pass, s.messages)} "
                f"with aligned DKIM; {s.advice}")
    return (f"{s.line_name}: {s.messages:,} messages, not approved yet ({s.verdict}); its owner "
            "must approve or reject it")


def _failing_parts(s: ServiceVerdict, total: int) -> list[tuple[PostureLine, str]]:
    """The sources of a compliant own-account line that would fail, one line per verdict."""
    out = []
    parts = {p.verdict: p for p in s.parts}
    for verdict, label in _PART.items():
        part = parts.get(verdict)
        if part is None:
            continue
        name = f"{s.line_name} \u2014 {label.format(domain=s.domain)}"
        blocking = part.messages / total >= BLOCKER_SHARE
        line = PostureLine(
            name, s.service_key, s.account, verdict, None, part.messages, part.sources,
            part.dmarc_pass, part.dkim_aligned_pass, False, blocking, False, None,
            part_of=s.line_name)
        why = (f"{name}: {part.sources:,} of its {sources(s.source_count)}, "
               f"{part.messages:,} messages, {pct(part.dkim_aligned_pass, part.messages)} with "
               f"aligned DKIM; {part.advice}")
        out.append((line, why))
    return out


def pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.0f} %" if whole else "0 %"


def sources(n: int) -> str:
    """'1 source', '1,204 sources'."""
    return f"{n:,} source" + ("" if n == 1 else "s")
