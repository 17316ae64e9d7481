"""The admin REST API: the store's objects managed over HTTP, on a listener of its own.

``access`` says who may call it; ``api`` is the handlers; ``openapi`` describes them, generated
from the same JSON Schema the configuration file is validated with.
"""

from mcpgate.admin.api import build_admin_app

__all__ = ["build_admin_app"]
