"""The Functions worker finds the app the way it really looks for it, and the settings line up."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from analysis import Limits
from tests.conftest import ROOT
from tests.test_worker_index import EXPECTED_FUNCTIONS

# What the worker does (azure_functions_worker/loader.py): import the entry by module name, find
# exactly one FunctionRegister, ask it for its functions. Then what it checks at load time and
# the library does not: every binding name is a parameter of the function.
PROBE = """
import importlib, inspect, json, os, sys
import azure.functions as func
module = importlib.import_module(sys.argv[1])
apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
functions = {}
for f in apps[0].get_functions() if apps else ():
    params = list(inspect.signature(f.get_user_function()).parameters)
    functions[f.get_function_name()] = {
        "bindings": json.loads(f.get_function_json())["bindings"],
        "params": params,
        "is_async": inspect.iscoroutinefunction(f.get_user_function()),
    }
print(json.dumps({"apps": len(apps), "functions": functions,
                  "package_file": sys.modules["function_app"].__file__,
                  "graph_sdk_loaded": "msgraph" in sys.modules}))
"""


def index_app() -> dict[str, object]:
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
    return json.loads(result.stdout)


def test_worker_indexes_the_functions_with_their_bindings() -> None:
    found = index_app()
    assert found["apps"] == 1
    assert str(found["package_file"]).endswith(os.path.join("function_app", "__init__.py"))
    assert not found["graph_sdk_loaded"]  # the 400 MB SDK loads on first use, not at indexing
    functions = found["functions"]
    assert isinstance(functions, dict)
    assert set(functions) == set(EXPECTED_FUNCTIONS)  # the one list of the app's functions
    for name, f in functions.items():
        assert f["is_async"], name
        names = [binding["name"] for binding in f["bindings"] if binding["name"] != "$return"]
        assert sorted(names) == sorted(f["params"]), name

    bot = {b["type"]: b for b in functions["bot_messages"]["bindings"]}
    # anonymous at the Functions layer: the Bot Connector's token is checked on every request
    assert bot["httpTrigger"]["authLevel"] == "ANONYMOUS"
    assert bot["httpTrigger"]["route"] == "messages"
    assert bot["httpTrigger"]["methods"] == ["POST"]
    assert bot["http"]["name"] == "$return"

    poll = {b["type"]: b for b in functions["poll_mailbox"]["bindings"]}
    assert poll["timerTrigger"]["schedule"] == "%DMARCBOT_POLL_SCHEDULE%"
    assert poll["timerTrigger"]["runOnStartup"] is False
    assert poll["queue"]["direction"] == "OUT"
    assert poll["queue"]["queueName"] == "dmarcbot-mail"
    assert poll["queue"]["connection"] == "AzureWebJobsStorage"
    doctor = {b["type"]: b for b in functions["doctor"]["bindings"]}
    assert doctor["httpTrigger"]["authLevel"] == "FUNCTION"  # names the mailbox and the roles
    assert doctor["httpTrigger"]["route"] == "doctor"
    assert doctor["httpTrigger"]["methods"] == ["GET"]
    (digest,) = functions["send_digests"]["bindings"]
    assert digest["type"] == "timerTrigger"
    assert digest["schedule"] == "%DMARCBOT_DIGEST_SCHEDULE%" and digest["runOnStartup"] is False
    (trigger,) = functions["ingest_mail"]["bindings"]
    assert trigger["type"] == "queueTrigger" and trigger["direction"] == "IN"
    assert trigger["queueName"] == poll["queue"]["queueName"]
    assert trigger["connection"] == "AzureWebJobsStorage"


def test_last_attempt_matches_the_hosts_dequeue_count() -> None:
    from function_app.mailjob import MAX_DEQUEUE_COUNT

    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] == MAX_DEQUEUE_COUNT
    assert host["extensions"]["queues"]["batchSize"] <= 4  # Graph: 4 requests per mailbox


def test_every_setting_is_in_the_sample_and_documented() -> None:
    sample = set(json.loads((ROOT / "local.settings.sample.json").read_text())["Values"])
    docs = (ROOT / "docs" / "azure.md").read_text()
    documented = set(re.findall(r"^\| `([A-Za-z_]+)` \|", docs, re.M))
    assert sample == documented
    read = set()
    for folder in ("function_app", "graph", "store"):
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(re.findall(r'"(DMARCBOT_[A-Z_]+)"', path.read_text()))
    read -= {"DMARCBOT_DB", "DMARCBOT_OUTBOX"}  # the command line's own store and outbox
    read |= {f"DMARCBOT_{name.upper()}" for name in Limits.__dataclass_fields__}
    assert read <= sample, read - sample
    # and nothing documented that nobody reads (the host reads these itself)
    assert sample - read == {"FUNCTIONS_WORKER_RUNTIME", "PYTHON_SCRIPT_FILE_NAME",
                             "AzureWebJobsStorage", "DMARCBOT_POLL_SCHEDULE",
                             "DMARCBOT_DIGEST_SCHEDULE"}
