"""Cards that replace the approval card: the decision, a retry after a failed write, read-only."""

from __future__ import annotations

from typing import Any

from microsoft_teams.cards import CardElement
from microsoft_teams.cards.core import ContainerStyle

from cards import approval, parts, text
from cards.facts import APPROVE, NOT_MINE, REJECT, VERBS, ApprovalFacts, Decision

#: outcome -> (label, container style)
_OUTCOME: dict[str, tuple[str, ContainerStyle]] = {
    APPROVE: ("Approved", "good"), REJECT: ("Rejected", "attention"),
    NOT_MINE: ("Not mine", "accent")}
_STATUS: dict[str, ContainerStyle] = {
    "Approved": "good", "Rejected": "attention", "Pending": "warning"}


def _outcome(facts: ApprovalFacts, decision: Decision) -> CardElement:
    style = _OUTCOME[decision.outcome][1]
    who = f"{text.md(decision.by, text.NAME)} on {text.moment(decision.at)}"
    domain = text.md(facts.domain, text.NAME)
    service = text.md(facts.service_name, text.NAME)
    if decision.outcome == APPROVE:
        title = "Approved"
        line = (f"The mail team publishes the records below for {domain}."
                if facts.records else f"{service} stays allowed to send as {domain}.")
    elif decision.outcome == REJECT:
        title = "Rejected"
        line = (f"Once {domain} is protected, receivers block mail from {service} that claims "
                f"to come from {domain}, or file it as spam.")
    else:
        new = text.md(decision.handed_to, text.NAME) if decision.handed_to else "someone else"
        title = f"Not mine → handed to {new}"
        line = f"{new} gets this request and decides."
    return parts.status_box(title, line, style, extra=[
        parts.tb(f"by {who}", size="Small", is_subtle=True, spacing="Small")])


def decision_card(facts: ApprovalFacts, decision: Decision) -> dict[str, Any]:
    """The card after the owner answered: outcome, by whom and when; no buttons but refresh."""
    body: list[CardElement] = [
        approval.header(facts, "E-MAIL SENDER DECISION"),
        _outcome(facts, decision),
        *approval.summary(facts),
    ]
    if decision.outcome == APPROVE and facts.records:
        body.append(parts.heading("Records to publish"))
        body.extend(parts.records_block(facts.records, approval.MAX_RECORDS))
    label = _OUTCOME[decision.outcome][0]
    return parts.card(body, refresh_definition=parts.refresh(facts),
                      fallback=f"{label}: {text.md(facts.service_name, text.NAME)} sending as "
                               f"{text.md(facts.domain, text.NAME)}")


def retry_card(facts: ApprovalFacts, message: str, *, verb: str,
               new_owner: str | None = None) -> dict[str, Any]:
    """Shown when recording the answer failed: the reason and a Retry that repeats `verb`.

    For `notmine`, `new_owner` (what the owner typed) travels in the Retry's data as `owner`.
    """
    if verb not in VERBS:
        raise ValueError(f"cannot retry unknown verb {verb!r}; expected one of {', '.join(VERBS)}")
    label = _OUTCOME[verb][0]
    extra = {approval.OWNER_INPUT: new_owner} if verb == NOT_MINE and new_owner else {}
    body: list[CardElement] = [
        approval.header(facts, "E-MAIL SENDER APPROVAL"),
        parts.status_box(
            f"Your answer ({label}) was not saved",
            "Nothing has changed yet. Please try again; if it keeps failing, tell the mail team.",
            "attention",
            extra=[parts.tb(f"Reason: {text.md(message, text.LINE)}", size="Small",
                            is_subtle=True, spacing="Small")]),
        *approval.summary(facts),
    ]
    retry = parts.execute(f"Retry: {label}", verb, parts.action_data(facts, **extra),
                          "destructive" if verb == REJECT else "positive")
    return parts.card(body, actions=[retry], refresh_definition=parts.refresh(facts),
                      fallback=f"Your answer for {text.md(facts.service_name, text.NAME)} was "
                               "not saved; try again")


def read_only_card(facts: ApprovalFacts, status: str,
                   decision: Decision | None = None) -> dict[str, Any]:
    """What everyone but the owner sees: the same content, no buttons, and who can decide.

    `status` is the inventory status (Pending, Approved or Rejected); `decision`, when given,
    says who decided and when.
    """
    style = _STATUS.get(status, "default")
    status_text = text.md(status, 20)
    if decision is not None:
        line = f"by {text.md(decision.by, text.NAME)} on {text.moment(decision.at)}"
        if decision.outcome == NOT_MINE:
            new = text.md(decision.handed_to, text.NAME) if decision.handed_to else "someone else"
            line = f"Handed to {new} {line}"
    elif status == "Pending":
        line = "Waiting for a decision."
    else:
        line = f"Status: {status_text}."
    who = (f"Only {text.md(facts.owner, text.NAME)}, the owner of this service, can approve or "
           "reject it." if facts.owner else "Only the owner of this service can approve or "
                                            "reject it.")
    body: list[CardElement] = [
        approval.header(facts, "E-MAIL SENDER APPROVAL"),
        parts.status_box(status_text if status in _STATUS else "Status", line, style,
                         extra=[parts.tb(who, size="Small", is_subtle=True, spacing="Small")]),
        *approval.details(facts, owner=False),
    ]
    return parts.card(body, refresh_definition=parts.refresh(facts),
                      fallback=f"{text.md(facts.service_name, text.NAME)} sending as "
                               f"{text.md(facts.domain, text.NAME)}: {status_text}")
