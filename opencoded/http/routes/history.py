"""A session's history as a whole: compaction on demand (more below as they come).

`POST /sessions/:id/compact` summarises the history before the last turn (see
agent.compaction); the answer is the `compaction` event's data.
"""

from __future__ import annotations

from typing import Any

from quart import Response, jsonify
from quart_trio import QuartTrio

from ...agent import session_ops
from ..app import get_daemon
from .openapi import NULLABLE_STR, obj, op, path_param

TOKENS = {"type": "integer", "minimum": 0}


async def post_compact(session_id: str) -> Response:
    data = await session_ops.compact_session(get_daemon(), session_id)
    return jsonify(data)


def register(app: QuartTrio) -> None:
    base = "/sessions/<session_id>"
    app.add_url_rule(f"{base}/compact", view_func=post_compact, methods=["POST"])


SID = [path_param("session_id")]

OPENAPI_SCHEMAS: dict[str, Any] = {
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
}
