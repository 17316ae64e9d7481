"""examples/compose: the files agree with each other and with mcpgate, without a Docker engine."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML

from tests.conftest import ROOT

COMPOSE = ROOT / "examples" / "compose"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load((COMPOSE / "compose.yaml").read_text())
    return data


def test_the_gateway_configuration_is_valid() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcpgate", "validate", "-c", str(COMPOSE / "mcpgate.yml")],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "REDIS_URL": "redis://redis:6379/0"},
    )
    assert done.returncode == 0, done.stderr.decode()


def test_only_the_gateway_is_published_and_its_replicas_share_redis() -> None:
    services = compose()["services"]
    assert set(services) == {"gateway", "demo", "redis"}
    assert "ports" not in services["demo"] and "ports" not in services["redis"]  # reachable through the gateway only
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] == 2
    assert all(port.startswith("127.0.0.1:") for port in gateway["ports"])
    assert gateway["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert gateway["depends_on"]["redis"] == {"condition": "service_healthy"}
    config: dict[str, Any] = YAML(typ="safe").load((COMPOSE / "mcpgate.yml").read_text())
    assert urlsplit(config["upstreams"]["demo"]["url"]).hostname == "demo"
    assert config["sessions"]["backend"] == config["rate_limit"]["backend"] == "redis"


def test_every_file_the_compose_file_names_exists() -> None:
    services = compose()["services"]
    for service in ("gateway", "demo"):
        build = services[service]["build"]
        context = (COMPOSE / build["context"]).resolve()
        assert (context / build["dockerfile"]).is_file()
    for volume in services["gateway"]["volumes"]:
        assert (COMPOSE / volume.split(":")[0]).is_file()
    demo = (COMPOSE / "demo.Dockerfile").read_text()
    copied = next(line.split()[1] for line in demo.splitlines() if line.startswith("COPY "))
    assert (ROOT / copied).is_file()
    assert f"!{copied}" in (ROOT / ".dockerignore").read_text().splitlines()  # in the build context
