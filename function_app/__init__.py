"""The Azure Functions app and the `dmarcbot` command line: the imperative shell.

The worker imports the root entry file named by `PYTHON_SCRIPT_FILE_NAME` (`functions_entry.py`),
which re-exports `app` from here. Triggers live in blueprints; nothing at import time reads
settings, secrets or the network.
"""

import azure.functions as func

from function_app import bot_functions, digest_functions, mailbox_functions
from graph.client import quiet_transport_logs

quiet_transport_logs()  # request URLs carry mailbox and message ids; see graph.client

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_blueprint(mailbox_functions.bp)
app.register_blueprint(bot_functions.bp)
app.register_blueprint(digest_functions.bp)
