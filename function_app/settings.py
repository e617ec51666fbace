"""Where the command line keeps its data, and the limits it reads input with."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

DB_ENV = "DMARCBOT_DB"


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user's data directory for dmarcbot, following each platform's convention."""
    env = os.environ if environ is None else environ
    if sys.platform == "win32" and env.get("LOCALAPPDATA"):
        return Path(env["LOCALAPPDATA"]) / "dmarcbot"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "dmarcbot"
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dmarcbot"


def default_db_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(DB_ENV):
        return Path(env[DB_ENV])
    return data_dir(env) / "dmarcbot.sqlite3"
