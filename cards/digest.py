"""The weekly digest card of one domain: volume, pass rate, senders by status, the next step."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from microsoft_teams.cards import (
    CardElement,
    ColumnDefinition,
    Container,
    OpenUrlAction,
    Table,
    TableCell,
    TableRow,
    TextRun,
)

from cards import parts, text
from cards.facts import STATUSES, DigestFacts, OtherLine, ServiceLine

MAX_RECORDS = 4
MAX_BLOCKERS = 3
#: fake-mail lines and lines to look at shown (the rest is summed up)
MAX_OTHER = 3
#: status -> (heading, text colour)
_GROUPS = {"Approved": ("Approved", "Good"), "Pending": ("Waiting for a decision", "Warning"),
           "Rejected": ("Rejected", "Attention")}


def _policy(value: str | None) -> str:
    return f"p={text.md(value, 20)}" if value else "no DMARC record"


def _group(status: str, lines: list[ServiceLine], top: int) -> list[CardElement]:
    heading, colour = _GROUPS[status]
    shown = sorted(lines, key=lambda s: (-s.messages, s.name))[:top]
    rows = [TableRow(style="emphasis", cells=[
        TableCell(items=[parts.tb("Sender", weight="Bolder")]),
        TableCell(items=[parts.tb("Messages", weight="Bolder")]),
        TableCell(items=[parts.tb("Pass", weight="Bolder")]),
    ])]
    for s in shown:
        name: list[CardElement] = [parts.runs(text.plain(s.name, text.NAME))]
        if s.owner and status == "Pending":
            name.append(parts.runs(TextRun(text="owner: " + text.plain(s.owner, text.NAME),
                                           size="Small", is_subtle=True), spacing="None"))
        rows.append(TableRow(cells=[
            TableCell(items=name),
            TableCell(items=[parts.tb(text.count(s.messages))]),
            TableCell(items=[parts.tb(text.percent(s.dmarc_pass, s.messages),
                                      color=parts.pass_colour(s.dmarc_pass, s.messages))]),
        ]))
    out: list[CardElement] = [
        parts.tb(f"{heading} ({text.count(len(lines))})", weight="Bolder", color=colour,
                 spacing="Large"),
        Table(columns=[ColumnDefinition(width=6),
                      ColumnDefinition(width=3, horizontal_cell_content_alignment="Right"),
                      ColumnDefinition(width=2, horizontal_cell_content_alignment="Right")],
              rows=rows, spacing="Small"),
    ]
    if len(lines) > top:
        rest = sorted(lines, key=lambda s: (-s.messages, s.name))[top:]
        out.append(parts.tb(f"{text.more(len(rest), 'sender', 'senders')} "
                            f"({text.count(sum(s.messages for s in rest))} messages)",
                            is_subtle=True, size="Small", spacing="Small"))
    return out


def _others(heading: str, colour: str | None, lines: tuple[OtherLine, ...],
            limit: int) -> list[CardElement]:
    """Fake mail or lines to look at: name, volume, and for the latter the question to ask."""
    if not lines:
        return []
    out: list[CardElement] = [parts.tb(heading, weight="Bolder", spacing="Medium",
                                       **({"color": colour} if colour else {}))]
    for line in lines[:limit]:
        sources = "1 source" if line.sources == 1 else f"{text.count(line.sources)} sources"
        out.append(parts.runs(
            TextRun(text="\u2022  " + text.plain(line.name, text.LINE)),
            TextRun(text=f"  {text.count(line.messages)} messages, {sources}", is_subtle=True),
            spacing="Small"))
        if line.note:
            out.append(parts.runs(TextRun(text=text.plain(line.note, text.LINE), size="Small",
                                          is_subtle=True), spacing="None"))
    if len(lines) > limit:
        rest = lines[limit:]
        out.append(parts.tb(f"{text.more(len(rest), 'line', 'lines')} "
                            f"({text.count(sum(x.messages for x in rest))} messages)",
                            is_subtle=True, size="Small", spacing="Small"))
    return out


def _next_step(d: DigestFacts) -> list[CardElement]:
    sentence = text.md(d.next_step, 400)
    step: list[CardElement] = [
        parts.tb(f"Policy now: **{_policy(d.policy)}**" +
                 (f"  →  next: **{_policy(d.next_policy)}**"
                  if d.next_policy and d.next_policy != d.policy else "")),
        parts.tb(sentence[:1].upper() + sentence[1:], spacing="Small"),
    ]
    if d.records:
        step.append(parts.tb("Records to publish:", weight="Bolder", spacing="Medium"))
        step.extend(parts.records_block(d.records, MAX_RECORDS))
    if d.blockers:
        step.append(parts.tb("Blocking the next step:", weight="Bolder", spacing="Medium"))
        step.extend(parts.bullets(d.blockers, MAX_BLOCKERS, more=("blocker", "blockers")))
    return [parts.heading("Next step"), Container(items=step, spacing="Small")]


def _build(d: DigestFacts, top: int) -> dict[str, Any]:
    domain = text.md(d.domain, text.NAME)
    period = f"{text.day(d.period_start)} to {text.day(d.period_end)}"
    body: list[CardElement] = [
        parts.header("WEEKLY E-MAIL REPORT", domain, period),
        parts.stats(
            (text.count(d.messages), "messages", None),
            (text.percent(d.dmarc_pass, d.messages), "pass DMARC",
             parts.pass_colour(d.dmarc_pass, d.messages)),
            (text.count(d.impostor_messages), "fake messages",
             "Attention" if d.impostor_messages else None),
        ),
    ]
    if d.impostor_messages:
        body.append(parts.tb(f"{text.count(d.impostor_messages)} messages claimed to come from "
                             f"{domain} but failed every check and came from none of its own "
                             "senders.", size="Small", spacing="Medium"))
    others = [f"{text.count(n)} {what}" for n, what in (
        (d.forwarded_messages, "forwarded by lists or forwarders"),
        (d.unidentified_messages, "from senders we could not name"))
        if n]
    if others:
        body.append(parts.tb("Also: " + "; ".join(others) + ".", size="Small", is_subtle=True,
                             spacing="Small"))
    body.extend(_others("Fake mail", "Attention", d.fake, MAX_OTHER))
    body.extend(_others("Not from an account of yours yet: look at these", None, d.to_check,
                        MAX_OTHER))
    body.append(parts.heading(f"Senders ({text.count(len(d.services))})"))
    groups = {s: [line for line in d.services if line.status == s] for s in STATUSES}
    groups["Pending"] += [line for line in d.services if line.status not in STATUSES]
    for status in ("Pending", "Approved", "Rejected"):
        if groups[status]:
            body.extend(_group(status, groups[status], top))
    if not d.services:
        body.append(parts.tb("No named senders in this period.", is_subtle=True,
                             spacing="Small"))
    body.extend(_next_step(d))
    actions = []
    if d.list_url:
        actions.append(OpenUrlAction(title="Open the list of senders", url=d.list_url))
    return parts.card(body, actions=actions,
                      fallback=f"Weekly e-mail report for {domain}: {period}")


def digest_card(d: DigestFacts) -> dict[str, Any]:
    """The digest of one domain; senders beyond `d.top` per status are summed up.

    Shrinks the number of senders shown until the card fits `parts.MAX_CARD_BYTES`.
    """
    if d.list_url and urlsplit(d.list_url).scheme not in ("https", "http"):
        raise ValueError("list_url must be an http(s) URL")
    top = max(d.top, 1)
    while True:
        card = _build(d, top)
        if parts.card_bytes(card) <= parts.MAX_CARD_BYTES or top == 1:
            return card
        top = max(top // 2, 1)
