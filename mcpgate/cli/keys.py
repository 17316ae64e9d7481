"""``hash-key``: the ``auth.api_keys`` entry for a key, so that the configuration holds only its hash.

It needs no configuration. The key comes from standard input or is generated; a generated key
goes to standard error, once, so that redirecting the output into a file never writes the key
there.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from mcpgate.cli.common import EXIT_FAILURE, EXIT_OK, exit_with, json_option, shared_options
from mcpgate.cli_output import emit_json


@click.command("hash-key", short_help="Hash an API key for auth.api_keys, or generate a new one")
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
