"""The Azure Functions app and the `dmarcbot` command line: the imperative shell.

The worker imports the root entry file named by `PYTHON_SCRIPT_FILE_NAME` (`functions_entry.py`),
which re-exports `app` from here. Triggers live in blueprints registered below as they are added;
nothing at import time reads settings, secrets or the network.
"""

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
