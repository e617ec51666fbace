"""Shared fixtures: where the real-world samples live, and small report builders."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.dnslab.fixtures", "tests.azurite", "tests.fakes.fixtures",
                  "tests.mailbox_env"]

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "samples" / "real-world"
#: Samples refused, by name, with the limit each names. RFC 9990's own example is dated 1979,
#: before DMARC existed: a real report dated so is forged (docs/limits.md).
REFUSED_SAMPLES = {"aggregate/rfc9990-sample.xml": "earliest_report_year=2012"}


@pytest.fixture(scope="session")
def samples() -> Path:
    assert SAMPLES.is_dir(), f"real-world samples missing at {SAMPLES}"
    return SAMPLES


def read_all(source: object, limits: object = None) -> list[tuple[object, list[object]]]:
    """Every report of an input with its records read while the reader is on it."""
    from analysis import AggregateReport, read_reports

    out = []
    for report in read_reports(source, limits):  # type: ignore[arg-type]
        records = list(report.records) if isinstance(report, AggregateReport) else []
        out.append((report, records))
    return out
