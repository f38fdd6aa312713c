"""`POST /sessions/prune`: retention by hand (`opencode sessions prune --older-than 30d`).

The path shares its prefix with `/sessions/<session_id>`, which is GET/DELETE only, and
a static segment beats a variable one in the URL map, so the two never collide.
"""

from __future__ import annotations

from typing import Any

import attrs
from quart import Response, jsonify
from quart_trio import QuartTrio

from ... import retention
from ...errors import InvalidRequest
from ..app import get_daemon
from ..params import json_body
from .openapi import STR, obj, op

MAX_DAYS = 365_000.0  # keeps `days * 86400` far from overflowing a timestamp


@attrs.frozen
class PruneRequest:
    older_than_days: float


async def prune_sessions() -> Response:
    body = await json_body(PruneRequest)
    days = body.older_than_days
    if not 0 <= days <= MAX_DAYS:
        raise InvalidRequest(
            f"older_than_days must be between 0 and {MAX_DAYS:g}",
            {"field": "older_than_days"},
        )
    deleted = await retention.prune(get_daemon(), days)
    return jsonify({"deleted": deleted})


def register(app: QuartTrio) -> None:
    app.add_url_rule("/sessions/prune", view_func=prune_sessions, methods=["POST"])


OPENAPI_SCHEMAS: dict[str, Any] = {
    "PruneRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["older_than_days"],
        "properties": {
            "older_than_days": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_DAYS,
                "description": "remove sessions not updated for this many days (busy ones stay)",
            }
        },
    },
}

OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/sessions/prune": {
        "post": op(
            "Remove sessions not updated for N days, then shrink the database",
            op_id="pruneSessions",
            schema=obj(["deleted"], deleted={"type": "array", "items": STR}),
            body="PruneRequest",
            errors=(400, 413),
        )
    },
}
