"""Release hygiene: the wheel ``pip install .`` builds carries the version from its one place
(``mcpgate.__version__``), the schema, the type marker and the ``mcpgate`` command; nothing else."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import mcpgate
from tests.conftest import ROOT


def test_the_wheel_has_the_version_the_schema_and_the_command(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("mcpgate-*.whl")
    assert wheel.name.startswith(f"mcpgate-{mcpgate.__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert f"\nVersion: {mcpgate.__version__}\n" in metadata
    assert {"mcpgate/config/schema.json", "mcpgate/py.typed", "mcpgate/cli/__init__.py"} <= names
    assert "mcpgate = mcpgate.cli:main" in entry_points
    assert not [n for n in names if n.startswith(("tests/", "bench/", "examples/"))]
