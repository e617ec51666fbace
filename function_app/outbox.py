"""The local mode's Teams: cards written to a folder, one JSON file each, and a page showing all.

`dmarcbot run` and `dmarcbot decide` send their cards here when there is no Microsoft 365: each
file holds who the card is for, why, and the card itself (the same JSON Teams would get), and
`index.html` renders them all, newest first, offline.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from cards.html import page

INDEX = "index.html"
_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


class Outbox:
    """A folder of cards."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @property
    def index(self) -> Path:
        return self.folder / INDEX

    async def send(self, to: str, card: dict[str, Any], *, kind: str, domain: str,
                   service: str | None = None, now: dt.datetime | None = None) -> Path:
        """Write one card (and refresh the page); returns the card's file."""
        when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = "-".join(_UNSAFE.sub("_", part) for part in filter(None, (
            when.strftime("%Y%m%dT%H%M%SZ"), kind, domain, service)))
        path = self.folder / f"{stem}.json"
        n = 1
        while path.exists():
            n += 1
            path = self.folder / f"{stem}-{n}.json"
        _write(path, json.dumps({"to": to, "kind": kind, "domain": domain, "service": service,
                                 "at": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "card": card},
                                ensure_ascii=False, indent=1))
        self.write_index()
        return path

    def cards(self) -> list[dict[str, Any]]:
        """Every card in the outbox, newest first."""
        found = []
        for path in sorted(self.folder.glob("*.json"), reverse=True):
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # a file a person put there, or one being written
        return found

    def write_index(self) -> None:
        entries = [(f"{c.get('at', '')} · {c.get('kind', '')} · to {c.get('to', '')}",
                    c.get("card") or {}) for c in self.cards()]
        _write(self.index, page("dmarcbot outbox", entries))


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a page being read is never half-written."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
