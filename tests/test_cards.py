"""The Adaptive Cards: schema-valid (official 1.5 schema), small, safe with hostile strings, and
rendered by the official JS renderer in headless Chromium (no network).

Rendering needs `bash tests/install-test-deps.sh` (Debian chromium, pinned npm packages in
tests/cards_render); without them those tests fail, they do not skip. Screenshots in docs/cards/
are written when missing or with DMARCBOT_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cards import (
    ApprovalFacts,
    Decision,
    DigestFacts,
    OtherLine,
    ServiceLine,
    SourceLine,
    approval_card,
    approval_facts_from,
    decision_card,
    digest_card,
    digest_facts_from,
    parts,
    read_only_card,
    retry_card,
    text,
)
from cards.facts import MAX_REFRESH_USERS, publish_records
from tests.cards_render import schema
from tests.cards_render.renderer import Renderer, problems

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "docs" / "cards"
#: Teams' limit for a message with a card is about 28 KB.
TEAMS_LIMIT = 28_000
DATA_KEYS = {"domain", "service", "item", "request"}


# -- facts -------------------------------------------------------------------------------------

def approval_facts(**changes: Any) -> ApprovalFacts:
    facts = ApprovalFacts(
        domain="contoso.com", service_key="sendgrid", service_name="SendGrid (Twilio)",
        category="esp", messages=18_432, dmarc_pass=11_204, first_seen="2026-11-02",
        last_seen=date(2026, 11, 27), verdict="needs-dkim", item_id="117",
        request_id="r-6f1c2a", owner="Dana Whitfield",
        sources=(
            SourceLine("167.89.118.52", "o1.ptr2841.em.contoso.com", 9_810, 6_020),
            SourceLine("167.89.118.53", "o2.ptr2841.em.contoso.com", 6_115, 3_960),
            SourceLine("149.72.201.14", "o3.ptr7710.sendgrid.net", 1_702, 1_100),
            SourceLine("149.72.201.15", "o4.ptr7710.sendgrid.net", 540, 100),
            SourceLine("168.245.10.7", None, 200, 20),
            SourceLine("168.245.10.8", "wrqvhdbd.outbound-mail.sendgrid.net", 65, 4),
        ),
        evidence=(
            "SPF passed for return-path domain em2841.contoso.com",
            "167.89.118.52 is in SendGrid (Twilio)'s SPF networks",
            "reverse DNS o3.ptr7710.sendgrid.net (forward-confirmed)",
        ),
        records=(
            ("CNAME", "em2841.contoso.com", "u2841.wl042.sendgrid.net"),
            ("CNAME", "s1._domainkey.contoso.com", "s1.domainkey.u2841.wl042.sendgrid.net"),
            ("CNAME", "s2._domainkey.contoso.com", "s2.domainkey.u2841.wl042.sendgrid.net"),
        ),
        advice="set up DKIM for contoso.com in SendGrid (Twilio) and publish s1._domainkey, "
               "s2._domainkey",
        refresh_user_ids=("29:1a2b3c", "29:4d5e6f"),
        account="the SendGrid (Twilio) account that sends with contoso.com as its return path "
                "(aligned SPF)",
        set_aside=("SendGrid (Twilio) \u2014 not signed for contoso.com: not proven to be "
                   "yours, 420 messages",),
    )
    return _replace(facts, **changes)


def _replace(facts: Any, **changes: Any) -> Any:
    return dataclasses.replace(facts, **changes)


def digest_facts(n: int = 9, **changes: Any) -> DigestFacts:
    named = [("Microsoft 365", "Approved", 182_340, 181_020), ("SendGrid (Twilio)", "Pending",
             18_432, 11_204), ("Salesforce", "Approved", 9_880, 9_860),
             ("Mailchimp", "Approved", 4_120, 4_118), ("Zendesk", "Pending", 2_310, 2_300),
             ("Freshdesk", "Rejected", 412, 3), ("HubSpot", "Approved", 3_004, 2_990),
             ("Workday", "Pending", 188, 188), ("Google Workspace", "Rejected", 96, 0)]
    lines = [ServiceLine(n, s, m, p, "Dana Whitfield" if s == "Pending" else None)
             for n, s, m, p in named]
    for i in range(len(lines), n):
        lines.append(ServiceLine(f"Service {i:03d}", ("Approved", "Pending", "Rejected")[i % 3],
                                 1_000 - i, 900 - i, f"Owner {i}"))
    facts = DigestFacts(
        domain="contoso.com", period_start=date(2026, 11, 21), period_end=date(2026, 11, 27),
        messages=224_117, dmarc_pass=211_904, services=tuple(lines[:n]),
        fake=(OtherLine("Microsoft 365 \u2014 another tenant (evilcorp7.onmicrosoft.com)",
                        1_240, 2),
              OtherLine("Unidentified sources \u2014 fails SPF and DKIM", 44, 3)),
        to_check=(OtherLine("SendGrid (Twilio) \u2014 not signed for contoso.com", 218, 2,
                            "Ask: does another team of yours send through a second SendGrid "
                            "account?"),
                  OtherLine("Unidentified sources \u2014 listed in contoso.com's SPF", 100, 1,
                            "Ask: is it your own server?")),
        impostor_messages=1_284, forwarded_messages=2_410, unidentified_messages=318,
        policy="none", next_policy="quarantine",
        next_step="move to p=quarantine with t=y: 97 % of approved mail passes with aligned "
                  "DKIM",
        records=(("TXT", "_dmarc.contoso.com",
                  "v=DMARC1; p=quarantine; t=y; rua=mailto:dmarc@contoso.com"),),
        blockers=("SendGrid (Twilio): 18,432 messages, not approved yet (needs-dkim); its owner "
                  "must approve or reject it",),
        list_url="https://contoso.sharepoint.com/sites/mail/Lists/Senders", top=5)
    return _replace(facts, **changes)


HOSTILE_LINK = "[Approve here](https://evil.example/phish)"
HOSTILE = {
    "name": HOSTILE_LINK + " **URGENT** " + "A" * 5000,
    "domain": "contoso.com\u202e<img src=https://evil.example/x.png>\x00\x1b[31m",
    "rdns": "![x](https://evil.example/i.png).{{DATE(2017-02-14T06:08:39Z, SHORT)}}."
            "http://evil.example/" + "b" * 300,
    "evidence": "DKIM d=" + HOSTILE_LINK + "\n- list\r\n# head <script>alert(1)</script>\u200b"
                + "c" * 3000,
    "owner": "<b>Mallory</b> _x_ 1. [me](mailto:m@evil.example)\u2028\u2029",
}


def hostile_approval() -> ApprovalFacts:
    return approval_facts(
        service_name=HOSTILE["name"], domain=HOSTILE["domain"], owner=HOSTILE["owner"],
        category="<i>cat</i>", verdict="[x](https://evil.example)",
        sources=tuple(SourceLine(f"192.0.2.{i}", HOSTILE["rdns"], 10 - i) for i in range(9)),
        evidence=(HOSTILE["evidence"],) * 40,
        records=(("TXT", HOSTILE["rdns"], HOSTILE["evidence"]),) * 10,
        advice=HOSTILE["evidence"], account=HOSTILE["name"], set_aside=(HOSTILE["rdns"],) * 9)


NOW = datetime(2026, 11, 28, 14, 5, tzinfo=UTC)

CARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "approval": lambda: approval_card(approval_facts()),
    "approval-minimal": lambda: approval_card(approval_facts(
        sources=(), evidence=(), records=(), owner=None, advice=None, refresh_user_ids=(),
        verdict="compliant")),
    "approval-hostile": lambda: approval_card(hostile_approval()),
    "approval-impostor": lambda: approval_card(approval_facts(
        service_key="unknown", service_name="Unidentified sources", category="unknown",
        verdict="impostor", dmarc_pass=0)),
    "decision-approve": lambda: decision_card(approval_facts(),
                                              Decision("approve", "Dana Whitfield", NOW)),
    "decision-reject": lambda: decision_card(approval_facts(),
                                             Decision("reject", "Dana Whitfield", NOW)),
    "decision-notmine": lambda: decision_card(approval_facts(), Decision(
        "notmine", "Dana Whitfield", NOW, handed_to="Marketing Ops (Lee Chen)")),
    "decision-hostile": lambda: decision_card(hostile_approval(), Decision(
        "notmine", HOSTILE["owner"], "2026-11-28T14:05:00Z", handed_to=HOSTILE["name"])),
    "retry-approve": lambda: retry_card(approval_facts(), "SharePoint answered 503 (busy)",
                                        verb="approve"),
    "retry-notmine": lambda: retry_card(approval_facts(), HOSTILE["evidence"],
                                        verb="notmine", new_owner="Lee Chen"),
    "read-only-pending": lambda: read_only_card(approval_facts(), "Pending"),
    "read-only-approved": lambda: read_only_card(
        approval_facts(), "Approved", Decision("approve", "Dana Whitfield", NOW)),
    "digest": lambda: digest_card(digest_facts()),
    "digest-60": lambda: digest_card(digest_facts(60)),
    "digest-500": lambda: digest_card(digest_facts(500)),
    "digest-empty": lambda: digest_card(digest_facts(
        0, messages=0, dmarc_pass=0, impostor_messages=0, forwarded_messages=0,
        unidentified_messages=0, records=(), blockers=(), list_url=None, policy=None,
        next_policy="none", next_step="publish a DMARC record with p=none and read the "
                                      "reports")),
    "digest-hostile": lambda: digest_card(digest_facts(
        domain=HOSTILE["domain"], next_step=HOSTILE["evidence"], policy=HOSTILE["owner"],
        services=tuple(ServiceLine(HOSTILE["name"], "Pending", 5, 1, HOSTILE["owner"])
                       for _ in range(30)),
        fake=tuple(OtherLine(HOSTILE["rdns"], 9, 1) for _ in range(9)),
        to_check=tuple(OtherLine(HOSTILE["name"], 9, 1, HOSTILE["evidence"]) for _ in range(9)),
        records=(("TXT", HOSTILE["rdns"], HOSTILE["evidence"]),) * 9,
        blockers=(HOSTILE["evidence"],) * 9)),
}


def strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (path, string) in a card, payload data included."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from strings(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from strings(v, f"{path}/{i}")
    elif isinstance(value, str):
        yield path, value


def find(value: Any, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    out = []
    if isinstance(value, dict):
        if pred(value):
            out.append(value)
        for v in value.values():
            out.extend(find(v, pred))
    elif isinstance(value, list):
        for v in value:
            out.extend(find(v, pred))
    return out


def of_type(card: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return find(card, lambda d: d.get("type") == kind)


def visible(card: dict[str, Any]) -> str:
    """The card's text (TextBlocks, TextRuns, facts), data payloads and urls left out."""
    return "\n".join(s for p, s in strings(card) if p.endswith("/text"))


# -- schema ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CARDS))
def test_card_matches_the_official_1_5_schema(name: str) -> None:
    card = CARDS[name]()
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    schema.assert_valid(card)


@pytest.mark.parametrize(("break_it", "expected"), [
    (lambda c: c["body"][0]["items"][0].update(type="TextBlok"),
     "body/0/items/0: unknown type 'TextBlok'"),
    (lambda c: c["body"][1].pop("text"), "body/1: 'text' is a required property"),
    (lambda c: c["actions"][0].update(verb=5), "actions/0/verb: 5 is not of type 'string'"),
    (lambda c: of_type(c, "TableCell")[0].pop("items"),
     "rows/0/cells/0: 'items' is a required property"),
    (lambda c: c.update(msteams={"width": "Full"}),
     "(card): Additional properties are not allowed ('msteams' was unexpected)"),
])
def test_schema_helper_names_the_first_problem_and_its_path(
        break_it: Callable[[dict[str, Any]], None], expected: str) -> None:
    card = copy.deepcopy(CARDS["approval"]())
    break_it(card)
    problem = schema.first_error(card)
    assert problem is not None and problem.endswith(expected), problem


def test_the_schema_is_the_official_one() -> None:
    loaded = schema.schema()
    assert loaded["$schema"] == "http://json-schema.org/draft-06/schema#"
    assert {"Action.Execute", "Refresh", "Table", "RichTextBlock"} <= set(loaded["definitions"])


# -- approval card -----------------------------------------------------------------------------

def test_approval_actions_carry_verbs_and_ids() -> None:
    facts = approval_facts()
    card = approval_card(facts)
    approve, reject, not_mine = card["actions"]
    data = {"domain": "contoso.com", "service": "sendgrid", "item": "117", "request": "r-6f1c2a"}
    assert (approve["type"], approve["verb"], approve["data"], approve["style"]) == (
        "Action.Execute", "approve", data, "positive")
    assert (reject["type"], reject["verb"], reject["data"], reject["style"]) == (
        "Action.Execute", "reject", data, "destructive")
    assert not_mine["type"] == "Action.ShowCard"
    [owner] = of_type(not_mine["card"], "Input.Text")
    assert owner["id"] == "owner" and owner["isRequired"] is True and owner["label"]
    assert re.fullmatch(owner["regex"], "lee.chen@contoso.com")
    assert not re.fullmatch(owner["regex"], "Lee Chen")
    [hand_over] = not_mine["card"]["actions"]
    assert (hand_over["type"], hand_over["verb"], hand_over["data"]) == (
        "Action.Execute", "notmine", data)
    assert card["refresh"] == {
        "action": {"type": "Action.Execute", "verb": "refresh", "data": data},
        "userIds": ["29:1a2b3c", "29:4d5e6f"]}


def test_approval_shows_what_the_owner_needs() -> None:
    card = approval_card(approval_facts())
    shown = visible(card)
    for expected in ("SendGrid (Twilio)", "Bulk e-mail delivery", "contoso.com", "18,432",
                     "61 %", "2026-11-02", "2026-11-27", "167.89.118.52",
                     "o1.ptr2841.em.contoso.com", "SPF passed for return-path domain",
                     "s1._domainkey.contoso.com", "s1.domainkey.u2841.wl042.sendgrid.net",
                     "Works, needs a small fix", "If you approve", "If you reject",
                     "and 1 more address (65 messages)", "Dana Whitfield",
                     "This request covers one account", "Not part of this request",
                     "not signed for contoso.com"):
        assert expected in shown, expected
    # Five sources at most, the largest first, whatever order they come in.
    assert "168.245.10.8" not in shown and shown.index("167.89.118.52") < shown.index(
        "149.72.201.14")
    reversed_sources = approval_facts(sources=approval_facts().sources[::-1])
    assert visible(approval_card(reversed_sources)) == shown


def test_refresh_lists_at_most_60_users_and_omits_an_empty_list() -> None:
    users = tuple(f"29:user{i}" for i in range(100))
    card = approval_card(approval_facts(refresh_user_ids=users))
    assert card["refresh"]["userIds"] == list(users[:MAX_REFRESH_USERS])
    card = approval_card(approval_facts(refresh_user_ids=()))
    assert "userIds" not in card["refresh"] and card["refresh"]["action"]["verb"] == "refresh"


def test_every_verdict_code_has_plain_words() -> None:
    from analysis.identify import VERDICTS

    assert set(parts.VERDICT_WORDS) == set(VERDICTS)
    for code in VERDICTS:
        label, style, sentence = parts.verdict_words(code, "contoso.com", "SendGrid")
        assert label and style and "{" not in sentence and len(sentence) < 200
    label, _, sentence = parts.verdict_words("new-code", "contoso.com", "X")
    assert label == "Unclassified" and "new-code" in sentence


def test_percentages_and_dates() -> None:
    assert [text.percent(p, 1000) for p in (0, 1, 994, 995, 996, 1000)] == [
        "0 %", "<1 %", "99 %", "99 %", "99 %", "100 %"]
    assert text.percent(5, 0) == text.MISSING
    assert text.day(date(2026, 1, 2)) == "2026-01-02"
    assert text.day("2026-01-02T23:00:00+00:00") == "2026-01-02"
    assert text.day(datetime(2026, 1, 2, 23, 30, tzinfo=timezone(timedelta(hours=-2)))) == (
        "2026-01-03")
    assert text.moment(NOW) == "2026-11-28 14:05 UTC"
    assert text.moment("2026-11-28T15:05:00+01:00") == "2026-11-28 14:05 UTC"
    assert text.moment(date(2026, 11, 28)) == "2026-11-28"


# -- decision, retry, read-only ----------------------------------------------------------------

@pytest.mark.parametrize(("outcome", "words"), [
    ("approve", "Approved"), ("reject", "Rejected"),
    ("notmine", "Not mine → handed to Marketing Ops (Lee Chen)")])
def test_decision_card_says_who_decided_and_has_no_buttons(outcome: str, words: str) -> None:
    decision = Decision(outcome, "Dana Whitfield", NOW,
                        handed_to="Marketing Ops (Lee Chen)" if outcome == "notmine" else None)
    card = decision_card(approval_facts(), decision)
    shown = visible(card)
    assert words in shown and "by Dana Whitfield on 2026-11-28 14:05 UTC" in shown
    assert "actions" not in card and not of_type(card, "ActionSet")
    assert not of_type(card, "Action.ShowCard") and not of_type(card, "Input.Text")
    assert card["refresh"]["action"]["verb"] == "refresh"
    assert ("s1._domainkey.contoso.com" in shown) == (outcome == "approve")


def test_decision_rejects_unknown_outcomes() -> None:
    with pytest.raises(ValueError, match="unknown decision outcome 'maybe'"):
        Decision("maybe", "x", NOW)


@pytest.mark.parametrize("verb", ["approve", "reject", "notmine"])
def test_retry_card_repeats_the_verb(verb: str) -> None:
    card = retry_card(approval_facts(), "SharePoint answered 503", verb=verb,
                      new_owner="Lee Chen")
    [retry] = card["actions"]
    assert retry["type"] == "Action.Execute" and retry["verb"] == verb
    expected = DATA_KEYS | ({"owner"} if verb == "notmine" else set())
    assert set(retry["data"]) == expected
    assert "was not saved" in visible(card) and "SharePoint answered 503" in visible(card)
    with pytest.raises(ValueError):
        retry_card(approval_facts(), "x", verb="refresh")


def test_read_only_card_has_the_content_but_no_buttons() -> None:
    facts = approval_facts()
    card = read_only_card(facts, "Pending")
    shown = visible(card)
    assert "Only Dana Whitfield, the owner of this service, can approve or reject it." in shown
    assert "Waiting for a decision." in shown and "167.89.118.52" in shown
    assert "actions" not in card and not of_type(card, "Input.Text")
    assert card["refresh"]["action"]["data"]["request"] == "r-6f1c2a"
    decided = visible(read_only_card(facts, "Approved", Decision("approve", "Dana W", NOW)))
    assert "Approved" in decided and "by Dana W on 2026-11-28 14:05 UTC" in decided
    assert "If approved" in decided and "If you approve" not in decided
    assert "Only the owner of this service" in visible(read_only_card(
        _replace(facts, owner=None), "Pending"))


# -- digest ------------------------------------------------------------------------------------

def test_digest_groups_senders_by_status() -> None:
    card = digest_card(digest_facts())
    shown = visible(card)
    for expected in ("contoso.com", "2026-11-21 to 2026-11-27", "224,117", "95 %", "1,284",
                     "Waiting for a decision (3)", "Approved (4)", "Rejected (2)",
                     "Microsoft 365", "182,340", "owner: Dana Whitfield", "p=none",
                     "p=quarantine", "_dmarc.contoso.com", "Blocking the next step",
                     "Fake mail", "another tenant (evilcorp7.onmicrosoft.com)", "1,240 messages",
                     "not signed for contoso.com", "Ask: is it your own server?"):
        assert expected in shown, expected
    assert shown.index("Fake mail") < shown.index("Waiting for a decision")
    [open_list] = card["actions"]
    assert open_list == {"type": "Action.OpenUrl", "title": "Open the list of senders",
                         "url": "https://contoso.sharepoint.com/sites/mail/Lists/Senders"}


def test_digest_of_500_senders_shows_the_top_and_counts_the_rest() -> None:
    card = digest_card(digest_facts(500))
    shown = visible(card)
    assert "Waiting for a decision (167)" in shown and "and 162 more senders" in shown
    assert "Approved (168)" in shown and "and 163 more senders" in shown
    assert len(of_type(card, "TableRow")) == 3 * 6  # header + 5 per group
    assert parts.card_bytes(card) < TEAMS_LIMIT
    assert card["actions"][0]["type"] == "Action.OpenUrl"


def test_digest_shrinks_a_large_top_until_it_fits() -> None:
    card = digest_card(digest_facts(500, top=400))
    assert parts.card_bytes(card) <= parts.MAX_CARD_BYTES
    assert "more" in visible(card)


def test_digest_without_a_link_has_no_actions_and_refuses_odd_urls() -> None:
    assert "actions" not in digest_card(digest_facts(list_url=None))
    with pytest.raises(ValueError, match="http"):
        digest_card(digest_facts(list_url="javascript:alert(1)"))


# -- size and hostile strings ------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CARDS))
def test_every_card_fits_in_a_teams_message(name: str) -> None:
    assert parts.card_bytes(CARDS[name]()) <= parts.MAX_CARD_BYTES < TEAMS_LIMIT


def test_long_evidence_stays_small() -> None:
    facts = approval_facts(evidence=tuple(f"evidence line {i} " + "x" * 2000
                                          for i in range(300)),
                           sources=tuple(SourceLine(f"10.0.{i // 256}.{i % 256}", "h" * 250, i)
                                         for i in range(1000)))
    card = approval_card(facts)
    assert parts.card_bytes(card) < TEAMS_LIMIT
    assert "and 294 more clues" in visible(card)
    assert "and 995 more addresses" in visible(card)


def test_the_addresses_not_carried_are_counted_from_the_senders_totals() -> None:
    """A line carries only its largest sources (`SHOWN_SOURCES`): the card counts the rest
    from the sender's totals."""
    card = approval_card(approval_facts(source_count=40))
    assert "and 35 more addresses (65 messages)" in visible(card)
    assert "and 1 more address (65 messages)" in visible(approval_card(approval_facts()))


@pytest.mark.parametrize("name", [n for n in CARDS if "hostile" in n] + ["retry-notmine"])
def test_hostile_strings_are_trimmed_and_neutralised(name: str) -> None:
    card = CARDS[name]()
    for path, value in strings(card):
        if "/data/" in path:  # ids sent back to the bot, never shown
            continue
        assert not any(unicodedata.category(ch) in ("Cc", "Cf") and ch != "\u2060"
                       for ch in value), (path, value)
        assert "\u2028" not in value and "\u2029" not in value, path
        if path.endswith("/url"):
            continue
        assert len(value) <= 1000, (path, len(value))
        # No live link or image syntax and no bare scheme URL anywhere.
        assert "https://evil" not in value and "http://evil" not in value, (path, value)
        assert "{{DATE" not in value, (path, value)
    for block in of_type(card, "TextBlock"):  # markdown is interpreted here: all escaped
        unescaped = re.findall(r"(?<!\\)[\[\]<>`_]", block["text"])
        assert not unescaped, block["text"]
    assert parts.card_bytes(card) < TEAMS_LIMIT


def test_markdown_escaping_and_plain_text() -> None:
    assert text.md("[a](https://x.example) *b* _c_ `d` <e> #f") == (
        "\\[a\\](https:\u2060//x.example) \\*b\\* \\_c\\_ \\`d\\` \\<e\\> \\#f")
    assert text.md("1. first") == "1\\. first" and text.md("- item") == "\\- item"
    assert text.md("mail.example.com") == "mail.example.com"  # ordinary names stay readable
    assert text.plain("a\x00b\u202ec\u200b\n\td   e") == "abc d e"
    assert text.plain("x" * 50, 10) == "x" * 9 + "…"
    assert text.plain("{{DATE(2017-02-14T06:08:39Z, SHORT)}}").startswith("{\u2060{DATE")


# -- adapters from analysis --------------------------------------------------------------------

def test_approval_facts_from_a_service_verdict() -> None:
    from analysis.catalog import load_catalog
    from analysis.identify import Identification, SourceActivity
    from analysis.verdicts import ServiceVerdict, SourceVerdict

    catalog = load_catalog()
    service = catalog.get("sendgrid")
    activity = SourceActivity(domain="contoso.com", ip="167.89.118.52", messages=100,
                              dmarc_pass=60, dkim_aligned_pass=0, spf_aligned_pass=60, dkim=(),
                              spf=(), reasons=(), header_from=("contoso.com",),
                              first_day="2026-11-02", last_day="2026-11-27")
    ident = Identification(activity, "sendgrid", None, 0.9, ("SPF passed for x",),
                           "o1.ptr2841.em.contoso.com", True)
    source = SourceVerdict(ident, "needs-dkim", None, "set up DKIM")
    verdict = ServiceVerdict(
        domain="contoso.com", service_key="sendgrid", service_name=service.name,
        category=service.category, platform_key=None, messages=100, dmarc_pass=60,
        dkim_aligned_pass=0, spf_aligned_pass=60, verdict="needs-dkim", diagnosis=None,
        advice="set up DKIM", confidence=0.9, sources=(source,), evidence=("SPF passed for x",),
        records=service.publish, first_day="2026-11-02", last_day="2026-11-27")
    facts = approval_facts_from(verdict, item_id="7", request_id="r1", owner="Dana",
                                refresh_user_ids=["29:a"])
    assert facts.sources == (SourceLine("167.89.118.52", "o1.ptr2841.em.contoso.com", 100, 60),)
    assert facts.records == publish_records("contoso.com", service.publish)
    assert ("CNAME", "s1._domainkey.contoso.com",
            "s1.domainkey.u{account}.wl{n}.sendgrid.net") in facts.records
    assert all(r[1].endswith("contoso.com") for r in facts.records)
    assert facts.account is not None and "return path" in facts.account
    assert facts.set_aside == ()
    schema.assert_valid(approval_card(facts))


def _judged_lines() -> list[Any]:
    """contoso.com's own Microsoft 365 tenant, another tenant sending as contoso.com through
    the same servers, and a stranger: judged per source, then grouped (as the product does)."""
    import ipaddress

    from analysis.catalog import load_catalog
    from analysis.identify import EvidenceBundle, Identifier, NetworkIndex, SourceActivity
    from analysis.verdicts import judge_sources, service_verdicts

    def activity(ip: str, n: int, dkim: str, spf: str, aligned: bool) -> SourceActivity:
        return SourceActivity("contoso.com", ip, n, n if aligned else 0, n if aligned else 0,
                              n if aligned else 0, (((dkim, "selector1", "pass"), n),),
                              (((spf, "mfrom", "pass" if spf else "fail"), n),), (),
                              ("contoso.com",), "2026-11-21", "2026-11-27")

    catalog = load_catalog()
    m365 = (ipaddress.ip_network("40.107.0.0/16"),)
    bundle = EvidenceBundle({}, {("selector1", "contoso.com"):
                                 "selector1-contoso-com._domainkey.contosocorp.onmicrosoft.com"},
                            {"microsoft365": m365})
    activities = [
        activity("40.107.1.1", 9_000, "contoso.com", "contoso.com", True),
        activity("40.107.2.2", 1_240, "evilcorp7.onmicrosoft.com", "evilcorp7.onmicrosoft.com",
                 False),
        activity("203.0.113.9", 44, "", "", False),
    ]
    identifier = Identifier(catalog, bundle)
    sources = judge_sources([identifier.identify(a) for a in activities], catalog,
                            NetworkIndex({"microsoft365": m365}), bundle.dkim_targets)
    return service_verdicts(sources, catalog)


def test_another_tenant_never_reaches_the_approval_card_and_shows_as_fake_mail() -> None:
    from analysis.dnsevidence import DmarcRecord, SpfTree
    from analysis.posture import Posture

    lines = _judged_lines()
    [decision] = [v for v in lines if v.needs_decision]
    facts = approval_facts_from(decision, item_id="1", request_id="r")
    assert [s.ip for s in facts.sources] == ["40.107.1.1"] and facts.messages == 9_000
    assert facts.account is not None and "signs mail as contoso.com" in facts.account
    [aside] = facts.set_aside
    assert "another tenant (evilcorp7.onmicrosoft.com): fake mail, 1,240 messages" in aside
    card = approval_card(facts)
    schema.assert_valid(card)
    shown = visible(card)
    assert "Not part of this request" in shown and "40.107.2.2" not in shown

    posture = Posture(
        domain="contoso.com",
        dmarc=DmarcRecord("contoso.com", "contoso.com", "v=DMARC1; p=none", {"p": "none"}, 1,
                          ()),
        spf=SpfTree("contoso.com", None, (), (), 0, 0, None, (), False), findings=(),
        readiness=1.0, considered_messages=9_000, ready_messages=9_000, blockers=(),
        policy="none", next_policy="quarantine", next_step="move to p=quarantine",
        changes=())
    digest = digest_facts_from(posture, lines, {"microsoft365": "Approved"},
                               period=("2026-11-21", "2026-11-27"))
    assert [s.name for s in digest.services] == ["Microsoft 365 (Exchange Online)"]
    assert digest.services[0].messages == 9_000 and digest.impostor_messages == 1_284
    assert [(f.name.split(" \u2014 ")[-1], f.messages) for f in digest.fake] == [
        ("another tenant (evilcorp7.onmicrosoft.com)", 1_240), ("fails SPF and DKIM", 44)]
    schema.assert_valid(digest_card(digest))
    assert "another tenant (evilcorp7.onmicrosoft.com)" in visible(digest_card(digest))


def test_publish_records_fill_in_the_domain() -> None:
    from analysis.catalog import load_catalog

    records = publish_records("contoso.com", load_catalog().get("microsoft365").publish)
    assert ("TXT", "contoso.com", "add include:spf.protection.outlook.com to the SPF record") \
        in records
    assert any(v.startswith("selector1-contoso-com._domainkey.") for _, _, v in records)


def test_digest_facts_from_a_posture() -> None:
    from analysis.dnsevidence import DmarcRecord, SpfTree
    from analysis.posture import DnsChange, Posture

    verdicts = [_verdict("microsoft365", "compliant", 900), _verdict("sendgrid", "needs-dkim", 80),
                _verdict("unknown", "impostor", 15), _verdict("mailchimp", "compliant", 5)]
    posture = Posture(
        domain="contoso.com",
        dmarc=DmarcRecord("contoso.com", "contoso.com", "v=DMARC1; p=none", {"p": "none"}, 1,
                          ()),
        spf=SpfTree("contoso.com", None, (), (), 0, 0, None, (), False), findings=(),
        readiness=0.9, considered_messages=980, ready_messages=900, blockers=("b",),
        policy="none", next_policy="none", next_step="stay at p=none",
        changes=(DnsChange("_dmarc.contoso.com", "TXT", "v=DMARC1; p=none", "why"),))
    facts = digest_facts_from(posture, verdicts, {"microsoft365": "Approved",
                                                   "mailchimp": "Rejected"},
                              period=("2026-11-21", "2026-11-27"),
                              owners={"sendgrid": "Dana"})
    assert (facts.messages, facts.impostor_messages) == (1000, 15)
    assert [(s.name, s.status, s.owner) for s in facts.services] == [
        ("microsoft365", "Approved", None), ("sendgrid", "Pending", "Dana"),
        ("mailchimp", "Rejected", None)]
    assert facts.records == (("TXT", "_dmarc.contoso.com", "v=DMARC1; p=none"),)
    schema.assert_valid(digest_card(facts))


def _verdict(key: str, verdict: str, messages: int) -> Any:
    from analysis.identify import Identification, SourceActivity
    from analysis.verdicts import LinePart, ServiceVerdict, SourceVerdict

    activity = SourceActivity("contoso.com", "192.0.2.1", messages, 0, 0, 0, (), (), (), ())
    source = SourceVerdict(Identification(activity, key, None, 1.0, (), None), verdict, None, "")
    return ServiceVerdict("contoso.com", key, key, "esp", None, messages, 0, 0, 0, verdict, None,
                          "", 1.0, (source,), (), (), "2026-11-21", "2026-11-27",
                          source_count=1, parts=(LinePart(verdict, 1, messages, 0, 0, ""),))


def test_the_cards_package_imports_nothing_but_the_card_models() -> None:
    code = ("import sys, cards; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('analysis', 'graph', 'store', 'function_app', 'azure', 'msgraph', 'httpx')); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# -- rendering in Chromium ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def renderer() -> Iterator[Renderer]:
    r = Renderer()
    try:
        yield r
    finally:
        r.close()


def _screenshot(name: str) -> Path | None:
    path = SCREENSHOTS / f"{name}.png"
    if os.environ.get("DMARCBOT_UPDATE_SCREENSHOTS") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    return None


@pytest.mark.parametrize("name", sorted(CARDS))
def test_official_renderer_reports_no_errors(renderer: Renderer, name: str) -> None:
    result = renderer.render(CARDS[name]())
    assert problems(result) == []
    assert result["links"] == [] and result["embedded"] == []
    assert result["text"].strip()


@pytest.mark.parametrize(("shot", "name"), [("approval", "approval"),
                                            ("decision", "decision-notmine"),
                                            ("digest", "digest-60")])
def test_screenshots(renderer: Renderer, shot: str, name: str) -> None:
    path = _screenshot(shot)
    result = renderer.render(CARDS[name](), screenshot=path)
    assert problems(result) == []
    if path is not None:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_clicking_approve_emits_the_execute_payload(renderer: Renderer) -> None:
    result = renderer.render(CARDS["approval"](), steps=[{"click": "Approve"}])
    assert problems(result) == []
    assert result["executed"] == [{
        "type": "Action.Execute", "verb": "approve", "title": "Approve",
        "data": {"domain": "contoso.com", "service": "sendgrid", "item": "117",
                 "request": "r-6f1c2a"}}]


def test_not_mine_sends_the_named_owner(renderer: Renderer) -> None:
    result = renderer.render(CARDS["approval"](), steps=[
        {"click": "Not mine"}, {"fill": ["Who owns this service?", "lee.chen@contoso.com"]},
        {"click": "Hand over"}])
    assert problems(result) == []
    [executed] = result["executed"]
    assert executed["verb"] == "notmine"
    assert executed["data"] == {"domain": "contoso.com", "service": "sendgrid", "item": "117",
                                "request": "r-6f1c2a", "owner": "lee.chen@contoso.com"}


@pytest.mark.parametrize("typed", [None, "Lee Chen"])
def test_not_mine_needs_an_address(renderer: Renderer, typed: str | None) -> None:
    steps: list[dict[str, Any]] = [{"click": "Not mine"}]
    if typed:
        steps.append({"fill": ["Who owns this service?", typed]})
    result = renderer.render(CARDS["approval"](), steps=[*steps, {"click": "Hand over"}])
    assert result["executed"] == []  # the input's checks stop the action


def test_retry_repeats_the_verb_in_the_renderer(renderer: Renderer) -> None:
    result = renderer.render(CARDS["retry-notmine"](), steps=[{"click": "Retry: Not mine"}])
    assert problems(result) == []
    [executed] = result["executed"]
    assert executed["verb"] == "notmine" and executed["data"]["owner"] == "Lee Chen"


def test_hostile_strings_render_as_text(renderer: Renderer) -> None:
    result = renderer.render(CARDS["approval-hostile"]())
    assert problems(result) == []
    assert result["links"] == [] and result["embedded"] == []
    # The markdown was shown literally: brackets and stars are text, not a link or bold.
    assert "[Approve here](https:" in result["text"] and "**URGENT**" in result["text"]
    assert "\\[" not in result["text"]


def test_card_json_is_plain_json() -> None:
    for name, build in CARDS.items():
        card = build()
        assert json.loads(json.dumps(card)) == card, name
