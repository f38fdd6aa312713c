"""The Store: what the daemon sees of storage. Reads go straight to the backend; every
write goes through one writer task that commits in groups.

Ownership: `open_store(backend)` opens a nursery that owns the writer task and yields
the Store; leaving it closes the queue, lets the writer commit what was queued (bounded
by CLOSE_BUDGET), then closes the backend. Nothing runs outside that task tree.

The writer: jobs arrive on a bounded memory channel, so a slow disk pushes back on
whoever writes (a streaming turn waits in `event_room`) instead of growing memory. The
writer takes everything queued while it was busy and hands it to the backend as one
transaction (group commit: under load a thousand token events are one commit; idle, a
write still commits at once). Events appended back to back share one job, so an event
costs a row, not a queue round trip. Jobs commit in the order they were queued, and
results are delivered in that order on the Trio thread, which is what lets the event
log publish events in seq order. A failing write or a failing backend never kills the
writer: the jobs get a StoreError, `failure` says why (GET /health answers 503) until a
later commit succeeds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from time import perf_counter
from typing import Any

import trio

from ..metrics import COMMIT_BUCKETS, Histogram
from ..records import Event, Message, PermissionRequest, Project, Session, Turn
from . import ops
from .base import Backend, MessagesHead, SessionSnapshot, StoreConflict, StoreError

log = logging.getLogger(__name__)

QUEUE_JOBS = 64  # jobs waiting for the writer; the bound that pushes back
MAX_BATCH_EVENTS = 1000  # events per job
MAX_GROUP = 256  # jobs per transaction
CLOSE_BUDGET = 1.5  # seconds the writer may take to commit what is queued at close

EventCallback = Callable[[Event], None]


class _Job:
    """One queued write; `finish` runs on the Trio thread with the backend's result."""

    __slots__ = ()

    def op(self) -> ops.WriteOp:
        raise NotImplementedError

    def finish(self, result: Any) -> None:
        raise NotImplementedError


class _Awaited(_Job):
    __slots__ = ("_op", "done", "result")

    def __init__(self, op: ops.WriteOp) -> None:
        self._op = op
        self.done = trio.Event()
        self.result: Any = None

    def op(self) -> ops.WriteOp:
        return self._op

    def finish(self, result: Any) -> None:
        self.result = result
        self.done.set()

    async def wait(self) -> Any:
        """Return the op's result once committed; raise StoreError if it failed."""
        await self.done.wait()
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    @property
    def failed(self) -> bool:
        return self.done.is_set() and isinstance(self.result, BaseException)


PendingWrite = _Awaited  # what `start_turn` and `queue_close_turn` give back


class _Publishing(_Awaited):
    """An awaited op that also stores events: they are published once committed."""

    __slots__ = ("callbacks",)

    def __init__(self, op: ops.WriteOp, callbacks: Sequence[tuple[EventCallback, EventCallback]]):
        super().__init__(op)
        self.callbacks = callbacks

    def finish(self, result: Any) -> None:
        events = getattr(self._op, "events", ())
        failed = isinstance(result, BaseException)
        for event, (committed, lost) in zip(events, self.callbacks, strict=True):
            (lost if failed else committed)(event)
        super().finish(result)


class _EventBatch(_Job):
    """Events appended back to back. It takes more events until the writer takes it or
    another job is queued behind it, so commit order is exactly append order."""

    __slots__ = ("callbacks", "events", "sealed")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.callbacks: list[tuple[EventCallback, EventCallback]] = []
        self.sealed = False

    def op(self) -> ops.WriteOp:
        self.sealed = True
        return ops.InsertEvents(self.events)

    def finish(self, result: Any) -> None:
        failed: set[int] | None = None if isinstance(result, BaseException) else result
        for i, (event, (committed, lost)) in enumerate(
            zip(self.events, self.callbacks, strict=True)
        ):
            if failed is not None and i not in failed:
                committed(event)
            else:
                lost(event)
        self.callbacks = []  # done: an event log still pointing here must not keep others


QueuedEvent = tuple[_EventBatch, int]  # an event's place in the write queue


class Store:
    """Use `open_store(backend)`; see the module docstring."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._send, self._receive = trio.open_memory_channel[_Job](QUEUE_JOBS)
        self._batch: _EventBatch | None = None  # the open event batch
        self._room = trio.Event()  # set whenever the writer takes jobs off the channel
        self.failure: StoreError | None = None  # the last database failure, until a success
        self.closed = False
        self.drained = False
        self.events_queued = 0  # for GET /metrics, with the commit durations
        self.commit_seconds = Histogram(COMMIT_BUCKETS)

    # ---- the writer ----------------------------------------------------------------

    async def _run_writer(self, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        async with self._receive:
            async for first in self._receive:
                jobs = [first, *_drain(self._receive, MAX_GROUP - 1)]
                self._room.set()
                self._room = trio.Event()
                await self._commit(jobs)
                # Not held while waiting for the next job: a group is up to MAX_GROUP
                # batches of events a slower backend (PostgreSQL) makes bigger.
                del jobs, first
        self.drained = True  # closed, and everything queued was committed

    async def _commit(self, jobs: list[_Job]) -> None:
        work = [job.op() for job in jobs]  # seals the event batches among them
        if self._batch is not None and self._batch.sealed:
            self._batch = None
        started = perf_counter()
        try:
            results = await self.backend.apply(work)
        except Exception as exc:
            error = exc if isinstance(exc, StoreError) else _unexpected(exc)
            log.error("database write failed: %s", error)
            results = [error] * len(jobs)
            self.failure = error
        else:
            errors = [r for r in results if isinstance(r, StoreError)]
            real = [e for e in errors if not isinstance(e, StoreConflict)]
            self.failure = real[-1] if real else None
            for error in real:
                log.error("database write failed: %s", error)
        self.commit_seconds.observe(perf_counter() - started)
        for job, result in zip(jobs, results, strict=True):
            job.finish(result)

    # ---- queueing --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise StoreError("the store is closed")

    async def _queue(self, job: _Job) -> None:
        self._check_open()
        try:
            await self._send.send(job)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise StoreError("the store is closed") from None
        self._batch = None  # events appended once this returns commit after the job

    async def _write(self, op: ops.WriteOp) -> Any:
        job = _Awaited(op)
        await self._queue(job)
        return await job.wait()

    async def event_room(self) -> None:
        """Return once `queue_event` can take an event without exceeding the bound.

        Returns at once (no checkpoint) while the writer keeps up; waits while it is
        behind, which is how a slow disk slows the turns that feed it.
        """
        while not self._has_room():
            self._check_open()
            await self._room.wait()

    @property
    def queued_jobs(self) -> int:
        """Writes waiting for the writer (events appended back to back are one)."""
        return self._send.statistics().current_buffer_used

    def _has_room(self) -> bool:
        batch = self._batch
        if batch is not None and not batch.sealed and len(batch.events) < MAX_BATCH_EVENTS:
            return True
        return self._send.statistics().current_buffer_used < QUEUE_JOBS

    def queue_event(
        self, event: Event, on_commit: EventCallback, on_lost: EventCallback
    ) -> QueuedEvent:
        """Queue the event (call `event_room` first); exactly one callback runs later, on
        the Trio thread, in queue order: on_commit once it is durable, else on_lost.
        The result lets `replace_queued` change the event while it still waits."""
        self._check_open()
        batch = self._batch
        if batch is None or batch.sealed or len(batch.events) >= MAX_BATCH_EVENTS:
            batch = _EventBatch()
            self._send.send_nowait(batch)  # WouldBlock here means event_room was skipped
            self._batch = batch
        batch.events.append(event)
        batch.callbacks.append((on_commit, on_lost))
        self.events_queued += 1
        return batch, len(batch.events) - 1

    @staticmethod
    def replace_queued(queued: QueuedEvent, event: Event) -> bool:
        """Put `event` in place of a queued one if the writer has not taken it yet (its
        batch is not sealed); False if it has. The caller keeps the seq order (same seq)."""
        batch, index = queued
        if batch.sealed:
            return False
        batch.events[index] = event
        return True

    async def append_event(
        self, event: Event, on_commit: EventCallback, on_lost: EventCallback | None = None
    ) -> None:
        """`event_room` then `queue_event`: for callers outside an event log."""
        await self.event_room()
        self.queue_event(event, on_commit, on_lost or _ignore)

    # ---- reads: the backend's, as they are ------------------------------------------

    async def ping(self) -> None:
        await self.backend.ping()
        if self.failure is not None:
            # A backend that can test a write (storage.postgres) clears the failure once
            # writes work again, so an idle instance behind a load balancer, which gets
            # no write while its health says 503, is not out for good.
            probe = getattr(self.backend, "probe_write", None)
            if probe is None:
                raise self.failure
            await probe()
            self.failure = None

    async def get_project(self, project_id: str) -> Project | None:
        return await self.backend.get_project(project_id)

    async def find_project_by_path(self, path: str) -> Project | None:
        return await self.backend.find_project_by_path(path)

    async def list_projects(self) -> list[Project]:
        return await self.backend.list_projects()

    async def get_session(self, session_id: str) -> Session | None:
        return await self.backend.get_session(session_id)

    async def list_sessions(
        self, *, limit: int, before: str | None = None, project: str | None = None
    ) -> list[Session]:
        return await self.backend.list_sessions(limit=limit, before=before, project=project)

    async def stale_sessions(self, updated_before: int) -> list[str]:
        return await self.backend.stale_sessions(updated_before)

    async def session_snapshot(
        self, session_id: str, *, with_last_seq: bool, known: MessagesHead | None = None
    ) -> SessionSnapshot | None:
        return await self.backend.session_snapshot(
            session_id, with_last_seq=with_last_seq, known=known
        )

    async def read_events(self, session_id: str, after: int, limit: int = 1000) -> list[Event]:
        return await self.backend.read_events(session_id, after, limit)

    async def last_seq(self, session_id: str) -> int | None:
        return await self.backend.last_seq(session_id)

    async def list_messages(self, session_id: str) -> list[Message]:
        return await self.backend.list_messages(session_id)

    async def get_turn(self, turn_id: str) -> Turn | None:
        return await self.backend.get_turn(turn_id)

    async def running_turns(self) -> list[Turn]:
        return await self.backend.running_turns()

    async def get_permission(self, request_id: str) -> PermissionRequest | None:
        return await self.backend.get_permission(request_id)

    async def pending_permissions(self, session_id: str) -> list[PermissionRequest]:
        return await self.backend.pending_permissions(session_id)

    async def last_event(self, session_id: str, type: str) -> Event | None:
        return await self.backend.last_event(session_id, type)

    async def vacuum(self) -> None:
        await self.backend.vacuum()

    # ---- writes: each returns once committed -------------------------------------------

    async def create_project(self, project: Project) -> Project:
        return await self._write(ops.CreateProject(project))

    async def delete_project(self, project_id: str) -> bool:
        return await self._write(ops.DeleteProject(project_id))

    async def create_session(self, session: Session, new_project: Project | None = None) -> Session:
        return await self._write(ops.CreateSession(session, new_project))

    async def update_session(self, session: Session) -> None:
        await self._write(ops.UpdateSession(session))

    async def delete_sessions(
        self, ids: Sequence[str], *, updated_before: int | None = None
    ) -> list[str]:
        if not ids:
            return []
        return await self._write(ops.DeleteSessions(list(ids), updated_before))

    async def delete_session(self, session_id: str) -> bool:
        return bool(await self.delete_sessions([session_id]))

    async def save_message(self, message: Message) -> None:
        await self._write(ops.SaveMessage(message))

    async def save_turn(self, turn: Turn) -> None:
        await self._write(ops.SaveTurn(turn))

    async def touch_turns(self, turn_ids: Sequence[str], at: float) -> list[str] | None:
        """A shared backend returns the ids of the turns asked to abort elsewhere."""
        return await self._write(ops.TouchTurns(list(turn_ids), at))

    async def save_permission(self, request: PermissionRequest) -> None:
        await self._write(ops.SavePermission(request))

    async def expire_permissions(self, turn_ids: Sequence[str]) -> int:
        return await self._write(ops.ExpirePermissions(list(turn_ids))) if turn_ids else 0

    async def flush(self) -> None:
        await self._write(ops.Flush())

    async def start_turn(self, message: Message, turn: Turn) -> PendingWrite:
        """Queue a turn's user message and Turn record; return without waiting for the
        commit (`await result.wait()` for it). Everything queued later commits after it,
        so no event of the turn can be seen without them."""
        job = _Awaited(ops.StartTurn(message, turn))
        await self._queue(job)
        return job

    async def close_turn(
        self,
        turn: Turn,
        events: Sequence[Event],
        message: Message | None = None,
        callbacks: Sequence[tuple[EventCallback, EventCallback]] | None = None,
    ) -> None:
        """Store a turn's end (see ops.CloseTurn) and wait for it."""
        await (await self.queue_close_turn(turn, events, message, callbacks)).wait()

    async def queue_close_turn(
        self,
        turn: Turn,
        events: Sequence[Event],
        message: Message | None = None,
        callbacks: Sequence[tuple[EventCallback, EventCallback]] | None = None,
    ) -> PendingWrite:
        """Queue a turn's end; `callbacks` (one pair per event) are how an event log
        publishes the events once they are committed. A caller that stopped waiting can
        wait on the same job again: queueing it twice would store its events twice."""
        pairs = callbacks if callbacks is not None else [(_ignore, _ignore)] * len(events)
        self.events_queued += len(events)
        job = _Publishing(ops.CloseTurn(turn, list(events), message), pairs)
        await self._queue(job)
        return job


@asynccontextmanager
async def open_store(backend: Backend) -> AsyncIterator[Store]:
    """Open the backend and run the writer in a nursery of ours; see the module doc."""
    await backend.open()
    store = Store(backend)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store._run_writer)
            try:
                yield store
            finally:
                # The writer commits what is queued, then ends; a shutdown's cancel must
                # not cut that short, a stuck disk must not hold the daemon for ever.
                store.closed = True
                store._send.close()
                store._room.set()  # wake appenders waiting for room: they see `closed`
                nursery.cancel_scope.shield = True
                nursery.cancel_scope.deadline = trio.current_time() + CLOSE_BUDGET
        if not store.drained:
            log.error("storage: the writes still queued at close were lost")
    finally:
        with trio.CancelScope(shield=True):
            await backend.close()


def _drain(channel: trio.MemoryReceiveChannel[_Job], most: int) -> list[_Job]:
    jobs: list[_Job] = []
    while len(jobs) < most:
        try:
            jobs.append(channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return jobs


def _unexpected(exc: BaseException) -> StoreError:
    log.error("unexpected error in a database write", exc_info=exc)
    return StoreError(f"database write failed: {type(exc).__name__}: {exc}")


def _ignore(event: Event) -> None:
    pass
