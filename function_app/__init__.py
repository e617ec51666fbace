"""The Azure Functions app and the `dmarcbot` command line: the imperative shell.

The Functions app itself is built in the root entry file `functions_entry.py`, not here: the
command line imports this package too, and must not pay for azure.functions and the cards.
"""
