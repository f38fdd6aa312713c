"""Two fixes to hypercorn 0.18's Trio TCP server, applied once at start (see
docs/architecture.md). Each has a test that fails without it.

1. When a client closes a keep-alive connection that is idle, hypercorn's read loop sees the
   end of the stream, but the connection's idle timer keeps its task group open until
   `keep_alive_timeout`: the server side of every closed connection stayed open for 30 s, and
   a client polling a few times a second piled up descriptors towards EMFILE. Stopping the
   timer when the read loop ends lets the connection close at once
   (tests/test_lifecycle.py).
2. A protocol error inside one connection (h11's LocalProtocolError when bytes follow a
   refused WebSocket handshake on the same connection) escaped `TCPServer.run` and took the
   whole server down: any client could stop the daemon with one packet. One connection's
   failure now ends that connection only (tests/test_ws_refused_reuse.py).

`apply` also installs the batched WebSocket send of `ws_frames` (not a fix: a fast path).
"""

from __future__ import annotations

import logging

from hypercorn.trio.tcp_server import TCPServer

from . import ws_frames

log = logging.getLogger(__name__)

_original_read_data = TCPServer._read_data
_original_run = TCPServer.run


async def _read_data_then_stop_idle_timer(self: TCPServer) -> None:
    try:
        await _original_read_data(self)
    finally:
        await self.idle_task.stop()


async def _run_one_connection(self: TCPServer) -> None:
    try:
        await _original_run(self)
    except Exception:
        log.warning("connection dropped after a protocol error", exc_info=True)


def apply() -> None:
    TCPServer._read_data = _read_data_then_stop_idle_timer  # type: ignore[method-assign]
    TCPServer.run = _run_one_connection  # type: ignore[method-assign]
    ws_frames.apply()
