"""``python -m mcpgate.cli`` runs the CLI too, as it did when the CLI was one module."""

from mcpgate.cli import main

if __name__ == "__main__":  # pragma: no cover - `python -m mcpgate` goes through mcpgate/__main__.py
    main()
