"""Who owns what at run time: the SessionManager owns every session's life.

`open_session_manager(store)` owns a nursery; every turn is a task in it, inside the
turn's own cancel scope. A session's live part (`SessionRuntime`: its event log and at
most one running turn) exists while something uses it: a turn, or a request holding it
(`hold`, e.g. a stream following the log). When the last user lets go it is reclaimed.

Everything that changes a session's life passes through one per-session lock: submitting
a message (which starts a turn), deleting, pruning, and opening a runtime. So a delete
and a message cannot interleave (the message sees the session gone, or the delete aborts
the turn it started), and nothing opens a runtime for a session being deleted.

Shutdown (`aclose`, also on leaving the context) sets one stop flag, cancels every turn
and gives them ABORT_BUDGET to record their end; then it cancels what is left, even a
finalisation stuck on a slow disk (recovery closes such a turn at the next start). The
nursery then has nothing left to wait for, so shutdown is bounded.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import attrs
import trio

from ..errors import SessionBusy, SessionNotFound
from ..records import Event
from ..storage import Store
from .events import Broadcaster, EventLog

log = logging.getLogger(__name__)

ABORT_WAIT = 5.0  # how long an abort waits for the turn to record its end
ABORT_BUDGET = 1.5  # at shutdown, for all turns together (the contract: exit within 5 s)
ALIVE_INTERVAL = 2.0  # seconds between "still running" marks of running turns
REMOTE_POLL = 0.05  # seconds between checks that a turn aborted on another instance ended


@attrs.define(eq=False)
class RunningTurn:
    id: str
    message_id: str
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    done: trio.Event = attrs.Factory(trio.Event)
    # The turn's finalisation is shielded from its own cancellation so that it can
    # record the end; this scope is how a shutdown out of time still stops it.
    final_scope: trio.CancelScope | None = None
    # End events that could not be stored: the turn's own stream still gets them.
    unrecorded: list[Event] = attrs.Factory(list)
    out_of_time: bool = False  # a shutdown's budget ran out: do not start recording now

    def stop_now(self) -> None:
        """Shutdown out of time: stop the turn's finalisation, started or not."""
        self.out_of_time = True
        self.scope.cancel()
        if self.final_scope is not None:
            self.final_scope.cancel()


@attrs.define(eq=False)
class SessionRuntime:
    """The live part of one session: its event log and, at most, one running turn."""

    id: str
    log: EventLog
    turn: RunningTurn | None = None
    users: int = 0
    # A turn's end that could not be stored: stored before the next turn may start, so
    # `complete` stays the last event of its turn.
    pending_end: Callable[[], Awaitable[object]] | None = None
    closed: bool = False
    # Messages sent with `queue: true` while a turn ran (agent.queue): in memory only;
    # each turn's end hands the next to `SessionManager.after_turn`.
    queue: deque[Any] = attrs.Factory(deque)
    # Another instance's events: the seq to catch up to, and whether a task does it.
    remote_seq: float = 0
    catching_up: bool = False

    @property
    def busy(self) -> bool:
        return self.turn is not None


TurnBody = Callable[[SessionRuntime, RunningTurn], Awaitable[None]]
AfterTurn = Callable[[SessionRuntime], Awaitable[None]]


class SessionManager:
    def __init__(self, store: Store, nursery: trio.Nursery) -> None:
        self.store = store
        self._nursery = nursery
        self._runtimes: dict[str, SessionRuntime] = {}
        self._turns: set[RunningTurn] = set()  # running, whatever became of their session
        self._locks: dict[str, trio.Lock] = {}
        self.feed = Broadcaster()
        self.stopping = False
        # Started (as a task of ours) when a turn ends with messages queued behind it.
        self.after_turn: AfterTurn | None = None
        # What other instances may ask of this one besides events and aborts (kind ->
        # handler(session_id, argument); both None: re-check everything).
        self.control_handlers: dict[str, Callable[[Any, Any], Awaitable[None]]] = {}
        # Told (session id, None: any) when another instance stored events, before they
        # are read back: what is kept in memory about a session's log must be re-read.
        self.on_remote_events: list[Callable[[str | None], None]] = []
        self._busy_elsewhere: set[str] = set()  # sessions with a turn on another instance
        # Work done for a session apart from its turns (start_background), by session.
        self._background: dict[str, set[trio.CancelScope]] = {}

    # ---- state -------------------------------------------------------------------------

    @property
    def running_count(self) -> int:
        return sum(1 for r in self._runtimes.values() if r.busy)

    @property
    def open_count(self) -> int:
        """Runtimes held in memory now (busy or followed)."""
        return len(self._runtimes)

    @property
    def watcher_count(self) -> int:
        """Live followers of the open sessions' logs (WebSocket, SSE, a message's stream)."""
        return sum(r.log.watcher_count for r in self._runtimes.values())

    def status(self, session_id: str) -> str:
        runtime = self._runtimes.get(session_id)
        busy = (runtime is not None and runtime.busy) or session_id in self._busy_elsewhere
        return "busy" if busy else "idle"

    def notify(self, kind: str, session_id: str, **extra: Any) -> None:
        self.feed.publish({"type": kind, "session_id": session_id, **extra})

    def opened(self, session_id: str) -> SessionRuntime | None:
        """The session's runtime if it is open already (no storage read, no wait)."""
        return self._runtimes.get(session_id)

    def refuse_if_stopping(self, session_id: str) -> None:
        if self.stopping:
            raise SessionBusy("the daemon is shutting down", {"sessionId": session_id})

    # ---- the per-session lock and runtimes --------------------------------------------

    @asynccontextmanager
    async def locked(self, session_id: str) -> AsyncIterator[None]:
        """The session's lock: submit, delete, prune and opening a runtime take it."""
        lock = self._locks.setdefault(session_id, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(session_id, None)

    def open_locked(self, session_id: str, last_seq: int) -> SessionRuntime:
        """The session's runtime, opened with `last_seq` if it is not open. The caller
        holds the session's lock and has just read `last_seq` (the session exists)."""
        self.refuse_if_stopping(session_id)
        runtime = self._runtimes.get(session_id)
        if runtime is None:
            runtime = SessionRuntime(session_id, EventLog(session_id, self.store, last_seq))
            self._runtimes[session_id] = runtime
        return runtime

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[SessionRuntime]:
        """Use the session's runtime (opening it if needed) until the block ends.

        SessionNotFound if the session does not exist (or is deleted meanwhile).
        """
        runtime = self._runtimes.get(session_id)
        if runtime is None:
            async with self.locked(session_id):
                runtime = self._runtimes.get(session_id)
                if runtime is None:
                    self.refuse_if_stopping(session_id)
                    last_seq = await self.store.last_seq(session_id)
                    if last_seq is None:
                        raise SessionNotFound(session_id)
                    runtime = self.open_locked(session_id, last_seq)
        with self.using(runtime):
            yield runtime

    @contextmanager
    def using(self, runtime: SessionRuntime) -> Iterator[SessionRuntime]:
        """Count a user of `runtime` for the block: it is not reclaimed meanwhile."""
        runtime.users += 1
        try:
            yield runtime
        finally:
            runtime.users -= 1
            self._reclaim_if_idle(runtime)

    def _reclaim_if_idle(self, runtime: SessionRuntime) -> None:
        if runtime.users or runtime.turn is not None or runtime.pending_end is not None:
            return
        if runtime.queue and not self.stopping:
            return
        self._close_runtime(runtime)

    def _close_runtime(self, runtime: SessionRuntime) -> None:
        runtime.closed = True
        if self._runtimes.get(runtime.id) is runtime:
            del self._runtimes[runtime.id]
        runtime.log.close()  # followers get what is stored, then end

    # ---- turns -------------------------------------------------------------------------

    def start_turn(
        self, runtime: SessionRuntime, turn_id: str, message_id: str, body: TurnBody
    ) -> RunningTurn:
        """Start `body` as the session's turn (the caller holds the session's lock and
        has checked that the runtime is free)."""
        self.refuse_if_stopping(runtime.id)
        if runtime.busy or runtime.closed:
            raise SessionBusy(
                "a turn is already running in this session", {"sessionId": runtime.id}
            )
        turn = RunningTurn(turn_id, message_id)
        runtime.turn = turn
        self._turns.add(turn)
        self.notify("session.status", runtime.id, status="busy")
        self._nursery.start_soon(self._run_turn, runtime, turn, body)
        return turn

    async def _run_turn(self, runtime: SessionRuntime, turn: RunningTurn, body: TurnBody) -> None:
        try:
            with turn.scope:
                await body(runtime, turn)
        except Exception:
            # The body records its own failures; this is the last line of defence that
            # keeps one broken turn from taking the daemon's nursery down.
            log.exception("turn %s of session %s crashed", turn.id, runtime.id)
        finally:
            runtime.turn = None
            self._turns.discard(turn)
            turn.done.set()
            self.notify("session.status", runtime.id, status="idle")
            if runtime.queue and self.after_turn is not None and not self.stopping:
                self._nursery.start_soon(self.after_turn, runtime)
            self._reclaim_if_idle(runtime)

    def start_background(self, session_id: str, task: Callable[[], Awaitable[None]]) -> None:
        """Run `task` for the session in our nursery, apart from its turns: it neither keeps
        the session busy nor delays anything. Cancelled when the session is deleted (or
        pruned) and at shutdown; `task` must handle its own errors."""
        if self.stopping:
            return
        scope = trio.CancelScope()
        scopes = self._background.setdefault(session_id, set())
        scopes.add(scope)

        async def run() -> None:
            try:
                with scope:
                    await task()
            finally:
                scopes.discard(scope)
                if not scopes and self._background.get(session_id) is scopes:
                    del self._background[session_id]

        self._nursery.start_soon(run)

    async def abort(self, session_id: str) -> bool:
        """Cancel the running turn and wait (bounded) until it has recorded its end."""
        runtime = self._runtimes.get(session_id)
        turn = runtime.turn if runtime else None
        if turn is None:
            return await self._abort_elsewhere(session_id)
        turn.scope.cancel()
        with trio.move_on_after(ABORT_WAIT):
            await turn.done.wait()
        return True

    async def store_pending_end(self, runtime: SessionRuntime) -> None:
        """Store the end of an earlier turn that could not be stored (StoreError if it
        still cannot: no new turn may start before it). The caller holds the lock."""
        if runtime.pending_end is not None:
            await runtime.pending_end()
            runtime.pending_end = None

    # ---- several instances on one database (a backend with `shared`) ------------------

    async def claim_turn(self, runtime: SessionRuntime, turn_id: str) -> None:
        """Take the session's turn across the cluster (SessionBusy if a turn runs on
        another instance), then catch the log up with what other instances stored, so
        the turn's seqs follow theirs. Nothing on a backend of one instance."""
        claim = getattr(self.store.backend, "claim_turn", None)
        if claim is None:
            return
        if not await claim(runtime.id, turn_id):
            raise SessionBusy(
                "a turn is already running in this session (on another instance)",
                {"sessionId": runtime.id, "turnId": None},
            )
        runtime.remote_seq = math.inf
        await self._catch_up(runtime, local_turn_ok=True)

    async def _abort_elsewhere(self, session_id: str) -> bool:
        """Abort the session's turn on the instance that runs it; False if none does."""
        request = getattr(self.store.backend, "request_abort", None)
        if request is None or not await request(session_id):
            return False
        with trio.move_on_after(ABORT_WAIT):  # until it has recorded its end there
            while await self.store.backend.lease_held(session_id):  # type: ignore[attr-defined]
                await trio.sleep(REMOTE_POLL)
        return True

    def remote_control(self, kind: str, session_id: str, argument: str) -> None:
        """Another instance asks something of this one (storage.postgres CONTROL_CHANNEL)."""
        if kind == "abort":
            runtime = self._runtimes.get(session_id)
            if runtime is not None and runtime.turn is not None:
                runtime.turn.scope.cancel()
        elif kind in ("busy", "idle"):
            was = self.status(session_id)
            if kind == "busy":
                self._busy_elsewhere.add(session_id)
            else:
                self._busy_elsewhere.discard(session_id)
            if self.status(session_id) != was:
                self.notify("session.status", session_id, status=self.status(session_id))
        handler = self.control_handlers.get(kind)
        if handler is not None:
            self._nursery.start_soon(handler, session_id, argument)

    def remote_events(self, session_id: str | None, seq: int) -> None:
        """Another instance stored the session's events up to `seq` (None: maybe missed
        some, for any session): open runtimes read them back and publish them."""
        for listener in self.on_remote_events:
            listener(session_id)
        if session_id is None:
            runtimes = list(self._runtimes.values())
        else:
            runtime = self._runtimes.get(session_id)
            runtimes = [runtime] if runtime is not None else []
        for runtime in runtimes:
            runtime.remote_seq = max(runtime.remote_seq, math.inf if session_id is None else seq)
            if runtime.turn is None and not runtime.catching_up:
                self._nursery.start_soon(self._catch_up, runtime)
        if session_id is None:  # notifications may have been missed: re-check the rest
            self._nursery.start_soon(self._reload_busy_elsewhere)
            for handler in self.control_handlers.values():
                self._nursery.start_soon(handler, None, None)

    async def _reload_busy_elsewhere(self) -> None:
        try:
            busy = await self.store.backend.busy_sessions()  # type: ignore[attr-defined]
        except Exception:
            log.warning("could not read which sessions are busy elsewhere", exc_info=True)
            return
        self._busy_elsewhere = busy

    async def _catch_up(self, runtime: SessionRuntime, *, local_turn_ok: bool = False) -> None:
        # A local turn is the only writer of its session: nothing to read back then.
        log_ = runtime.log
        runtime.catching_up = True
        try:
            while runtime.remote_seq > log_.committed_seq and not runtime.closed:
                events = await self.store.read_events(runtime.id, log_.committed_seq)
                if not events or (runtime.turn is not None and not local_turn_ok):
                    break
                log_.publish_stored(events)
        except Exception:
            log.warning("could not read back another instance's events", exc_info=True)
        finally:
            runtime.catching_up = False
            if runtime.remote_seq == math.inf:
                runtime.remote_seq = 0

    # ---- delete, prune -----------------------------------------------------------------

    async def delete(self, session_id: str) -> bool:
        """Delete the session: abort its turn, delete its rows, end its followers."""
        async with self.locked(session_id):
            await self.abort(session_id)
            deleted = await self.store.delete_session(session_id)
            self._forget(session_id)
        if deleted:
            self.notify("session.deleted", session_id)
        return deleted

    async def prune(self, session_ids: Sequence[str], updated_before: int) -> list[str]:
        """Delete those of `session_ids` that are not running a turn and still not
        updated since `updated_before`; return them."""
        deleted: list[str] = []
        for start in range(0, len(session_ids), 100):
            async with AsyncExitStack() as stack:
                idle = []
                # Locks taken in one global order (by id): two prunes never deadlock.
                for session_id in sorted(session_ids[start : start + 100]):
                    await stack.enter_async_context(self.locked(session_id))
                    if self.status(session_id) == "idle":
                        idle.append(session_id)
                gone = await self.store.delete_sessions(idle, updated_before=updated_before)
                for session_id in gone:
                    self._forget(session_id)
            deleted += gone
        for session_id in deleted:
            self.notify("session.deleted", session_id)
        return deleted

    def _forget(self, session_id: str) -> None:
        for scope in self._background.pop(session_id, ()):
            scope.cancel()
        runtime = self._runtimes.get(session_id)
        if runtime is not None:
            runtime.pending_end = None  # its rows are gone
            runtime.queue.clear()
            self._close_runtime(runtime)

    # ---- keeping running turns marked alive (recovery's clock) -------------------------

    async def _keep_alive(self) -> None:
        while True:
            await trio.sleep(ALIVE_INTERVAL)
            running = [r.turn.id for r in self._runtimes.values() if r.turn is not None]
            if running:
                try:
                    aborted = await self.store.touch_turns(running, time.time())
                except Exception:
                    log.warning("could not mark running turns alive", exc_info=True)
                    continue
                for runtime in list(self._runtimes.values()):  # asked on another instance
                    if runtime.turn is not None and runtime.turn.id in (aborted or ()):
                        runtime.turn.scope.cancel()

    # ---- shutdown ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Abort every turn (they record `aborted`), bounded; close every runtime."""
        self.stopping = True
        turns = list(self._turns)
        for turn in turns:
            turn.scope.cancel()
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + ABORT_BUDGET
            for turn in turns:
                await turn.done.wait()
        for turn in turns:
            if not turn.done.is_set():
                log.error("turn %s did not record its end in time; cancelled", turn.id)
                turn.stop_now()
        for runtime in list(self._runtimes.values()):
            self._close_runtime(runtime)
        self.feed.close()


@asynccontextmanager
async def open_session_manager(store: Store) -> AsyncIterator[SessionManager]:
    """A SessionManager whose turns run in a nursery of its own; closed on exit."""
    async with trio.open_nursery() as nursery:
        manager = SessionManager(store, nursery)
        nursery.start_soon(manager._keep_alive)
        listen = getattr(store.backend, "listen_events", None)
        if listen is not None:  # other instances' events (storage.postgres)
            nursery.start_soon(listen, manager.remote_events, manager.remote_control)
        try:
            yield manager
        finally:
            with trio.CancelScope(shield=True):
                await manager.aclose()
            nursery.cancel_scope.cancel()  # the keep-alive loop; turns have ended
