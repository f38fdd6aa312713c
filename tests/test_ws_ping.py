"""Idle WebSockets get pings from the daemon, so clients and proxies notice a dead peer."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Request

from opencoded.http.routes import streams

from .conftest import start_daemon


async def test_idle_websocket_is_pinged(
    nursery: trio.Nursery, tmpdir_short: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "WS_PING_INTERVAL", 0.2)
    running = await start_daemon(nursery, tmpdir_short)
    async with running.unix() as c:
        session_id = (await c.post("/sessions", json={})).json()["id"]
    stream = await trio.open_unix_socket(str(running.socket))
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(
        ws.send(Request(host="localhost", target=f"/sessions/{session_id}/stream"))
    )
    seen: list[type] = []
    with trio.fail_after(5):
        while Ping not in seen:
            data = await stream.receive_some()
            assert data, "the daemon closed the connection"
            ws.receive_data(data)
            seen += [type(event) for event in ws.events()]
    assert seen[0] is AcceptConnection
    await stream.aclose()
    await running.shutdown()
