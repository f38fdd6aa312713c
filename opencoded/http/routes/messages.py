"""Messages, abort and permissions: the HTTP face of the agent (opencoded.agent).

`POST /sessions/:id/messages` starts a turn in the session's nursery and then only follows
the session's event log from just before the turn's first event until its `complete`.
The response never owns the turn: a client that disconnects stops following, not working.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import attrs
from cattrs.gen import make_dict_structure_fn, override
from quart import Response, jsonify
from quart_trio import QuartTrio

from ... import agent
from ...agent import queue, undo
from ...errors import InvalidRequest
from ...storage import StoreError
from ...wire import converter
from ..app import get_daemon
from ..params import json_body
from .openapi import ANY_OBJ, FIRST_ID, STR, TIME, array_of, link, obj, op, path_param, ref

NDJSON = "application/x-ndjson"


@attrs.frozen
class MessageCreate:
    parts: list[Any]
    async_: bool = False
    queue: bool = False  # while a turn runs: 202 with its place in the queue (agent.queue)


@attrs.frozen
class PermissionAnswer:
    response: str


converter.register_structure_hook(
    MessageCreate,
    make_dict_structure_fn(
        MessageCreate,
        converter,
        _cattrs_forbid_extra_keys=True,
        async_=override(rename="async"),
    ),
)


def _wire_names(exc: InvalidRequest) -> InvalidRequest:
    """cattrs reports the Python name `async_`; clients sent `async`."""
    text = json.dumps({"message": exc.message, "details": exc.details}).replace("async_", "async")
    fixed = json.loads(text)
    return type(exc)(fixed["message"], fixed["details"])


# Seconds of quiet after which a turn stream checks that its turn is still going.
LOST_COMPLETE_CHECK = 1.0


def ndjson_line(event: Any) -> bytes:
    return (
        json.dumps(
            {"type": event.type, "seq": event.seq, "data": event.data}, separators=(",", ":")
        )
        + "\n"
    ).encode()


async def follow_turn(submitted: agent.SubmittedTurn) -> AsyncIterator[bytes]:
    """The turn's events as NDJSON lines, ending with its `complete`.

    Whatever is ready at once goes out as one chunk: a fast stream commits its deltas
    in groups, and one HTTP chunk (one socket write) per group instead of per event is
    most of what the daemon costs per token. If the turn's end could not be stored
    (disk full), the stream still ends with the turn's `error` and `complete`.
    """
    mine = submitted.message_id
    log = submitted.log
    follow = log.follow_batches(submitted.start_seq, heartbeat=LOST_COMPLETE_CHECK)
    async with aclosing(follow) as batches:
        async for batch in batches:
            if batch is None:
                # Quiet for a while: has the turn ended with nothing left in flight?
                if submitted.running.done.is_set() and log.committed_seq >= log.last_seq:
                    break
                continue
            lines = []
            for event in batch:
                lines.append(ndjson_line(event))
                if event.type == "complete" and event.data.get("message_id") == mine:
                    yield b"".join(lines)
                    return
            yield b"".join(lines)
    await submitted.running.done.wait()
    yield b"".join(ndjson_line(event) for event in submitted.running.unrecorded)


async def post_message(session_id: str) -> Response | tuple[Response, int]:
    daemon = get_daemon()
    try:
        body = await json_body(MessageCreate)
    except InvalidRequest as exc:
        raise _wire_names(exc) from None
    if body.queue:
        queued = await queue.queue_message(daemon, session_id, body.parts)
        if queued is not None:
            return jsonify({"queued": True, **queued}), 202
    submitted = await agent.submit_message(daemon, session_id, body.parts)
    # The answer promises the message is stored. Waiting costs the turn nothing: it is
    # already sending the provider request while the write commits.
    try:
        await submitted.recorded()
    except StoreError:
        await daemon.sessions.abort(session_id)  # it cannot run: end it before answering
        raise
    if body.async_:
        payload = {
            "message_id": submitted.message_id,
            "turn_id": submitted.turn_id,
            "user_message_id": submitted.user_message_id,
            "seq": submitted.start_seq,
        }
        return jsonify(payload), 202
    response = Response(follow_turn(submitted), status=200, content_type=NDJSON)
    response.timeout = None  # a turn streams for as long as it runs
    return response


async def get_messages(session_id: str) -> Response:
    daemon = get_daemon()
    messages = await agent.list_messages(daemon, session_id)
    reverted, _ = await undo.revert_state(daemon, session_id)
    for message in messages:
        if message["id"] in reverted:
            message["reverted"] = True  # kept, left out of the context (agent.undo)
    return jsonify(messages)


async def post_abort(session_id: str) -> Response:
    return jsonify({"aborted": await agent.abort_turn(get_daemon(), session_id)})


async def get_permissions(session_id: str) -> Response:
    return jsonify(await agent.pending_permissions(get_daemon(), session_id))


async def post_permission(session_id: str, permission_id: str) -> Response:
    body = await json_body(PermissionAnswer)
    if body.response not in ("once", "always", "reject"):
        raise InvalidRequest(
            f"response must be once, always or reject, got {body.response!r}",
            {"field": "response"},
        )
    await agent.answer_permission(get_daemon(), session_id, permission_id, body.response)
    return jsonify({"id": permission_id, "response": body.response})


def register(app: QuartTrio) -> None:
    base = "/sessions/<session_id>"
    app.add_url_rule(f"{base}/messages", view_func=post_message, methods=["POST"])
    app.add_url_rule(f"{base}/messages", view_func=get_messages, methods=["GET"])
    app.add_url_rule(f"{base}/abort", view_func=post_abort, methods=["POST"])
    app.add_url_rule(f"{base}/permissions", view_func=get_permissions, methods=["GET"])
    app.add_url_rule(
        f"{base}/permissions/<permission_id>", view_func=post_permission, methods=["POST"]
    )


SID = [path_param("session_id")]

OPENAPI_SCHEMAS: dict[str, Any] = {
    "MessageCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["parts"],
        "properties": {
            "parts": {
                "type": "array",
                "minItems": 1,
                "contains": {"properties": {"text": {"pattern": "\\S"}}},
                "description": "at least one part's text is not blank",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["type", "text"],
                    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                },
            },
            "async": {
                "type": "boolean",
                "description": "answer 202 {message_id, turn_id, user_message_id, seq} at once",
            },
            "queue": {
                "type": "boolean",
                "description": "while a turn runs: queue it (202 {queued, id, position, ...}) "
                "instead of 409 SESSION_BUSY",
            },
        },
    },
    "PermissionAnswer": {
        "type": "object",
        "additionalProperties": False,
        "required": ["response"],
        "properties": {"response": {"enum": ["once", "always", "reject"]}},
    },
    "Message": obj(
        ["id", "role", "created", "parts"],
        id=STR,
        role={"enum": ["user", "assistant"]},
        created=TIME,
        reverted={"const": True, "description": "present when reverted (POST .../revert)"},
        parts={"type": "array", "items": {"type": "object", "required": ["type"]}},
    ),
    "PermissionRequest": obj(
        ["id", "tool", "args", "created"], id=STR, tool=STR, args=ANY_OBJ, created=TIME
    ),
    "MessageQueued": obj(
        ["queued", "id", "parts", "created", "position"],
        queued={"const": True},
        id=STR,
        parts={"type": "array", "items": {"type": "object", "required": ["type"]}},
        created=TIME,
        position={"type": "integer", "minimum": 1, "description": "1 runs next"},
    ),
    "TurnAccepted": obj(
        ["message_id", "turn_id", "user_message_id", "seq"],
        message_id=STR,
        turn_id=STR,
        user_message_id=STR,
        seq={"type": "integer", "minimum": 0},
    ),
}

OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/sessions/{session_id}/messages": {
        "post": op(
            "Send a message: runs a turn and streams its events as NDJSON lines "
            '{"type", "seq", "data"} until `complete` (202 with async: true)',
            op_id="postMessage",
            body="MessageCreate",
            params=SID,
            errors=(400, 404, 409, 413),
            content=NDJSON,
        ),
        "get": op(
            "The session's messages in order",
            op_id="getMessages",
            schema=array_of("Message"),
            params=SID,
            errors=(404,),
        ),
    },
    "/sessions/{session_id}/abort": {
        "post": op(
            "Cancel the running turn",
            op_id="abortTurn",
            schema=obj(["aborted"], aborted={"type": "boolean"}),
            params=SID,
            errors=(404,),
        ),
    },
    "/sessions/{session_id}/permissions": {
        "get": op(
            "Pending permission requests, oldest first",
            op_id="getPermissions",
            schema=array_of("PermissionRequest"),
            params=SID,
            errors=(404,),
            links={
                "Answer": link(
                    "answerPermission",
                    session_id="$request.path.session_id",
                    permission_id=FIRST_ID,
                )
            },
        ),
    },
    "/sessions/{session_id}/permissions/{permission_id}": {
        "post": op(
            "Answer a permission request (once, always, reject); 404 if unknown or answered",
            op_id="answerPermission",
            schema=obj(["id", "response"], id=STR, response={"enum": ["once", "always", "reject"]}),
            body="PermissionAnswer",
            params=[*SID, path_param("permission_id")],
            errors=(400, 404),
        ),
    },
}
OPENAPI_PATHS["/sessions/{session_id}/messages"]["post"]["responses"]["202"] = {
    "description": "accepted (async): the turn runs on; follow it on the WebSocket or SSE; "
    "or queued (queue) behind the running turn",
    "content": {
        "application/json": {
            "schema": {"oneOf": [ref("TurnAccepted"), ref("MessageQueued")]},
        }
    },
}
