"""Another revision of this repository beside the working tree, for benchmarks that run both,
side by side, in one run."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def trees(baseline: str | None, work: Path, current: str = "current"
          ) -> Iterator[dict[str, Path]]:
    """{label: source tree}: this working tree as `current`, and `baseline` (a revision) checked
    out in a `git worktree` under `work`, removed on the way out whatever happens."""
    if baseline is None:
        yield {current: ROOT}
        return
    where = work / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), baseline],
                   check=True, capture_output=True)
    try:
        yield {current: ROOT, baseline: where}
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)],
                       check=False, capture_output=True)
