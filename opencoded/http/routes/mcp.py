"""`GET /mcp` (the MCP servers, their status and tools), `POST /mcp/NAME/restart`, and
`GET /sessions/:id/todo` (the session's task list, kept by the todo tools)."""

from __future__ import annotations

from typing import Any

from quart import Response, jsonify
from quart_trio import QuartTrio

from ...agent.toolbox import read_todos
from ...errors import InvalidRequest, NotFound
from ..app import get_daemon
from .openapi import op, path_param
from .sessions import load_session

RESTART_GRACE = 5.0  # seconds beyond the server's own connect timeout


async def list_servers() -> Response:
    return jsonify(get_daemon().mcp.snapshot())


async def restart_server(name: str) -> Response:
    manager = get_daemon().mcp
    server = manager.servers.get(name)
    if server is None:
        raise NotFound(f"MCP server not found: {name}", {"name": name})
    if not server.config.enabled:
        raise InvalidRequest(f"MCP server {name} is disabled in the config", {"name": name})
    await manager.restart(name, server.config.timeout / 1000 + RESTART_GRACE)
    return jsonify(server.snapshot())


async def get_todo(session_id: str) -> Response:
    await load_session(session_id)
    return jsonify(await read_todos(get_daemon().store, session_id))


def register(app: QuartTrio) -> None:
    app.add_url_rule("/mcp", view_func=list_servers, methods=["GET"])
    app.add_url_rule("/mcp/<name>/restart", view_func=restart_server, methods=["POST"])
    app.add_url_rule("/sessions/<session_id>/todo", view_func=get_todo, methods=["GET"])


OPENAPI_SCHEMAS: dict[str, Any] = {
    "McpServer": {
        "type": "object",
        "required": ["name", "type", "status", "tools"],
        "properties": {
            "name": {"type": "string"},
            "type": {"enum": ["local", "remote"]},
            "status": {"enum": ["disabled", "starting", "connected", "failed"]},
            "error": {"type": ["string", "null"], "description": "why it is not connected"},
            "last_error": {"type": ["string", "null"]},
            "restarts": {"type": "integer"},
            "connected_since": {"type": ["number", "null"]},
            "retry_at": {"type": ["number", "null"]},
            "tools": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "description": "as offered: SERVER_TOOL"},
                        "tool": {"type": "string", "description": "the server's own name"},
                        "description": {"type": "string"},
                    },
                },
            },
            "skipped": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Todo": {
        "type": "object",
        "required": ["content", "status"],
        "properties": {
            "content": {"type": "string"},
            "status": {"enum": ["pending", "in_progress", "completed"]},
        },
    },
}

OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/mcp": {
        "get": op("MCP servers: status, error and tools (array of McpServer)", op_id="listMcp")
    },
    "/mcp/{name}/restart": {
        "post": op(
            "Reconnect an MCP server now; answers its McpServer once connected or failed",
            op_id="restartMcp",
            params=[path_param("name")],
            errors=(400, 404),
        )
    },
    "/sessions/{session_id}/todo": {
        "get": op(
            "The session's task list (array of Todo)",
            op_id="getTodo",
            params=[path_param("session_id")],
            errors=(404,),
        )
    },
}
