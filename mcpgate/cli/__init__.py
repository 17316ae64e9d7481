"""The ``mcpgate`` command line: thin verbs that load the config, call the library and print.

Exit codes are part of the interface: supervisors and CI read them. ``start`` exits 78
(``EX_CONFIG``) for a configuration that can never work, so that systemd's
``RestartPreventExitStatus=78`` stops a restart loop, and 69 (``EX_UNAVAILABLE``) when its port
is taken, which a later restart may cure. This package is the only place that calls ``sys.exit``.
What the verbs print (tables, JSON, issues, redacted targets) is shaped in ``cli_output``.

This module is the group and its list of verbs. Each verb, or small family of verbs, has its
own module; what they share (options, exit codes, loading a config, exiting) is in ``common``:

- ``start``: start and reload, the long-lived process;
- ``validate``: validate and schema, checking a configuration;
- ``describe``: routes, policy and list-servers, what a configuration does, read-only;
- ``keys``: hash-key;
- ``health``: health, asking a running gateway;
- ``migrate``: migrate, the store's schema;
- ``admin``: admin and its subcommands, a running gateway's admin API.
"""

from __future__ import annotations

from typing import Any, Final

import click

from mcpgate import __version__
from mcpgate.cli import admin, describe, health, insight, keys, migrate, start, validate
from mcpgate.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from mcpgate.cli.health import default_health_url

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "default_health_url",
    "main",
]

CONTEXT_SETTINGS: Final[dict[str, Any]] = {
    "auto_envvar_prefix": "MCPGATE",
    "help_option_names": ["-h", "--help"],
    "max_content_width": 100,
}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="mcpgate", message="%(prog)s %(version)s")
def main() -> None:
    """mcpgate: one gateway in front of your MCP servers.

    \b
    Exit codes:
      0   success
      1   invalid configuration (validate, routes, list-servers), unhealthy (health, --probe),
          migrations pending (migrate), the admin API refused (admin)
      2   usage error
      69  start could not listen on its address or reach its store; migrate could not reach
          the store; admin could not reach the admin API
      78  start refused the configuration (systemd: RestartPreventExitStatus=78)

    \b
    Environment: MCPGATE_CONFIG, MCPGATE_HOST, MCPGATE_PORT, MCPGATE_WORKERS,
    MCPGATE_SHUTDOWN_TIMEOUT, MCPGATE_LOG_LEVEL, MCPGATE_LOG_FORMAT, MCPGATE_NO_MIGRATE,
    MCPGATE_STORE_STARTUP_TIMEOUT, MCPGATE_ADMIN_URL, MCPGATE_ADMIN_KEY.
    Precedence: flag > MCPGATE_* variable > config file > built-in default.
    """


main.add_command(start.start)
main.add_command(validate.validate)
main.add_command(start.reload)
main.add_command(validate.schema)
main.add_command(describe.routes)
main.add_command(describe.policy)
main.add_command(keys.hash_key)
main.add_command(describe.list_servers)
main.add_command(health.health)
main.add_command(migrate.migrate)
admin.admin.add_command(insight.status)
admin.admin.add_command(insight.analytics)
main.add_command(admin.admin)
