"""Pytest helper: one `node render.mjs` (one headless Chromium) per test session.

Needs Debian's chromium and `npm ci` in this folder, both done by
``bash tests/install-test-deps.sh``. Missing pieces fail the tests that render (never a skip).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "render.mjs"
MODULES = HERE / "node_modules"
CHROMIUM = Path(os.environ.get("DMARCBOT_CHROMIUM", "/usr/bin/chromium"))
#: The versions package.json pins (checked, so a stale node_modules is noticed).
PINNED = json.loads((HERE / "package.json").read_text())["dependencies"]
INSTALL = "run `bash tests/install-test-deps.sh`"


def missing() -> str | None:
    """Why rendering cannot run here, or None."""
    if shutil.which("node") is None:
        return f"node is not installed: {INSTALL}"
    if not CHROMIUM.exists():
        return f"Chromium is not installed at {CHROMIUM}: {INSTALL}"
    for name, version in PINNED.items():
        meta = MODULES / name / "package.json"
        if not meta.exists():
            return f"{name} is missing from {MODULES}: {INSTALL}"
        found = json.loads(meta.read_text()).get("version")
        if found != version:
            return f"{name} {found} is installed, {version} is pinned: {INSTALL}"
    return None


class Renderer:
    """Talks to render.mjs: one JSON request per line, one JSON answer per line.

    Starts the browser on the first `render`, so a missing piece fails the test that renders
    (reported as a failure, not as a fixture error).
    """

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._next = 0
        self._process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (lives on)

    def _start(self) -> subprocess.Popen[str]:
        if self._process is None:
            problem = missing()
            if problem:
                pytest.fail(problem, pytrace=False)
            # A file, not a pipe: nobody reads stderr while tests run, and a full pipe blocks.
            self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (lives on)
            self._process = subprocess.Popen(
                ["node", str(SCRIPT)], cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._stderr, text=True, bufsize=1)
        return self._process

    def _fail(self, message: str) -> None:
        self.close()
        self._stderr.seek(0)
        details = self._stderr.read()[-2000:].strip()
        pytest.fail(f"{message}{': ' + details if details else ''}", pytrace=False)

    def render(self, card: dict[str, Any], *, screenshot: Path | None = None,
               steps: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        """Render `card`, then run `steps` ({"click": title} or {"fill": [label, text]})."""
        process = self._start()
        assert process.stdin is not None and process.stdout is not None
        stdout = process.stdout
        self._next += 1
        request = {"id": self._next, "card": card, "steps": list(steps),
                   "screenshot": str(screenshot) if screenshot else None}
        try:
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
        except BrokenPipeError:
            self._fail("render.mjs has exited")
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.timeout)
        if not answer or not answer[0]:
            self._fail(f"render.mjs gave no answer within {self.timeout} s")
        result = json.loads(answer[0])
        if result.get("fatal"):
            self._fail(f"{result['fatal']} ({INSTALL})")
        assert result.get("id") == self._next, result
        return result

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stdout is not None:
            process.stdout.close()


def problems(result: dict[str, Any]) -> list[str]:
    """The renderer's errors (hints are not errors), plus a failed step or off-site request."""
    out = [f"{e['phase']}: {e['event']}: {e['message']}" for e in result.get("events", [])
           if e.get("event") != "Hint"]
    if result.get("error"):
        out.append(f"render.mjs: {result['error']}")
    out += [f"request left file://: {url}" for url in result.get("offsite", [])]
    return out
