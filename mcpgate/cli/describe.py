"""The read-only verbs that describe a configuration: ``routes``, ``policy`` and ``list-servers``.

Each loads the file (a broken one is their failure, exit 1, reported like ``validate``) and says
what the gateway would do with it without running it: which path and rule reach which upstream,
which policy rule decides a request, which upstreams there are. Their ``--check`` and ``--probe``
answer one question (exit 0 or 1) for scripts and CI; sections this build cannot enforce are
shown, not refused.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from mcpgate.cli.common import EXIT_FAILURE, EXIT_OK, json_option, load_for_reading, shared_options, timeout_option
from mcpgate.cli_output import (
    check_dict,
    check_text,
    emit_json,
    policy_report,
    policy_text,
    routes_text,
    server_info,
    server_route,
    servers_table,
    unified_dict,
    verdict_dict,
    verdict_text,
)
from mcpgate.observability.logging import Redactor

if TYPE_CHECKING:
    from mcpgate.auth.identity import Identity
    from mcpgate.config import Config, UpstreamConfig
    from mcpgate.routing import Router
    from mcpgate.upstream.probe import ProbeResult


# -- routes ------------------------------------------------------------------------------------


@click.command(short_help="Show the HTTP routes and the unified endpoint's routing table")
@click.option(
    "--check",
    "check_method",
    metavar="METHOD",
    help="Say which rule and upstream a request would take (NAME: the tool, prompt or resource URI).",
)
@click.argument("name", required=False)
@json_option("the routes")
@shared_options
def routes(
    config_path: str | None,
    log_level: str | None,
    log_format: str | None,
    as_json: bool,
    check_method: str | None,
    name: str | None,
) -> None:
    """Show which path reaches which upstream, and how the unified endpoint /mcp routes calls.

    Each upstream has its own endpoint /servers/<name>/mcp (alias /mcp/<name>). On /mcp a call
    takes the first of: the routing rules in file order (routing[0] first), the implicit rule of
    each upstream with a prefix (names starting with <prefix>__), and the catalogue fallback (a
    name or URI an upstream lists). Rules that can never match, upstreams that nothing reaches and
    prefixes that make names clients reject are flagged.

    With --check METHOD [NAME], print the route one request would take and exit 0, or exit 1
    when nothing routes it. The catalogue needs the upstreams' lists, so --check says when only
    the catalogue could decide.

    \b
    Examples:
      mcpgate routes -c mcpgate.yml
      mcpgate routes -c mcpgate.yml --check tools/call github__search_issues
      mcpgate routes -c mcpgate.yml --json | jq '.unified.unreachable'
    """
    from mcpgate.routing import Router

    config = load_for_reading(config_path, log_level, log_format)
    router = Router.for_config(config)
    if check_method is not None:
        exit_with_check(router, check_method, name, as_json)
    if name is not None:
        raise click.UsageError("NAME goes with --check METHOD")
    redactor = Redactor(config.observability.logging.redact)
    servers = [server_route(u, redactor) for u in config.upstreams]
    table = unified_dict(router.report())
    if as_json:
        emit_json({"servers": servers, "unified": table})
        sys.exit(EXIT_OK)
    click.echo(routes_text(servers, table))
    sys.exit(EXIT_OK)


def exit_with_check(router: Router, method: str, name: str | None, as_json: bool) -> NoReturn:
    from mcpgate.routing import CALL_KIND

    if name is not None and method not in CALL_KIND:
        raise click.UsageError(f"--check takes a NAME only with {', '.join(CALL_KIND)}")
    found = router.check(method, name)
    verdict = check_dict(method, name, found)
    if as_json:
        emit_json(verdict)
    else:
        click.echo(check_text(verdict))
    sys.exit(EXIT_OK if found is not None else EXIT_FAILURE)


# -- policy ------------------------------------------------------------------------------------


@click.command(short_help="Show the access policy, or explain one decision")
@click.option("--check", is_flag=True, help="Explain the decision for one request: METHOD [NAME] by --client.")
@click.option("--client", "client_id", metavar="ID", help="The caller's client id (an API key id, or a token's claim).")
@click.option(
    "--role",
    "roles",
    multiple=True,
    metavar="ROLE",
    help="A role of the caller (repeatable). Default: the roles of the API key named by --client, and those "
    "--claim maps to.",
)
@click.option(
    "--claim",
    "claims",
    multiple=True,
    metavar="NAME=VALUE",
    help="A token claim, for auth.jwt.role_mappings (repeatable; repeated names make a list).",
)
@click.option("--server", metavar="NAME", help="Judge the request on /servers/NAME/mcp instead of /mcp.")
@click.argument("method", required=False)
@click.argument("name", required=False)
@json_option("the policy or the decision")
@shared_options
def policy(
    config_path: str | None,
    log_level: str | None,
    log_format: str | None,
    as_json: bool,
    check: bool,
    client_id: str | None,
    roles: tuple[str, ...],
    claims: tuple[str, ...],
    server: str | None,
    method: str | None,
    name: str | None,
) -> None:
    """Show the policy rules in the order they are tried, with the rules that can never match.

    With --check, say what the policy decides for one request, from the configuration alone:
    METHOD [NAME] (a tool, prompt or resource URI) sent by --client, on /mcp (where the
    routing rules and prefixes say which upstream it reaches, and the tool name the policy
    sees) or on --server's own endpoint. Exits 0 when allowed, 1 when denied or when only the
    upstreams' lists (at run time) could say where it goes.

    \b
    Examples:
      mcpgate policy -c mcpgate.yml
      mcpgate policy -c mcpgate.yml --check --client contractors tools/call github__search_issues
      mcpgate policy -c mcpgate.yml --check --client ci --role engineer --server postgres tools/call query
      mcpgate policy -c mcpgate.yml --check --client alice@example.com --claim groups=admins tools/list
    """
    config = load_for_reading(config_path, log_level, log_format)
    if not check:
        if method is not None or client_id is not None or roles or claims or server is not None:
            raise click.UsageError("METHOD, --client, --role, --claim and --server go with --check")
        report = policy_report(config)
        emit_json(report) if as_json else click.echo(policy_text(report))
        sys.exit(EXIT_OK)
    if method is None or client_id is None:
        raise click.UsageError("--check needs METHOD and --client ID")
    if server is not None and config.upstream(server) is None:
        raise click.UsageError(f"--server {server!r}: no such upstream")
    identity = checked_identity(config, client_id, roles, claims)
    from mcpgate.policy import check_request

    try:
        verdict = check_request(config, identity, method, name, server)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    shown = verdict_dict(config, identity, method, name, verdict)
    emit_json(shown) if as_json else click.echo(verdict_text(shown))
    sys.exit(EXIT_OK if verdict.decision is not None and verdict.decision.allowed else EXIT_FAILURE)


def checked_identity(config: Config, client_id: str, roles: tuple[str, ...], claims: tuple[str, ...]) -> Identity:
    """The identity --check judges: given roles, else the API key's and the claims' mapped roles."""
    from mcpgate.auth.identity import Identity, mapped_roles

    parsed: dict[str, Any] = {}
    for pair in claims:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--claim {pair!r}: expected NAME=VALUE")
        parsed[key] = [*parsed[key], value] if key in parsed else value
    auth = config.auth
    if auth is None:
        return Identity(client_id, roles, "anonymous")
    if not roles:
        key_roles = next((key.roles for key in auth.api_keys if key.id == client_id), ())
        mapped = mapped_roles(parsed, auth.jwt.role_mappings) if auth.jwt is not None else ()
        roles = tuple(dict.fromkeys((*key_roles, *mapped)))
    return Identity(client_id, roles, "jwt" if claims else "api_key", parsed)


# -- list-servers ------------------------------------------------------------------------------


@click.command("list-servers", short_help="List the upstream MCP servers, optionally probing them")
@click.option("--probe", is_flag=True, help="Connect to every upstream (concurrently) and report health and contents.")
@timeout_option("Time allowed for each upstream's probe.")
@json_option("the servers")
@shared_options
def list_servers(
    config_path: str | None,
    log_level: str | None,
    log_format: str | None,
    as_json: bool,
    probe: bool,
    timeout: float,
) -> None:
    """List the upstreams: name, transport, URL or command, auth kind and prefix.

    Secrets are never shown: AUTH says only none, bearer or header:<Header-Name>, and
    credentials in URLs and command lines are masked. With --probe every Streamable HTTP
    upstream gets a dual-era handshake (server/discover, else initialize) and its tool,
    resource and prompt lists are counted; the command exits 1 if any upstream is unhealthy
    (stdio and sse upstreams cannot be probed yet and count as unhealthy).

    \b
    Examples:
      mcpgate list-servers -c mcpgate.yml
      mcpgate list-servers -c mcpgate.yml --probe --timeout 10
      mcpgate list-servers -c mcpgate.yml --probe --json | jq '.servers[] | select(.probe.healthy | not)'
    """
    config = load_for_reading(config_path, log_level, log_format)
    redactor = Redactor(config.observability.logging.redact)
    servers = [server_info(u, redactor) for u in config.upstreams]
    results = asyncio.run(probe_all(config.upstreams, timeout)) if probe else None
    if results is not None:
        for info, result in zip(servers, results, strict=True):
            info["probe"] = result.as_dict()
    if as_json:
        emit_json({"servers": servers})
    else:
        click.echo(servers_table(servers))
    healthy = results is None or all(r.healthy for r in results)
    sys.exit(EXIT_OK if healthy else EXIT_FAILURE)


async def probe_all(upstreams: Sequence[UpstreamConfig], seconds: float) -> list[ProbeResult]:
    """Every upstream at once over one connection pool: the slowest bounds the wait, not the sum."""
    import aiohttp

    from mcpgate.upstream.probe import probe_upstream

    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(probe_upstream(u, timeout=seconds, session=session) for u in upstreams)))
