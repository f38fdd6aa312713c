from __future__ import annotations

import stat

import pytest

from .conftest import RunningDaemon

pytestmark = pytest.mark.both_stores


async def test_health_over_both_transports(daemon: RunningDaemon) -> None:
    async with daemon.unix() as unix, daemon.tcp(token=False) as tcp:
        for client in (unix, tcp):
            r = await client.get("/health")
            assert r.status_code == 200
            assert r.json()["status"] == "ok"
            assert r.json()["endpoints"]["unix"] == str(daemon.socket)


async def test_socket_and_token_permissions(daemon: RunningDaemon) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.data_dir.stat().st_mode) == 0o700
    token_file = daemon.data_dir / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() == daemon.token
    assert daemon.token.startswith("sk-opencode-")
