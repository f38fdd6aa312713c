"""`GET /openapi.json`: OpenAPI 3.1, assembled from each route module's OPENAPI_PATHS.

Each route module describes its own paths next to its handlers; a test compares this
document with the app's URL map, so a route cannot be added without being documented.
"""

from __future__ import annotations

import importlib
from typing import Any

from quart import Response, jsonify
from quart_trio import QuartTrio

from ... import __version__

ERROR = {"$ref": "#/components/schemas/Error"}


def op(
    summary: str,
    *,
    ok: int = 200,
    body: str | None = None,
    params: list | None = None,
    errors: tuple[int, ...] = (),
    content: str = "application/json",
) -> dict[str, Any]:
    """A compact operation description: summary, success status, request body, errors."""
    responses: dict[str, Any] = {str(ok): {"description": "OK", "content": {content: {}}}}
    for status in (*errors, 401, 403, 429, 500):
        responses[str(status)] = {
            "description": "error",
            "content": {"application/json": {"schema": ERROR}},
        }
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    return operation


def path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def query_param(name: str, type_: str = "string", description: str = "") -> dict:
    return {"name": name, "in": "query", "schema": {"type": type_}, "description": description}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            }
        },
    },
    "SessionCreate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "provider": {"type": "string"},
            "model": {"type": "string"},
            "project": {"type": "string"},
            "directory": {"type": "string"},
            "title": {"type": "string"},
            "permission": {
                "type": "object",
                "additionalProperties": {"enum": ["allow", "ask", "deny"]},
            },
        },
    },
    "ProjectCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "path"],
        "properties": {"name": {"type": "string"}, "path": {"type": "string"}},
    },
}

SID = [path_param("session_id")]
PID = [path_param("project_id")]

OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/health": {"get": op("Daemon health (no auth)", errors=(503,))},
    "/openapi.json": {"get": op("This document")},
    "/sessions": {
        "post": op("Create a session", ok=201, body="SessionCreate", errors=(400, 404, 413)),
        "get": op(
            "List sessions, newest first",
            params=[
                query_param("limit", "integer", "1..500, default 50"),
                query_param("before", "string", "cursor: a session id"),
                query_param("project", "string", "project id"),
            ],
            errors=(400,),
        ),
    },
    "/sessions/{session_id}": {
        "get": op("One session", params=SID, errors=(404,)),
        "delete": op("Delete a session", params=SID, errors=(404,)),
    },
    "/providers": {"get": op("Providers and their models")},
    "/models": {"get": op("Model catalog with context size and price")},
    "/projects": {
        "get": op("List projects"),
        "post": op("Register a project", ok=201, body="ProjectCreate", errors=(400,)),
    },
    "/projects/{project_id}": {
        "get": op("One project", params=PID, errors=(404,)),
        "delete": op("Unregister a project (files untouched)", params=PID, errors=(404,)),
    },
    "/projects/{project_id}/files": {
        "get": op(
            "Directory listing",
            params=[*PID, query_param("path", "string", "relative to the project root")],
            errors=(400, 404),
        )
    },
    "/projects/{project_id}/files/content": {
        "get": op(
            "One file's text",
            params=[*PID, query_param("path", "string", "relative to the project root")],
            errors=(400, 404, 413),
            content="text/plain",
        )
    },
}


def document() -> dict[str, Any]:
    from . import MODULES

    paths: dict[str, dict[str, Any]] = {}
    schemas = dict(SCHEMAS)
    for name in MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        for path, operations in getattr(module, "OPENAPI_PATHS", {}).items():
            paths.setdefault(path, {}).update(operations)
        schemas.update(getattr(module, "OPENAPI_SCHEMAS", {}))
    return {
        "openapi": "3.1.0",
        "info": {"title": "opencoded", "version": __version__},
        "servers": [{"url": "http://127.0.0.1:3000"}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


async def openapi() -> Response:
    return jsonify(document())


def register(app: QuartTrio) -> None:
    app.add_url_rule("/openapi.json", view_func=openapi, methods=["GET"])
