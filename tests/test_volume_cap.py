"""A believed report cannot claim more than its reporter's history allows (issue 13).

The attack: authentication proves who reported, not that the counts are true. Anyone can own
evil.example, pass DMARC for it and mail a report claiming 400,000 compliant messages for the
victim's domain; or a reporter with history can suddenly claim a flood. Either dilutes the real
failures below the blocker threshold and flips the advice. Such a report is kept and held (not
believed) with a one-line reason naming the limit, until the admin trusts its reporter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from analysis import Limits, read_reports
from analysis.volume import HELD, WINDOW_DAYS, Sent, VolumeCheck, hold_reason
from function_app.cli import main
from store import SqliteStore
from tests.builders import aggregate_xml, gzipped, record_xml, report_email

GATEWAY = "mx.contoso.example"
DAY = 86_400
START = 1764288000  # 2025-11-28T00:00:00Z
LIMITS = Limits()


@pytest.fixture(autouse=True)
def trusted_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMARCBOT_TRUSTED_AUTHSERV_IDS", GATEWAY)


def stamp(domain: str) -> str:
    return (f"{GATEWAY}; spf=pass smtp.mailfrom={domain}; dkim=pass header.d={domain}; "
            f"dmarc=pass (p=REJECT) header.from={domain}")


def report_mail(tmp_path: Path, reporter: str, day: int, records: str, report_id: str) -> Path:
    path = tmp_path / f"{reporter}-{report_id}.eml"
    xml = aggregate_xml(records, email=f"dmarc@{reporter}", report_id=report_id,
                        begin=START + day * DAY, end=START + (day + 1) * DAY - 1)
    path.write_bytes(report_email(gzipped(xml), authentication_results=(stamp(reporter),)))
    return path


def ingest(capsys: pytest.CaptureFixture[str], db: str, *paths: Path) -> list[str]:
    code = main(["--db", db, "ingest", *map(str, paths)])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err
    return out.splitlines()


def believed_by_ip(capsys: pytest.CaptureFixture[str], db: str) -> dict[str, int]:
    assert main(["--db", db, "senders", "--json", "--offline", "--evidence"]) == 0
    found: dict[str, int] = {}
    for line in capsys.readouterr()[0].splitlines():
        for source in json.loads(line).get("sources", []):
            found[source["ip"]] = found.get(source["ip"], 0) + source["messages"]
    return found


REAL = record_xml("192.0.2.10", 300, dkim="pass", spf="pass", header_from="example.com")
FAILING = record_xml("198.51.100.7", 40, dkim="fail", spf="fail", header_from="example.com",
                     auth='<spf><domain>mailchimp.example</domain><result>fail</result></spf>')
FLOOD = record_xml("203.0.113.66", 400_000, dkim="pass", spf="pass", header_from="example.com")


def a_week_of_real_reports(tmp_path: Path) -> list[Path]:
    return [report_mail(tmp_path, "receiver.example", day, REAL + FAILING, f"g-{day}")
            for day in range(7)]


def test_a_verified_newcomer_s_flood_is_held_and_moves_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "s.sqlite3")
    lines = ingest(capsys, db, *a_week_of_real_reports(tmp_path))
    assert all(line.endswith("stored") for line in lines)
    before = believed_by_ip(capsys, db)
    assert before == {"192.0.2.10": 2100, "198.51.100.7": 280}

    flood = report_mail(tmp_path, "evil.example", 7, FLOOD, "e-1")  # passes DMARC for itself
    (line,) = ingest(capsys, db, flood)
    assert "stored (unverified: held for volume: 400,000 messages a day is over 20x the 340 a" \
           " day of the domain's largest established reporter (evil.example is new to it)" \
           " (limit max_volume_factor=20)" in line
    assert believed_by_ip(capsys, db) == before  # the failing sender still counts
    with SqliteStore(db) as store:  # kept: nothing lost
        assert sum(e.messages for e in store.reports()) == 2380 + 400_000

    # the same report again, from a believed mail, does not lift the hold
    again = report_mail(tmp_path, "evil.example", 7, FLOOD, "e-1")
    assert ingest(capsys, db, again)[0].endswith(": duplicate")
    assert believed_by_ip(capsys, db) == before

    # the admin who trusts the reporter believes it
    monkeypatch.setenv("DMARCBOT_TRUSTED_REPORTERS", "evil.example")
    assert believed_by_ip(capsys, db)["203.0.113.66"] == 400_000


def test_an_established_reporter_s_sudden_flood_is_held_its_usual_reports_are_not(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.sqlite3")
    ingest(capsys, db, *a_week_of_real_reports(tmp_path))
    busy = record_xml("192.0.2.10", 3000, dkim="pass", spf="pass", header_from="example.com")
    flood = report_mail(tmp_path, "receiver.example", 7, FLOOD, "g-7")
    usual = report_mail(tmp_path, "receiver.example", 8, busy, "g-8")  # a campaign: 9x
    held, stored = ingest(capsys, db, flood, usual)
    assert "held for volume: 400,000 messages a day is over 20x receiver.example's usual 340" \
           in held
    assert stored.endswith("stored")
    assert believed_by_ip(capsys, db) == {"192.0.2.10": 5100, "198.51.100.7": 280}


def test_many_small_reports_on_one_day_count_together(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.sqlite3")
    ingest(capsys, db, *a_week_of_real_reports(tmp_path))
    part = record_xml("203.0.113.66", 4000, dkim="pass", spf="pass", header_from="example.com")
    lines = ingest(capsys, db, *(report_mail(tmp_path, "receiver.example", 7, part, f"p-{i}")
                                 for i in range(3)))
    # 340 a day is usual: 6,800 a day is the cap, so the second 4,000 goes over it
    assert lines[0].endswith("stored")
    assert ["with 4,000 already that day" in line for line in lines[1:]] == [True, True]


def test_a_new_install_believes_its_first_reporters(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.sqlite3")
    first = report_mail(tmp_path, "receiver.example", 0, FLOOD, "g-0")
    assert ingest(capsys, db, first)[0].endswith("stored")  # nothing to compare with yet


def test_bare_files_are_not_measured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.sqlite3")
    ingest(capsys, db, *a_week_of_real_reports(tmp_path))
    path = tmp_path / "admin.xml"
    path.write_bytes(aggregate_xml(FLOOD, email="dmarc@evil.example", report_id="x",
                                   begin=START + 7 * DAY, end=START + 8 * DAY - 1))
    assert ingest(capsys, db, path)[0].endswith("stored")


# -- the rule itself -------------------------------------------------------------------------


def sent(reporter: str, per_day: Iterable[int], first_day: int = 0) -> list[Sent]:
    return [Sent(reporter, START + (first_day + i) * DAY, START + (first_day + i + 1) * DAY - 1,
                 n) for i, n in enumerate(per_day)]


def judge(reporter: str, day: int, messages: int, history: list[Sent],
          limits: Limits = LIMITS) -> str | None:
    begin = START + day * DAY
    return hold_reason(reporter, begin, begin + DAY - 1, messages,
                       [s for s in history if s.reporter_domain == reporter],
                       lambda: history, limits)


def test_a_flood_cannot_ratchet_the_median_up_quickly() -> None:
    """An attacker who sends the most the cap allows every day needs weeks, not days, to reach
    400,000: the yardstick is the median of the window, which a flood moves only once it holds
    the majority of the window's days."""
    history = sent("evil.example", [100] * WINDOW_DAYS)
    day = WINDOW_DAYS
    while True:
        past = [s.messages for s in history if s.begin < START + day * DAY]
        largest = max(past[-WINDOW_DAYS:])
        if largest >= 400_000:
            break
        allowed = 0
        for n in (largest * 20, largest * 10, largest * 5, largest * 2, largest):
            if judge("evil.example", day, n, history) is None:
                allowed = n
                break
        history += sent("evil.example", [allowed], day)
        day += 1
    assert day - WINDOW_DAYS >= 2 * 16  # two full half-windows per x20: weeks, in plain sight


def test_the_rule_s_edges() -> None:
    history = sent("receiver.example", [1000, 1000, 1000])
    assert judge("receiver.example", 3, 20_000, history) is None  # exactly 20x
    reason = judge("receiver.example", 3, 20_001, history)
    assert reason is not None and reason.startswith(HELD)
    assert judge("receiver.example", 3, 20_001, history,
                 Limits(max_volume_factor=50)) is None
    # fewer days than established_reporter_days: a newcomer, measured against the others
    assert judge("new.example", 3, 20_000, history) is None
    assert judge("new.example", 3, 20_001, history) is not None
    # the floor: a small domain's reporters may always send this much
    assert judge("new.example", 3, 1000, sent("receiver.example", [1, 1, 1])) is None
    assert judge("new.example", 3, 1001, sent("receiver.example", [1, 1, 1])) is not None
    # a reporter with two days is not established: nothing to compare with yet
    assert judge("new.example", 2, 10 ** 9, sent("receiver.example", [1, 1])) is None
    # a multi-day report is measured per day
    begin = START + 3 * DAY
    assert hold_reason("receiver.example", begin, begin + 10 * DAY - 1, 200_000, history,
                       lambda: history, LIMITS) is None


def test_the_check_remembers_its_judgement_for_the_caller() -> None:
    check = VolumeCheck(LIMITS)
    history = sent("receiver.example", [10, 10, 10])
    assert check.judge("receiver.example", START + 3 * DAY, START + 4 * DAY - 1, 10 ** 6,
                       history, lambda: history) == check.held
    assert check.held is not None and "limit max_volume_factor=20" in check.held


def test_table_storage_holds_as_sqlite_does(table_store: Any) -> None:
    def add(reporter: str, day: int, records: str, report_id: str) -> str | None:
        xml = aggregate_xml(records, email=f"dmarc@{reporter}", report_id=report_id,
                            begin=START + day * DAY, end=START + (day + 1) * DAY - 1)
        check = VolumeCheck(LIMITS)
        for report in read_reports(xml):
            assert table_store.add_report(report, volume=check) == "stored"
        return check.held

    for day in range(4):
        assert add("receiver.example", day, REAL, f"g-{day}") is None
    assert "evil.example is new to it" in (add("evil.example", 4, FLOOD, "e-1") or "")
    assert "receiver.example's usual 300" in (add("receiver.example", 4, FLOOD, "g-4") or "")
    believed: dict[str, int] = {}
    for k, n in table_store.rollups():
        believed[k.source_ip] = believed.get(k.source_ip, 0) + n
    assert believed == {"192.0.2.10": 1200}
