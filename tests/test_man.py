"""The man page stays true to the CLI: every command, option, variable, exit code and error reason.

``man/mcpgate.1`` is written by hand; these tests read it as text (no groff needed) and compare it
with what ``mcpgate.cli`` and ``mcpgate.errors`` define, so a new flag, exit code or reason fails
here until the page documents it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

import mcpgate
from mcpgate import cli
from mcpgate.errors import REASONS

ROOT = Path(__file__).resolve().parent.parent
MAN_PAGE = ROOT / "man" / "mcpgate.1"
SECTIONS = (
    "NAME",
    "SYNOPSIS",
    "DESCRIPTION",
    "COMMANDS",
    "OPTIONS",
    "ENDPOINTS",
    "ERRORS",
    "SIGNALS",
    "EXIT STATUS",
    "ENVIRONMENT",
    "FILES",
    "EXAMPLES",
    "SEE ALSO",
)


def normalise(roff: str) -> str:
    r"""Roff source as a reader searches it: ``\-`` is a plain hyphen, font changes are dropped."""
    text = roff.replace(r"\-", "-")
    return re.sub(r"\\f(?:[BIRP]|\[[A-Z]*\])", "", text)


PAGE = normalise(MAN_PAGE.read_text(encoding="utf-8"))


def sections(page: str) -> dict[str, str]:
    """Each ``.SH`` heading (unquoted) mapped to the source lines up to the next one."""
    found: dict[str, str] = {}
    for chunk in re.split(r"^(?=\.SH )", page, flags=re.MULTILINE)[1:]:
        heading, _, body = chunk.partition("\n")
        found[heading.removeprefix(".SH ").strip().strip('"')] = body
    return found


SECTION = sections(PAGE)


def tags(section: str) -> list[str]:
    """The first word of each ``.TP`` tag line, without its font macro: the items of a list."""
    found = []
    for tp, tag in itertools.pairwise(section.splitlines()):
        if tp.strip() == ".TP":
            words = re.sub(r"^\.(?:B|I|BR|BI|IR|RB)\s+", "", tag).replace('"', "").split()
            if words:
                found.append(words[0])
    return found


def mentions(text: str, word: str) -> bool:
    """``word`` as a whole token: ``--port`` is not found inside ``--port-range``, nor ``-c`` in ``-cx``."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def walk(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    """Every command under ``group``, as ("list-servers", command), nested groups included."""
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        yield " ".join((*path, name)), command
        if isinstance(command, click.Group):
            yield from walk(command, (*path, name))


COMMANDS = list(walk(cli.main))


# Contexts as the real CLI builds them: click caches the help option per command, so a context
# without the group's settings (help_option_names) would break `-h` for every later test.
ROOT_CONTEXT = click.Context(cli.main, **cli.main.context_settings)


def params_of(command: click.Command) -> list[click.Parameter]:
    """Declared parameters plus the ones click adds (the help option)."""
    ctx = ROOT_CONTEXT if command is cli.main else click.Context(command, parent=ROOT_CONTEXT)
    return [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]


OPTIONS = [
    (path or "mcpgate", param)
    for path, command in [("", cli.main), *COMMANDS]
    for param in params_of(command)
    if isinstance(param, click.Option)
]
OPTION_STRINGS = sorted({(where, opt) for where, param in OPTIONS for opt in (*param.opts, *param.secondary_opts)})
EXIT_CODES = {name: value for name, value in vars(cli).items() if name.startswith("EXIT_") and isinstance(value, int)}


def test_page_has_every_section() -> None:
    missing = [name for name in SECTIONS if name not in SECTION]
    assert not missing, f"man page lacks sections {missing}"


def test_page_names_the_current_version() -> None:
    th = re.search(r"^\.TH .*$", PAGE, flags=re.MULTILINE)
    assert th is not None
    assert f"mcpgate {mcpgate.__version__}" in th.group(), "update the version in .TH"


def test_commands_were_found() -> None:
    # Guards the walk itself: an empty list would make the parametrized tests vacuous.
    assert {"start", "validate", "schema", "routes", "list-servers", "health"} <= {path for path, _ in COMMANDS}
    assert any(opt == "--port" for _, opt in OPTION_STRINGS)
    assert EXIT_CODES


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[path for path, _ in COMMANDS])
def test_command_is_documented(path: str, command: click.Command) -> None:
    assert mentions(SECTION["SYNOPSIS"], f"mcpgate {path}"), f"SYNOPSIS lacks 'mcpgate {path}'"
    assert command.name in tags(SECTION["COMMANDS"]), f"COMMANDS has no entry for {command.name!r}"


@pytest.mark.parametrize(("where", "option"), OPTION_STRINGS, ids=[f"{w} {o}" for w, o in OPTION_STRINGS])
def test_option_is_documented(where: str, option: str) -> None:
    assert mentions(PAGE, option), f"{where}: option {option} is not in the man page"


@pytest.mark.parametrize(("where", "param"), OPTIONS, ids=[f"{w} {p.name}" for w, p in OPTIONS])
def test_option_variable_and_choices_are_documented(where: str, param: click.Option) -> None:
    envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
    for envvar in envvars:
        assert mentions(SECTION["ENVIRONMENT"], envvar), f"{where}: ENVIRONMENT lacks {envvar}"
    if isinstance(param.type, click.Choice):
        for choice in param.type.choices:
            assert mentions(PAGE, str(choice)), f"{where}: choice {choice!r} of {param.opts} is not in the page"


@pytest.mark.parametrize(("name", "code"), sorted(EXIT_CODES.items()), ids=sorted(EXIT_CODES))
def test_exit_code_is_documented(name: str, code: int) -> None:
    assert str(code) in tags(SECTION["EXIT STATUS"]), f"EXIT STATUS has no entry for {code} ({name})"


def test_exit_status_documents_no_other_codes() -> None:
    documented = {int(tag) for tag in tags(SECTION["EXIT STATUS"]) if tag.isdigit()}
    unknown = documented - set(EXIT_CODES.values())
    assert not unknown, f"codes {unknown} are not in mcpgate/cli/"


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_reason_is_documented(reason: str) -> None:
    assert mentions(PAGE, reason), f"error reason {reason} is not in the man page"


def test_error_table_matches_errors_module() -> None:
    """The ERRORS table's rows are exactly the reasons, each with its JSON-RPC code and HTTP status."""
    table = re.search(r"^\.TS\n(.*?)^\.TE$", SECTION["ERRORS"], flags=re.MULTILINE | re.DOTALL)
    assert table is not None, "ERRORS has no table"
    rows = {}
    for line in table.group(1).splitlines():
        cells = line.split(";")
        if len(cells) >= 3 and re.fullmatch(r"[a-z_]+", cells[0]) and cells[1].lstrip("-").isdigit():
            rows[cells[0]] = (int(cells[1]), int(cells[2]))
    assert rows == {name: (r.code, r.status) for name, r in REASONS.items()}


def test_the_configuration_page_is_what_the_schema_says() -> None:
    """man/mcpgate.yml.5 is generated from the schema (man/build_yml5.py); a schema change must
    bring the page along."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "man" / "build_yml5.py"), "--check"], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    page = (ROOT / "man" / "mcpgate.yml.5").read_text()
    schema = json.loads((ROOT / "mcpgate" / "config" / "schema.json").read_text())
    for section in schema["properties"]:
        assert f".SH {section.upper().replace('_', ' ')}\n" in page
    for key in ("upstreams.<name>.forward_headers", "rate_limit.rules[].per_client", "sessions.key_prefix"):
        assert f".B {key.replace('-', chr(92) + '-')}\n" in page, key
