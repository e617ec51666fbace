"""Entry file for the Functions worker (app setting PYTHON_SCRIPT_FILE_NAME=functions_entry.py).

A root `function_app.py` would be shadowed by the `function_app/` package, so the worker is pointed
at this file instead; it must expose exactly one FunctionApp. Triggers live in blueprints; nothing
at import time reads settings, secrets or the network.
"""

import azure.functions as func

from function_app import bot_functions, digest_functions, doctor_functions, mailbox_functions
from graph.client import quiet_transport_logs

quiet_transport_logs()  # request URLs carry mailbox and message ids; see graph.client

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_blueprint(mailbox_functions.bp)
app.register_blueprint(bot_functions.bp)
app.register_blueprint(digest_functions.bp)
app.register_blueprint(doctor_functions.bp)

__all__ = ["app"]
