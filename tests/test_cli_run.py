"""`dmarcbot run`: the scheduled job once, over the shared mailbox or over a local folder."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from function_app.cli import main
from function_app.demo_reports import write_demo_reports
from tests.builders import aggregate_xml, gzipped, record_xml
from tests.fakes.entra import FakeEntra
from tests.fakes.graph import FakeGraph
from tests.fakes.mailbox import FileAttachment
from tests.fakes.tls import TestCA
from tests.mailbox_env import CLIENT_ID, MAILBOX, SECRET, env_for


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def graph_env(monkeypatch: pytest.MonkeyPatch, entra: FakeEntra, graph: FakeGraph,
              test_ca: TestCA) -> FakeGraph:
    graph.add_mailbox(MAILBOX).grant(CLIENT_ID)
    for name, value in env_for(entra, graph, test_ca).items():
        monkeypatch.setenv(name, value)
    return graph


def test_run_over_the_mailbox_stores_sorts_and_names(
        capsys: pytest.CaptureFixture[str], entra: FakeEntra, graph_env: FakeGraph,
        tmp_path: Path) -> None:
    entra.add_client(CLIENT_ID, secret=SECRET)
    box = graph_env.mailbox(MAILBOX)
    assert box is not None
    box.add_message(internet_message_id="<ok@r>", attachments=[FileAttachment(
        "r.xml.gz", gzipped(aggregate_xml(record_xml("192.0.2.1", 5))))])
    box.add_message(internet_message_id="<no@r>", attachments=[FileAttachment("x.txt", b"hi")])
    db = str(tmp_path / "s.sqlite3")

    code, out, err = run(capsys, "--db", db, "run", "--source", "graph", "--offline")

    lines = out.splitlines()
    assert "processed <ok@r>: 1 reports" in lines
    assert any(line.startswith("failed <no@r>: ") for line in lines)
    assert code == 1  # one e-mail could not be read: worth a non-zero status for a script
    assert "Traceback" not in err
    code, out, _ = run(capsys, "--db", db, "summary", "--json")
    assert code == 0 and '"messages": 5' in out
    # a second run finds nothing new
    code, out, _ = run(capsys, "--db", db, "run", "--source", "graph", "--offline")
    assert code == 0 and "processed" not in out


def test_run_says_which_setting_is_missing(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    for name in ("DMARCBOT_CLIENT_SECRET", "DMARCBOT_CERTIFICATE_PATH",
                 "DMARCBOT_MANAGED_IDENTITY_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    code, out, err = run(capsys, "--db", str(tmp_path / "s.sqlite3"), "run", "--source",
                         "graph", "--offline")
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("dmarcbot: error: no credential for Microsoft Graph: set ")


def test_run_with_a_refused_credential_is_one_line(
        capsys: pytest.CaptureFixture[str], entra: FakeEntra, graph_env: FakeGraph,
        tmp_path: Path) -> None:
    entra.add_client(CLIENT_ID, secret="another-secret")
    code, _, err = run(capsys, "--db", str(tmp_path / "s.sqlite3"), "run", "--source", "graph",
                       "--offline")
    assert code == 1
    assert err.splitlines() == [
        f"dmarcbot: error: {MAILBOX}: Entra ID refused the secret credential: invalid_client "
        "(AADSTS7000215)"]
    assert SECRET not in err


def test_run_over_a_folder_ingests_and_lists_the_senders_to_decide(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    write_demo_reports(folder, last_day=date(2026, 11, 27))
    db = str(tmp_path / "s.sqlite3")
    code, out, err = run(capsys, "--db", db, "run", "--source", str(folder), "--offline")
    assert code == 0, err
    assert "senders wait for their owner's decision:" in out
    # what was already stored is not new: a second run lists nobody
    code, out, _ = run(capsys, "--db", db, "run", "--source", str(folder), "--offline")
    assert code == 0 and "wait for their owner's decision" not in out
