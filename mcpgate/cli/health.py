"""``health``: ask a running gateway's readiness endpoint whether it is ready; exit 0 or 1.

It runs as a Docker HEALTHCHECK, every few seconds, so with ``--url`` it must stay cheap: no config
loader is imported (``tests/test_cli.py`` checks it). Without ``--url`` it finds the address the
way ``start`` would: the config file if there is one, with ``MCPGATE_HOST``/``MCPGATE_PORT``
applied, else the built-in default.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.parse
from typing import Any, Final

import click

from mcpgate.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    configure_cli_logging,
    exit_with,
    json_option,
    load_or_exit,
    shared_options,
    timeout_option,
)
from mcpgate.cli_output import emit_json, health_line, host_port, print_issues, reachable_host
from mcpgate.observability.logging import Redactor

DEFAULT_HEALTH_URL: Final = "http://127.0.0.1:8080/readyz"


@click.command(short_help="Ask a running gateway whether it is ready")
@click.option(
    "--url",
    metavar="URL",
    help="Readiness endpoint to ask; a base URL without a path (http://host:port) means its /readyz. "
    "Default: http://<server.host>:<server.port>/readyz from the config "
    "(with MCPGATE_HOST/MCPGATE_PORT applied; 0.0.0.0 and :: mean 127.0.0.1) if a config file is found, "
    f"else {DEFAULT_HEALTH_URL}.",
)
@timeout_option("Time allowed for the answer.")
@json_option("the verdict and the endpoint's body")
@shared_options
def health(
    config_path: str | None,
    log_level: str | None,
    log_format: str | None,
    as_json: bool,
    url: str | None,
    timeout: float,
) -> None:
    """Ask a running gateway's readiness endpoint; exit 0 on HTTP 200, else 1.

    Prints one line: healthy, unhealthy (with the reason from the gateway's answer) or
    unreachable. With --json the verdict and the endpoint's JSON body go to stdout and the line
    to stderr. No config file is needed; one that exists but is invalid is an error.

    \b
    Examples:
      mcpgate health
      mcpgate health --url http://127.0.0.1:8080 --timeout 2
      # Dockerfile:
      HEALTHCHECK CMD ["mcpgate", "health", "--url", "http://127.0.0.1:8080/readyz"]
    """
    configure_cli_logging(log_level, log_format)
    target = readiness_url(url) if url else default_health_url(config_path)
    shown = Redactor().url(target)
    verdict = asyncio.run(check_health(target, timeout))
    status, body, problem = verdict
    line = health_line(shown, status, body, problem)
    healthy = problem is None and status == 200
    if as_json:
        emit_json({"healthy": healthy, "url": shown, "status": status, "error": problem, "body": body})
        click.echo(line, err=True)
    else:
        click.echo(line)
    sys.exit(EXIT_OK if healthy else EXIT_FAILURE)


def readiness_url(url: str) -> str:
    """A base URL (no path, or just "/") names the gateway: ask its /readyz, as a user means."""
    parts = urllib.parse.urlsplit(url)
    if parts.path in ("", "/"):
        return urllib.parse.urlunsplit(parts._replace(path="/readyz"))
    return url


def default_health_url(config_path: str | None) -> str:
    """The readiness URL of the gateway this machine's config describes."""
    overrides: dict[str, object] = {}
    if env_host := os.environ.get("MCPGATE_HOST"):
        overrides["server.host"] = env_host
    if (env_port := os.environ.get("MCPGATE_PORT", "")).isdigit():
        overrides["server.port"] = int(env_port)
    from mcpgate.config import ConfigError, find_config_file

    try:
        find_config_file(config_path)
    except ConfigError as err:
        if config_path is not None:  # asked for a file that is not there
            exit_with(EXIT_FAILURE, f"{print_issues(err)} error(s)")
        host = env_host or "127.0.0.1"
        port = int(env_port) if env_port.isdigit() else 8080
    else:
        trailer = "{count} error(s) in the configuration; pass --url to skip it"
        config = load_or_exit(config_path, overrides, code=EXIT_FAILURE, trailer=trailer, check_support=False)
        host, port = config.server.host, config.server.port
    return f"http://{host_port(reachable_host(host), port)}/readyz"


async def check_health(url: str, seconds: float) -> tuple[int | None, Any, str | None]:
    """(HTTP status, JSON body or None, why it could not be asked)."""
    import aiohttp

    from mcpgate.upstream.probe import describe_client_error

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
            session.get(url, headers={"Accept": "application/json"}) as resp,
        ):
            raw = await resp.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            return resp.status, body, None
    except TimeoutError:
        return None, None, f"no answer within {seconds:g}s"
    except aiohttp.ClientError as exc:
        return None, None, describe_client_error(exc)
    except ValueError:
        return None, None, "invalid URL"
