"""What every verb shares: the exit codes, the option decorators, loading a config and exiting.

The verbs differ in what they do with a configuration, not in how they get one: ``-c``,
``--log-level`` and ``--log-format`` mean the same everywhere, overrides stack in one order of
precedence, and a broken file is reported the same way (every issue, then a count). Keeping that
here leaves each verb's module with only what it does. ``exit_with`` is how a verb ends with a
message; exit codes are part of the interface (see the package docstring).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import click
from click.core import ParameterSource

from mcpgate.cli_output import print_issues
from mcpgate.observability.logging import DEFAULT_REDACT, LEVELS, configure_logging

if TYPE_CHECKING:
    # The loader pulls in YAML and JSON Schema (with format checkers): seconds of imports that
    # `--version` and `health --url` (a Docker HEALTHCHECK, run every few seconds) must not pay.
    # The verbs that load a config import it where they need it.
    from mcpgate.config import Config
    from mcpgate.config.overrides import Overrides

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1  # invalid config (validate, routes, list-servers), unhealthy (health, --probe)
EXIT_USAGE: Final = 2  # click's own: unknown option, bad value
EXIT_UNAVAILABLE: Final = 69  # EX_UNAVAILABLE: start could not listen on its address
EXIT_CONFIG: Final = 78  # EX_CONFIG: start refused the configuration; do not restart

F = TypeVar("F", bound=Callable[..., Any])


# -- options -----------------------------------------------------------------------------------


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


# -- overrides, loading, logging, exiting ------------------------------------------------------


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
