"""The CLI's stdlib transport: one write per request, and the daemon's answer always read.

http.client sends the headers and the body in two writes; a daemon that answers before
reading the body (an abort, a 413) and closes the connection made the second write fail
with EPIPE, and the CLI printed `[Errno 32] Broken pipe` instead of the answer.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from opencode_cli import Client

from .cli_support import OPENCODE, DaemonProcess, rmtree, run_cli, start_daemon
from .test_recovery import workdir


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    d = start_daemon()
    yield d
    assert d.stop() == 0
    rmtree(d.tmp)


def test_abort_never_breaks_the_pipe(daemon: DaemonProcess) -> None:
    env = daemon.env()
    with Client(daemon.unix_url) as client:
        sid = client.sessions.create(directory=str(workdir(daemon.tmp))).id
    for _ in range(40):  # before: 5-60 % of tries failed
        res = run_cli("sessions", "abort", sid, env=env)
        assert res.returncode == 0, res.stderr
        assert "Broken pipe" not in res.stderr


def test_an_oversized_message_gets_the_413_and_leaves_no_session(daemon: DaemonProcess) -> None:
    env = daemon.env()
    before = json.loads(run_cli("sessions", "--json", env=env).stdout)
    big = "x" * (11 * 1024 * 1024)
    res = subprocess.run(
        [OPENCODE, "send", "-"],
        input=big,
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir(daemon.tmp),
        timeout=60,
    )
    assert res.returncode != 0
    assert "Broken pipe" not in res.stderr
    assert "PAYLOAD_TOO_LARGE" in res.stderr, res.stderr
    after = json.loads(run_cli("sessions", "--json", env=env).stdout)
    assert after == before  # the session `send` created for it was removed again
