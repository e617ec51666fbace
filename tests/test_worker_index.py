"""Microsoft's own Python worker indexes the app, on the Python it ships for (3.13).

`tests/test_functions_entry.py` imitates the worker's import on 3.11, and it passed while the real
worker refused the app (`FunctionLoadError ... invalid non-type annotation ...Out[list[str]]`):
only the worker's own code applies its binding checks. So this test runs that code, the PyPI
package `azure-functions-runtime` (the library worker behind Python 3.13+), in the venv that
`tests/install-test-deps.sh` builds, and drives it as the host does: the WorkerInitRequest
(`handle_event.worker_init_request`: `loader.index_function_app`, then
`functions.Registry.add_indexed_function` for every function through
`loader.process_indexed_function`), then the FunctionsMetadataRequest. Only the host's side is
stubbed: the gRPC request and the protobuf messages and enums the worker builds its answers from.

This file imports nothing but the standard library at the top, so the same file runs as the probe
inside the worker's venv (`python -m tests.test_worker_index`); `bench/first_click_bench.py`
imports `worker_init` from it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORKER_VENV = ROOT / "tests" / ".venv-worker"
WORKER_PYTHON = WORKER_VENV / "bin" / "python"
WORKER_PYTHON_VERSION = (3, 13)
RUNTIME_VERSION = "1.3.0"  # azure-functions-runtime; install-test-deps.sh pins the same
RUNTIME_PIN = f"azure-functions-runtime=={RUNTIME_VERSION}"
INSTALL_HINT = "run tests/install-test-deps.sh (it builds tests/.venv-worker with Python 3.13)"

# The app's functions as the host must receive them: per function, its bindings by name with the
# binding's JSON (what the worker sends the host as raw bindings) minus the name. The one list of
# the app's functions (tests/test_functions_entry.py uses it too): add a function here.
HTTP_RETURN = {"type": "http", "direction": "OUT"}
STORAGE = "AzureWebJobsStorage"
EXPECTED_FUNCTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "poll_mailbox": {
        "timer": {"type": "timerTrigger", "direction": "IN",
                  "schedule": "%DMARCBOT_POLL_SCHEDULE%", "runOnStartup": False,
                  "useMonitor": True},
        "mail": {"type": "queue", "direction": "OUT", "queueName": "dmarcbot-mail",
                 "connection": STORAGE},
    },
    "ingest_mail": {
        "msg": {"type": "queueTrigger", "direction": "IN", "queueName": "dmarcbot-mail",
                "connection": STORAGE},
    },
    "bot_messages": {  # anonymous: the Bot Connector's token is checked on every request
        "req": {"type": "httpTrigger", "direction": "IN", "methods": ["POST"],
                "authLevel": "ANONYMOUS", "route": "messages"},
        "$return": HTTP_RETURN,
    },
    "send_digests": {
        "timer": {"type": "timerTrigger", "direction": "IN",
                  "schedule": "%DMARCBOT_DIGEST_SCHEDULE%", "runOnStartup": False,
                  "useMonitor": True},
    },
    "doctor": {  # behind a function key (the app's default level): it names the mailbox
        "req": {"type": "httpTrigger", "direction": "IN", "methods": ["GET"],
                "authLevel": "FUNCTION", "route": "doctor"},
        "$return": HTTP_RETURN,
    },
}


# --------------------------------------------------------------------------- the host's side
# Stand-ins for the host's protobuf messages (azure-functions-language-worker-protobuf,
# FunctionRpc.proto). The worker only constructs them with keyword arguments and reads enum
# values off them; the values are the proto's.


class _Message(SimpleNamespace):
    """A protobuf message: keyword fields, nothing else."""


class BindingInfo(_Message):
    in_, out, inout = 0, 1, 2  # enum Direction
    undefined, string, binary, stream = 0, 1, 2, 3  # enum DataType


class StatusResult(_Message):
    Failure, Success, Cancelled = 0, 1, 2  # enum Status


PROTOS = SimpleNamespace(
    BindingInfo=BindingInfo, StatusResult=StatusResult,
    **{name: type(name, (_Message,), {}) for name in (
        "WorkerInitResponse", "WorkerMetadata", "RpcException", "FunctionMetadataResponse",
        "RpcFunctionMetadata", "RpcRetryOptions")})


async def worker_init(root: Path) -> dict[str, Any]:
    """What the worker answers the host's WorkerInitRequest and FunctionsMetadataRequest, and
    what it registered for invocation, as JSON-able values. Runs inside the worker's venv with
    `root` on sys.path and PYTHON_SCRIPT_FILE_NAME set, as the host starts it."""
    from azure_functions_runtime import handle_event
    from azure_functions_runtime.version import VERSION

    init = _Message(request=_Message(worker_init_request=_Message(
        capabilities={}, function_app_directory=str(root))),
        properties={"host": "127.0.0.1", "protos": PROTOS})
    response = await handle_event.worker_init_request(init)
    metadata = await handle_event.functions_metadata_request(_Message(properties={}))
    failed = response.result.status != StatusResult.Success
    import azure.functions as func

    return {
        "worker": VERSION, "sdk": func.__version__, "python": list(sys.version_info[:2]),
        "status": "Failure" if failed else "Success",
        "exception": response.result.exception.message if failed else None,
        "metadata": [_metadata(m) for m in metadata.function_metadata_results or ()],
        "registered": {info.function_id: _registered(info)
                       for info in handle_event._functions._functions.values()},
        "graph_sdk_loaded": "msgraph" in sys.modules,
        "package_file": getattr(sys.modules.get("function_app"), "__file__", None),
    }


def _metadata(m: Any) -> dict[str, Any]:
    return {"name": m.name, "function_id": m.function_id, "entry_point": m.entry_point,
            "language": m.language, "directory": m.directory,
            "bindings": {name: {"type": b.type, "direction": b.direction,
                                "data_type": b.data_type} for name, b in m.bindings.items()},
            "raw_bindings": [json.loads(raw) for raw in m.raw_bindings],
            "retry": m.retry_options is not None, "properties": m.properties}


def _registered(info: Any) -> dict[str, Any]:
    def types(mapping: Any) -> dict[str, list[str]]:
        return {name: [t.binding_name, repr(t.pytype)] for name, t in mapping.items()}

    return {"name": info.name, "is_async": info.is_async, "is_http_func": info.is_http_func,
            "has_return": info.has_return, "requires_context": info.requires_context,
            "inputs": types(info.input_types), "outputs": types(info.output_types),
            "return": info.return_type.binding_name if info.return_type else None}


# --------------------------------------------------------------------------- the tests


def entry_file_name() -> str:
    settings = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    return str(settings["PYTHON_SCRIPT_FILE_NAME"])


def worker_python() -> Path:
    """The worker venv's interpreter; a missing or outdated venv fails the test (never skips)."""
    import pytest

    if not WORKER_PYTHON.is_file():
        pytest.fail(f"{WORKER_PYTHON} is missing: {INSTALL_HINT}", pytrace=False)
    # install-test-deps.sh's marker: the digest of requirements.txt and the pin it installed
    pins = (ROOT / "requirements.txt").read_bytes() + f"{RUNTIME_PIN}\n".encode()
    marker = WORKER_VENV / ".installed"
    if not marker.is_file() or marker.read_text().strip() != hashlib.sha256(pins).hexdigest():
        pytest.fail(f"{WORKER_VENV} is older than requirements.txt or the pin: {INSTALL_HINT}",
                    pytrace=False)
    return WORKER_PYTHON


def worker_env(**extra: str) -> dict[str, str]:
    """As the host starts the worker: the app folder importable, the entry named, and no other
    settings or secrets (nothing at import time may need them)."""
    return {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHON_SCRIPT_FILE_NAME": entry_file_name(),
            **extra}


def index_in_worker() -> dict[str, Any]:
    result = subprocess.run([str(worker_python()), "-m", "tests.test_worker_index"], cwd=ROOT,
                            env=worker_env(), capture_output=True, text=True, timeout=180,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.splitlines()[-1]))


_found: dict[str, Any] = {}


def found() -> dict[str, Any]:
    """The worker's answers, indexed once per session (a fresh interpreter each session)."""
    if not _found:
        _found.update(index_in_worker())
    return _found


def test_the_worker_venv_is_the_pinned_worker_on_313() -> None:
    f = found()
    assert tuple(f["python"]) == WORKER_PYTHON_VERSION
    assert f["worker"] == RUNTIME_VERSION
    script = (ROOT / "tests" / "install-test-deps.sh").read_text()
    assert f'worker_runtime="{RUNTIME_PIN}"' in script  # one pin, kept in step


def test_the_worker_indexes_exactly_the_apps_functions() -> None:
    f = found()
    assert f["status"] == "Success", f["exception"]  # a FunctionLoadError lands here
    assert str(f["package_file"]).endswith(os.path.join("function_app", "__init__.py"))
    assert not f["graph_sdk_loaded"]  # the 400 MB SDK loads on first use, not at indexing
    metadata = {m["name"]: m for m in f["metadata"]}
    assert len(metadata) == len(f["metadata"])
    assert set(metadata) == set(EXPECTED_FUNCTIONS)
    for name, want in EXPECTED_FUNCTIONS.items():
        m = metadata[name]
        raw = {b.pop("name"): b for b in m["raw_bindings"]}
        assert raw == want, name
        directions = {"IN": BindingInfo.in_, "OUT": BindingInfo.out}
        assert m["bindings"] == {n: {"type": b["type"], "direction": directions[b["direction"]],
                                     "data_type": None} for n, b in want.items()}, name
        assert m["entry_point"] == name and m["language"] == "python", name
        assert Path(m["directory"]) == ROOT and not m["retry"], name
        assert m["properties"] == {"worker_indexed": "True"}, name


def test_the_worker_registers_each_function_for_invocation() -> None:
    f = found()
    registered = f["registered"]
    assert {r["name"] for r in registered.values()} == set(EXPECTED_FUNCTIONS)
    assert {m["function_id"] for m in f["metadata"]} == set(registered)
    for r in registered.values():
        want = EXPECTED_FUNCTIONS[r["name"]]
        assert r["is_async"], r["name"]  # awaited on the worker's loop, not in its threads
        assert not r["requires_context"], r["name"]
        params = {n: b for n, b in want.items() if n != "$return"}
        assert set(r["inputs"]) == {n for n, b in params.items() if b["direction"] == "IN"}
        assert set(r["outputs"]) == {n for n, b in params.items() if b["direction"] == "OUT"}
        assert r["is_http_func"] == any(b["type"] == "httpTrigger" for b in want.values())
        assert r["has_return"] == ("$return" in want), r["name"]
    by_name = {r["name"]: r for r in registered.values()}
    # what the worker converts the queue output from: a list of strings, one message each
    assert by_name["poll_mailbox"]["outputs"]["mail"] == ["queue", "typing.List[str]"]
    assert by_name["bot_messages"]["inputs"]["req"][0] == "httpTrigger"
    assert by_name["bot_messages"]["return"] == "http"


if __name__ == "__main__":  # the probe, run by the worker venv's python from the app's folder
    assert re.fullmatch(r"[a-zA-Z0-9_][a-zA-Z0-9_\-]*\.py", os.environ["PYTHON_SCRIPT_FILE_NAME"])
    print(json.dumps(asyncio.run(worker_init(ROOT))))
