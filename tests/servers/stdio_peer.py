"""A hand-made stdio MCP peer for what the real SDK server never does: garbage, huge lines,
requests to the client, ignoring SIGTERM, showing its environment.

Behaviour by method: ``initialize`` answers like any server; ``env`` answers with the
environment's variable names; ``pid`` with its process id; ``garbage`` first writes junk lines, then answers; ``huge``
answers with a line over 1 MiB; ``ask`` sends the client a request and answers with whatever
came back; ``say`` writes its argument to stderr. ``--ignore-term`` ignores SIGTERM,
``--linger`` stays after its input closes.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def send(message: object) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    if "--ignore-term" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for line in sys.stdin:
        message = json.loads(line)
        method, message_id = message.get("method"), message.get("id")
        if message_id is None:
            continue
        params = message.get("params") or {}
        if method == "initialize":
            result = {"protocolVersion": params["protocolVersion"], "capabilities": {"tools": {}},
                      "serverInfo": {"name": "stdio-peer", "version": "1"}}  # fmt: skip
        elif method == "env":
            result = {"names": sorted(os.environ)}
        elif method == "pid":
            result = {"pid": os.getpid()}
        elif method == "garbage":
            sys.stdout.write('this is not json\n[1, 2\n{"no": "jsonrpc"}\n\n')
            result = {"ok": True}
        elif method == "huge":
            send({"jsonrpc": "2.0", "id": message_id, "result": {"blob": "x" * (1024 * 1024 + 10)}})
            continue
        elif method == "ask":
            send({"jsonrpc": "2.0", "id": "from-child", "method": "sampling/createMessage", "params": {}})
            result = {"reply": json.loads(sys.stdin.readline())}
        elif method == "say":
            sys.stderr.write(params.get("text", "") + "\n")
            sys.stderr.flush()
            result = {}
        else:
            send({"jsonrpc": "2.0", "id": message_id, "error": {"code": -32601, "message": "no such method"}})
            continue
        send({"jsonrpc": "2.0", "id": message_id, "result": result})
    if "--linger" in sys.argv:  # a badly behaved server: its input is gone, and it stays anyway
        import time

        time.sleep(3600)


if __name__ == "__main__":
    main()
