"""``start`` runs the gateway; ``reload`` has a running one load its configuration again.

Both are about the long-lived process: ``start`` turns flags, variables and the file into one
configuration, serves it (one process or a supervisor of workers) and keeps what it needs to read
the file again on SIGHUP; ``reload`` checks the file as ``start`` would and sends that SIGHUP to
the process its pid file names. ``start``'s exit codes are what supervisors act on: 78 for a
configuration that can never work, 69 for an address it cannot listen on.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING

import click

from mcpgate.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    configure_cli_logging,
    exit_with,
    load_or_exit,
    log_flags,
    overrides_for,
    set_option,
    shared_options,
)
from mcpgate.cli_output import describe_bind_error, host_port
from mcpgate.observability.logging import configure_logging

if TYPE_CHECKING:
    from mcpgate.config import Config


@click.command(short_help="Run the gateway until SIGTERM or SIGINT")
@click.option("--host", envvar="MCPGATE_HOST", help="Address to listen on; overrides server.host.")
@click.option(
    "--port", type=click.IntRange(0, 65535), envvar="MCPGATE_PORT", help="Port to listen on; overrides server.port."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    envvar="MCPGATE_WORKERS",
    help="Worker processes; overrides server.workers.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    envvar="MCPGATE_SHUTDOWN_TIMEOUT",
    metavar="SECONDS",
    help="Grace period for in-flight calls at shutdown; overrides server.shutdown_timeout.",
)
@click.option(
    "--pid-file",
    metavar="PATH",
    envvar="MCPGATE_PID_FILE",
    help="Write the process id here while running (for mcpgate reload); removed at exit.",
)
@click.option(
    "--no-migrate",
    is_flag=True,
    envvar="MCPGATE_NO_MIGRATE",
    help="Do not apply the store's schema migrations; refuse to start if they are missing (mcpgate migrate up).",
)
@set_option
@shared_options
def start(
    host: str | None,
    port: int | None,
    workers: int | None,
    shutdown_timeout: float | None,
    config_path: str | None,
    log_level: str | None,
    log_format: str | None,
    set_values: tuple[str, ...],
    pid_file: str | None,
    no_migrate: bool,
) -> None:
    """Run the gateway in the foreground until SIGTERM or SIGINT; SIGHUP reloads the configuration.

    Each flag (or its MCPGATE_* variable) overrides the config file, and --set PATH=VALUE (or
    MCPGATE__PATH=VALUE, with __ between the parts) any value in it; a second signal exits at
    once. Exits 78 when the configuration is invalid (print every error, like validate) and
    69 when the address cannot be bound.

    \b
    Examples:
      mcpgate start -c /etc/mcpgate/config.yml
      mcpgate start -c mcpgate.yml --host 0.0.0.0 --port 9000 --log-format json
      MCPGATE_PORT=9000 mcpgate start
      envsubst < template.yml | mcpgate start -c -
    """
    overrides = overrides_for(  # only what the user gave: the file keeps everything else
        set_values,
        [
            ("server.host", "host", host),
            ("server.port", "port", port),
            ("server.workers", "workers", workers),
            ("server.shutdown_timeout", "shutdown_timeout", shutdown_timeout),
            *log_flags(log_level, log_format),
        ],
    )
    trailer = "mcpgate: not starting: {count} error(s) in the configuration"
    config = load_or_exit(config_path, overrides.values, code=EXIT_CONFIG, trailer=trailer, origins=overrides.origins)
    logging_config = config.observability.logging
    configure_logging(logging_config.level, logging_config.format, logging_config.redact)

    from mcpgate import server  # the whole gateway: imported only by the verb that runs it

    loader = None
    if config_path != "-":  # SIGHUP reads the same file again, with the same flags and variables

        def loader() -> Config:
            from mcpgate.config import load_config

            return load_config(config.source, overrides=overrides.values, origins=overrides.origins)

    from mcpgate.pidfile import written

    try:
        with written(pid_file):
            if config.server.workers > 1:
                from mcpgate.workers import supervise

                code = supervise(config, loader, migrate=not no_migrate)
            else:
                code = server.run(config, loader, migrate=not no_migrate)
    except server.StartupError as exc:
        exit_with(EXIT_CONFIG, f"mcpgate: cannot start: {exc}")
    except server.Unavailable as exc:  # the store, or analytics' database, did not answer
        exit_with(EXIT_UNAVAILABLE, f"mcpgate: cannot start: {exc}")
    except server.AdminBindError as exc:
        where = host_port(exc.host, exc.port)
        exit_with(EXIT_UNAVAILABLE, f"mcpgate: cannot listen on {where} (admin API): {describe_bind_error(exc.cause)}")
    except OSError as exc:
        where = host_port(config.server.host, config.server.port)
        exit_with(EXIT_UNAVAILABLE, f"mcpgate: cannot listen on {where}: {describe_bind_error(exc)}")
    sys.exit(code)


@click.command(short_help="Check a new configuration and have the running gateway load it")
@click.option(
    "--pid-file",
    metavar="PATH",
    envvar="MCPGATE_PID_FILE",
    required=True,
    help="The file start --pid-file wrote.",
)
@set_option
@shared_options
def reload(
    config_path: str | None, log_level: str | None, log_format: str | None, set_values: tuple[str, ...], pid_file: str
) -> None:
    """Validate the configuration as start would, then send SIGHUP to the running gateway.

    Exits 1 without signalling when the configuration has errors (printed like validate's) or
    when the pid file names no running process. The gateway checks the file again itself and
    keeps its running configuration if the file went bad meanwhile; its log says how it went.

    \b
    Examples:
      mcpgate reload -c /etc/mcpgate/config.yml --pid-file /run/mcpgate.pid
    """
    from mcpgate.pidfile import PidFileError, running_pid

    configure_cli_logging(log_level, log_format)
    overrides = overrides_for(set_values, log_flags(log_level, log_format))
    load_or_exit(config_path, overrides.values, code=EXIT_FAILURE, origins=overrides.origins)
    try:
        pid = running_pid(pid_file)
        os.kill(pid, signal.SIGHUP)
    except PidFileError as exc:
        exit_with(EXIT_FAILURE, f"mcpgate reload: {exc}")
    except PermissionError:
        exit_with(EXIT_FAILURE, f"mcpgate reload: not allowed to signal process {pid}")
    exit_with(EXIT_OK, f"reload requested from process {pid}; its log says how it went")
