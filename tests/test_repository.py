"""Promises the repository makes to a new user, checked: the quick start and CI agree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL)]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    run, test = commands
    assert "\n" not in run and "\n" not in test
    assert run.endswith('pip install -e ".[demo]" && mcpgate start -c examples/demo.yml')
    assert test.endswith("pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines(), "CI must run exactly the README's test command"


def test_quick_start_files_exist() -> None:
    assert (ROOT / "examples" / "demo.yml").is_file()
    assert (ROOT / "examples" / "servers" / "demo_server.py").is_file()
