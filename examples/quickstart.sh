#!/bin/sh
# Runs the demo MCP server on 127.0.0.1:9000 and mcpgate in front of it on 127.0.0.1:8080.
# Ctrl-C stops both. Needs `pip install -e ".[demo]"` (the README quick start does that).
set -e
cd "$(dirname "$0")/.."
python examples/servers/demo_server.py --port 9000 >/dev/null 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true' EXIT INT TERM
echo "demo MCP server: http://127.0.0.1:9000/mcp (pid $server_pid)"
echo "through mcpgate: http://127.0.0.1:8080/servers/demo/mcp"
mcpgate start -c examples/demo.yml
