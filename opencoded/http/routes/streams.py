"""Live views of a session's event log: the WebSocket, Server-Sent Events, the daemon feed.

All of them are views of one durable log (sessions.events.EventLog): they only ever
follow it, so every watcher sees the same sequence, a reconnect with `after=SEQ` misses
nothing, and a watcher that stops reading costs database reads, not daemon memory.

Where a client starts: with `?after=SEQ` (or SSE `Last-Event-ID`) it gets every event
after SEQ, then live ones; without, it starts live at the moment it connects. Replaying
the whole history by default would hand a client that connects and sends a message the
`complete` of an earlier turn first (the spec's own example closes on `complete`).

Unknown session on the WebSocket: the handshake is refused with an HTTP 404 and the
contract's error envelope (the same answer as every other route), not accepted then
closed. A session deleted while watched ends the socket with close code 4404.
At daemon shutdown a socket gets 1001 "daemon shutting down" once the running turn has
recorded its end (bounded wait), and SSE streams end after that last event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import attrs
import trio
from quart import Response, current_app, request, websocket
from quart_trio import QuartTrio

from ...agent import abort_turn, answer_permission, submit_message
from ...daemon import Daemon
from ...errors import ApiError, InternalError, InvalidRequest, ServiceUnavailable, SessionNotFound
from ...records import Event
from ...sessions import EventLog
from ..app import get_daemon
from ..params import parse_json, parse_uint, query
from ..ws_frames import FrameCache, plain_frame
from .openapi import op, path_param, query_param
from .sessions import load_session

logger = logging.getLogger(__name__)

# WebSocket ping interval in seconds: hypercorn sends the pings (ASGI apps cannot); the
# server reads this when it builds hypercorn's config, so tests set it before starting.
WS_PING_INTERVAL = 15.0
# Seconds of silence after which an SSE stream gets a `: ping` comment line.
SSE_HEARTBEAT = 15.0
# At shutdown, how long a WebSocket waits for the aborted turn's last events.
SHUTDOWN_DRAIN = 3.0

CLOSE_SHUTDOWN = (1001, "daemon shutting down")
CLOSE_DELETED = (4404, "session deleted")

# The log stores the NDJSON names; the WebSocket and SSE use the spec's (contract 5).
WIRE_TYPES = {"tool": "tool-call"}
RESPONSES = ("once", "always", "reject")


def wire_type(event_type: str) -> str:
    return WIRE_TYPES.get(event_type, event_type)


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def ws_frame(event: Event) -> str:
    """`{"type", "seq", ...data}`: flat, as in the spec; type and seq win over data keys."""
    fields = {k: v for k, v in event.data.items() if k not in ("type", "seq")}
    return _dumps({"type": wire_type(event.type), "seq": event.seq, **fields})


def sse_message(event: Event) -> bytes:
    return (
        f"id: {event.seq}\nevent: {wire_type(event.type)}\ndata: {_dumps(event.data)}\n\n".encode()
    )


def frame_cache() -> FrameCache:
    return current_app.extensions["opencoded.frames"]


def cached_ws_frame(frames: FrameCache, event: Event) -> tuple[str, bytes]:
    """`ws_frame` and its `plain_frame`, encoded once per event for all of its watchers."""

    def encode() -> tuple[str, bytes]:
        text = ws_frame(event)
        return text, plain_frame(text)

    key = (event.session_id, event.seq, "ws")
    return frames.get(key, encode, lambda item: len(item[0]) + len(item[1]))


def cached_sse_message(frames: FrameCache, event: Event) -> bytes:
    return frames.get((event.session_id, event.seq, "sse"), lambda: sse_message(event))


def error_frame(error: ApiError) -> str:
    """A control answer to a client frame: not an event of the log, so no seq."""
    frame: dict[str, Any] = {"type": "error", "code": error.code, "message": error.message}
    if error.details:
        frame["details"] = error.details
    return _dumps(frame)


def parse_after(value: str | None, field: str) -> int | None:
    return None if value is None else parse_uint(value, field)


# ---- session lifetime ---------------------------------------------------------------------


def refuse_if_stopping(daemon: Daemon) -> None:
    if daemon.stopping.is_set():
        raise ServiceUnavailable("the daemon is shutting down")


# ---- WebSocket ----------------------------------------------------------------------------


async def session_stream(session_id: str) -> None:
    """`WS /sessions/:id/stream`: the log's events out, commands in."""
    daemon = get_daemon()
    unknown = sorted(set(websocket.args) - {"after", "token"})
    if unknown:
        raise InvalidRequest(f"unknown query parameter {unknown[0]!r}", {"field": unknown[0]})
    after = parse_after(websocket.args.get("after"), "after")
    refuse_if_stopping(daemon)
    async with daemon.sessions.hold(session_id) as runtime:
        await _serve_websocket(daemon, session_id, runtime.log, after)


async def _serve_websocket(
    daemon: Daemon, session_id: str, log: EventLog, after: int | None
) -> None:
    start = log.committed_seq if after is None else after
    ws = websocket._get_current_object()
    frames = frame_cache()
    await ws.accept()
    pump_done, end = trio.Event(), trio.Event()

    async def pump() -> None:
        # Whatever is ready goes out in one write, one event per frame (ws_frames).
        async with aclosing(log.follow_batches(start)) as batches:
            async for batch in batches:
                assert batch is not None  # no heartbeat asked for
                pairs = [cached_ws_frame(frames, event) for event in batch]
                await ws.send_frames([p[0] for p in pairs], [p[1] for p in pairs])
        pump_done.set()
        end.set()

    async def end_at_shutdown() -> None:
        await daemon.stopping.wait()
        with trio.move_on_after(SHUTDOWN_DRAIN):
            await pump_done.wait()
        end.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump)
        nursery.start_soon(end_at_shutdown)
        nursery.start_soon(receive_commands, ws, daemon, session_id)
        await end.wait()
        code, reason = CLOSE_SHUTDOWN if daemon.stopping.is_set() else CLOSE_DELETED
        await ws.close(code, reason)
        nursery.cancel_scope.cancel()


async def receive_commands(ws: Any, daemon: Daemon, session_id: str) -> None:
    """Client frames, one at a time; a bad one is answered with an error frame, no close."""
    while True:
        raw = await ws.receive()
        try:
            await run_command(daemon, session_id, parse_command(raw))
        except ApiError as error:
            await ws.send(error_frame(error))
        except Exception:
            # A bug must not take the watcher's stream down with it; the log has the rest.
            logger.exception("WebSocket command failed in session %s", session_id)
            await ws.send(error_frame(InternalError("internal error; see the daemon log")))


@attrs.frozen
class Command:
    type: str
    parts: list[dict[str, Any]] | None = None
    permission_id: str | None = None
    response: str | None = None


COMMAND_FIELDS = {
    "message": {"type", "content", "parts"},
    "abort": {"type"},
    "permission": {"type", "id", "response"},
}


def parse_command(raw: str | bytes) -> Command:
    frame = parse_json(raw, "(frame)")
    if not isinstance(frame, dict):
        raise InvalidRequest("frame must be a JSON object", {"field": "(frame)"})
    kind = frame.get("type")
    if kind not in COMMAND_FIELDS:
        raise InvalidRequest(
            f"unknown frame type {kind!r} (expected message, abort or permission)",
            {"field": "type"},
        )
    extra = sorted(set(frame) - COMMAND_FIELDS[kind])
    if extra:
        raise InvalidRequest(f"unknown field {extra[0]!r} in a {kind} frame", {"field": extra[0]})
    if kind == "message":
        return Command(kind, parts=_message_parts(frame))
    if kind == "permission":
        permission_id, response = frame.get("id"), frame.get("response")
        if not isinstance(permission_id, str) or not permission_id:
            raise InvalidRequest("permission frame needs an id (string)", {"field": "id"})
        if response not in RESPONSES:
            raise InvalidRequest(
                f"response must be one of {', '.join(RESPONSES)}, got {response!r}",
                {"field": "response"},
            )
        return Command(kind, permission_id=permission_id, response=response)
    return Command(kind)


def _message_parts(frame: dict[str, Any]) -> list[dict[str, Any]]:
    content, parts = frame.get("content"), frame.get("parts")
    if (content is None) == (parts is None):
        raise InvalidRequest(
            "a message frame needs content or parts (one of them)", {"field": "content"}
        )
    if content is not None:
        if not isinstance(content, str):
            raise InvalidRequest("content must be a string", {"field": "content"})
        return [{"type": "text", "text": content}]
    return parts  # validated by the agent API, which names the bad field


async def run_command(daemon: Daemon, session_id: str, command: Command) -> None:
    if command.type == "message":
        assert command.parts is not None
        await submit_message(daemon, session_id, command.parts)
    elif command.type == "abort":
        await abort_turn(daemon, session_id)
    else:
        assert command.permission_id is not None and command.response is not None
        await answer_permission(daemon, session_id, command.permission_id, command.response)


# ---- Server-Sent Events -----------------------------------------------------------------


@attrs.frozen
class EventsQuery:
    after: int | None = None


@attrs.frozen
class NoQuery:
    """`GET /events` takes no parameters (besides `token`)."""


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_response(body: Any) -> Response:
    response = Response(body, content_type="text/event-stream", headers=SSE_HEADERS)
    response.timeout = None
    return response


async def session_events(session_id: str) -> Response:
    """`GET /sessions/:id/events`: the log as SSE; `id:` is the seq, so resuming is exact."""
    daemon = get_daemon()
    params = query(EventsQuery)
    if params.after is not None and params.after < 0:
        raise InvalidRequest("after must be a non-negative integer", {"field": "after"})
    # A browser's EventSource reconnects to the same URL (still carrying the first
    # ?after=) and adds Last-Event-ID, so the header is the fresher of the two.
    resume = parse_after(request.headers.get("Last-Event-ID"), "Last-Event-ID")
    after = resume if resume is not None else params.after
    refuse_if_stopping(daemon)
    await load_session(session_id)  # a 404 now; the body holds the session while it runs
    frames = frame_cache()

    async def body():
        try:
            async with (
                daemon.sessions.hold(session_id) as runtime,
                aclosing(_sse_body(daemon, runtime.log, after, frames)) as chunks,
            ):
                async for chunk in chunks:
                    yield chunk
        except SessionNotFound:
            return  # deleted since the check above: nothing to follow

    return sse_response(body())


async def _sse_body(
    daemon: Daemon, log: EventLog, after: int | None, frames: FrameCache
) -> AsyncIterator[bytes]:
    start = log.committed_seq if after is None else after
    follow = log.follow_batches(start, heartbeat=SSE_HEARTBEAT)
    async with aclosing(follow) as batches:
        async for batch in batches:
            if batch is not None:
                yield b"".join(cached_sse_message(frames, event) for event in batch)
            elif daemon.stopping.is_set():
                return
            else:
                yield b": ping\n\n"


async def daemon_events() -> Response:
    """`GET /events`: session-level notices (created, deleted, status) for session lists."""
    daemon = get_daemon()
    query(NoQuery)
    refuse_if_stopping(daemon)
    # Listening starts now: a client holding the response headers misses no notice.
    listener = daemon.sessions.feed.listen_with_heartbeats(SSE_HEARTBEAT)

    async def body():
        yield b": connected\n\n"
        async with aclosing(listener) as notices:
            async for notice in notices:
                if notice is not None:
                    yield f"event: {notice['type']}\ndata: {_dumps(notice)}\n\n".encode()
                elif daemon.stopping.is_set():
                    return
                else:
                    yield b": ping\n\n"

    return sse_response(body())


# ---- registration ----------------------------------------------------------------------


def register(app: QuartTrio) -> None:
    app.add_websocket("/sessions/<session_id>/stream", view_func=session_stream)
    app.add_url_rule("/sessions/<session_id>/events", view_func=session_events, methods=["GET"])
    app.add_url_rule("/events", view_func=daemon_events, methods=["GET"])


SID = [path_param("session_id")]
AFTER = query_param("after", {"type": "integer", "minimum": 0}, "replay the events after this seq")
LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    "description": "resume after this seq (EventSource sends it on reconnect); beats ?after=",
}

_ws_op = op(
    op_id="sessionStream",
    summary="WebSocket of the session's events (send Upgrade: websocket). Server frames: "
    '{"type", "seq", ...data}; client frames: {"type": "message", "content"|"parts"}, '
    '{"type": "abort"}, {"type": "permission", "id", "response"}. Unknown session: '
    "handshake refused with 404; session deleted: close 4404; shutdown: close 1001.",
    ok=101,
    params=[*SID, AFTER],
    errors=(400, 404, 503),
)

OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/sessions/{session_id}/stream": {"get": _ws_op},
    "/sessions/{session_id}/events": {
        "get": op(
            "Server-Sent Events of the session's event log (id: seq, event: type)",
            op_id="sessionEvents",
            params=[*SID, AFTER, LAST_EVENT_ID],
            errors=(400, 404, 503),
            content="text/event-stream",
        )
    },
    "/events": {
        "get": op(
            "Server-Sent Events of session-level changes "
            "(session.created, session.deleted, session.status, session.updated)",
            op_id="daemonEvents",
            errors=(503,),
            content="text/event-stream",
        )
    },
}
