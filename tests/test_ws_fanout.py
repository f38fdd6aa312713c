"""WebSocket fan-out written in batches (opencoded/http/ws_frames.py): a watcher that falls
behind still gets every event exactly once, in order, one event per WebSocket frame.

The client here is a raw socket that parses the frames itself, so a frame carrying two
events, a fragmented message or a frame split wrongly across a batch would show.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import zlib
from typing import Any

import pytest
import trio

from opencoded.http.ws_frames import FrameCache
from opencoded.sessions import events as events_module
from tests.conftest import RunningDaemon
from tests.test_streams import _wait_watchers, log_of, new_session

PAYLOAD = "y" * 512  # big enough that a watcher that does not read blocks the daemon's sends


class RawWatcher:
    """A WebSocket client on a socket with a tiny receive buffer, reading only when asked."""

    def __init__(self, sock: trio.socket.SocketType, deflate: bool) -> None:
        self.sock, self.buffer = sock, b""
        self.inflate = zlib.decompressobj(-zlib.MAX_WBITS) if deflate else None

    async def handshake(self, daemon: RunningDaemon, path: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        head = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {daemon.token}\r\n"
        )
        if self.inflate is not None:
            head += "Sec-WebSocket-Extensions: permessage-deflate\r\n"
        await self.sock.send((head + "\r\n").encode())
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += await self._recv()
        status, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert b" 101 " in status.split(b"\r\n")[0], status
        assert (b"permessage-deflate" in status.lower()) == (self.inflate is not None)

    async def _recv(self) -> bytes:
        data = await self.sock.recv(65536)
        assert data, "the daemon closed the socket"
        return data

    async def frame(self) -> tuple[int, int, bytes]:
        """The next frame: (first byte's flags FIN|RSV1|..., opcode, payload decoded)."""
        while True:
            parsed = _parse_frame(self.buffer)
            if parsed is not None:
                flags, opcode, payload, self.buffer = parsed
                break
            self.buffer += await self._recv()
        if flags & 0x40:  # RSV1: compressed (permessage-deflate, RFC 7692)
            assert self.inflate is not None
            payload = self.inflate.decompress(payload + b"\x00\x00\xff\xff")
        return flags, opcode, payload


def _parse_frame(buffer: bytes) -> tuple[int, int, bytes, bytes] | None:
    if len(buffer) < 2:
        return None
    assert not buffer[1] & 0x80, "server frames are never masked"
    length, start = buffer[1] & 0x7F, 2
    if length == 126:
        length, start = int.from_bytes(buffer[2:4], "big"), 4
    elif length == 127:
        length, start = int.from_bytes(buffer[2:10], "big"), 10
    if len(buffer) < start + length:
        return None
    return (
        buffer[0] & 0xF0,
        buffer[0] & 0x0F,
        buffer[start : start + length],
        buffer[start + length :],
    )


async def read_events_upto(watcher: RawWatcher, last: int) -> list[int]:
    """Every event frame's seq up to `last`, checking each frame is one whole event."""
    seqs: list[int] = []
    with trio.fail_after(30):
        while not seqs or seqs[-1] < last:
            flags, opcode, payload = await watcher.frame()
            if opcode in (0x9, 0xA):  # ping/pong: hypercorn's, not ours
                continue
            assert flags & 0x80, "FIN: every message is one frame"
            assert opcode == 0x1, f"a text frame, got opcode {opcode}"
            event = json.loads(payload)  # one JSON object, not two run together
            assert isinstance(event, dict) and event["type"] == "text-delta"
            seqs.append(event["seq"])
    return seqs


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "permessage-deflate"])
async def test_a_watcher_that_falls_behind_gets_every_event_once_one_per_frame(
    daemon: RunningDaemon, deflate: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_module, "WATCHER_BUFFER", 256)  # overflowed by a few MB
    sid = await new_session(daemon)
    log = await log_of(daemon, sid)
    backlog, live = 2000, 500
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with sock:
        await sock.connect(("127.0.0.1", int(daemon.tcp_url.rsplit(":", 1)[1])))
        watcher = RawWatcher(sock, deflate)
        await watcher.handshake(daemon, f"/sessions/{sid}/stream?after=0")
        await _wait_watchers(log, 1)
        # Not reading: the daemon's sends block, its channel fills, it is dropped.
        with trio.fail_after(30):
            for i in range(backlog):
                await log.append("text-delta", {"message_id": "m", "text": f"{i}{PAYLOAD}"})
            await log.wait_committed(log.last_seq)
        dropped = log.watcher_count == 0
        # Now it reads, catching up from storage while live events keep coming.
        async with trio.open_nursery() as nursery:

            async def keep_appending() -> None:
                for i in range(live):
                    await log.append("text-delta", {"message_id": "m", "text": f"live{i}"})
                    if i % 50 == 49:
                        await trio.sleep(0)

            nursery.start_soon(keep_appending)
            seqs = await read_events_upto(watcher, backlog + live)
    assert dropped, "the watcher never fell behind: the test did not test catching up"
    assert seqs == list(range(1, backlog + live + 1))


def test_frame_cache_encodes_once_and_stays_bounded() -> None:
    calls: list[int] = []

    def encoder(seq: int, size: int = 10) -> Any:
        def encode() -> str:
            calls.append(seq)
            return "x" * size

        return encode

    cache = FrameCache(entries=3, max_bytes=25, max_item=12)
    first = cache.get(("s", 1, "ws"), encoder(1))
    assert cache.get(("s", 1, "ws"), encoder(1)) is first and calls == [1]
    cache.get(("s", 1, "sse"), encoder(1))  # another view of the same event: its own text
    assert calls == [1, 1]
    cache.get(("s", 2, "ws"), encoder(2))  # 30 bytes > 25: the oldest goes
    assert len(cache) == 2
    cache.get(("s", 1, "ws"), encoder(1))
    assert calls == [1, 1, 2, 1]
    big = cache.get(("s", 3, "ws"), encoder(3, size=100))  # over max_item: not kept
    assert len(big) == 100 and ("s", 3, "ws") not in cache._items
    for seq in range(4, 10):
        cache.get(("s", seq, "ws"), encoder(seq, size=1))
    assert len(cache) == 3
