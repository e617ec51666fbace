"""Approvals without Microsoft 365: cards in the outbox, decisions from the command line."""

from __future__ import annotations

import json
import time
from datetime import date
from importlib import resources
from pathlib import Path

import pytest

from analysis.dnsevidence import answers_from_zone
from function_app.cli import main
from function_app.demo_reports import DEMO_AUTHSERV_ID, write_demo_reports
from store import SqliteStore

OWNERS = "contoso.com=ann@contoso.com,fabrikam.com=bob@fabrikam.com"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cards(outbox: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(outbox.glob("*.json"))]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, Path]:
    monkeypatch.setenv("DMARCBOT_OWNERS", OWNERS)
    monkeypatch.setenv("DMARCBOT_ADMINS", "sec@contoso.com")
    # the demo's e-mails were stamped by its receiving server: trusted, as `dmarcbot demo` does
    monkeypatch.setenv("DMARCBOT_TRUSTED_AUTHSERV_IDS", DEMO_AUTHSERV_ID)
    reports = tmp_path / "reports"
    write_demo_reports(reports, last_day=date(2026, 11, 27))
    db = tmp_path / "s.sqlite3"
    # the demo's DNS, cached; anything else asked of a closed port on loopback fails at once
    zone = resources.files("function_app").joinpath("demo.zone").read_text("utf-8")
    with SqliteStore(db) as store:
        for answer in answers_from_zone(zone, expires=time.time() + 86400):
            store.put_answer(answer)
    return str(db), reports, tmp_path / "outbox"


DNS = ("--nameserver", "127.0.0.1:9", "--dns-timeout", "0.2")


def test_each_sender_s_owner_gets_one_card_and_decides_once(
        capsys: pytest.CaptureFixture[str], world: tuple[str, Path, Path]) -> None:
    db, reports, outbox = world
    code, out, err = run(capsys, "--db", db, "run", "--source", str(reports), *DNS,
                         "--outbox", str(outbox))
    assert code == 0, err
    asked = cards(outbox)
    assert {(c["to"], c["kind"], c["service"]) for c in asked} == {
        ("ann@contoso.com", "ask", "sendgrid"), ("ann@contoso.com", "ask", "mailchimp"),
        ("ann@contoso.com", "ask", "microsoft365"), ("bob@fabrikam.com", "ask", "microsoft365")}
    assert (outbox / "index.html").read_text().count('class="card"') == 4
    assert f"4 cards written to the outbox: {outbox / 'index.html'}" in out

    # never asked twice: the same reports again, and a run with nothing new
    run(capsys, "--db", db, "run", "--source", str(reports), *DNS, "--outbox",
        str(outbox))
    assert len(cards(outbox)) == 4

    # someone else cannot decide; the owner can, once
    code, _, err = run(capsys, "--db", db, "decide", "sendgrid", "--domain", "contoso.com",
                       "--approve", "--as", "mallory@contoso.com", "--outbox", str(outbox))
    assert code == 1 and err.strip() == (
        "dmarcbot: only the sender's owner (ann@contoso.com) or an admin can decide")
    code, out, _ = run(capsys, "--db", db, "decide", "sendgrid", "--domain", "contoso.com",
                       "--approve", "--as", "ann@contoso.com", "--outbox", str(outbox))
    assert code == 0 and "contoso.com sendgrid: approved by ann@contoso.com" in out
    code, out, err = run(capsys, "--db", db, "decide", "sendgrid", "--domain", "contoso.com",
                         "--reject", "--as", "sec@contoso.com", "--outbox", str(outbox))
    assert code == 1 and "Approved already" in err and "nothing changed" in err
    code, out, _ = run(capsys, "--db", db, "decide", "sendgrid", "--domain", "contoso.com",
                       "--approve", "--as", "ann@contoso.com", "--outbox", str(outbox))
    assert code == 0 and "Approved already" in out  # the same answer twice is no error
    with SqliteStore(db) as store:
        item = store.inventory("contoso.com")["contoso.com", "sendgrid"]
    assert (item.status, item.decided_by) == ("Approved", "ann@contoso.com")
    decision = [c for c in cards(outbox) if c["kind"] == "decision"]
    assert len(decision) == 1 and decision[0]["to"] == "ann@contoso.com"
    card = decision[0]["card"]
    assert isinstance(card, dict) and "Action.Execute" not in json.dumps(card.get("actions", []))


def test_not_mine_hands_the_sender_over_and_asks_the_new_owner(
        capsys: pytest.CaptureFixture[str], world: tuple[str, Path, Path]) -> None:
    db, reports, outbox = world
    run(capsys, "--db", db, "run", "--source", str(reports), *DNS, "--outbox",
        str(outbox))
    code, out, _ = run(capsys, "--db", db, "decide", "mailchimp", "--domain", "contoso.com",
                       "--not-mine", "marketing@contoso.com", "--as", "ann@contoso.com",
                       "--outbox", str(outbox))
    assert code == 0 and "handed to marketing@contoso.com" in out
    to_new = [c for c in cards(outbox) if c["to"] == "marketing@contoso.com"]
    assert [(c["kind"], c["service"]) for c in to_new] == [("ask", "mailchimp")]
    code, _, err = run(capsys, "--db", db, "decide", "mailchimp", "--domain", "contoso.com",
                       "--approve", "--as", "ann@contoso.com", "--outbox", str(outbox))
    assert code == 1 and "marketing@contoso.com" in err


def test_decide_names_an_unknown_sender(capsys: pytest.CaptureFixture[str],
                                        world: tuple[str, Path, Path]) -> None:
    db, _, outbox = world
    code, out, err = run(capsys, "--db", db, "decide", "nosuch", "--domain", "contoso.com",
                         "--approve", "--as", "ann@contoso.com", "--outbox", str(outbox))
    assert code == 2 and out == ""
    assert err.strip() == "dmarcbot: no sender 'nosuch' is known for contoso.com"


def test_the_demo_ends_with_its_cards_in_the_outbox(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    code, out, err = run(capsys, "--db", str(tmp_path / "d.sqlite3"), "demo", "--outbox",
                         str(outbox))
    assert code == 0, err
    kinds = sorted(c["kind"] for c in cards(outbox))  # type: ignore[type-var]
    assert kinds.count("digest") == 2 and kinds.count("ask") >= 2
    assert f"are in the outbox: {outbox / 'index.html'}" in out
    page = (outbox / "index.html").read_text()
    assert page.count('class="card"') == len(kinds) and "<script" not in page
