"""One durable, ordered event log per session, and the watchers that follow it.

An event gets its `seq` when appended, is queued to storage, and is handed to watchers
only from the storage commit callback, so no client ever sees an event that a crash
could lose. The turn never waits on the database per event (see storage.base).

Watchers get events through bounded memory channels. A watcher that falls behind is
not allowed to hold memory: its channel is closed, and `follow` transparently re-reads
the missed events from storage and subscribes again. So a slow reader costs database
reads, never daemon memory, and never slows the turn or other watchers.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Any

import trio

from ..records import Event
from ..storage import Store

WATCHER_BUFFER = 256


class _Watcher:
    __slots__ = ("receive", "send")

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[Event](WATCHER_BUFFER)


class EventLog:
    def __init__(self, session_id: str, store: Store, last_seq: int) -> None:
        self.session_id = session_id
        self._store = store
        self.last_seq = last_seq  # the last seq handed out
        self.committed_seq = last_seq  # the last seq stored and published
        self._watchers: set[_Watcher] = set()
        self._committed = trio.Event()

    def append(self, type: str, data: dict[str, Any]) -> Event:
        """Give the event the next seq and queue it; watchers see it once it is stored."""
        self.last_seq += 1
        event = Event(self.session_id, self.last_seq, type, data, time.time())
        self._store.append_event(event, self._on_commit)
        return event

    async def wait_committed(self, seq: int) -> None:
        while self.committed_seq < seq:
            await self._committed.wait()

    def _on_commit(self, event: Event) -> None:
        self.committed_seq = event.seq
        self._committed.set()
        self._committed = trio.Event()
        for watcher in list(self._watchers):
            try:
                watcher.send.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                # Too far behind (or gone): drop it; follow() catches up from storage.
                self._watchers.discard(watcher)
                watcher.send.close()

    def _subscribe(self) -> tuple[_Watcher, int]:
        """Register a watcher; return it with the last seq it will not receive live."""
        watcher = _Watcher()
        self._watchers.add(watcher)
        return watcher, self.committed_seq

    def _unsubscribe(self, watcher: _Watcher) -> None:
        self._watchers.discard(watcher)
        watcher.send.close()

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    async def follow(self, after: int = 0, *, until_seq: float = math.inf) -> AsyncIterator[Event]:
        """Every event with seq > after, replayed from storage then live, no gap, no duplicate.

        Subscribing and reading `committed_seq` happen in one synchronous step, so every
        event is either in the replayed range or delivered on the channel, never both.
        """
        cursor = after
        while cursor < until_seq:
            watcher, live_from = self._subscribe()
            try:
                while cursor < live_from:
                    batch = await self._store.read_events(self.session_id, cursor)
                    batch = [e for e in batch if e.seq <= live_from]
                    if not batch:
                        break
                    for event in batch:
                        cursor = event.seq
                        yield event
                async for event in watcher.receive:
                    if event.seq <= cursor:
                        continue
                    cursor = event.seq
                    yield event
                    if cursor >= until_seq:
                        return
            finally:
                self._unsubscribe(watcher)


class Broadcaster:
    """Fan-out of non-durable notices (the daemon-wide feed), dropping slow listeners."""

    def __init__(self, buffer: int = 256) -> None:
        self._buffer = buffer
        self._listeners: set[trio.MemorySendChannel[dict[str, Any]]] = set()

    def publish(self, notice: dict[str, Any]) -> None:
        for send in list(self._listeners):
            try:
                send.send_nowait(notice)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._listeners.discard(send)
                send.close()

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](self._buffer)
        self._listeners.add(send)
        try:
            async for notice in receive:
                yield notice
        finally:
            self._listeners.discard(send)
            send.close()
