"""Start-up, refusal and shutdown of the real `opencoded` process (contract section 1)."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest
import trio

from .daemon_process import DaemonProcess, run_to_exit


def unix_client(sock: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(sock)), base_url="http://localhost"
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_ready_line_then_clean_exit(
    nursery: trio.Nursery, tmpdir_short: Path, sig: signal.Signals
) -> None:
    daemon = DaemonProcess(tmpdir_short)
    line = await daemon.start(nursery)
    assert line.startswith("opencoded ready: http://127.0.0.1:")
    assert f"unix:{daemon.socket}" in line
    async with unix_client(daemon.socket) as c:
        assert (await c.get("/health")).json()["status"] == "ok"
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.get(f"{daemon.url}/sessions")
        assert r.status_code == 401
        r = await c.get(
            f"{daemon.url}/sessions", headers={"Authorization": f"Bearer {daemon.token()}"}
        )
        assert r.status_code == 200
    assert daemon.proc is not None
    daemon.proc.send_signal(sig)
    assert await daemon.wait(5) == 0
    assert not daemon.socket.exists()
    assert b"Traceback" not in daemon.stderr


async def test_live_socket_is_refused(nursery: trio.Nursery, tmpdir_short: Path) -> None:
    first = DaemonProcess(tmpdir_short)
    await first.start(nursery)
    second = run_to_exit(
        ["--port", "0", "--socket", str(first.socket), "--data-dir", str(tmpdir_short / "d2")]
    )
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"opencoded: another opencoded is already running on {first.socket}"
    ]
    async with unix_client(first.socket) as c:  # the first one is untouched
        assert (await c.get("/health")).status_code == 200
    assert first.proc is not None
    first.proc.terminate()
    await first.wait()


async def test_stale_socket_is_replaced(nursery: trio.Nursery, tmpdir_short: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmpdir_short / "d.sock"))
    stale.close()  # the file stays, nobody listens: what a killed daemon leaves
    daemon = DaemonProcess(tmpdir_short)
    await daemon.start(nursery)
    async with unix_client(daemon.socket) as c:
        assert (await c.get("/health")).status_code == 200
    assert daemon.proc is not None
    daemon.proc.terminate()
    assert await daemon.wait() == 0


async def test_taken_port_is_one_clear_line(tmpdir_short: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await trio.to_thread.run_sync(
            lambda: run_to_exit(
                [
                    "--port",
                    str(port),
                    "--socket",
                    str(tmpdir_short / "s"),
                    "--data-dir",
                    str(tmpdir_short / "data"),
                ]
            )
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"opencoded: cannot listen on 127.0.0.1:{port}: address already in use"
        " (is another daemon running?)"
    )
    assert "Traceback" not in result.stderr
    assert not (tmpdir_short / "s").exists()


def test_bad_config_names_file_line_and_key(tmpdir_short: Path) -> None:
    config = tmpdir_short / "opencode.json"
    config.write_text(json.dumps({"server": {"host": "127.0.0.1", "port": "x"}}, indent=2))
    result = run_to_exit(["--config", str(config), "--data-dir", str(tmpdir_short / "d")])
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"opencoded: config file {config}, line 4: key 'server.port': "
        "invalid server.port: expected integer, got string"
    )
    config.write_text('{"server": {\n  "port": 3000,,\n}}')
    result = run_to_exit(["--config", str(config), "--data-dir", str(tmpdir_short / "d")])
    assert result.returncode == 1
    assert f"config file {config}: invalid JSON at line 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_socket_path_too_long(tmpdir_short: Path) -> None:
    long_path = tmpdir_short / ("x" * 120) / "d.sock"
    result = run_to_exit(["--socket", str(long_path), "--data-dir", str(tmpdir_short / "d")])
    assert result.returncode == 1
    assert "socket path too long" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_auth_refused_on_public_host(tmpdir_short: Path) -> None:
    result = run_to_exit(["--host", "0.0.0.0", "--no-auth", "--data-dir", str(tmpdir_short)])
    assert result.returncode == 1
    assert "--no-auth is refused" in result.stderr


async def test_kill_9_during_creates_loses_nothing_answered(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    daemon = DaemonProcess(tmpdir_short)
    await daemon.start(nursery)
    answered: list[str] = []
    killed = trio.Event()

    work = tmpdir_short / "work"  # not "/": refused as a broad root
    work.mkdir()

    async def create_many(c: httpx.AsyncClient) -> None:
        for _ in range(250):
            try:
                r = await c.post("/sessions", json={"directory": str(work)})
            except httpx.TransportError:
                return
            answered.append(r.json()["id"])

    async def kill_midway() -> None:
        while len(answered) < 400:
            await trio.sleep(0.005)  # polling another process's progress, not synchronising
        assert daemon.proc is not None
        os.kill(daemon.proc.pid, signal.SIGKILL)
        killed.set()

    async with unix_client(daemon.socket) as c, trio.open_nursery() as inner:
        inner.start_soon(kill_midway)
        for _ in range(4):  # 4 concurrent writers, 1,000 creates in all
            inner.start_soon(create_many, c)
    assert killed.is_set()
    assert await daemon.wait() == -signal.SIGKILL
    assert 400 <= len(answered) < 1000

    restarted = DaemonProcess(tmpdir_short)
    await restarted.start(nursery)  # the stale socket of the killed daemon is replaced
    async with unix_client(restarted.socket) as c:
        stored: set[str] = set()
        before = None
        while True:
            params = {"limit": 500, **({"before": before} if before else {})}
            page = (await c.get("/sessions", params=params)).json()
            if not page:
                break
            stored.update(s["id"] for s in page)
            before = page[-1]["id"]
    assert set(answered) <= stored
    assert restarted.proc is not None
    restarted.proc.terminate()
    assert await restarted.wait() == 0


def test_unusable_data_dir_is_one_clear_line(tmpdir_short: Path) -> None:
    blocker = tmpdir_short / "file"
    blocker.write_text("not a directory")
    result = run_to_exit(["--data-dir", str(blocker / "data"), "--socket", str(tmpdir_short / "s")])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"opencoded: cannot use data dir {blocker / 'data'}: Not a directory"
    ]
