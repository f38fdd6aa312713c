"""One durable, ordered event log per session, and the watchers that follow it.

An event gets its `seq` when appended, is queued to storage, and is handed to watchers
only from the storage commit callback, so no client ever sees an event that a crash
could lose. The turn never waits on the database per event, only when the writer is
behind (backpressure, see storage.store).

Watchers get events through bounded memory channels. A watcher that falls behind is
not allowed to hold memory: its channel is closed, and `follow` transparently re-reads
the missed events from storage and subscribes again. So a slow reader costs database
reads, never daemon memory, and never slows the turn or other watchers.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, cast

import trio

from ..records import Event
from ..storage import Store
from ..storage.store import QueuedEvent

# Events a live watcher may lag before it is dropped (and catches up from storage). One
# storage commit publishes up to store.MAX_BATCH_EVENTS of a session at once: a smaller
# buffer dropped every watcher at each burst and sent them all to SQLite to read the same
# events back. The buffered events are the ones all watchers share, not copies.
WATCHER_BUFFER = 2048
# How long a closing log's followers wait for events still being written.
CLOSE_DRAIN = 2.0


def _same_but(a: dict[str, Any], b: dict[str, Any], field: str) -> bool:
    return len(a) == len(b) and all(v == a.get(k) for k, v in b.items() if k != field)


class _Watcher:
    __slots__ = ("receive", "send")

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[Event](WATCHER_BUFFER)


class EventLog:
    def __init__(self, session_id: str, store: Store, last_seq: int) -> None:
        self.session_id = session_id
        self._store = store
        self.last_seq = last_seq  # the last seq handed out
        self.committed_seq = last_seq  # the last seq stored and published (or lost)
        self.lost = 0  # events whose write failed (a turn that sees this grow stops)
        self._watchers: set[_Watcher] = set()
        self._committed = trio.Event()
        self._closed = False
        self._queued: tuple[Event, QueuedEvent] | None = None  # the last event appended

    async def append(self, type: str, data: dict[str, Any]) -> Event:
        """Give the event the next seq and queue it; watchers see it once it is stored.

        Returns at once while storage keeps up; waits while the writer is behind.
        """
        await self._store.event_room()
        event = self.reserve(type, data)
        self._queued = (event, self._store.queue_event(event, self._on_commit, self._on_lost))
        return event

    async def append_text(self, type: str, data: dict[str, Any], field: str = "text") -> Event:
        """`append`, except that while this log's previous event is of the same type and
        data (but `field`) and still waits for the writer, it grows by `field` instead.

        So the deltas that arrive while the daemon is behind (or in one provider read,
        before the writer runs) become one event: one row, one frame, one JSON encode,
        where each token would cost all of that. A daemon that keeps up still sends every
        delta on its own. The merged event keeps its seq; nobody has seen it yet.
        """
        queued = self._queued
        if queued is not None:
            last, place = queued
            if (
                last.seq == self.last_seq
                and last.type == type
                and _same_but(last.data, data, field)
            ):
                text = last.data[field] + data[field]
                merged = Event(last.session_id, last.seq, type, {**data, field: text}, last.created)
                if self._store.replace_queued(place, merged):
                    self._queued = (merged, place)
                    return merged
        return await self.append(type, data)

    def reserve(self, type: str, data: dict[str, Any]) -> Event:
        """The next event, with its seq, not queued: for a write that stores it with
        other records in one transaction (`callbacks` publishes it once committed)."""
        self.last_seq += 1
        return Event(self.session_id, self.last_seq, type, data, time.time())

    @property
    def callbacks(self) -> tuple[Callable[[Event], None], Callable[[Event], None]]:
        return self._on_commit, self._on_lost

    async def wait_committed(self, seq: int) -> None:
        while self.committed_seq < seq:
            await self._committed.wait()

    def _on_commit(self, event: Event) -> None:
        if self._queued is not None and self._queued[0].seq <= event.seq:
            self._queued = None  # written: nothing to merge into any more
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

    def publish_stored(self, events: list[Event]) -> None:
        """Events another instance stored (read back by seq, in order): publish those
        this log has not seen, as if committed here. The cluster's seam (docs/scaling.md)."""
        for event in events:
            if event.seq > self.committed_seq:
                self.last_seq = max(self.last_seq, event.seq)
                self._on_commit(event)

    def _on_lost(self, event: Event) -> None:
        """The write failed: no one will see the event, but no one may wait for it either."""
        if self._queued is not None and self._queued[0].seq <= event.seq:
            self._queued = None
        self.lost += 1
        self.committed_seq = max(self.committed_seq, event.seq)
        self._committed.set()
        self._committed = trio.Event()

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

    @property
    def buffered(self) -> int:
        """Events held in memory for live watchers now (at most WATCHER_BUFFER each)."""
        return sum(w.send.statistics().current_buffer_used for w in self._watchers)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """The session is gone (deleted, or the daemon is stopping): end every follower.

        Followers first receive every event appended before the close (waiting a bounded
        time for the ones still being written), so a turn's final `complete` is not lost.
        """
        self._closed = True
        for watcher in list(self._watchers):
            self._unsubscribe(watcher)

    def follow(self, after: int = 0, *, until_seq: float = math.inf) -> AsyncIterator[Event]:
        """Every event with seq > after, replayed from storage then live, no gap, no duplicate.

        Ends at `until_seq` or when the log is closed.
        """
        return cast(AsyncIterator[Event], self._flatten(self._follow(after, until_seq, None)))

    def follow_with_heartbeats(
        self, after: int, interval: float, *, until_seq: float = math.inf
    ) -> AsyncIterator[Event | None]:
        """As `follow`, but yields None after each `interval` seconds without an event.

        A stream view needs to wake up on idle to send a heartbeat; doing it here keeps
        the wait a cancellable channel receive (no item is lost to the timeout), whereas
        timing out a whole `follow()` step from outside would kill the generator.
        """
        return self._flatten(self._follow(after, until_seq, interval))

    def follow_batches(
        self, after: int, *, heartbeat: float | None = None, until_seq: float = math.inf
    ) -> AsyncIterator[list[Event] | None]:
        """As `follow`, in lists of whatever is ready at once (None: a heartbeat is due).

        A view that can write several events in one go (SSE) pays its per-write cost
        once per batch instead of once per event, which is what keeps a watcher that
        is behind (replaying, or live under a burst of deltas) from staying behind.
        """
        return self._follow(after, until_seq, heartbeat)

    @staticmethod
    async def _flatten(
        batches: AsyncIterator[list[Event] | None],
    ) -> AsyncIterator[Event | None]:
        async with aclosing(batches):  # type: ignore[type-var]
            async for batch in batches:
                if batch is None:
                    yield None
                else:
                    for event in batch:
                        yield event

    async def _follow(
        self, after: int, until_seq: float, idle: float | None
    ) -> AsyncIterator[list[Event] | None]:
        # Subscribing and reading `committed_seq` happen in one synchronous step, so every
        # event is either in the replayed range or delivered on the channel, never both.
        cursor = after
        while cursor < until_seq:
            if self._closed:
                with trio.move_on_after(CLOSE_DRAIN):
                    await self.wait_committed(self.last_seq)
                upto = min(self.committed_seq, until_seq)
                while batch := await self._stored(cursor, upto):
                    cursor = batch[-1].seq
                    yield batch
                return
            watcher, live_from = self._subscribe()
            try:
                upto = min(live_from, until_seq)
                while batch := await self._stored(cursor, upto):
                    cursor = batch[-1].seq
                    yield batch
                while cursor < until_seq:
                    try:
                        first = await _receive(watcher.receive, idle)
                    except trio.EndOfChannel:
                        break  # dropped (too far behind) or closed: go round again
                    if first is None:
                        yield None  # idle for `idle` seconds
                        continue
                    ready = _drain(watcher.receive, first)
                    batch = [e for e in ready if cursor < e.seq <= until_seq]
                    if batch:
                        cursor = batch[-1].seq
                        yield batch
            finally:
                self._unsubscribe(watcher)

    async def _stored(self, after: int, upto: float) -> list[Event]:
        """The next batch of stored events with after < seq <= upto (empty: none left)."""
        if after >= upto:
            return []
        return [e for e in await self._store.read_events(self.session_id, after) if e.seq <= upto]


def _drain(channel: trio.MemoryReceiveChannel[Event], first: Event) -> list[Event]:
    """`first` and everything already buffered behind it (never waits)."""
    events = [first]
    while True:
        try:
            events.append(channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return events


async def _receive(channel: trio.MemoryReceiveChannel[Event], idle: float | None) -> Event | None:
    """The next event; None after `idle` quiet seconds (a cancelled receive loses nothing)."""
    if idle is None:
        return await channel.receive()
    with trio.move_on_after(idle):
        return await channel.receive()
    return None


class Broadcaster:
    """Fan-out of non-durable notices (the daemon-wide feed), dropping slow listeners.

    A dropped listener's `listen()` ends (after what it had buffered): the notices are
    not stored, so the client cannot resume and must re-read the state it mirrors.
    """

    def __init__(self, buffer: int = 256) -> None:
        self._buffer = buffer
        self._listeners: set[trio.MemorySendChannel[dict[str, Any]]] = set()
        self._closed = False

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    def publish(self, notice: dict[str, Any]) -> None:
        for send in list(self._listeners):
            try:
                send.send_nowait(notice)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._listeners.discard(send)
                send.close()

    def close(self) -> None:
        """End every listener (after what it has buffered) and refuse new ones."""
        self._closed = True
        for send in list(self._listeners):
            self._listeners.discard(send)
            send.close()

    def listen(self) -> AsyncIterator[dict[str, Any]]:
        """Every notice published from now on (the listener is registered at once)."""
        return cast(AsyncIterator[dict[str, Any]], self._listen(None))

    def listen_with_heartbeats(self, interval: float) -> AsyncIterator[dict[str, Any] | None]:
        """As `listen`, but yields None after each `interval` seconds without a notice."""
        return self._listen(interval)

    def _listen(self, idle: float | None) -> AsyncIterator[dict[str, Any] | None]:
        # Registered now, not at the first iteration: a view that returns its response
        # headers before reading the first notice must not miss what happens meanwhile.
        send, receive = trio.open_memory_channel[dict[str, Any]](self._buffer)
        if self._closed:
            send.close()
        else:
            self._listeners.add(send)
        return self._receive(send, receive, idle)

    async def _receive(
        self,
        send: trio.MemorySendChannel[dict[str, Any]],
        receive: trio.MemoryReceiveChannel[dict[str, Any]],
        idle: float | None,
    ) -> AsyncIterator[dict[str, Any] | None]:
        try:
            while True:
                with trio.move_on_after(math.inf if idle is None else idle) as idle_scope:
                    try:
                        notice = await receive.receive()
                    except trio.EndOfChannel:
                        return
                yield None if idle_scope.cancelled_caught else notice
        finally:
            self._listeners.discard(send)
            send.close()
