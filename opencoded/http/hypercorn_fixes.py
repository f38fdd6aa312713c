"""A fix to hypercorn 0.18's Trio TCP server, applied once at start (see docs/architecture.md).

When a client closes a keep-alive connection that is idle, hypercorn's read loop sees the
end of the stream, but the connection's idle timer keeps its task group open until
`keep_alive_timeout`: the server side of every closed connection stays open for 30 s. A
client polling a few times a second holds hundreds of descriptors, and the daemon reaches
EMFILE. Stopping the timer when the read loop ends lets the connection close at once.
"""

from __future__ import annotations

from hypercorn.trio.tcp_server import TCPServer

_original_read_data = TCPServer._read_data


async def _read_data_then_stop_idle_timer(self: TCPServer) -> None:
    try:
        await _original_read_data(self)
    finally:
        await self.idle_task.stop()


def apply() -> None:
    TCPServer._read_data = _read_data_then_stop_idle_timer  # type: ignore[method-assign]
