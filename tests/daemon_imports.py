"""The real `opencoded` main(), reporting which modules it has loaded at checkpoints.

    python -m tests.daemon_imports STEPS_JSON -- OPENCODED_ARGS...

`main()` runs in the main thread as `opencoded` would (signals, trio.run). A helper thread
talks to the daemon over its Unix socket (stdlib only, so it loads nothing the daemon does
not) and follows STEPS, a list of:

- `["get", PATH]`, `["post", PATH, BODY]`: one request; a status other than 2xx fails;
- `["until", PATH, TEXT]`: GET PATH until its body contains TEXT (bounded: 20 s);
- `["stream", PATH, BODY]`: POST and read the NDJSON stream to its end;
- `["modules", LABEL]`: print `MODULES LABEL <json list of top-level module names>`, and
  `GC LABEL <json {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}>`.

`{sid}` in a path is the id of the last session created. Then it sends SIGTERM to its own
process: the daemon shuts down as usual and the exit status says whether it went well.
"""

from __future__ import annotations

import gc
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from opencoded.main import main

DEADLINE = 20.0


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=DEADLINE)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(DEADLINE)
        self.sock.connect(self.path)


def request(sock: str, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(sock)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for_socket(sock: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            if request(sock, "GET", "/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError("the daemon did not answer /health")


def run_steps(sock: str, steps: list[list[Any]]) -> None:
    sid = ""
    for step in steps:
        kind, *args = step
        path = args[0].replace("{sid}", sid) if kind != "modules" else ""
        if kind == "modules":
            top = sorted({name.split(".")[0] for name in sys.modules})
            sys.stdout.write(f"MODULES {args[0]} {json.dumps(top)}\n")
            state = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
            sys.stdout.write(f"GC {args[0]} {json.dumps(state)}\n")
            sys.stdout.flush()
        elif kind == "until":
            deadline = time.monotonic() + DEADLINE
            while args[1].encode() not in request(sock, "GET", path)[1]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"GET {path} never showed {args[1]!r}")
                time.sleep(0.02)
        else:
            method = "GET" if kind == "get" else "POST"
            status, body = request(sock, method, path, args[1] if len(args) > 1 else None)
            if not 200 <= status < 300:
                raise AssertionError(f"{method} {path}: {status} {body[:300]!r}")
            if kind == "post" and path == "/sessions":
                sid = json.loads(body)["id"]


def drive(sock: str, steps: list[list[Any]]) -> None:
    try:
        wait_for_socket(sock)
        run_steps(sock, steps)
    except BaseException as exc:
        sys.stdout.write(f"FAILED {exc!r}\n")
        sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    steps_json, sep, *daemon_args = sys.argv[1:]
    assert sep == "--"
    socket_path = daemon_args[daemon_args.index("--socket") + 1]
    threading.Thread(target=drive, args=(socket_path, json.loads(steps_json)), daemon=True).start()
    sys.exit(main(daemon_args))
