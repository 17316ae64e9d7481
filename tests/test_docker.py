"""The container image: its Dockerfile's shape always, and a real build and run where a Docker
engine answers (this test skips, saying so, where none does: it is not a service CI installs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), " ".join(rest.split())))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_the_image_is_built_in_stages_and_keeps_only_the_installed_package() -> None:
    froms = [args for word, args in instructions() if word == "FROM"]
    assert len(froms) >= 2 and froms[0].endswith(" AS build")
    assert all("-slim" in base for base in froms)
    final = final_stage()
    copies = [args for word, args in final if word in ("COPY", "ADD")]
    assert copies == ["--from=build /opt/mcpgate /opt/mcpgate"]  # no sources, no build tools
    assert (ROOT / ".dockerignore").read_text().startswith("#")


def test_the_image_runs_unprivileged_and_says_how_to_check_and_stop_it() -> None:
    final = dict(final_stage()[1:])
    user = final["USER"]
    assert user not in ("root", "0") and user.split(":")[0] != "0"
    assert final["EXPOSE"] == "8080"
    assert json.loads(final["ENTRYPOINT"]) == ["mcpgate"]
    assert json.loads(final["CMD"]) == ["start", "-c", "/etc/mcpgate/config.yml"]
    health = final["HEALTHCHECK"]
    assert json.loads(health.split("CMD ", 1)[1])[:2] == ["mcpgate", "health"]
    assert final["STOPSIGNAL"] == "SIGTERM"
    assert "MCPGATE_HOST=0.0.0.0" in final["ENV"]


def engine() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.mark.skipif(not engine(), reason="no Docker engine answers here (docker info failed)")
def test_the_image_builds_and_its_healthcheck_passes(tmp_path: Path) -> None:
    tag = "mcpgate-test:latest"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=1200)
    config = tmp_path / "config.yml"
    config.write_text("upstreams:\n  nowhere: {url: 'http://127.0.0.1:9/mcp'}\nserver: {ready_when: any}\n")
    port = free_port()
    name = f"mcpgate-test-{port}"
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
         "-v", f"{config}:/etc/mcpgate/config.yml:ro", tag],
        check=True, timeout=60,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            done = subprocess.run(
                ["docker", "exec", name, "mcpgate", "health", "--url", "http://127.0.0.1:8080/healthz"],
                capture_output=True, timeout=30, check=False,
            )  # fmt: skip
            if done.returncode == 0:
                break
            assert time.monotonic() < deadline, done.stdout + done.stderr
            time.sleep(1)
        user = subprocess.run(["docker", "exec", name, "id", "-u"], capture_output=True, check=True, timeout=30)
        assert user.stdout.strip() == b"10001"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)
