"""What the HTTP and WebSocket layers call: submit a message, answer a permission, abort.

These functions hold the rules both transports share (validation, one turn per session,
what is stored before a turn starts), so the views stay thin and cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs

from ..daemon import Daemon
from ..errors import InvalidRequest, NotFound, SessionBusy, SessionNotFound
from ..providers.base import ProviderError
from ..records import Message, Session, Turn, new_id, now
from ..sessions import EventLog, RunningTurn, SessionRuntime
from ..storage.base import SessionSnapshot
from . import history, latest
from .history import History
from .permissions import RESPONSES, agent_state
from .turn import AgentTurn, TurnPlan


@attrs.frozen
class SubmittedTurn:
    """A started turn. Follow `log` with `after=start_seq` to see exactly its events."""

    turn_id: str
    message_id: str  # the assistant message the turn writes (as in its `complete` event)
    user_message_id: str
    start_seq: int  # the last seq before the turn's first event
    running: RunningTurn
    log: EventLog
    recorded: Callable[[], Awaitable[None]]  # returns once the user message is stored


def validate_parts(parts: Any) -> list[dict[str, str]]:
    """`[{"type": "text", "text": str}, ...]`, non-empty; a 400 naming the field otherwise."""
    if not isinstance(parts, list):
        raise InvalidRequest("parts must be an array of parts", {"field": "parts"})
    if not parts:
        raise InvalidRequest("parts must not be empty", {"field": "parts"})
    clean: list[dict[str, str]] = []
    for i, part in enumerate(parts):
        where = f"parts[{i}]"
        if not isinstance(part, dict):
            raise InvalidRequest(f"{where} must be an object", {"field": where})
        kind = part.get("type")
        if kind is None:
            raise InvalidRequest(f"{where}.type is missing", {"field": f"{where}.type"})
        if kind != "text":
            raise InvalidRequest(
                f"{where}.type: unknown part type {kind!r} (supported: text)",
                {"field": f"{where}.type"},
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidRequest(f"{where}.text must be a string", {"field": f"{where}.text"})
        extra = sorted(set(part) - {"type", "text"})
        if extra:
            raise InvalidRequest(
                f"{where}: unknown field(s) {', '.join(extra)}", {"field": f"{where}.{extra[0]}"}
            )
        clean.append({"type": "text", "text": text})
    if not any(p["text"].strip() for p in clean):
        raise InvalidRequest("the message has no text", {"field": "parts[0].text"})
    return clean


async def _load_session(daemon: Daemon, session_id: str) -> Session:
    session = await daemon.store.get_session(session_id)
    if session is None:
        raise SessionNotFound(session_id)
    return session


async def _snapshot(
    daemon: Daemon, session_id: str, *, with_last_seq: bool, known: History | None = None
) -> SessionSnapshot:
    """The session and its messages: `known`'s if storage's head matches it (see
    agent.history), else as read (and then the session's cached latest events are
    dropped too: they may be as old as `known`)."""
    head = known.head if known is not None else None
    snapshot = await daemon.store.session_snapshot(
        session_id, with_last_seq=with_last_seq, known=head
    )
    if snapshot is None:
        raise SessionNotFound(session_id)
    if snapshot.messages is None:
        assert known is not None
        return attrs.evolve(snapshot, messages=known.messages)
    # Read: new to this instance, or another instance ran a turn here since. What it
    # remembers of the session's latest events may be as old as its copy of the history.
    latest.forget(daemon, session_id)
    return snapshot


def _busy(session_id: str, turn: RunningTurn | None) -> SessionBusy:
    return SessionBusy(
        "a turn is already running in this session",
        {"sessionId": session_id, "turnId": turn.id if turn else None},
    )


def _resolve_model(daemon: Daemon, session: Session) -> tuple[str, str]:
    """Resolve the model now, so a missing provider is a 400 and no turn is recorded."""
    try:
        return daemon.providers.resolve(session.model, session.provider, daemon.config.model)
    except ProviderError as err:
        raise InvalidRequest(err.message, {"field": "model"}) from None


async def _project_root(daemon: Daemon, session: Session) -> Path:
    """The project's path (a project's path never changes, so it is cached by id)."""
    if session.project is None:
        return Path(session.directory)
    paths = agent_state(daemon).project_paths
    path = paths.get(session.project)
    if path is None:
        project = await daemon.store.get_project(session.project)
        if project is None:
            return Path(session.directory)
        path = paths[session.project] = project.path
    return Path(path)


def _check_free(daemon: Daemon, session_id: str, runtime: SessionRuntime) -> None:
    if runtime.busy:
        raise _busy(session_id, runtime.turn)
    daemon.sessions.refuse_if_stopping(session_id)


async def submit_message(daemon: Daemon, session_id: str, parts: list[dict]) -> SubmittedTurn:
    """Store the user message and start a turn for it.

    Raises SessionNotFound, InvalidRequest (bad parts, no usable provider), SessionBusy,
    or StoreError (an earlier turn's end still cannot be stored). The session's lock
    spans the reads, the busy check, the writes and the start, so a rejected second
    message never leaves a stored user message behind, and a delete cannot slip in.

    The user message and the Turn record are queued to the writer as one job and not
    awaited here: the turn sends its provider request while they commit. Every event the
    turn appends is queued after them, so none is seen before they are stored, and the
    turn awaits their outcome before it handles its first provider event (a failed write
    ends it with `error` + `complete`). `SubmittedTurn.recorded` is that outcome.
    """
    sessions = daemon.sessions
    async with sessions.locked(session_id):
        # One storage read gives the session, its history and, for a runtime not yet
        # open, its last seq. The history is complete if no turn ran during the read:
        # none can start while we hold the lock, so only one running already can.
        runtime = sessions.opened(session_id)
        ran = runtime is not None and runtime.busy
        known = history.cached(daemon, session_id)
        snapshot = await _snapshot(daemon, session_id, with_last_seq=runtime is None, known=known)
        clean = validate_parts(parts)
        if runtime is None or runtime.closed:  # not open, or reclaimed during the read
            last_seq = snapshot.last_seq
            if last_seq is None:
                last_seq = await daemon.store.last_seq(session_id) or 0
            runtime = sessions.open_locked(session_id, last_seq)
        with sessions.using(runtime):  # not reclaimed under us; released on any error
            _check_free(daemon, session_id, runtime)
            late_end = runtime.pending_end is not None
            await sessions.store_pending_end(runtime)
            if late_end:
                # The earlier turn's end was stored only now: its assistant message changed
                # in place (same head), so read it, never a copy from before.
                known = None
                snapshot = await _snapshot(daemon, session_id, with_last_seq=False)
            elif ran:  # it has ended since: read what it stored
                known = history.cached(daemon, session_id)
                snapshot = await _snapshot(daemon, session_id, with_last_seq=False, known=known)
            session, stored = snapshot.session, snapshot.messages or []
            provider_id, model = _resolve_model(daemon, session)
            root = await _project_root(daemon, session)
            turn_id, user_id, reply_id = new_id("turn"), new_id("msg"), new_id("msg")
            await sessions.claim_turn(runtime, turn_id)  # several instances: one turn anywhere
            _check_free(daemon, session_id, runtime)  # nothing awaits from here but the queue
            user = Message(user_id, session_id, turn_id, "user", clean, now())
            recorded = await daemon.store.start_turn(
                user, Turn(turn_id, session_id, reply_id, "running", started=time.time())
            )
            converted = known.converted if known is not None else {}
            start_seq = runtime.log.last_seq
            plan = TurnPlan(
                session, provider_id, model, root, [*stored, user], recorded.wait, converted,
                start_seq,
            )  # fmt: skip

            async def body(runtime_: SessionRuntime, turn: RunningTurn) -> None:
                await AgentTurn(daemon, runtime_, turn, plan).run()

            running = sessions.start_turn(runtime, turn_id, reply_id, body)
    return SubmittedTurn(turn_id, reply_id, user_id, start_seq, running, runtime.log, recorded.wait)


async def answer_permission(
    daemon: Daemon, session_id: str, permission_id: str, response: str
) -> None:
    """Answer a pending request: once, always (remembered for the session) or reject.

    Unknown, answered, or orphaned (its turn is gone) ids are NotFound. The answer is
    stored before the turn is woken, so a 200 means it is durable.
    """
    if response not in RESPONSES:
        raise InvalidRequest(
            f"response must be one of {', '.join(RESPONSES)}, got {response!r}",
            {"field": "response"},
        )
    session = await _load_session(daemon, session_id)
    waiter = agent_state(daemon).claim(permission_id, session_id)
    if waiter is None and await _answer_elsewhere(daemon, session, permission_id, response):
        return
    if waiter is None:
        raise NotFound(
            f"no pending permission request {permission_id} in this session",
            {"permissionId": permission_id},
        )
    waiter.response = response  # claimed synchronously: a second answer gets the 404
    try:
        request = await daemon.store.get_permission(permission_id)
        if request is not None:
            await daemon.store.save_permission(attrs.evolve(request, status=response))
        if response == "always":
            fresh = await daemon.store.get_session(session_id) or session
            remembered = {**fresh.permission, waiter.tool: "allow"}
            await daemon.store.update_session(
                attrs.evolve(fresh, permission=remembered, updated=now())
            )
    finally:
        waiter.answered.set()


async def _answer_elsewhere(
    daemon: Daemon, session: Session, permission_id: str, response: str
) -> bool:
    """Several instances: answer a request of a turn running on another one (stored,
    then that instance is told, see `remote_answer`). False if none waits for it."""
    answer = getattr(daemon.store.backend, "answer_remote", None)
    if answer is None or not await answer(session.id, permission_id, response):
        return False
    request = await daemon.store.get_permission(permission_id)
    if response == "always" and request is not None:
        fresh = await daemon.store.get_session(session.id) or session
        remembered = {**fresh.permission, request.tool: "allow"}
        await daemon.store.update_session(attrs.evolve(fresh, permission=remembered, updated=now()))
    return True


async def remote_answer(daemon: Daemon, session_id: str | None, permission_id: str | None) -> None:
    """Another instance stored an answer to one of this instance's waiting requests
    (both None: check them all, a notification may have been missed): wake the turn."""
    waiters = agent_state(daemon).waiters
    ids = list(waiters) if permission_id is None else [permission_id]
    for request_id in ids:
        waiter = waiters.get(request_id)
        if waiter is None or waiter.response is not None:
            continue
        request = await daemon.store.get_permission(request_id)
        if request is not None and request.status in RESPONSES and waiter.response is None:
            waiter.response = request.status
            waiter.answered.set()


async def abort_turn(daemon: Daemon, session_id: str) -> bool:
    """Cancel the session's running turn; True if there was one. Returns once it ended."""
    await _load_session(daemon, session_id)
    return await daemon.sessions.abort(session_id)


async def pending_permissions(daemon: Daemon, session_id: str) -> list[dict[str, Any]]:
    """`GET /sessions/:id/permissions`: [{id, tool, args, created}], oldest first."""
    await _load_session(daemon, session_id)
    requests = await daemon.store.pending_permissions(session_id)
    waiting = agent_state(daemon).waiters
    # Several instances: the backend lists only requests of turns running somewhere.
    anywhere = getattr(daemon.store.backend, "shared", False)
    return [
        {"id": r.id, "tool": r.tool, "args": r.args, "created": r.created}
        for r in requests
        if r.id in waiting or anywhere
    ]


async def list_messages(daemon: Daemon, session_id: str) -> list[dict[str, Any]]:
    """`GET /sessions/:id/messages`: [{id, role, created, parts}] in order."""
    await _load_session(daemon, session_id)
    messages = await daemon.store.list_messages(session_id)
    return [{"id": m.id, "role": m.role, "created": m.created, "parts": m.parts} for m in messages]
