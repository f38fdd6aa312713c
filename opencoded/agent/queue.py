"""Queued messages: `POST /sessions/:id/messages {"queue": true}` while a turn runs.

A queued message waits in its session's runtime (`SessionRuntime.queue`, in memory: a
daemon restart forgets what was queued and not started) until the running turn ends, for
any reason (completed, error, abort). Then `SessionManager.after_turn` (set here) submits
the oldest one as an ordinary message; its turn's end submits the next, so they run in
order. A queued message is stored only when its turn starts; until then it can be
cancelled (`DELETE /sessions/:id/queue/:queue_id`) and is listed in `GET /sessions/:id`.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import attrs

from ..daemon import Daemon
from ..errors import ApiError, NotFound, SessionBusy, SessionNotFound
from ..records import new_id, now
from ..sessions import SessionRuntime
from ..storage import StoreError
from .api import submit_message, validate_parts

log = logging.getLogger(__name__)


@attrs.frozen
class QueuedMessage:
    id: str
    parts: list[dict[str, str]]
    created: int

    def to_json(self, position: int) -> dict[str, Any]:
        return {"id": self.id, "parts": self.parts, "created": self.created, "position": position}


async def queue_message(daemon: Daemon, session_id: str, parts: Any) -> dict[str, Any] | None:
    """Queue the message behind the running turn: its queue entry (with its 1-based
    `position`), or None when no turn runs (then the caller sends it as usual)."""
    clean = validate_parts(parts)
    sessions = daemon.sessions
    async with sessions.locked(session_id):
        runtime = sessions.opened(session_id)
        if runtime is None or not runtime.busy:
            return None
        sessions.refuse_if_stopping(session_id)
        # No await between the busy check and the append: the turn's end (which looks
        # at the queue) cannot slip in between.
        item = QueuedMessage(new_id("queued"), clean, now())
        runtime.queue.append(item)
        sessions.after_turn = functools.partial(run_next, daemon)
        return item.to_json(len(runtime.queue))


def listed(daemon: Daemon, session_id: str) -> list[dict[str, Any]]:
    runtime = daemon.sessions.opened(session_id)
    if runtime is None:
        return []
    return [item.to_json(i + 1) for i, item in enumerate(runtime.queue)]


def cancel(daemon: Daemon, session_id: str, queue_id: str) -> None:
    """Remove a queued message that has not started; NotFound otherwise."""
    runtime = daemon.sessions.opened(session_id)
    for item in list(runtime.queue if runtime is not None else ()):
        if item.id == queue_id:
            assert runtime is not None
            runtime.queue.remove(item)
            return
    raise NotFound(
        f"no queued message {queue_id} in this session (it may have started)",
        {"queueId": queue_id},
    )


async def run_next(daemon: Daemon, runtime: SessionRuntime) -> None:
    """Submit the oldest queued message (the manager calls this when a turn ends)."""
    sessions = daemon.sessions
    try:
        async with sessions.hold(runtime.id):
            while runtime.queue and not runtime.busy and not sessions.stopping:
                item = runtime.queue.popleft()
                try:
                    submitted = await submit_message(daemon, runtime.id, item.parts)
                    await submitted.recorded()
                    return  # its end starts the next one
                except SessionBusy:
                    runtime.queue.appendleft(item)  # a turn started meanwhile: after it
                    return
                except SessionNotFound:
                    raise
                except (ApiError, StoreError) as exc:
                    log.warning("queued message %s of %s dropped: %s", item.id, runtime.id, exc)
    except SessionNotFound:
        runtime.queue.clear()
