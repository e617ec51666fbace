"""Pieces every card shares: header, numbers, verdict words, records, actions, size budget."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from microsoft_teams.cards import (
    AdaptiveCard,
    CardElement,
    Column,
    ColumnSet,
    Container,
    ExecuteAction,
    RefreshDefinition,
    RichTextBlock,
    TextBlock,
    TextRun,
)
from microsoft_teams.cards.core import ActionStyle, ContainerStyle

from cards import text
from cards.facts import MAX_REFRESH_USERS, REFRESH, ApprovalFacts, Record

VERSION: Final = "1.5"
#: Teams rejects messages above about 28 KB; the card keeps room for the activity around it.
MAX_CARD_BYTES = 24_000

CATEGORY_WORDS = {
    "mailbox": "Mailbox provider",
    "esp": "Bulk e-mail delivery",
    "marketing": "Marketing e-mail",
    "crm": "CRM",
    "helpdesk": "Helpdesk or ticketing",
    "saas": "Business application",
    "hr-finance": "HR or finance application",
    "security-gateway": "E-mail security gateway",
    "list-server": "Mailing list",
    "forwarder": "Forwarding service",
    "unknown": "Not identified",
}

#: verdict code -> (short label, container style, sentence; {domain} and {service} filled in)
VERDICT_WORDS: dict[str, tuple[str, ContainerStyle, str]] = {
    "compliant": (
        "Set up correctly", "good",
        "Its mail already proves that it comes from {domain}. Once approved, it keeps working "
        "when fake mail is blocked."),
    "needs-dkim": (
        "Works, needs a small fix", "warning",
        "It sends as {domain} but cannot prove it yet. Once it is approved, the mail team sets "
        "up {service} so that its mail keeps arriving."),
    "needs-spf": (
        "Works, needs a small fix", "warning",
        "It sends as {domain} but is not on the domain's list of allowed senders yet. Once it "
        "is approved, the mail team adds it."),
    "forwarded": (
        "Forwarded mail", "default",
        "This is mail passed on by another system (a forwarder or a mailing list), not a "
        "sender of its own. There is nothing to approve."),
    "impostor": (
        "Looks like fake mail", "attention",
        "It fails every check and comes from none of {domain}'s own senders. Someone may be "
        "pretending to be {domain}."),
    "unknown": (
        "Not sure who this is", "warning",
        "We could not name this sender for sure. If you do not recognise the addresses below, "
        "reject it."),
}


def verdict_words(code: str, domain: str, service: str) -> tuple[str, ContainerStyle, str]:
    """(label, container style, sentence) for an analysis verdict code, in plain words."""
    label, style, sentence = VERDICT_WORDS.get(
        code, ("Unclassified", "default", f"The analysis says: {text.md(code, 40)}."))
    return label, style, sentence.format(domain=text.md(domain, text.NAME),
                                         service=text.md(service, text.NAME))


def category_words(code: str) -> str:
    return CATEGORY_WORDS.get(code, text.md(code, 40))


# -- elements ------------------------------------------------------------------------------------

def tb(value: str, **kw: Any) -> TextBlock:
    """A wrapping TextBlock (`value` must already be safe: own words or `text.md`)."""
    kw.setdefault("wrap", True)
    return TextBlock(text=value, **kw)


def runs(*parts: str | TextRun, **kw: Any) -> RichTextBlock:
    """A RichTextBlock of TextRuns: no markdown at all, for untrusted strings (`text.plain`)."""
    inlines: list[CardElement] = [p if isinstance(p, TextRun) else TextRun(text=p)
                                  for p in parts]
    return RichTextBlock(inlines=inlines, **kw)


def heading(value: str, *, spacing: str = "Large") -> TextBlock:
    return tb(value, weight="Bolder", spacing=spacing)


def header(kicker: str, title: str, subtitle: str, style: ContainerStyle = "emphasis"
           ) -> Container:
    """The coloured band at the top: what kind of card, the sender, and for which domain."""
    return Container(style=style, bleed=True, items=[
        tb(kicker, size="Small", is_subtle=True, weight="Bolder"),
        tb(title, size="Large", weight="Bolder", spacing="None"),
        tb(subtitle, is_subtle=True, spacing="None"),
    ])


def stats(*cells: tuple[str, str, str | None]) -> ColumnSet:
    """Big numbers side by side: (value, caption, colour or None)."""
    columns = []
    for value, caption, color in cells:
        big = tb(value, size="Large", weight="Bolder", **({"color": color} if color else {}))
        columns.append(Column(width="stretch", items=[
            big, tb(caption, size="Small", is_subtle=True, spacing="None")]))
    return ColumnSet(columns=columns, spacing="Medium")


def pass_colour(part: int, whole: int) -> str | None:
    """Green from 95 % (as shown, rounded), amber from 70 %, red below."""
    if whole <= 0:
        return None
    shown = round(100.0 * part / whole)
    return "Good" if shown >= 95 else "Warning" if shown >= 70 else "Attention"


def status_box(label: str, sentence: str, style: ContainerStyle, *,
               extra: Sequence[CardElement] = ()
               ) -> Container:
    return Container(style=style, spacing="Medium", items=[
        tb(label, weight="Bolder"), tb(sentence, spacing="Small"), *extra])


def bullets(lines: Sequence[str], limit: int, *, more: tuple[str, str] = ("line", "lines")
            ) -> list[CardElement]:
    """Untrusted lines as '•' items (TextRuns, never markdown), the first `limit` of them."""
    out: list[CardElement] = [
        runs(TextRun(text="•  "), TextRun(text=text.plain(line, text.LINE)), spacing="Small")
        for line in lines[:limit]]
    if len(lines) > limit:
        out.append(tb(text.more(len(lines) - limit, *more), is_subtle=True, size="Small",
                      spacing="Small"))
    return out


def records_block(records: Sequence[Record], limit: int = 6) -> list[CardElement]:
    """DNS records in one grey box, monospace: 'TYPE  name' and the value below it."""
    if not records:
        return []
    items: list[CardElement] = []
    for i, (rtype, name, value) in enumerate(records[:limit]):
        items.append(runs(
            TextRun(text=text.plain(rtype, 10), weight="Bolder", font_type="Monospace"),
            TextRun(text="  " + text.plain(name, text.VALUE), font_type="Monospace"),
            spacing="None" if i == 0 else "Medium"))
        items.append(runs(TextRun(text=text.plain(value, text.VALUE), font_type="Monospace",
                                  is_subtle=True), spacing="None"))
    out: list[CardElement] = [Container(style="emphasis", spacing="Small", items=items)]
    if len(records) > limit:
        out.append(tb(text.more(len(records) - limit, "record", "records"), is_subtle=True,
                      size="Small", spacing="Small"))
    return out


# -- actions -------------------------------------------------------------------------------------

def action_data(facts: ApprovalFacts, **extra: str) -> dict[str, str]:
    """What every Action.Execute of an approval sends back: ids, never anything to trust."""
    return {"domain": facts.domain, "service": facts.service_key, "item": facts.item_id,
            "request": facts.request_id, **extra}


def refresh(facts: ApprovalFacts) -> RefreshDefinition:
    """Refresh with the same data, automatically for up to 60 Teams user ids."""
    users = list(dict.fromkeys(u for u in facts.refresh_user_ids if u))[:MAX_REFRESH_USERS]
    return RefreshDefinition(action=ExecuteAction(verb=REFRESH, data=action_data(facts)),
                             user_ids=users or None)


def execute(title: str, verb: str, data: dict[str, str], style: ActionStyle | None = None
            ) -> ExecuteAction:
    return ExecuteAction(title=title, verb=verb, data=data, style=style)


# -- the card --------------------------------------------------------------------------------------

def card(body: Sequence[CardElement], *, actions: Sequence[Any] = (),
         refresh_definition: RefreshDefinition | None = None,
         fallback: str | None = None) -> dict[str, Any]:
    """The finished card as a JSON-ready dict (Adaptive Cards 1.5)."""
    model = AdaptiveCard(version=VERSION, body=list(body), actions=list(actions) or None,
                         refresh=refresh_definition, fallback_text=fallback)
    return model.model_dump(exclude_none=True, by_alias=True)


def card_bytes(value: dict[str, Any]) -> int:
    """The card's size as Teams counts it, conservatively (ASCII-escaped JSON, default spacing)."""
    return len(json.dumps(value).encode())
