#!/bin/sh
# Runs the demo MCP server on 127.0.0.1:9000 and mcpgate in front of it on 127.0.0.1:8080.
# Ctrl-C stops both. Needs `pip install -e ".[demo]"` (the README quick start does that).
set -e
cd "$(dirname "$0")/.."
python examples/servers/demo_server.py --port 9000 >/dev/null 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true' EXIT INT TERM
# Wait (at most 20 s) for the demo server, so the gateway starts with a healthy upstream.
python - <<'PY'
import socket, sys, time
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", 9000), timeout=0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("the demo server did not start on 127.0.0.1:9000 (is the port taken?)")
PY
echo "demo MCP server: http://127.0.0.1:9000/mcp"
echo "through mcpgate: http://127.0.0.1:8080/servers/demo/mcp   (Ctrl-C stops both)"
exec_status=0
mcpgate start -c examples/demo.yml || exec_status=$?
exit "$exec_status"
