"""Starting a background daemon when ``send``, ``tui`` or ``status`` find none on the socket.

The daemon runs detached (own session, stdin from /dev/null) and logs to ``DATA_DIR/opencoded.log``.
It listens on the Unix socket only (``--no-tcp``) unless ``OPENCODE_PORT`` asks for TCP: the CLI
needs nothing else, and a busy port 3000 must not stop ``opencode send``. It inherits this
shell's environment (provider keys), which is why ``opencode daemon restart`` picks up new ones;
the CLI polls ``/health`` on the socket until it answers. Two CLIs racing both spawn one, and the
loser's daemon refuses to start ("already running"); both then find the winner on the socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from opencode_cli import Client, ConnectError, OpencodeError
from opencode_cli._endpoint import data_dir

from ._output import err, paint

START_TIMEOUT = 20.0


def ensure_daemon(client: Client) -> None:
    try:
        client.health()
    except ConnectError:
        start_daemon(client)


def daemon_args(sock: str, env: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """The command line of a background daemon (see the module docstring for --no-tcp)."""
    args = [sys.executable, "-m", "opencoded", "--socket", sock]
    return args if env.get("OPENCODE_PORT") else [*args, "--no-tcp"]


def start_daemon(client: Client) -> None:
    sock = client.endpoint.uds
    assert sock is not None, "only the default socket is auto-started"
    logdir = data_dir()
    logdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = logdir / "opencoded.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            daemon_args(sock),
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=fh,
            start_new_session=True,
            close_fds=True,
            cwd=os.path.expanduser("~") if os.path.isdir(os.path.expanduser("~")) else "/",
        )
    err(paint(f"opencode: started opencoded (pid {proc.pid}), log: {log}", "dim", sys.stderr))
    _wait_ready(client, proc, log)


def _wait_ready(client: Client, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    exited_at: float | None = None
    while True:
        try:
            client.health()
            return
        except ConnectError:
            pass
        now = time.monotonic()
        if proc.poll() is not None:
            # It may have lost a start race to another daemon: give the winner a moment.
            exited_at = exited_at or now
            if now - exited_at > 2.0:
                raise OpencodeError(
                    f"opencoded exited with status {proc.returncode} while starting; "
                    f"last lines of {log}:\n{_tail(log)}"
                )
        if now > deadline:
            raise OpencodeError(
                f"opencoded did not become ready in {START_TIMEOUT:.0f}s; see {log}"
            )
        time.sleep(0.05)


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
