"""Another local user must not own the socket directory (issue 10, "someone can get in").

With XDG_RUNTIME_DIR unset the socket lives in /tmp/opencode-$UID, a name anyone can create
first. The daemon and the CLI refuse a socket directory that is not owned by the user or
that others may write, as ssh-agent and tmux do. Tests run as root, so "another user" is
`nobody`: root is not the owner, and that is what is checked (owner == effective uid).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from opencode_cli import Client, OpencodeError
from opencode_cli._endpoint import check_socket_dir as cli_check
from opencoded.paths import check_socket_dir

from .cli_support import OPENCODE, clean_env, short_tmp

NOBODY = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else None


def hostile_dir(mode: int = 0o777, owner: int | None = NOBODY) -> Path:
    tmp = short_tmp("ocs")
    run = tmp / f"opencode-{os.getuid()}"
    run.mkdir()
    if owner is not None:
        os.chown(run, owner, -1)
    os.chmod(run, mode)
    return run


def daemon_env(socket_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "OPENCODE_SOCKET")}
    env["OPENCODE_CONFIG"] = str(socket_dir.parent / "none.json")
    return env


@pytest.mark.parametrize(
    ("mode", "foreign"), [(0o777, True), (0o700, True), (0o777, False), (0o720, False)]
)
def test_daemon_refuses_an_unsafe_socket_dir(mode: int, foreign: bool) -> None:
    if foreign and NOBODY is None:
        pytest.skip("needs root to create a directory owned by another user")
    run = hostile_dir(mode, NOBODY if foreign else None)
    sock = run / "opencoded.sock"
    try:
        res = subprocess.run(
            [sys.executable, "-m", "opencoded", "--port", "0", "--socket", str(sock),
             "--data-dir", str(run.parent / "data")],
            capture_output=True, text=True, timeout=20, env=daemon_env(run),
        )  # fmt: skip
        assert res.returncode != 0
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, res.stderr
        assert str(run) in lines[0]
        assert ("owned by" in lines[0]) if foreign else ("writable" in lines[0])
        assert "Traceback" not in res.stderr
        assert not sock.exists()
    finally:
        shutil.rmtree(run.parent, ignore_errors=True)


def test_default_tmp_socket_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    """The issue's scenario: no XDG_RUNTIME_DIR, /tmp/opencode-$UID pre-created by someone else."""
    if NOBODY is None:
        pytest.skip("needs root to create a directory owned by another user")
    default = Path(f"/tmp/opencode-{os.getuid()}")
    if default.exists():
        pytest.skip(f"{default} exists already (a real daemon's?)")
    default.mkdir()
    try:
        os.chown(default, NOBODY, -1)
        os.chmod(default, 0o777)
        env = daemon_env(default)
        res = subprocess.run(
            [sys.executable, "-m", "opencoded", "--port", "0", "--data-dir", str(tmp_path / "d")],
            capture_output=True, text=True, timeout=20, env=env,
        )  # fmt: skip
        assert res.returncode != 0
        assert f"{default}" in res.stderr and "owned by" in res.stderr
        assert not (default / "opencoded.sock").exists()
        cli = subprocess.run(
            [OPENCODE, "sessions"], capture_output=True, text=True, timeout=20,
            env={**clean_env(OPENCODE_DATA_DIR=str(tmp_path / "d")), "OPENCODE_NO_AUTOSTART": "1"},
        )  # fmt: skip
        assert cli.returncode == 1
        assert str(default) in cli.stderr and "owned by" in cli.stderr
        assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    finally:
        shutil.rmtree(default, ignore_errors=True)


def test_cli_refuses_to_talk_through_a_foreign_socket_dir() -> None:
    """An attacker's fake daemon in their directory: the CLI never connects to it."""
    if NOBODY is None:
        pytest.skip("needs root to create a directory owned by another user")
    run = hostile_dir(0o755)
    sock = run / "opencoded.sock"
    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE_DAEMON, str(sock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
        env = clean_env(OPENCODE_SOCKET=str(sock), OPENCODE_DATA_DIR=str(run.parent / "data"))
        res = subprocess.run(
            [OPENCODE, "sessions", "--json"], capture_output=True, text=True, timeout=20, env=env
        )
        assert res.returncode == 1
        assert "fake-session" not in res.stdout
        assert str(run) in res.stderr and "owned by" in res.stderr
        for url in (None, f"unix://{sock}"):
            with pytest.raises(OpencodeError, match="owned by"):
                _client(url, sock)
    finally:
        fake.kill()
        fake.wait()
        if fake.stdout is not None:
            fake.stdout.close()
        shutil.rmtree(run.parent, ignore_errors=True)


def test_cli_daemon_stop_never_signals_a_pid_from_a_foreign_dir() -> None:
    """`opencode daemon stop` reads the pid from the lock file beside the socket: in another
    user's directory that pid is theirs to choose, and the CLI would kill it."""
    if NOBODY is None:
        pytest.skip("needs root to create a directory owned by another user")
    run = hostile_dir(0o755)
    victim = subprocess.Popen(["sleep", "60"])
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(run / "opencoded.sock.lock"), str(victim.pid)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        env = clean_env(
            OPENCODE_SOCKET=str(run / "opencoded.sock"), OPENCODE_DATA_DIR=str(run.parent / "d")
        )
        res = subprocess.run(
            [OPENCODE, "daemon", "stop"], capture_output=True, text=True, timeout=20, env=env
        )
        assert res.returncode == 1
        assert "owned by" in res.stderr
        assert victim.poll() is None  # not signalled
    finally:
        for proc in (holder, victim):
            proc.kill()
            proc.wait()
        if holder.stdout is not None:
            holder.stdout.close()
        shutil.rmtree(run.parent, ignore_errors=True)


LOCK_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, (sys.argv[2] + "\\n").encode())
print("locked", flush=True)
time.sleep(60)
"""


def _client(url: str | None, sock: Path) -> Client:
    os.environ["OPENCODE_SOCKET"] = str(sock)
    try:
        return Client(url)
    finally:
        del os.environ["OPENCODE_SOCKET"]


def test_check_is_the_same_on_both_sides(tmp_path: Path) -> None:
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o700)
    assert check_socket_dir(safe) is None and cli_check(safe) is None
    assert check_socket_dir(tmp_path / "absent") is None  # created 0700 by the daemon
    os.chmod(safe, 0o702)
    assert "writable" in (check_socket_dir(safe) or "")
    assert "writable" in (cli_check(safe) or "")
    link = tmp_path / "link"
    link.symlink_to(safe)
    assert "symlink" in (check_socket_dir(link) or "")


FAKE_DAEMON = """
import socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(5)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.recv(65536)
    body = b'[{"id": "fake-session"}]'
    c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: "
              + str(len(body)).encode() + b"\\r\\nConnection: close\\r\\n\\r\\n" + body)
    c.close()
"""
