"""The ``mcpgate`` command line: thin verbs that load the config, call the library and print.

Exit codes are part of the interface: supervisors and CI read them. ``start`` exits 78
(``EX_CONFIG``) for a configuration that can never work, so that systemd's
``RestartPreventExitStatus=78`` stops a restart loop, and 69 (``EX_UNAVAILABLE``) when its port
is taken, which a later restart may cure. This is the only module that calls ``sys.exit``.
What the verbs print (tables, JSON, issues, redacted targets) is shaped in ``cli_output``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import click
from click.core import ParameterSource

from mcpgate import __version__
from mcpgate.cli_output import (
    check_dict,
    check_text,
    describe_bind_error,
    emit_json,
    health_line,
    host_port,
    issue_dict,
    policy_report,
    policy_text,
    print_issues,
    reachable_host,
    routes_text,
    server_info,
    server_route,
    servers_table,
    unified_dict,
    verdict_dict,
    verdict_text,
)
from mcpgate.observability.logging import DEFAULT_REDACT, LEVELS, Redactor, configure_logging

if TYPE_CHECKING:
    # The loader pulls in YAML and JSON Schema (with format checkers): seconds of imports that
    # `--version` and `health --url` (a Docker HEALTHCHECK, run every few seconds) must not pay.
    # The verbs that load a config import it where they need it.
    from mcpgate.auth.identity import Identity
    from mcpgate.config import Config, UpstreamConfig
    from mcpgate.config.overrides import Overrides
    from mcpgate.routing import Router
    from mcpgate.upstream.probe import ProbeResult

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1  # invalid config (validate, routes, list-servers), unhealthy (health, --probe)
EXIT_USAGE: Final = 2  # click's own: unknown option, bad value
EXIT_UNAVAILABLE: Final = 69  # EX_UNAVAILABLE: start could not listen on its address
EXIT_CONFIG: Final = 78  # EX_CONFIG: start refused the configuration; do not restart

DEFAULT_HEALTH_URL: Final = "http://127.0.0.1:8080/readyz"

F = TypeVar("F", bound=Callable[..., Any])


def shared_options(func: F) -> F:
    """``-c/--config``, ``--log-level`` and ``--log-format``: the same meaning in every verb."""
    func = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        envvar="MCPGATE_LOG_FORMAT",
        help="Log format; overrides observability.logging.format.",
    )(func)
    func = click.option(
        "--log-level",
        type=click.Choice(LEVELS, case_sensitive=False),
        envvar="MCPGATE_LOG_LEVEL",
        help="Log level; overrides observability.logging.level. Commands other than start log at warning.",
    )(func)
    return click.option(
        "-c",
        "--config",
        "config_path",
        metavar="PATH",
        help="Configuration file, '-' for stdin. Default: $MCPGATE_CONFIG, ./mcpgate.yml, "
        "~/.config/mcpgate/config.yml, /etc/mcpgate/config.yml (the first that exists).",
    )(func)


def json_option(what: str) -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON, for scripts.")


def timeout_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=5.0,
        show_default=True,
        metavar="SECONDS",
        help=help_text,
    )


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
      1   invalid configuration (validate, routes, list-servers), unhealthy (health, --probe)
      2   usage error
      69  start could not listen on its address
      78  start refused the configuration (systemd: RestartPreventExitStatus=78)

    \b
    Environment: MCPGATE_CONFIG, MCPGATE_HOST, MCPGATE_PORT, MCPGATE_WORKERS,
    MCPGATE_SHUTDOWN_TIMEOUT, MCPGATE_LOG_LEVEL, MCPGATE_LOG_FORMAT.
    Precedence: flag > MCPGATE_* variable > config file > built-in default.
    """


# -- shared plumbing ---------------------------------------------------------------------------


def log_flags(log_level: str | None, log_format: str | None) -> list[tuple[str, str, object]]:
    level = log_level.lower() if log_level is not None else None
    return [
        ("observability.logging.level", "log_level", level),
        ("observability.logging.format", "log_format", log_format),
    ]


def log_overrides(log_level: str | None, log_format: str | None) -> dict[str, object]:
    overrides: dict[str, object] = {}
    if log_level is not None:
        overrides["observability.logging.level"] = log_level.lower()
    if log_format is not None:
        overrides["observability.logging.format"] = log_format
    return overrides


def load_or_exit(
    config_path: str | None,
    overrides: Mapping[str, object],
    *,
    code: int,
    trailer: str = "{count} error(s)",
    check_support: bool = True,
    origins: Mapping[str, str] | None = None,
) -> Config:
    """The configuration (``-`` reads stdin), or every issue on stderr and exit ``code``.

    ``check_support`` refuses sections this build cannot enforce: always for what serves or
    validates; the read-only verbs that only describe a configuration show them as not served.
    """
    from mcpgate.config import ConfigError, load_config

    try:
        return load_config(config_path, overrides=overrides, origins=origins, check_support=check_support)
    except ConfigError as err:
        count = print_issues(err)
        exit_with(code, trailer.format(count=count))


def load_for_reading(config_path: str | None, log_level: str | None, log_format: str | None) -> Config:
    """For the read-only verbs: a broken config is their failure (1), reported like validate."""
    config = load_or_exit(config_path, log_overrides(log_level, log_format), code=EXIT_FAILURE, check_support=False)
    configure_cli_logging(log_level, log_format, config)
    return config


def configure_cli_logging(log_level: str | None, log_format: str | None, config: Config | None = None) -> None:
    """One-shot verbs stay quiet unless asked: their output is what they print, not the log."""
    redact = config.observability.logging.redact if config is not None else DEFAULT_REDACT
    fmt = log_format or (config.observability.logging.format if config is not None else "text")
    configure_logging(log_level or "warning", "json" if fmt == "json" else "text", redact)


def exit_with(code: int, message: str | None = None) -> NoReturn:
    if message:
        click.echo(message, err=code != EXIT_OK)
    sys.exit(code)


# -- start -------------------------------------------------------------------------------------


def set_option(func: F) -> F:
    return click.option(
        "--set",
        "set_values",
        multiple=True,
        metavar="PATH=VALUE",
        help="Override any configuration value by its dotted path, read as YAML "
        "(--set upstreams.github.timeout=10s); repeatable. MCPGATE__UPSTREAMS__GITHUB__TIMEOUT=10s does the "
        "same from the environment, with less precedence.",
    )(func)


def overrides_for(set_values: Iterable[str], flags: Iterable[tuple[str, str, object]]) -> Overrides:
    """Every override, lowest precedence first: MCPGATE__* variables, the named options given by
    their environment variable, --set, the named options given as flags. ``flags`` are (path,
    click parameter name, value)."""
    from mcpgate.config.overrides import OverrideError, from_environment, from_flags

    ctx = click.get_current_context()
    result = from_environment(os.environ)
    given = [(path, name, value) for path, name, value in flags if value is not None]
    for path, name, value in given:
        if ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT:
            param = next(p for p in ctx.command.params if p.name == name)
            result.add(path, value, f"${param.envvar}")
    try:
        explicit = from_flags(set_values)
    except OverrideError as exc:
        raise click.UsageError(str(exc)) from None
    for path, value in explicit.values.items():
        result.add(path, value, explicit.origins[path])
    for path, name, value in given:
        if ctx.get_parameter_source(name) is not ParameterSource.ENVIRONMENT:
            result.add(path, value, f"--{name.replace('_', '-')}")
    return result


@main.command(short_help="Run the gateway until SIGTERM or SIGINT")
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

                code = supervise(config, loader)
            else:
                code = server.run(config, loader)
    except server.StartupError as exc:
        exit_with(EXIT_CONFIG, f"mcpgate: cannot start: {exc}")
    except OSError as exc:
        where = host_port(config.server.host, config.server.port)
        exit_with(EXIT_UNAVAILABLE, f"mcpgate: cannot listen on {where}: {describe_bind_error(exc)}")
    sys.exit(code)


# -- validate ----------------------------------------------------------------------------------


@main.command(short_help="Check a configuration without starting anything")
@json_option("the verdict")
@set_option
@shared_options
def validate(
    config_path: str | None, log_level: str | None, log_format: str | None, as_json: bool, set_values: tuple[str, ...]
) -> None:
    """Load a configuration exactly as start would, build the gateway, and stop there.

    Prints a one-line summary and exits 0, or prints every error as
    FILE:LINE:COL: dotted.path: message, then a count, and exits 1. Nothing listens and no
    upstream is contacted.

    \b
    Examples:
      mcpgate validate -c mcpgate.yml
      mcpgate validate -c - < mcpgate.yml
      mcpgate validate -c mcpgate.yml --json | jq '.errors[].message'
    """
    from mcpgate.config import ConfigError, load_config, summarize

    configure_cli_logging(log_level, log_format)
    try:
        overrides = overrides_for(set_values, log_flags(log_level, log_format))
        config = load_config(config_path, overrides=overrides.values, origins=overrides.origins)
        build_gateway(config)
    except ConfigError as err:
        if as_json:
            emit_json({"valid": False, "errors": [issue_dict(i) for i in err.issues], "summary": None})
            sys.exit(EXIT_FAILURE)
        exit_with(EXIT_FAILURE, f"{print_issues(err)} error(s)")
    warnings = config_warnings(config)
    if as_json:
        emit_json({"valid": True, "errors": [], "warnings": warnings, "summary": summarize(config)})
    else:
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
        click.echo(summarize(config))
    sys.exit(EXIT_OK)


def config_warnings(config: Config) -> list[str]:
    """Valid, but not what was meant: tool names on /mcp that Claude and OpenAI reject, keys in
    plain text, policy rules that can never match."""
    from mcpgate.policy import rule_notes
    from mcpgate.routing import Router

    unsafe = Router.for_config(config).report().unsafe_prefixes
    separator = config.server.prefix_separator
    warnings = [
        f"upstreams.{name}.prefix: tool names '{name_prefix}{separator}<tool>' on /mcp break "
        "^[a-zA-Z0-9_-]{1,64}$, which Claude and OpenAI clients require"
        for u in config.upstreams
        if (name := u.name) in unsafe and (name_prefix := u.prefix or "")
    ]
    if config.auth is not None:
        warnings += [
            f"auth.api_keys[{i}].key: a plain key is for development; use key_hash (mcpgate hash-key prints it)"
            for i, key in enumerate(config.auth.api_keys)
            if key.key is not None
        ]
    for index, notes in rule_notes(config).items():
        warnings += [f"policy.rules[{index}]: {note}" for note in notes]
    if config.policy is not None and config.policy.shadow:
        warnings.append("policy.shadow: denials are logged and counted, not enforced")
    return warnings


LEADING_PATH: Final = re.compile(r"(?P<path>[A-Za-z_][\w.\[\]-]*): (?P<message>.+)", re.DOTALL)


def build_gateway(config: Config) -> None:
    """Build what start would build, without sockets, so that validate catches what start would.

    A ``StartupError`` (valid YAML that this build cannot run) becomes an issue like any other.
    """
    from mcpgate.config import ConfigError, ConfigIssue
    from mcpgate.gateway import Gateway, StartupError

    try:
        Gateway.from_config(config)
    except StartupError as exc:
        text = str(exc)
        match = LEADING_PATH.fullmatch(text)
        path, message = (match["path"], match["message"]) if match else ("", text)
        raise ConfigError([ConfigIssue(config.source, 0, 0, path, message)]) from None


# -- schema ------------------------------------------------------------------------------------


@main.command(short_help="Check a new configuration and have the running gateway load it")
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


@main.command(short_help="Print the configuration's JSON Schema")
@shared_options
def schema(config_path: str | None, log_level: str | None, log_format: str | None) -> None:
    """Print the JSON Schema (Draft 2020-12) that every configuration is validated against.

    Point an editor at it for completion and inline errors. The options shared by every verb
    are accepted and have no effect here.

    \b
    Examples:
      mcpgate schema > mcpgate.schema.json
      # first line of mcpgate.yml, for yaml-language-server:
      # yaml-language-server: $schema=./mcpgate.schema.json
    """
    from mcpgate.config import load_schema

    emit_json(load_schema())
    sys.exit(EXIT_OK)


# -- routes ------------------------------------------------------------------------------------


@main.command(short_help="Show the HTTP routes and the unified endpoint's routing table")
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


# -- policy and keys ---------------------------------------------------------------------------


@main.command(short_help="Show the access policy, or explain one decision")
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


@main.command("hash-key", short_help="Hash an API key for auth.api_keys, or generate a new one")
@click.option("--id", "key_id", default="client", show_default=True, help="The key's id in the printed config line.")
@click.option("--role", "roles", multiple=True, metavar="ROLE", help="A role to grant (repeatable).")
@click.option("--generate", is_flag=True, help="Generate a new key even when standard input is not a terminal.")
@json_option("the key, its hash and the config entry")
@shared_options
def hash_key(
    config_path: str | None,
    log_level: str | None,
    log_format: str | None,
    as_json: bool,
    key_id: str,
    roles: tuple[str, ...],
    generate: bool,
) -> None:
    """Print the auth.api_keys entry for a key: its SHA-256, never the key itself.

    The key is read from standard input (one trailing newline is dropped). When standard input
    is a terminal, or with --generate, a new random key is generated instead and shown once,
    on standard error, so that redirecting the output into a file never writes the key there.
    The configuration needs only the hash; give the key to the client.

    \b
    Examples:
      mcpgate hash-key --id ci --role engineer
      printf %s "$KEY" | mcpgate hash-key --id ci
      mcpgate hash-key --id ci --generate --json | jq -r .key
    """
    from mcpgate.auth.apikeys import generate_key
    from mcpgate.auth.apikeys import hash_key as sha256_of

    generated = generate or sys.stdin is None or sys.stdin.isatty()
    if generated:
        key = generate_key()
    else:
        key = sys.stdin.read().removesuffix("\n").removesuffix("\r")
        if not key:
            exit_with(EXIT_FAILURE, "error: no key on standard input (use --generate for a new one)")
        if len(key) < 16:
            click.echo(f"warning: a {len(key)}-character key is easy to guess; use 32 or more random ones", err=True)
    entry: dict[str, Any] = {"id": key_id, "key_hash": sha256_of(key)}
    if roles:
        entry["roles"] = list(roles)
    line = "- {" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in entry.items()) + "}"
    if as_json:
        emit_json({**entry, "key": key if generated else None, "config": line})
    else:
        if generated:
            click.echo(
                f"# API key for {key_id!r}, shown once; give it to the client, keep it out of the config:", err=True
            )
            click.echo(key, err=True)
        click.echo(line)
    sys.exit(EXIT_OK)


# -- list-servers ------------------------------------------------------------------------------


@main.command("list-servers", short_help="List the upstream MCP servers, optionally probing them")
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


# -- health ------------------------------------------------------------------------------------


@main.command(short_help="Ask a running gateway whether it is ready")
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


if __name__ == "__main__":  # pragma: no cover - `python -m mcpgate` goes through __main__.py
    main()
