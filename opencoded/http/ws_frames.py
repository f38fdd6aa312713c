"""Several WebSocket frames in one socket write, and each event's text encoded once.

ASGI sends one `websocket.send` per message, and under hypercorn each one is its own trip
through Quart, hypercorn's stream, wsproto, a send lock, a shielded `send_all` and a
`send()` system call (~140 µs per frame on the development machine, most of it the system
call). A watcher of a busy session gets events in bursts (`EventLog.follow_batches`), so
this module lets the stream route hand hypercorn a whole batch at once:

- `SEND_FRAMES`, an ASGI message of our own (`{"type": SEND_FRAMES, "texts": [...]}`) that
  the patched `WSStream.app_send` turns into one text frame per item (still one event per
  frame, each framed, and compressed if negotiated, by the connection's wsproto) written in
  one transport write;
- `FrameBatchWebsocket.send_frames`, the Quart side, which falls back to one send per
  frame when the patch is not applied;
- `FrameCache`: every watcher of a session receives the same events, so each event's
  frame text is encoded once and shared, not once per watcher; so are its frame bytes
  (`plain_frame`), used for every connection that does not compress (permessage-deflate
  is per connection, so those frames still go through the connection's wsproto).

Frames written this way are atomic with respect to pings and error frames (wsproto's
`send` is synchronous and hypercorn writes under its send lock), as single sends are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from hypercorn.protocol.events import Data
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.utils import UnexpectedMessageError
from quart_trio.asgi import TrioASGIWebsocketConnection
from quart_trio.wrappers import TrioWebsocket
from wsproto.connection import ConnectionState
from wsproto.events import TextMessage

SEND_FRAMES = "opencode.websocket.send_frames"

_original_app_send = WSStream.app_send
_PLAIN = "_opencode_plain_frames"  # set on a WSStream once its first frame is compared
_applied = False


async def _app_send(self: WSStream, message: Any) -> None:
    if message is None or message["type"] != SEND_FRAMES:
        await _original_app_send(self, message)
        return
    if self.closed:
        return  # as for websocket.send: the app may finish after the close
    if self.state != ASGIWebsocketState.CONNECTED:
        raise UnexpectedMessageError(self.state, message["type"])
    data = _encode(self, message["texts"], message.get("frames"))
    if data:
        await self.send(Data(stream_id=self.stream_id, data=data))


def _encode(stream: WSStream, texts: Sequence[str], frames: Sequence[bytes] | None) -> bytes:
    """The frames' bytes: the shared `plain_frame`s where this connection's wsproto would
    write exactly those (checked on its first frame: not so when it compresses), else
    wsproto's own encoding of each text."""
    connection = stream.connection
    if not texts or connection.state != ConnectionState.OPEN:
        return b""  # closing: as with a single send, the frames are dropped silently
    chunks, start = [], 0
    if frames is not None:
        plain = getattr(stream, _PLAIN, None)
        if plain is None:
            chunks.append(connection.send(TextMessage(data=texts[0])))
            plain, start = chunks[0] == frames[0], 1
            setattr(stream, _PLAIN, plain)
        if plain:
            return b"".join([*chunks, *frames[start:]])
    chunks += [connection.send(TextMessage(data=text)) for text in texts[start:]]
    return b"".join(chunks)


def plain_frame(text: str) -> bytes:
    """A final, unmasked, uncompressed text frame (RFC 6455 5.2), as a server sends it:
    the same bytes for every watcher of the event."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def apply() -> None:
    """Teach hypercorn's WebSocket stream the SEND_FRAMES message (once, at start)."""
    global _applied
    WSStream.app_send = _app_send  # type: ignore[method-assign]
    _applied = True


class FrameBatchWebsocket(TrioWebsocket):
    _send_frames: Callable[[Sequence[str], Sequence[bytes] | None], Awaitable[None]] | None = None

    async def send_frames(
        self, texts: Sequence[str], frames: Sequence[bytes] | None = None
    ) -> None:
        """One text message per item, written together when the server supports it.

        `frames`, if given, are the texts' `plain_frame`s, shared between watchers."""
        await self.accept()
        if self._send_frames is not None:
            await self._send_frames(texts, frames)
            return
        for text in texts:
            await self._send(text)


class FrameBatchWebsocketConnection(TrioASGIWebsocketConnection):
    def _create_websocket_from_scope(self, send: Any) -> Any:
        websocket = super()._create_websocket_from_scope(send)
        if _applied and isinstance(websocket, FrameBatchWebsocket):
            websocket._send_frames = partial(_send_frames, send)
        return websocket


async def _send_frames(send: Any, texts: Sequence[str], frames: Sequence[bytes] | None) -> None:
    await send({"type": SEND_FRAMES, "texts": texts, "frames": frames})


class FrameCache:
    """Wire texts of recent events by (session, seq, view): built by the first watcher that
    needs one, reused by the others. Bounded in entries and bytes (oldest out first);
    a committed event never changes, so an entry is never stale."""

    def __init__(self, entries: int = 4096, max_bytes: int = 8 << 20, max_item: int = 64 << 10):
        self._items: dict[tuple[str, int, str], Any] = {}
        self._sizes: dict[tuple[str, int, str], int] = {}
        self._bytes = 0
        self._entries, self._max_bytes, self._max_item = entries, max_bytes, max_item

    def get(
        self, key: tuple[str, int, str], encode: Callable[[], Any], size: Callable[[Any], int] = len
    ) -> Any:
        item = self._items.get(key)
        if item is not None:
            return item
        item = encode()
        item_size = size(item)
        if item_size <= self._max_item:
            self._items[key], self._sizes[key] = item, item_size
            self._bytes += item_size
            while len(self._items) > self._entries or self._bytes > self._max_bytes:
                oldest = next(iter(self._items))
                del self._items[oldest]
                self._bytes -= self._sizes.pop(oldest)
        return item

    def __len__(self) -> int:
        return len(self._items)
