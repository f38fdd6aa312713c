"""A session's history as a whole: compaction, fork, the message queue, diffs and undo.

`POST /sessions/:id/compact` summarises the history before the last turn (see
agent.compaction); the answer is the `compaction` event's data. `POST /sessions/:id/fork`
copies the history (up to a message) into a new session. `DELETE /sessions/:id/queue/:qid`
cancels a queued message (agent.queue). `GET /sessions/:id/diff[?turn=ID]`, `POST
/sessions/:id/revert {"message_id"}` and `POST /sessions/:id/unrevert` show and undo what
the agent's tools changed in the files (agent.changes, agent.undo).
"""

from __future__ import annotations

from typing import Any

import attrs
from quart import Response, jsonify
from quart_trio import QuartTrio

from ...agent import queue, session_ops, undo
from ..app import get_daemon
from ..params import json_body, query
from .openapi import NULLABLE_STR, STR, obj, op, path_param, query_param, ref
from .sessions import session_json


@attrs.frozen
class ForkRequest:
    message_id: str | None = None


@attrs.frozen
class RevertRequest:
    message_id: str


@attrs.frozen
class DiffQuery:
    turn: str | None = None


TOKENS = {"type": "integer", "minimum": 0}


async def post_compact(session_id: str) -> Response:
    data = await session_ops.compact_session(get_daemon(), session_id)
    return jsonify(data)


async def post_fork(session_id: str) -> tuple[Response, int]:
    body = await json_body(ForkRequest, empty_ok=True)
    fork = await session_ops.fork_session(get_daemon(), session_id, body.message_id)
    return jsonify(session_json(fork)), 201


async def delete_queued(session_id: str, queue_id: str) -> Response:
    daemon = get_daemon()
    await session_ops.snapshot(daemon, session_id)  # 404 for an unknown session
    queue.cancel(daemon, session_id, queue_id)
    return jsonify({"id": queue_id, "cancelled": True})


async def get_diff(session_id: str) -> Response:
    params = query(DiffQuery)
    text = await undo.session_diff(get_daemon(), session_id, params.turn)
    return Response(text, status=200, content_type="text/plain; charset=utf-8")


async def post_revert(session_id: str) -> Response:
    body = await json_body(RevertRequest)
    return jsonify(await undo.revert(get_daemon(), session_id, body.message_id))


async def post_unrevert(session_id: str) -> Response:
    return jsonify(await undo.unrevert(get_daemon(), session_id))


def register(app: QuartTrio) -> None:
    base = "/sessions/<session_id>"
    app.add_url_rule(f"{base}/diff", view_func=get_diff, methods=["GET"])
    app.add_url_rule(f"{base}/revert", view_func=post_revert, methods=["POST"])
    app.add_url_rule(f"{base}/unrevert", view_func=post_unrevert, methods=["POST"])
    app.add_url_rule(f"{base}/compact", view_func=post_compact, methods=["POST"])
    app.add_url_rule(f"{base}/fork", view_func=post_fork, methods=["POST"])
    app.add_url_rule(f"{base}/queue/<queue_id>", view_func=delete_queued, methods=["DELETE"])


SID = [path_param("session_id")]

OPENAPI_SCHEMAS: dict[str, Any] = {
    "RevertRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["message_id"],
        "properties": {
            "message_id": {
                "type": "string",
                "description": "restore the files to before this message's turn",
            }
        },
    },
    "Reverted": obj(
        ["message_id", "messages", "files"],
        message_id=NULLABLE_STR,
        messages={"type": "array", "items": STR, "description": "the messages (un)reverted"},
        files={"type": "array", "items": STR, "description": "the files restored"},
    ),
    "ForkRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "message_id": {
                "type": ["string", "null"],
                "description": "copy the history up to and with this message (all without)",
            }
        },
    },
    "QueuedMessage": obj(
        ["id", "parts", "created", "position"],
        id=STR,
        parts={"type": "array", "items": {"type": "object", "required": ["type"]}},
        created={"type": "integer"},
        position={"type": "integer", "minimum": 1, "description": "1 runs next"},
    ),
    "Compaction": obj(
        ["tokens_before", "tokens_after", "reason", "summarised"],
        tokens_before=TOKENS,
        tokens_after=TOKENS,
        reason={"enum": ["auto", "overflow", "manual"]},
        elided={**TOKENS, "description": "tool outputs elided from the context"},
        summarised={"type": "boolean"},
        summary=NULLABLE_STR,
        upto={**NULLABLE_STR, "description": "the last message the summary covers"},
    ),
}

OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/sessions/{session_id}/compact": {
        "post": op(
            "Summarise the history before the last turn now (the `compaction` event's data)",
            op_id="compactSession",
            schema={"$ref": "#/components/schemas/Compaction"},
            params=SID,
            errors=(400, 404, 409, 502),
        ),
    },
    "/sessions/{session_id}/diff": {
        "get": op(
            "Unified diff of what the agent changed in the files (reverted turns left out), "
            "or of one turn's changes",
            op_id="sessionDiff",
            params=[*SID, query_param("turn", STR, "a turn id")],
            errors=(400, 404),
            content="text/plain",
            schema={"type": "string"},
        ),
    },
    "/sessions/{session_id}/revert": {
        "post": op(
            "Restore the files to before this message's turn; it and later messages are "
            "marked reverted (409 CONFLICT naming files the user changed since)",
            op_id="revertSession",
            schema={"$ref": "#/components/schemas/Reverted"},
            body="RevertRequest",
            params=SID,
            errors=(400, 404, 409, 413),
        ),
    },
    "/sessions/{session_id}/unrevert": {
        "post": op(
            "Undo the latest revert while no message was sent since",
            op_id="unrevertSession",
            schema={"$ref": "#/components/schemas/Reverted"},
            params=SID,
            errors=(404, 409),
        ),
    },
    "/sessions/{session_id}/fork": {
        "post": op(
            "A new session with this one's history (up to message_id); files are not copied",
            op_id="forkSession",
            ok=201,
            schema=ref("Session"),
            body="ForkRequest",
            body_required=False,
            params=SID,
            errors=(400, 404, 413),
        ),
    },
    "/sessions/{session_id}/queue/{queue_id}": {
        "delete": op(
            "Cancel a queued message that has not started",
            op_id="cancelQueued",
            schema=obj(["id", "cancelled"], id=STR, cancelled={"const": True}),
            params=[*SID, path_param("queue_id")],
            errors=(404,),
        ),
    },
}
