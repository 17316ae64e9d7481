"""``python -m mcpgate`` runs the same CLI as the ``mcpgate`` console script."""

from mcpgate.cli import main

if __name__ == "__main__":
    main()
