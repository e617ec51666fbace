"""Records stream: memory does not grow with the size of a report."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

from tests.builders import aggregate_xml, record_xml

PROBE = """
import resource, sys
from analysis import read_reports
n = 0
for report in read_reports(sys.argv[1]):
    n += sum(1 for _ in report.records)
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _write(path: Path, records: int) -> None:
    head, tail = aggregate_xml("@@").split(b"@@")
    row = "".join(record_xml(f"192.0.2.{i}", i + 1) for i in range(250)).encode()
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(head)
        for _ in range(records // 250):
            out.write(row)
        out.write(tail)


def _peak_kib(path: Path) -> tuple[int, int]:
    result = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True,
                            text=True, timeout=300, check=True)
    count, peak = result.stdout.split()
    return int(count), int(peak)


def test_peak_memory_is_flat_from_10k_to_200k_records(tmp_path: Path) -> None:
    small, large = tmp_path / "small.xml.gz", tmp_path / "large.xml.gz"
    _write(small, 10_000)
    _write(large, 200_000)
    small_count, small_peak = _peak_kib(small)
    large_count, large_peak = _peak_kib(large)
    assert (small_count, large_count) == (10_000, 200_000)
    # 20x the records (about 90 MB of XML) may cost at most 10 MiB more peak memory.
    assert large_peak - small_peak < 10 * 1024, (small_peak, large_peak)
