"""deploy/kubernetes: every manifest valid for Kubernetes (kubernetes-validate, strict), the
configuration in the ConfigMap valid for mcpgate, and the pieces that make rollouts safe present."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from tests.conftest import ROOT

MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.30.0"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load((MANIFESTS / name).read_text())
    return data


@pytest.mark.parametrize("name", sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_every_manifest_is_valid_kubernetes(name: str) -> None:
    kubernetes_validate.validate(load(name), KUBERNETES, strict=True)


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    listed = set(load("kustomization.yaml")["resources"])
    present = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present


def test_the_configmap_holds_a_configuration_mcpgate_accepts(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(load("configmap.yaml")["data"]["config.yml"])
    secret = load("secret.example.yaml")["stringData"]
    env = {
        **os.environ,
        "GITHUB_MCP_TOKEN": secret["github-mcp-token"],
        "CI_KEY_HASH": secret["ci-key-hash"],
        "REDIS_URL": secret["redis-url"],
    }
    done = subprocess.run(
        [sys.executable, "-m", "mcpgate", "validate", "-c", str(config)], capture_output=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr.decode()


def test_the_deployment_probes_drains_and_runs_unprivileged() -> None:
    deployment = load("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["args"] == ["start", "-c", "/etc/mcpgate/config.yml"]  # as the image's CMD
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # The drain fits: preStop, then mcpgate's own shutdown_timeout, inside the grace period.
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    config: dict[str, Any] = YAML(typ="safe").load(load("configmap.yaml")["data"]["config.yml"])
    drain = float(config["server"]["shutdown_timeout"].removesuffix("s"))
    assert pre_stop + drain < pod["terminationGracePeriodSeconds"]
    secrets = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e}
    assert secrets == set(load("secret.example.yaml")["stringData"])
    budget = load("pdb.yaml")["spec"]
    assert budget["minAvailable"] < deployment["spec"]["replicas"]
