"""``validate`` checks a configuration as ``start`` would; ``schema`` prints what it is checked against.

``validate`` is the verb for CI and for editing by hand: it loads the file with the same flags
and overrides as ``start``, builds the gateway without opening a socket (so that it catches what
``start`` would refuse), and warns about configurations that are valid but not what was meant.
``schema`` gives editors the same JSON Schema for completion and inline errors.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Final

import click

from mcpgate.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    configure_cli_logging,
    exit_with,
    json_option,
    log_flags,
    overrides_for,
    set_option,
    shared_options,
)
from mcpgate.cli_output import emit_json, issue_dict, print_issues

if TYPE_CHECKING:
    from mcpgate.config import Config


@click.command(short_help="Check a configuration without starting anything")
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


@click.command(short_help="Print the configuration's JSON Schema")
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
