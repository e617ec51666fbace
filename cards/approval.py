"""The approval card: asks a service's owner whether the service may send as the domain."""

from __future__ import annotations

from typing import Any

from microsoft_teams.cards import (
    AdaptiveCard,
    CardElement,
    ColumnDefinition,
    ExecuteAction,
    ShowCardAction,
    Table,
    TableCell,
    TableRow,
    TextInput,
    TextRun,
)
from microsoft_teams.cards.core import ContainerStyle

from cards import parts, text
from cards.facts import APPROVE, NOT_MINE, REJECT, ApprovalFacts

#: How much of the facts the card shows (the rest is summed up as "and N more").
MAX_SOURCES = 5
MAX_EVIDENCE = 6
MAX_RECORDS = 6
MAX_SET_ASIDE = 4
#: The Input.Text id in the "Not mine" form; its value arrives as data["owner"].
OWNER_INPUT = "owner"
#: What the owner field accepts (checked by the client before the action is sent).
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
#: The analysis' service key for sources nothing names.
UNKNOWN = "unknown"


def header(facts: ApprovalFacts, kicker: str, style: ContainerStyle = "emphasis"
           ) -> CardElement:
    return parts.header(
        kicker, text.md(facts.service_name, text.NAME),
        f"{parts.category_words(facts.category)} · sends as **{text.md(facts.domain, text.NAME)}**",
        style)


def summary(facts: ApprovalFacts) -> list[CardElement]:
    """Messages and pass rate as big numbers, then the days seen."""
    first, last = text.day(facts.first_seen), text.day(facts.last_seen)
    seen = f"Seen on {first}" if first == last else f"First seen {first}, last seen {last}"
    if facts.period_start or facts.period_end:
        seen += (f" (reports from {text.day(facts.period_start or facts.first_seen)} to "
                 f"{text.day(facts.period_end or facts.last_seen)})")
    return [
        parts.stats(
            (text.count(facts.messages), "messages", None),
            (text.percent(facts.dmarc_pass, facts.messages), "pass DMARC",
             parts.pass_colour(facts.dmarc_pass, facts.messages)),
        ),
        parts.tb(seen, size="Small", is_subtle=True, spacing="Small"),
    ]


def verdict(facts: ApprovalFacts) -> CardElement:
    label, style, sentence = parts.verdict_words(facts.verdict, facts.domain, facts.service_name)
    return parts.status_box(label, sentence, style)


def sources_table(facts: ApprovalFacts) -> list[CardElement]:
    if not facts.sources:
        return []
    ordered = sorted(facts.sources, key=lambda s: -s.messages)  # stable: ties keep their order
    shown, rest = ordered[:MAX_SOURCES], ordered[MAX_SOURCES:]

    def cell(value: str, *, plain: bool = True) -> TableCell:
        item: CardElement = parts.runs(TextRun(text=value)) if plain else parts.tb(value)
        return TableCell(items=[item])

    rows = [TableRow(style="emphasis", cells=[
        TableCell(items=[parts.tb("Address", weight="Bolder")]),
        TableCell(items=[parts.tb("Reverse DNS name", weight="Bolder")]),
        TableCell(items=[parts.tb("Messages", weight="Bolder")]),
    ])]
    for s in shown:
        rows.append(TableRow(cells=[
            cell(text.plain(s.ip, 45)),
            cell(text.plain(s.rdns, text.NAME) if s.rdns else "none"),
            cell(text.count(s.messages), plain=False),
        ]))
    out: list[CardElement] = [
        parts.heading("Where it sends from"),
        Table(columns=[ColumnDefinition(width=3), ColumnDefinition(width=5),
                       ColumnDefinition(width=2, horizontal_cell_content_alignment="Right")],
              rows=rows, spacing="Small", grid_style="default"),
    ]
    # `sources` may hold only the largest: the rest are what the sender's totals leave
    more = max(len(ordered), facts.source_count) - len(shown)
    if more:
        rest_messages = (sum(s.messages for s in rest) if more == len(rest)
                         else max(0, facts.messages - sum(s.messages for s in shown)))
        out.append(parts.tb(
            f"{text.more(more, 'address', 'addresses')} "
            f"({text.count(rest_messages)} messages)",
            is_subtle=True, size="Small", spacing="Small"))
    return out


def evidence(facts: ApprovalFacts) -> list[CardElement]:
    if not facts.evidence:
        return []
    title = ("What we know about it" if facts.service_key == UNKNOWN else
             f"Why we think it is {text.md(facts.service_name, text.NAME)}")
    return [parts.heading(title),
            *parts.bullets(facts.evidence, MAX_EVIDENCE, more=("clue", "clues"))]


def consequences(facts: ApprovalFacts, *, owner: bool = True) -> list[CardElement]:
    """What approving and rejecting lead to, and the records approval means publishing.

    `owner`: addressed to the person who decides ("If you approve") or to a reader.
    """
    domain = text.md(facts.domain, text.NAME)
    service = text.md(facts.service_name, text.NAME)
    out: list[CardElement] = [parts.heading("If you approve" if owner else "If approved")]
    if facts.records:
        out.append(parts.tb(f"The mail team publishes these DNS records for {domain}, so that "
                            f"receivers trust mail from {service}:", spacing="Small"))
        out.extend(parts.records_block(facts.records, MAX_RECORDS))
    else:
        out.append(parts.tb(f"{service} stays allowed to send as {domain}; no DNS change is "
                            "needed.", spacing="Small"))
    out.append(parts.heading("If you reject" if owner else "If rejected"))
    out.append(parts.tb(f"Once {domain} is protected, receivers block mail from {service} "
                        f"that claims to come from {domain}, or file it as spam.",
                        spacing="Small"))
    if facts.advice:
        out.append(parts.tb(f"For the mail team: {text.md(facts.advice, text.LINE)}",
                            size="Small", is_subtle=True, spacing="Medium"))
    return out


def set_aside(facts: ApprovalFacts) -> list[CardElement]:
    """The service's other lines, which this request does not cover: approving the domain's
    account never approves another tenant's or a stranger's mail sent through the same vendor."""
    if not facts.set_aside:
        return []
    service = text.md(facts.service_name, text.NAME)
    return [parts.heading("Not part of this request"),
            parts.tb(f"Other mail through {service} that does not come from this account. "
                     "Approving this account does not approve it; it is reported on its own:",
                     spacing="Small"),
            *parts.bullets(facts.set_aside, MAX_SET_ASIDE, more=("line", "lines"))]


def details(facts: ApprovalFacts, *, owner: bool = True) -> list[CardElement]:
    """Everything but the header and the actions (shared with the read-only card)."""
    return [*summary(facts), verdict(facts), *evidence(facts), *sources_table(facts),
            *set_aside(facts), *consequences(facts, owner=owner)]


def actions(facts: ApprovalFacts) -> list[Any]:
    data = parts.action_data(facts)
    hand_over = AdaptiveCard(body=[
        TextInput(id=OWNER_INPUT, label="Who owns this service?", is_required=True,
                  style="Email", placeholder="Their e-mail address", max_length=254,
                  regex=EMAIL_PATTERN, error_message="Enter the e-mail address of the owner"),
    ], actions=[ExecuteAction(title="Hand over", verb=NOT_MINE, data=data,
                              associated_inputs="auto", style="positive")])
    return [
        parts.execute("Approve", APPROVE, data, "positive"),
        parts.execute("Reject", REJECT, data, "destructive"),
        ShowCardAction(title="Not mine", card=hand_over),
    ]


def approval_card(facts: ApprovalFacts) -> dict[str, Any]:
    """The card sent to a service's owner: what the service is, and Approve / Reject / Not mine."""
    domain = text.md(facts.domain, text.NAME)
    owner = f"{text.md(facts.owner, text.NAME)}, does" if facts.owner else "Does"
    body = [
        header(facts, "E-MAIL SENDER APPROVAL"),
        parts.tb(f"{owner} your team use **{text.md(facts.service_name, text.NAME)}** to send "
                 f"e-mail as {domain}?", spacing="Medium"),
    ]
    if facts.account:
        body.append(parts.tb(f"This request covers one account: {text.md(facts.account)}.",
                             size="Small", spacing="Small"))
    body.extend(details(facts))
    return parts.card(body, actions=actions(facts), refresh_definition=parts.refresh(facts),
                      fallback=f"Approve or reject {text.md(facts.service_name, text.NAME)} "
                               f"sending as {domain}")
