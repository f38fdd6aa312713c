"""A deliberately bad MCP server for the failure tests: plain JSON-RPC lines on stdio.

Tools: `echo {text}`; `crash` (exits at once, saying why on stderr); `slow` (never
answers); `spawn` (starts a `sleep` child and answers its pid; the server exits on stdin
EOF and leaves the child behind); `dup.name` and `dup_name` (one name once made safe for
the model APIs); `grow` adds a tool `extra` and says the tool list changed
(notifications/tools/list_changed). `--bad-schema` adds a tool whose input schema is not
an object; `--hang` never answers the handshake; `--stubborn` ignores SIGTERM and stays
after stdin EOF. Each start appends its pid to the file named by $FLAKY_PIDS, if set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

TOOLS = [
    {
        "name": "echo",
        "description": "Echo the text back",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
    {"name": "crash", "description": "Crash the server", "inputSchema": {"type": "object"}},
    {"name": "slow", "description": "Never finish", "inputSchema": {"type": "object"}},
    {"name": "spawn", "description": "Start a child process", "inputSchema": {"type": "object"}},
    {"name": "dup.name", "description": "One", "inputSchema": {"type": "object"}},
    {"name": "dup_name", "description": "Two", "inputSchema": {"type": "object"}},
    {"name": "grow", "description": "Add a tool", "inputSchema": {"type": "object"}},
]
EXTRA = {"name": "extra", "description": "Added later", "inputSchema": {"type": "object"}}
BAD_TOOL = {"name": "bad_schema", "description": "Broken", "inputSchema": {"type": "string"}}


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def text_result(text: str) -> dict:
    return {"content": [{"type": "text", "text": text}], "isError": False}


def call(name: str, args: dict) -> dict | None:
    if name == "echo":
        return text_result(f"flaky says: {args.get('text')}")
    if name == "crash":
        sys.stderr.write("crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    if name == "slow":
        return None  # never answered
    if name == "grow":
        TOOLS.append(EXTRA)
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        return text_result("grown")
    if name == "extra":
        return text_result("extra works")
    if name == "spawn":
        child = subprocess.Popen(["sleep", "600"])
        return text_result(str(child.pid))
    return {"content": [{"type": "text", "text": f"no tool {name}"}], "isError": True}


def main() -> None:
    if os.environ.get("FLAKY_PIDS"):
        with open(os.environ["FLAKY_PIDS"], "a") as f:
            f.write(f"{os.getpid()}\n")
    hang = "--hang" in sys.argv
    if "--stubborn" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for line in sys.stdin:
        request = json.loads(line)
        method, rid = request.get("method"), request.get("id")
        if rid is None or hang:
            continue  # a notification (or we play dead)
        if method == "initialize":
            version = request["params"]["protocolVersion"]
            result = {
                "protocolVersion": version,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "flaky", "version": "1.0"},
            }
        elif method == "tools/list":
            result = {"tools": [*TOOLS, BAD_TOOL] if "--bad-schema" in sys.argv else TOOLS}
        elif method == "tools/call":
            params = request["params"]
            result = call(params["name"], params.get("arguments") or {})
            if result is None:
                continue
        elif method == "ping":
            result = {}
        else:
            error = {"code": -32601, "message": f"method not found: {method}"}
            send({"jsonrpc": "2.0", "id": rid, "error": error})
            continue
        send({"jsonrpc": "2.0", "id": rid, "result": result})
    time.sleep(3600 if "--stubborn" in sys.argv else 0.05)


if __name__ == "__main__":
    main()
