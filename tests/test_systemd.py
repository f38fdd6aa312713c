"""systemd integration: the unit files, socket activation, sd_notify and the watchdog.

The daemon is run as a real process and handed its sockets exactly the way systemd does
it: listening sockets at fd 3, 4..., LISTEN_FDS / LISTEN_FDNAMES, and LISTEN_PID set to
the pid of the process that will read them (a tiny Python wrapper moves the fds into
place, sets LISTEN_PID to its own pid and execs the daemon, which keeps that pid).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
import trio

from opencoded import systemd

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
READY = re.compile(r"opencoded ready: (\S.*)")

# Runs as the child: move the given fds to 3, 4, ... then become the daemon (same pid).
ACTIVATOR = """
import fcntl, os, sys
fds = [int(x) for x in sys.argv[1].split(",")] if sys.argv[1] else []
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]  # away from 3, 4...
for fd in fds:
    os.close(fd)
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "opencoded", *sys.argv[2:]])
"""


class Activated:
    """opencoded started with passed sockets (and whatever environment the test sets)."""

    def __init__(self, tmp: Path, sockets: Sequence[socket.socket], names: str, *args: str):
        self.tmp = tmp
        self.sockets = list(sockets)
        fds = [s.fileno() for s in self.sockets]
        self.args = [
            sys.executable, "-c", ACTIVATOR, ",".join(map(str, fds)),
            "--data-dir", str(tmp / "data"), *args,
        ]  # fmt: skip
        self.env = {
            **os.environ,
            "OPENCODE_CONFIG": str(tmp / "none.json"),
            "LISTEN_FDS": str(len(fds)),
            "LISTEN_FDNAMES": names,
        }
        self.pass_fds = tuple(fds)
        self.proc: trio.Process | None = None
        self.stderr = b""
        self.ready = ""

    async def start(self, nursery: trio.Nursery, *, wait_ready: bool = True) -> None:
        self.proc = await nursery.start(
            lambda task_status=trio.TASK_STATUS_IGNORED: trio.run_process(
                self.args, stderr=subprocess.PIPE, env=self.env, pass_fds=self.pass_fds,
                check=False, task_status=task_status,
            )
        )  # fmt: skip
        nursery.start_soon(self._drain)
        if wait_ready:
            with trio.fail_after(15):
                while not (match := READY.search(self.stderr.decode(errors="replace"))):
                    if self.proc.returncode is not None:
                        raise AssertionError(f"daemon exited: {self.stderr.decode()}")
                    await trio.sleep(0.02)
            self.ready = match.group(1)

    async def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for chunk in self.proc.stderr:
            self.stderr += chunk

    async def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(5):
            return await self.proc.wait()


def listening_unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)  # what SocketMode=0600 does
    sock.listen(16)
    return sock


def listening_tcp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def unix_client(path: Path) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(uds=str(path))
    return httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=10)


# ---- socket activation ---------------------------------------------------------------


async def test_serves_a_passed_unix_socket(nursery: trio.Nursery, tmpdir_short: Path) -> None:
    path = tmpdir_short / "act.sock"
    sock = listening_unix(path)
    # --socket names another path: a passed socket must replace it, not add to it.
    daemon = Activated(
        tmpdir_short, [sock], "unix", "--no-tcp", "--socket", str(tmpdir_short / "x")
    )
    await daemon.start(nursery)
    sock.close()  # only the daemon holds the listening socket now
    assert daemon.ready == f"unix:{path}"
    async with unix_client(path) as client:
        health = (await client.get("/health")).json()
        assert health["status"] == "ok"
        assert health["endpoints"]["unix"] == str(path)
        work = tmpdir_short / "work"  # not tmpdir_short: it holds the data dir
        work.mkdir()
        created = await client.post("/sessions", json={"directory": str(work)})
        assert created.status_code == 201
    assert not (tmpdir_short / "x").exists()
    assert await daemon.stop() == 0
    # The socket belongs to systemd (which re-listens on it across restarts): kept.
    assert path.is_socket()
    assert b"Traceback" not in daemon.stderr


async def test_passed_tcp_socket_replaces_the_configured_port(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    unix = listening_unix(tmpdir_short / "act.sock")
    tcp = listening_tcp()
    port = tcp.getsockname()[1]
    # --port is the passed socket's own port: binding it a second time would fail.
    daemon = Activated(tmpdir_short, [unix, tcp], "unix:tcp", "--port", str(port))
    await daemon.start(nursery)
    unix.close()
    tcp.close()
    assert daemon.ready == f"http://127.0.0.1:{port} unix:{tmpdir_short / 'act.sock'}"
    token = (tmpdir_short / "data" / "token").read_text().strip()
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        url = f"http://127.0.0.1:{port}/sessions"
        assert (await client.get(url)).status_code == 401  # the TCP rules still hold
        ok = await client.get(url, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    async with unix_client(tmpdir_short / "act.sock") as client:
        assert (await client.get("/health")).status_code == 200
    assert await daemon.stop() == 0


async def test_a_passed_fd_that_is_not_a_socket_is_a_clear_error(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    with open(tmpdir_short / "file", "w") as not_a_socket:
        daemon = Activated(tmpdir_short, [not_a_socket], "unix", "--no-tcp")  # type: ignore[list-item]
        await daemon.start(nursery, wait_ready=False)
        assert daemon.proc is not None
        with trio.fail_after(15):
            code = await daemon.proc.wait()
    assert code == 1
    assert "opencoded: socket activation: fd 3 passed by systemd is not a socket" in (
        daemon.stderr.decode()
    )


def test_listen_fds_is_for_our_pid_only_and_never_inherited() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "unix"}
    assert systemd.listen_fds(env) == []
    assert env == {}  # removed anyway: commands run by tools must not see them
    assert systemd.listen_fds({}) == []


# ---- sd_notify and the watchdog ------------------------------------------------------


def notify_socket(tmp: Path) -> tuple[trio.socket.SocketType, str]:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp / "notify")
    sock._sock.bind(path)  # sync bind: a path needs no resolution
    return sock, path


async def next_datagram(sock: trio.socket.SocketType, timeout: float = 15) -> str:
    with trio.fail_after(timeout):
        return (await sock.recv(4096)).decode()


async def test_ready_then_stopping_on_sigterm(nursery: trio.Nursery, tmpdir_short: Path) -> None:
    notify, path = notify_socket(tmpdir_short)
    unix = listening_unix(tmpdir_short / "act.sock")
    daemon = Activated(tmpdir_short, [unix], "unix", "--no-tcp")
    daemon.env["NOTIFY_SOCKET"] = path
    await daemon.start(nursery, wait_ready=False)
    first = await next_datagram(notify)
    assert first.splitlines()[0] == "READY=1"
    async with unix_client(tmpdir_short / "act.sock") as client:  # READY means serving
        assert (await client.get("/health")).status_code == 200
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    assert await next_datagram(notify) == "STOPPING=1"
    with trio.fail_after(10):  # a hang bound (the contract: 5 s)
        assert await daemon.proc.wait() == 0
    notify.close()
    unix.close()  # our copy of the socket systemd would have passed


async def test_notify_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"opencode-test-{os.getpid()}-{time.monotonic_ns()}"
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock._sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("READY=1")
        assert await next_datagram(sock, 5) == "READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not systemd.notify("READY=1")  # no service manager: a no-op


async def test_watchdog_pings_at_half_the_interval(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    notify, path = notify_socket(tmpdir_short)
    unix = listening_unix(tmpdir_short / "act.sock")
    daemon = Activated(tmpdir_short, [unix], "unix", "--no-tcp")
    daemon.env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")  # ping every 0.2 s
    await daemon.start(nursery, wait_ready=False)
    assert (await next_datagram(notify)).startswith("READY=1")
    for _ in range(3):  # the pings keep coming (their timing: the test below)
        assert await next_datagram(notify, 5) == "WATCHDOG=1"
    assert await daemon.stop() == 0
    notify.close()
    unix.close()


async def test_watchdog_checks_health_then_pings_every_interval(
    autojump_clock: trio.testing.MockClock, tmpdir_short: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify, path = notify_socket(tmpdir_short)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    checks: list[float] = []
    healthy = True

    async def ping() -> None:
        checks.append(trio.current_time())
        if not healthy:
            raise RuntimeError("database down")

    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(systemd.watchdog, 0.2, ping)
        for _ in range(3):
            assert await next_datagram(notify, 5) == "WATCHDOG=1"
        healthy = False  # from now on: checked, but not pinged
        await trio.sleep(0.9)
        nursery.cancel_scope.cancel()
    assert [round(t - start, 6) for t in checks] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2]
    notify._sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        notify._sock.recv(4096)  # no ping while unhealthy
    notify.close()


def test_watchdog_interval() -> None:
    pid = str(os.getpid())
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert systemd.watchdog_interval({}) is None


async def test_watchdog_skips_pings_while_unhealthy(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"opencode-wd-{os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    healthy = trio.Event()
    calls = 0

    async def check() -> None:
        nonlocal calls
        calls += 1
        if not healthy.is_set():
            raise RuntimeError("database down")

    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock._sock.bind("\0" + name)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(systemd.watchdog, 0.05, check)
            while calls < 3:
                await trio.sleep(0.01)
            with pytest.raises(BlockingIOError):
                sock._sock.recv(100, socket.MSG_DONTWAIT)  # no ping while unhealthy
            healthy.set()
            assert await next_datagram(sock, 5) == "WATCHDOG=1"
            nursery.cancel_scope.cancel()


# ---- unit files ------------------------------------------------------------------------


def analyze_verify(*units: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze --user verify`, which needs a runtime dir even to only parse."""
    env = dict(os.environ)
    runtime = Path(env.get("XDG_RUNTIME_DIR") or "/nonexistent")
    if not runtime.is_dir():
        runtime = units[0].parent / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    return subprocess.run(
        ["systemd-analyze", "--user", "verify", *map(str, units)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def installed_opencoded() -> str:
    found = shutil.which("opencoded") or str(Path(sys.executable).parent / "opencoded")
    assert os.access(found, os.X_OK), "the opencoded console script is not installed"
    return found


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd)",
)
def test_units_pass_systemd_analyze_verify(tmpdir_short: Path) -> None:
    service = (UNITS / "opencoded.service").read_text()
    filled = re.sub(r"(?m)^ExecStart=.*$", f"ExecStart={installed_opencoded()}", service)
    assert filled != service
    (tmpdir_short / "opencoded.service").write_text(filled)
    shutil.copy(UNITS / "opencoded.socket", tmpdir_short / "opencoded.socket")
    result = analyze_verify(tmpdir_short / "opencoded.service", tmpdir_short / "opencoded.socket")
    # verify exits 0 on settings it ignores, so any output at all is a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd)",
)
def test_systemd_analyze_verify_does_catch_mistakes(tmpdir_short: Path) -> None:
    """The check above can fail: a bad setting and a missing binary are both reported."""
    service = (UNITS / "opencoded.service").read_text()
    broken = re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/nonexistent/opencoded", service)
    broken = broken.replace("KillMode=mixed", "KillMode=sometimes")
    (tmpdir_short / "opencoded.service").write_text(broken)
    shutil.copy(UNITS / "opencoded.socket", tmpdir_short / "opencoded.socket")
    result = analyze_verify(tmpdir_short / "opencoded.service", tmpdir_short / "opencoded.socket")
    output = result.stdout + result.stderr
    assert "kill mode" in output
    assert "/nonexistent/opencoded" in output


def test_units_say_what_the_daemon_does() -> None:
    """The unit settings the daemon's behaviour relies on."""
    service = (UNITS / "opencoded.service").read_text()
    socket_unit = (UNITS / "opencoded.socket").read_text()
    for line in ("Type=notify", "Restart=on-failure", "KillMode=mixed", "OOMPolicy=continue"):
        assert f"\n{line}\n" in service
    assert re.search(r"(?m)^WatchdogSec=\d+", service)
    assert "\nListenStream=%t/opencode/opencoded.sock\n" in socket_unit
    assert "\nSocketMode=0600\n" in socket_unit


# ---- opencode daemon ---------------------------------------------------------------------

OPENCODE = str(Path(sys.executable).parent / "opencode")


def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    """An environment that points the CLI (and a daemon it starts) into `tmp` only."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENCODE_", "XDG_", "LISTEN_", "NOTIFY_", "WATCHDOG_"))
    }
    (tmp / "opencode.json").write_text('{"server": {"port": 0}}')
    env.update(
        XDG_CONFIG_HOME=str(tmp / "config"),
        OPENCODE_SOCKET=str(tmp / "d.sock"),
        OPENCODE_DATA_DIR=str(tmp / "data"),
        OPENCODE_CONFIG=str(tmp / "opencode.json"),
        NO_COLOR="1",
    )
    env.update(extra)
    return env


def opencode(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPENCODE, *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_daemon_install_writes_units_that_verify(tmpdir_short: Path) -> None:
    env = cli_env(tmpdir_short, PATH=f"/opt/tool chain/bin:{os.environ['PATH']}")
    done = opencode(env, "daemon", "install", "--no-start")
    assert done.returncode == 0, done.stderr
    target = tmpdir_short / "config" / "systemd" / "user"
    service = (target / "opencoded.service").read_text()
    assert f'\nExecStart="{installed_opencoded()}"\n' in service
    assert f'\nEnvironment="PATH=/opt/tool chain/bin:{os.environ["PATH"]}"\n' in service
    assert (target / "opencoded.socket").read_text() == (UNITS / "opencoded.socket").read_text()
    if shutil.which("systemd-analyze"):
        result = analyze_verify(target / "opencoded.service", target / "opencoded.socket")
        assert (result.returncode, result.stdout + result.stderr) == (0, "")
    done = opencode(env, "daemon", "uninstall")
    assert done.returncode == 0, done.stderr
    assert not (target / "opencoded.service").exists()
    assert not (target / "opencoded.socket").exists()


def test_rendered_service_escapes_what_systemd_would_expand() -> None:
    from opencode_cli.cli.daemon import render_service

    template = (UNITS / "opencoded.service").read_text()
    rendered = render_service(template, "/home/a b/100%/$HOME/opencoded", "/x/%h:/y")
    assert '\nExecStart="/home/a b/100%%/$$HOME/opencoded"\n' in rendered
    assert '\nEnvironment="PATH=/x/%%h:/y"\n' in rendered
    assert rendered.count("ExecStart=") == 1


def test_daemon_start_status_stop_without_systemd(tmpdir_short: Path) -> None:
    env = cli_env(tmpdir_short)
    assert opencode(env, "daemon", "status").returncode == 3
    started = opencode(env, "daemon", "start")
    assert started.returncode == 0, started.stderr
    status = opencode(env, "daemon", "status", "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["running"] is True and info["systemd"] is False
    pid = info["pid"]
    assert isinstance(pid, int) and Path(f"/proc/{pid}").exists()
    assert opencode(env, "daemon", "start").stdout.strip() == "opencoded is already running"
    stopped = opencode(env, "daemon", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"stopped opencoded (pid {pid})"
    assert not (tmpdir_short / "d.sock").exists()  # a clean stop removes its socket
    assert opencode(env, "daemon", "status").returncode == 3
    assert opencode(env, "daemon", "stop").stdout.strip() == "opencoded is not running"


def _user_manager_for_tests() -> str | None:
    """Why the real-systemd test cannot run here, or None when it can."""
    if os.environ.get("OPENCODE_TEST_SYSTEMD") != "1":
        return "set OPENCODE_TEST_SYSTEMD=1 to install the units into this user's systemd"
    if shutil.which("systemctl") is None:
        return "systemctl is not installed"
    reach = subprocess.run(
        ["systemctl", "--user", "show-environment"], capture_output=True, timeout=30, check=False
    )
    return None if reach.returncode == 0 else "no systemd user manager is reachable"


@pytest.mark.skipif(_user_manager_for_tests() is not None, reason=str(_user_manager_for_tests()))
def test_install_start_stop_with_a_real_user_manager() -> None:
    """The README's steps, for real: install, socket activation on first use, stop, uninstall."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCODE_")}
    env["NO_COLOR"] = "1"
    try:
        done = opencode(env, "daemon", "install")
        assert done.returncode == 0, done.stderr
        active = subprocess.run(
            ["systemctl", "--user", "is-active", "opencoded.socket"], capture_output=True, text=True
        )
        assert active.stdout.strip() == "active"
        with httpx.Client(transport=httpx.HTTPTransport(uds=_default_socket()), timeout=20) as c:
            assert c.get("http://localhost/health").json()["status"] == "ok"  # activates
        status = opencode(env, "daemon", "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["opencoded.service"] == "active"
        assert opencode(env, "daemon", "stop").returncode == 0
        assert opencode(env, "daemon", "status").returncode == 3
    finally:
        opencode(env, "daemon", "uninstall")


def _default_socket() -> str:
    return str(Path(os.environ["XDG_RUNTIME_DIR"]) / "opencode" / "opencoded.sock")
