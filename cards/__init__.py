"""Adaptive Card builders: approval, decision, digest. Pure: values in, card JSON dicts out.

Cards are Adaptive Cards 1.5 built with `microsoft-teams-cards` and returned as JSON-ready
dicts; nothing here sends anything or talks to Graph. See docs/cards.md.
"""

from cards.approval import approval_card
from cards.decision import decision_card, read_only_card, retry_card
from cards.digest import digest_card
from cards.facts import (
    ApprovalFacts,
    Decision,
    DigestFacts,
    OtherLine,
    ServiceLine,
    SourceLine,
    approval_facts_from,
    digest_facts_from,
)

__all__ = [
    "ApprovalFacts",
    "Decision",
    "DigestFacts",
    "OtherLine",
    "ServiceLine",
    "SourceLine",
    "approval_card",
    "approval_facts_from",
    "decision_card",
    "digest_card",
    "digest_facts_from",
    "read_only_card",
    "retry_card",
]
