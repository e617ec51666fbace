"""The Azure Functions app and the `dmarcbot` command line: the imperative shell.

The worker imports the root entry file named by `PYTHON_SCRIPT_FILE_NAME` (`functions_entry.py`),
which re-exports `app` from here. Triggers live in blueprints; nothing at import time reads
settings, secrets or the network.
"""

import logging

import azure.functions as func

from function_app import mailbox_functions

# httpx logs every request's URL at INFO, and the Azure SDK its URLs and headers: with mailbox,
# message ids and table keys (domains, IPs) in them. Warnings and errors still get through.
for _name in ("httpx", "azure"):
    logging.getLogger(_name).setLevel(logging.WARNING)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_blueprint(mailbox_functions.bp)
