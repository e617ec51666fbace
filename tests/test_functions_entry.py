"""The Functions worker finds the app the way it really looks for it (by module name)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import importlib, json, os, sys
import azure.functions as func
module = importlib.import_module(sys.argv[1])
apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
print(json.dumps({
    "apps": len(apps),
    "functions": [f.get_function_name() for f in apps[0].get_functions()] if apps else None,
    "package_file": sys.modules["function_app"].__file__,
}))
"""


def test_worker_indexes_the_entry_file_without_settings() -> None:
    settings = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    entry = settings["PYTHON_SCRIPT_FILE_NAME"]
    assert re.fullmatch(r"[a-zA-Z0-9_][a-zA-Z0-9_\-]*\.py", entry)  # the worker's own check
    assert (ROOT / entry).is_file()
    assert not (ROOT / "function_app.py").exists()  # it would be shadowed by the package
    # Import with an empty environment: nothing at import time may need settings or secrets.
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", PROBE, entry.removesuffix(".py")], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["apps"] == 1
    assert found["functions"] == []  # triggers arrive with the mailbox and Teams issues
    assert found["package_file"].endswith(os.path.join("function_app", "__init__.py"))
