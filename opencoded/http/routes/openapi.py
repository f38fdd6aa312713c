"""`GET /openapi.json`: OpenAPI 3.1, assembled from each route module's OPENAPI_PATHS.

Each route module describes its own paths next to its handlers; a test compares this
document with the app's URL map, so a route cannot be added without being documented.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterable
from typing import Any

from quart import Response, jsonify
from quart_trio import QuartTrio

from ... import __version__
from ..app import get_daemon

ERROR = {"$ref": "#/components/schemas/Error"}


def op(
    summary: str,
    *,
    op_id: str,
    ok: int = 200,
    schema: dict[str, Any] | None = None,
    body: str | None = None,
    body_required: bool = True,
    params: list | None = None,
    errors: tuple[int, ...] = (),
    content: str = "application/json",
    links: dict[str, Any] | None = None,
    auth: bool = True,
) -> dict[str, Any]:
    """One operation: summary, success status and its body's schema, request body, errors.

    Every answer is described with its schema so fuzzers check responses too; a JSON body
    adds 415 (Content-Type must be application/json). `links` say which operations take
    this one's answer (`$response.body#/id`), so stateful fuzzing can chain them.
    """
    media: dict[str, Any] = {"schema": schema} if schema is not None else {}
    success: dict[str, Any] = {"description": "OK", "content": {content: media}}
    if links:
        success["links"] = links
    responses: dict[str, Any] = {str(ok): success}
    extra = (415,) if body else ()
    for status in sorted({*errors, *extra, *((401,) if auth else ()), 403, 429, 500}):
        responses[str(status)] = {
            "description": "error",
            "content": {"application/json": {"schema": ERROR}},
        }
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if not auth:
        operation["security"] = []
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    return operation


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def array_of(name: str) -> dict[str, Any]:
    return {"type": "array", "items": ref(name)}


def link(op_id: str, **params: str) -> dict[str, Any]:
    """A link to `op_id`, each parameter taken from this answer (`$response.body#/id`)."""
    return {"operationId": op_id, "parameters": params}


def path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def query_param(name: str, schema: dict[str, Any], description: str = "") -> dict:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


STR = {"type": "string"}
NULLABLE_STR = {"type": ["string", "null"]}
TIME = {"type": "integer", "description": "Unix time, seconds"}
ANY_OBJ = {"type": "object"}

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
            "provider": {"type": ["string", "null"], "description": "a configured provider id"},
            "model": {
                "type": ["string", "null"],
                "pattern": "\\S",
                "description": "a model id, or `provider/model` (both parts not blank)",
            },
            "project": {"type": ["string", "null"], "description": "a project id"},
            "directory": {
                "type": ["string", "null"],
                "pattern": "^/",
                "description": "an existing directory (absolute path)",
            },
            "title": {"type": ["string", "null"]},
            "permission": {
                "type": "object",
                "description": "tool name -> action; names must be known tools",
                "additionalProperties": {"enum": ["allow", "ask", "deny"]},
            },
        },
    },
    "ProjectCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "path"],
        "properties": {
            "name": {"type": "string", "pattern": "\\S"},
            "path": {
                "type": "string",
                "pattern": "^/",
                "description": "an existing directory (absolute path)",
            },
        },
    },
    "Session": obj(
        ["id", "created", "updated", "project", "directory", "title", "status", "permission"],
        id=STR,
        created=TIME,
        updated=TIME,
        provider=NULLABLE_STR,
        model=NULLABLE_STR,
        project={**NULLABLE_STR, "description": "null once its project is unregistered"},
        directory=STR,
        title=STR,
        status={"enum": ["idle", "busy"]},
        permission={"type": "object", "additionalProperties": {"enum": ["allow", "ask", "deny"]}},
        tokens={
            "description": "GET /sessions/:id only: the last context size and the totals",
            **obj(
                ["context", "input", "output", "cost", "turns"],
                context={"type": "integer", "minimum": 0},
                input={"type": "integer", "minimum": 0},
                output={"type": "integer", "minimum": 0},
                cost={"type": "number", "minimum": 0},
                turns={"type": "integer", "minimum": 0},
            ),
        },
        queue={
            "description": "GET /sessions/:id only: messages queued behind the running turn",
            "type": "array",
            "items": {"$ref": "#/components/schemas/QueuedMessage"},
        },
    ),
    "Deleted": obj(["id", "deleted"], id=STR, deleted={"const": True}),
    "Project": obj(["id", "name", "path", "created"], id=STR, name=STR, path=STR, created=TIME),
    "FileEntry": obj(
        ["name", "path", "type", "size"],
        name=STR,
        path=STR,
        type={"enum": ["file", "directory", "symlink"]},
        size={"type": "integer", "minimum": 0},
    ),
    "Health": obj(
        [
            "status",
            "version",
            "uptime",
            "sessions_running",
            "sessions_open",
            "database",
            "endpoints",
            "sandbox",
        ],
        status={"enum": ["ok", "error"]},
        version=STR,
        uptime={"type": "number", "minimum": 0},
        sessions_running={"type": "integer", "minimum": 0},
        sessions_open={
            "type": "integer",
            "minimum": 0,
            "description": "sessions held in memory now (running a turn or followed)",
        },
        database=STR,
        endpoints=obj(["tcp", "unix"], tcp=NULLABLE_STR, unix=NULLABLE_STR),
        sandbox=ANY_OBJ,
    ),
    "Provider": obj(
        ["id", "name", "models", "configured"],
        id=STR,
        name=STR,
        models={"type": "array", "items": STR},
        configured={"type": "boolean"},
    ),
    "Model": obj(["id", "provider"], id=STR, provider=STR),
}

SID = [path_param("session_id")]
PID = [path_param("project_id")]
BY_ID = "$response.body#/id"
FIRST_ID = "$response.body#/0/id"


def session_links(value: str) -> dict[str, Any]:
    return {
        "GetSession": link("getSession", session_id=value),
        "GetMessages": link("getMessages", session_id=value),
        "PostMessage": link("postMessage", session_id=value),
        "Abort": link("abortTurn", session_id=value),
        "GetPermissions": link("getPermissions", session_id=value),
        "DeleteSession": link("deleteSession", session_id=value),
    }


def project_links(value: str) -> dict[str, Any]:
    return {
        "GetProject": link("getProject", project_id=value),
        "ListFiles": link("listFiles", project_id=value),
        "FileContent": link("fileContent", project_id=value),
        "DeleteProject": link("deleteProject", project_id=value),
    }


PATH_QUERY = query_param("path", {"type": "string"}, "relative to the project root")
FILE_QUERY = {
    **query_param("path", {"type": "string", "minLength": 1}, "relative to the project root"),
    "required": True,
}

OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/health": {
        "get": op(
            "Daemon health (no auth)",
            op_id="health",
            schema=ref("Health"),
            errors=(503,),
            auth=False,
        )
    },
    "/openapi.json": {"get": op("This document", op_id="openapi", schema=ANY_OBJ)},
    "/sessions": {
        "post": op(
            "Create a session (an empty body takes every default)",
            op_id="createSession",
            ok=201,
            schema=ref("Session"),
            body="SessionCreate",
            body_required=False,
            errors=(400, 404, 413),
            links=session_links(BY_ID),
        ),
        "get": op(
            "List sessions, newest first",
            op_id="listSessions",
            schema=array_of("Session"),
            params=[
                query_param("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page"),
                query_param(
                    "before",
                    {"type": "string", "minLength": 1},
                    "cursor: an existing session's id",
                ),
                query_param("project", {"type": "string"}, "project id"),
            ],
            errors=(400, 404),
            links=session_links(FIRST_ID),
        ),
    },
    "/sessions/{session_id}": {
        "get": op(
            "One session", op_id="getSession", schema=ref("Session"), params=SID, errors=(404,)
        ),
        "delete": op(
            "Delete a session",
            op_id="deleteSession",
            schema=ref("Deleted"),
            params=SID,
            errors=(404,),
        ),
    },
    "/providers": {
        "get": op("Providers and their models", op_id="listProviders", schema=array_of("Provider"))
    },
    "/models": {
        "get": op(
            "Model catalog with context size and price",
            op_id="listModels",
            schema=array_of("Model"),
        )
    },
    "/projects": {
        "get": op(
            "List projects",
            op_id="listProjects",
            schema=array_of("Project"),
            links=project_links(FIRST_ID),
        ),
        "post": op(
            "Register a project (201; 200 with the existing one when its path is registered)",
            op_id="createProject",
            ok=201,
            schema=ref("Project"),
            body="ProjectCreate",
            errors=(400, 404, 413),
            links=project_links(BY_ID),
        ),
    },
    "/projects/{project_id}": {
        "get": op(
            "One project", op_id="getProject", schema=ref("Project"), params=PID, errors=(404,)
        ),
        "delete": op(
            "Unregister a project (files untouched)",
            op_id="deleteProject",
            schema=ref("Deleted"),
            params=PID,
            errors=(404,),
        ),
    },
    "/projects/{project_id}/files": {
        "get": op(
            "Directory listing",
            op_id="listFiles",
            schema=array_of("FileEntry"),
            params=[*PID, PATH_QUERY],
            errors=(400, 404),
        )
    },
    "/projects/{project_id}/files/content": {
        "get": op(
            "One file's bytes (text/plain when UTF-8, else application/octet-stream)",
            op_id="fileContent",
            params=[*PID, FILE_QUERY],
            errors=(400, 404, 413),
            content="text/plain",
        )
    },
}
OPENAPI_PATHS["/projects"]["post"]["responses"]["200"] = {
    "description": "the path was registered already: that project",
    "content": {"application/json": {"schema": ref("Project")}},
    "links": project_links(BY_ID),
}
OPENAPI_PATHS["/projects/{project_id}/files/content"]["get"]["responses"]["200"]["content"][
    "application/octet-stream"
] = {}


def document(mcp_servers: Iterable[str] = ()) -> dict[str, Any]:
    from . import MODULES
    from .sessions import permission_key_pattern

    paths: dict[str, dict[str, Any]] = {}
    schemas = copy.deepcopy(SCHEMAS)
    # Permission keys: the tool registry's names, whatever tools it holds today, the
    # configured MCP servers' tools, and patterns.
    permission = schemas["SessionCreate"]["properties"]["permission"]
    permission["propertyNames"] = {"pattern": permission_key_pattern(mcp_servers)}
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
    return jsonify(document(get_daemon().config.mcp))


def register(app: QuartTrio) -> None:
    app.add_url_rule("/openapi.json", view_func=openapi, methods=["GET"])
