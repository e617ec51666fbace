"""Entry file for the Functions worker (app setting PYTHON_SCRIPT_FILE_NAME=functions_entry.py).

A root `function_app.py` would be shadowed by the `function_app/` package, so the worker is pointed
at this file instead; it must expose exactly one FunctionApp.
"""

from function_app import app

__all__ = ["app"]
