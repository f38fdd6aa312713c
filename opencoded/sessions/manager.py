"""Who owns what at run time.

The daemon nursery owns the SessionManager's nursery; that owns one nursery per active
session; a turn is a task in its session's nursery with its own cancel scope. An HTTP
request never owns a turn: it only follows the session's event log, so a client that
goes away does not stop the work, and `abort` is a cancel scope, not a flag.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ..errors import SessionBusy
from ..storage import Store
from .events import Broadcaster, EventLog

log = logging.getLogger(__name__)

ABORT_WAIT = 5.0


@attrs.define(eq=False)
class RunningTurn:
    id: str
    message_id: str
    scope: trio.CancelScope
    done: trio.Event = attrs.Factory(trio.Event)


@attrs.define(eq=False)
class SessionRuntime:
    """The live part of one session: its event log and, at most, one running turn."""

    id: str
    log: EventLog
    nursery: trio.Nursery
    closed: trio.Event = attrs.Factory(trio.Event)
    turn: RunningTurn | None = None

    @property
    def busy(self) -> bool:
        return self.turn is not None


TurnBody = Callable[[SessionRuntime, RunningTurn], Awaitable[None]]


class SessionManager:
    def __init__(self, store: Store, nursery: trio.Nursery) -> None:
        self.store = store
        self._nursery = nursery
        self._runtimes: dict[str, SessionRuntime] = {}
        self._opening: dict[str, trio.Event] = {}
        self.feed = Broadcaster()
        self.stopping = False

    @property
    def running_count(self) -> int:
        return sum(1 for r in self._runtimes.values() if r.busy)

    def status(self, session_id: str) -> str:
        runtime = self._runtimes.get(session_id)
        return "busy" if runtime is not None and runtime.busy else "idle"

    def notify(self, kind: str, session_id: str, **extra: Any) -> None:
        self.feed.publish({"type": kind, "session_id": session_id, **extra})

    def opened(self, session_id: str) -> SessionRuntime | None:
        """The session's runtime if it is open already (no storage read, no wait)."""
        return self._runtimes.get(session_id)

    async def runtime(self, session_id: str, last_seq: int | None = None) -> SessionRuntime:
        """The session's runtime, opened on first use (one per session, race-free).

        `last_seq`: the session's last stored event seq, when the caller has just read it
        (saves a storage round trip). Only events appended through an open runtime exist,
        so a value read while the runtime was closed is still current when it opens.
        """
        while True:
            if (runtime := self._runtimes.get(session_id)) is not None:
                return runtime
            # A runtime opened after aclose() took its snapshot would never be closed,
            # and its task would keep the daemon nursery (the shutdown) waiting forever.
            self._refuse_if_stopping(session_id)
            if (opening := self._opening.get(session_id)) is not None:
                await opening.wait()
                continue
            self._opening[session_id] = opening = trio.Event()
            try:
                if last_seq is None:
                    last_seq = await self.store.last_seq(session_id)
                log_ = EventLog(session_id, self.store, last_seq)
                runtime = await self._nursery.start(self._run_session, session_id, log_)
                if self.stopping:  # aclose() ran while this one was opening
                    runtime.closed.set()
                    self._refuse_if_stopping(session_id)
                self._runtimes[session_id] = runtime
                return runtime
            finally:
                del self._opening[session_id]
                opening.set()

    def _refuse_if_stopping(self, session_id: str) -> None:
        if self.stopping:
            raise SessionBusy("the daemon is shutting down", {"sessionId": session_id})

    async def _run_session(
        self, session_id: str, log_: EventLog, *, task_status: trio.TaskStatus[SessionRuntime]
    ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                runtime = SessionRuntime(session_id, log_, nursery)
                task_status.started(runtime)
                await runtime.closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            # Followers get everything stored so far, then end (deleted or stopping).
            log_.close()

    async def start_turn(
        self, session_id: str, turn_id: str, message_id: str, body: TurnBody
    ) -> RunningTurn:
        """Start `body` as the session's turn; SessionBusy if one is running already."""
        runtime = await self.runtime(session_id)
        if runtime.busy:
            raise SessionBusy(
                "a turn is already running in this session",
                {"sessionId": session_id, "turnId": runtime.turn.id if runtime.turn else None},
            )
        if self.stopping:
            raise SessionBusy("the daemon is shutting down", {"sessionId": session_id})
        turn = RunningTurn(turn_id, message_id, trio.CancelScope())
        runtime.turn = turn  # claimed synchronously: a second request sees busy at once
        self.notify("session.status", session_id, status="busy")
        runtime.nursery.start_soon(self._run_turn, runtime, turn, body)
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
            turn.done.set()
            self.notify("session.status", runtime.id, status="idle")

    async def abort(self, session_id: str) -> bool:
        """Cancel the running turn and wait until it has recorded its end."""
        runtime = self._runtimes.get(session_id)
        turn = runtime.turn if runtime else None
        if turn is None:
            return False
        turn.scope.cancel()
        with trio.move_on_after(ABORT_WAIT):
            await turn.done.wait()
        return True

    async def close_session(self, session_id: str) -> None:
        """Abort any turn and drop the runtime (the session was deleted)."""
        await self.abort(session_id)
        runtime = self._runtimes.pop(session_id, None)
        if runtime is not None:
            runtime.closed.set()

    async def aclose(self) -> None:
        """Daemon shutdown: abort every running turn (they record `aborted`), close all."""
        self.stopping = True
        async with trio.open_nursery() as nursery:
            for session_id in list(self._runtimes):
                nursery.start_soon(self.close_session, session_id)
        self.feed.close()  # every turn has reported idle by now
