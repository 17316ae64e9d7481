"""Logs, metrics and audit: what an operator sees of the gateway.

Submodules are imported where they are used, so that importing one (the CLI needs only
``logging``) does not pull in the others' dependencies.
"""
