"""``mcpgate migrate`` and ``mcpgate admin`` as an operator runs them: against a store file, and
against a real ``mcpgate start`` with a store and an admin API, through the CLI itself.

The gateway is one subprocess for the module (starting one costs a second or two); each test
uses names of its own, so that the order they run in does not matter.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from ruamel.yaml import YAML

from mcpgate import cli
from mcpgate.auth.apikeys import hash_key
from tests.conftest import PostgresServer, free_port, stop_process, wait_for_port

pytestmark = pytest.mark.timeout(60)

ADMIN_KEY = "mgk_admin-" + secrets.token_hex(16)
CLIENT_KEY = "mgk_client-" + secrets.token_hex(16)
UPSTREAM_TOKEN = "s3cret-upstream-" + secrets.token_hex(8)
ENCRYPTION_KEY = secrets.token_hex(32)
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


def clean_environment() -> dict[str, str]:
    """This process's environment without MCPGATE_* from the developer's shell."""
    return {key: value for key, value in os.environ.items() if not key.startswith("MCPGATE_")}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No MCPGATE_* variables, no stray ./mcpgate.yml, and logging put back after the CLI set it."""
    for key in list(os.environ):
        if key.startswith("MCPGATE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", "/nonexistent-home")
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def invoke(*args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli.main, list(args), input=input, env=env, catch_exceptions=False)


@dataclass
class Gateway:
    directory: Path
    config: Path
    url: str
    admin_url: str
    key_file: Path
    log: Path

    def admin(self, *args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
        """``mcpgate admin`` aimed at this gateway with the admin key; ``args`` start with the command."""
        options = ["--url", self.admin_url, "--key-file", str(self.key_file), "--timeout", "10"]
        return invoke("admin", *options, *args, input=input, env=env)

    def ping(self, upstream: str, key: str) -> int:
        """The HTTP status of an MCP ping with ``key`` at ``upstream``'s endpoint."""
        request = urllib.request.Request(
            f"{self.url}/servers/{upstream}/mcp",
            data=json.dumps(PING).encode(),
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
                "Authorization": f"Bearer {key}",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as err:
            with err:
                err.read()
                return err.code


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, mcp_upstream_url: str) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("admin-cli")
    port, admin_port = free_port(), free_port()
    config = directory / "gateway.yml"
    config.write_text(
        f"""\
server: {{port: {port}}}
upstreams:
  demo: {{url: "{mcp_upstream_url}"}}
auth:
  api_keys:
    - {{id: app, key_hash: "{hash_key(CLIENT_KEY)}"}}
store:
  path: {directory / "store.db"}
  encryption_key: "{ENCRYPTION_KEY}"
admin:
  port: {admin_port}
  api_keys:
    - {{id: ops, key_hash: "{hash_key(ADMIN_KEY)}"}}
"""
    )
    key_file = directory / "admin.key"
    key_file.write_text(ADMIN_KEY + "\n")
    key_file.chmod(0o600)
    log = directory / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcpgate", "start", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=directory,
            env={**clean_environment(), "PYTHONUNBUFFERED": "1"},
        )
    try:
        try:
            wait_for_port(admin_port, proc, timeout=30)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{log.read_text(errors='replace')}") from None
        yield Gateway(directory, config, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", key_file, log)
    finally:
        stop_process(proc)


def upstream_file(directory: Path, url: str, token: str = UPSTREAM_TOKEN) -> Path:
    path = directory / f"upstream-{secrets.token_hex(4)}.yml"
    path.write_text(f"url: {url}\nauth: {{type: bearer, token: {token}}}\n")
    return path


# -- migrate -----------------------------------------------------------------------------------


def store_config(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "store.yml"
    path.write_text(f"upstreams:\n  demo: {{url: http://127.0.0.1:9/mcp}}\nstore: {store}\n")
    return path


def test_migrate_status_is_1_until_up_applies_the_migrations(tmp_path: Path) -> None:
    database = tmp_path / "data" / "store.db"
    config = store_config(tmp_path, f"{{path: {database}}}")

    before = invoke("migrate", "-c", str(config))
    assert before.exit_code == 1, before.output
    header, *lines = before.stdout.splitlines()
    assert header.split() == ["VERSION", "APPLIED", "NAME"]
    assert lines and all(line.split()[1] == "pending" for line in lines)
    assert "mcpgate migrate up" in before.stderr
    assert not database.exists()  # looking creates nothing

    up = invoke("migrate", "up", "-c", str(config))
    assert up.exit_code == 0, up.output
    assert up.stdout.startswith("applied 1: ")

    after = invoke("migrate", "status", "-c", str(config))
    assert after.exit_code == 0, after.output
    assert "pending" not in after.stdout
    status = json.loads(invoke("migrate", "-c", str(config), "--json").stdout)
    assert status["pending"] == 0 and status["version"] == status["latest"] >= 1
    assert all(m["applied_at"] for m in status["migrations"])

    again = invoke("migrate", "up", "-c", str(config), "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["applied"] == []


def test_instances_migrating_a_postgres_store_together_apply_each_step_once(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    config = store_config(tmp_path, f"{{backend: postgres, url: '{postgres.url}'}}")
    assert invoke("migrate", "-c", str(config)).exit_code == 1
    command = [sys.executable, "-m", "mcpgate", "migrate", "up", "-c", str(config), "--json"]
    runs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_environment())
        for _ in range(3)
    ]
    try:
        outputs = [run.communicate(timeout=45) for run in runs]
    finally:
        for run in runs:
            stop_process(run)
    assert [run.returncode for run in runs] == [0, 0, 0], [err.decode() for _, err in outputs]
    applied = [m["version"] for out, _ in outputs for m in json.loads(out)["applied"]]
    assert sorted(applied) == sorted(set(applied)) and applied  # each step by exactly one of them
    status = invoke("migrate", "-c", str(config), "--json")
    assert status.exit_code == 0
    assert json.loads(status.stdout)["pending"] == 0


def test_migrate_without_a_store_section_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "plain.yml"
    path.write_text("upstreams:\n  demo: {url: http://127.0.0.1:9/mcp}\n")
    for action in ("status", "up"):
        result = invoke("migrate", action, "-c", str(path))
        assert result.exit_code == 1
        assert "no store section" in result.stderr


def test_migrate_with_an_invalid_configuration_exits_1(tmp_path: Path) -> None:
    config = store_config(tmp_path, "{backend: mysql}")
    result = invoke("migrate", "-c", str(config))
    assert result.exit_code == 1
    assert "store.backend" in result.stderr


def test_migrate_an_unreachable_store_exits_69_without_its_password(tmp_path: Path) -> None:
    port = free_port()
    config = store_config(
        tmp_path, f"{{backend: postgres, url: 'postgresql://mcpgate:s3cret-pw@127.0.0.1:{port}/mcpgate'}}"
    )
    status = invoke("migrate", "-c", str(config))
    assert status.exit_code == 69, status.output
    assert status.stderr.startswith(f"mcpgate migrate: store postgres 127.0.0.1:{port}/mcpgate: ")
    up = invoke("migrate", "up", "-c", str(config), env={"MCPGATE_STORE_STARTUP_TIMEOUT": "0.5"})
    assert up.exit_code == 69, up.output
    assert "s3cret-pw" not in status.output + up.output


# -- admin: upstreams --------------------------------------------------------------------------


def test_upstreams_put_list_get_delete_round_trip(gateway: Gateway, mcp_upstream_url: str) -> None:
    name = f"extra-{secrets.token_hex(3)}"
    put = gateway.admin("upstreams", "put", name, "-f", str(upstream_file(gateway.directory, mcp_upstream_url)))
    assert put.exit_code == 0, put.output
    assert put.stdout.startswith(f"upstream {name!r} created (revision ")

    listed = gateway.admin("upstreams", "list")
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["demo"][1:] == ["file", mcp_upstream_url, "-"]
    assert rows[name][1:3] == ["store", mcp_upstream_url] and rows[name][3].isdigit()

    got = gateway.admin("upstreams", "get", name)
    assert got.exit_code == 0, got.output
    assert UPSTREAM_TOKEN not in got.output
    etag = rows[name][3]
    assert f'(ETag "{etag}")' in got.stdout
    spec = YAML(typ="safe").load(got.stdout)
    assert spec == {"url": mcp_upstream_url, "auth": {"type": "bearer", "token": "<redacted>"}}

    # What get printed goes back as it is: <redacted> keeps the stored token.
    replaced = gateway.admin("upstreams", "put", name, "-f", "-", "--if-match", etag, input=got.stdout)
    assert replaced.exit_code == 0, replaced.output
    assert f"upstream {name!r} replaced" in replaced.stdout
    stale = gateway.admin("upstreams", "put", name, "-f", "-", "--if-match", etag, input=got.stdout)
    assert stale.exit_code == 1
    assert "412" in stale.stderr and "the current ETag is" in stale.stderr

    as_json = gateway.admin("upstreams", "get", name, "--json")
    assert json.loads(as_json.stdout)["spec"]["auth"]["token"] == "<redacted>"

    deleted = gateway.admin("upstreams", "delete", name)
    assert deleted.exit_code == 0, deleted.output
    assert deleted.stdout == f"upstream {name!r} deleted\n"
    gone = gateway.admin("upstreams", "get", name)
    assert gone.exit_code == 1
    assert "404" in gone.stderr


def test_a_bad_body_exits_1_and_points_at_each_error(gateway: Gateway) -> None:
    body = "url: http://127.0.0.1:9/mcp\nbogus: 1\ntimeout: soon\n"
    result = gateway.admin("upstreams", "put", "bad-one", "-f", "-", input=body)
    assert result.exit_code == 1
    assert result.stdout == ""
    first, *errors = result.stderr.splitlines()
    assert first.startswith("mcpgate admin: 400 Bad Request: ")
    assert any(line.startswith("<stdin>:2:1: /bogus: ") for line in errors), errors
    assert any(line.startswith("<stdin>:3:") and "/timeout: " in line for line in errors), errors

    problem = gateway.admin("--json", "upstreams", "put", "bad-one", "-f", "-", input=body)
    assert json.loads(problem.stdout)["status"] == 400

    broken = gateway.admin("upstreams", "put", "bad-one", "-f", "-", input="url: [unclosed\n")
    assert broken.exit_code == 1
    assert broken.stderr.startswith("<stdin>:2:1: YAML syntax error")


def test_a_name_the_file_defines_is_read_only(gateway: Gateway) -> None:
    result = gateway.admin("upstreams", "delete", "demo")
    assert result.exit_code == 1
    assert "409 Conflict" in result.stderr and "configuration file" in result.stderr


# -- admin: keys -------------------------------------------------------------------------------


def test_a_created_key_works_at_the_mcp_endpoint_until_revoked(gateway: Gateway) -> None:
    key_id = f"ci-{secrets.token_hex(3)}"
    created = gateway.admin("keys", "create", "--id", key_id, "--role", "engineer")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert created.stdout == key + "\n" and key.startswith("mgk_")  # the key alone on stdout
    assert "shown this once" in created.stderr and key not in created.stderr

    assert gateway.ping("demo", key) != 401
    listed = gateway.admin("keys", "list")
    assert any(line.split()[:3] == [key_id, "engineer", "store"] for line in listed.stdout.splitlines())
    assert key not in listed.stdout

    revoked = gateway.admin("keys", "revoke", key_id)
    assert revoked.exit_code == 0, revoked.output
    assert gateway.ping("demo", key) == 401
    assert gateway.admin("keys", "revoke", key_id).exit_code == 1  # gone already: 404

    made = json.loads(gateway.admin("keys", "create", "--json").stdout)
    assert made["key"].startswith("mgk_") and made["id"].startswith("key-")
    assert gateway.admin("keys", "revoke", made["id"]).exit_code == 0


# -- admin: the rest ---------------------------------------------------------------------------


def test_policy_get_put_round_trip_with_if_match(gateway: Gateway) -> None:
    got = gateway.admin("policy", "get")
    assert got.exit_code == 0, got.output
    etag = got.stdout.split("(ETag ", 1)[1].split(")", 1)[0].strip('"')
    rules = "default: allow\nrules:\n  - {decision: deny, tools: [never_called_*]}\n"
    put = gateway.admin("policy", "put", "-f", "-", "--if-match", etag, input=rules)
    assert put.exit_code == 0, put.output
    assert YAML(typ="safe").load(gateway.admin("policy", "get").stdout)["rules"] == [
        {"decision": "deny", "tools": ["never_called_*"]}
    ]
    again = gateway.admin("policy", "put", "-f", "-", "--if-match", etag, input=rules)
    assert again.exit_code == 1 and "412" in again.stderr
    no_rules = gateway.admin("policy", "put", "-f", "-", input="default: deny\n")
    assert no_rules.exit_code == 1 and "(root): " in no_rules.stderr

    removed = gateway.admin("policy", "delete")
    assert removed.exit_code == 0, removed.output
    assert removed.stdout == "policy rules removed from the store\n"
    assert YAML(typ="safe").load(gateway.admin("policy", "get").stdout) == {"rules": []}


def test_role_mappings_need_jwt_in_the_file(gateway: Gateway) -> None:
    result = gateway.admin("role-mappings", "put", "m1", "--claim", "groups", "--value", "ops", "--role", "admin")
    assert result.exit_code == 1
    assert "409" in result.stderr and "auth.jwt" in result.stderr


def test_config_and_audit_show_no_secret(gateway: Gateway, mcp_upstream_url: str) -> None:
    name = f"secretive-{secrets.token_hex(3)}"
    put = gateway.admin("upstreams", "put", name, "-f", str(upstream_file(gateway.directory, mcp_upstream_url)))
    assert put.exit_code == 0, put.output
    for args in (("config",), ("config", "--json"), ("audit",), ("audit", "--json", "--limit", "50")):
        result = gateway.admin(*args)
        assert result.exit_code == 0, result.output
        for secret in (UPSTREAM_TOKEN, ENCRYPTION_KEY, hash_key(ADMIN_KEY), hash_key(CLIENT_KEY), ADMIN_KEY):
            assert secret not in result.output, (args, secret)
    effective = YAML(typ="safe").load(gateway.admin("config").stdout)
    assert effective["upstreams"][name]["auth"]["token"] == "<redacted>"
    assert effective["store"]["encryption_key"] == "<redacted>"
    entries = json.loads(gateway.admin("audit", "--json").stdout)["entries"]
    assert entries[0]["name"] == name and entries[0]["actor"] == "key:ops"
    assert gateway.admin("upstreams", "delete", name).exit_code == 0


# -- credentials and addresses -----------------------------------------------------------------


def test_a_wrong_or_missing_credential_exits_1_with_a_hint(gateway: Gateway, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_text("mgk_not-the-admin-key-at-all\n")
    refused = invoke("admin", "--url", gateway.admin_url, "--key-file", str(wrong), "upstreams", "list")
    assert refused.exit_code == 1
    assert "401" in refused.stderr
    assert "--key-file" in refused.stderr and "MCPGATE_ADMIN_KEY" in refused.stderr
    assert "mgk_not-the-admin-key-at-all" not in refused.output

    missing = invoke("admin", "--url", gateway.admin_url, "keys", "list")
    assert missing.exit_code == 1
    assert "no admin credential was sent" in missing.stderr

    client = invoke("admin", "--url", gateway.admin_url, "keys", "list", env={"MCPGATE_ADMIN_KEY": CLIENT_KEY})
    assert client.exit_code == 1
    assert "403" in client.stderr and "not an admin's" in client.stderr

    absent = invoke("admin", "--url", gateway.admin_url, "--key-file", str(tmp_path / "absent.key"), "config")
    assert absent.exit_code == 2


def test_the_address_and_key_come_from_the_configuration_and_environment(gateway: Gateway) -> None:
    result = invoke("admin", "-c", str(gateway.config), "upstreams", "list", env={"MCPGATE_ADMIN_KEY": ADMIN_KEY})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split() == ["NAME", "SOURCE", "TARGET", "REVISION"]
    env: dict[str, str | None] = {"MCPGATE_ADMIN_URL": gateway.admin_url + "/admin/v1/", "MCPGATE_ADMIN_KEY": ADMIN_KEY}
    via_env = invoke("admin", "config", env=env)
    assert via_env.exit_code == 0, via_env.output


def test_an_unreachable_admin_api_exits_69(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke("admin", "--url", url, "--timeout", "5", "upstreams", "list", env={"MCPGATE_ADMIN_KEY": ADMIN_KEY})
    assert result.exit_code == 69
    assert result.stderr == f"mcpgate admin: cannot reach the admin API at {url}: connection refused\n"
    assert invoke("admin", "--url", "127.0.0.1:8081", "config").exit_code == 2  # not a URL: usage


def test_the_mcp_port_is_not_taken_for_the_admin_api(gateway: Gateway) -> None:
    result = invoke("admin", "--url", gateway.url, "--key-file", str(gateway.key_file), "upstreams", "list")
    assert result.exit_code == 1
    assert "not an admin API answer" in result.stderr
