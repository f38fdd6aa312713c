from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import attrs
from quart import Response, jsonify
from quart_trio import QuartTrio

from ...agent import queue
from ...agent.latest import latest
from ...agent.turn import usage_base
from ...errors import InvalidRequest, NotFound, SessionNotFound
from ...projects import checked_directory_async, new_project
from ...records import Session, new_id, now
from ...tools import TOOLS
from ..app import get_daemon
from ..params import json_body, query

MAX_PAGE = 500


@attrs.frozen
class SessionCreate:
    provider: str | None = None
    model: str | None = None
    project: str | None = None
    directory: str | None = None
    title: str | None = None
    permission: dict[str, Literal["allow", "ask", "deny"]] = attrs.Factory(dict)


@attrs.frozen
class SessionsQuery:
    limit: int = 50
    before: str | None = None
    project: str | None = None


def session_json(session: Session) -> dict:
    return {
        "id": session.id,
        "created": session.created,
        "updated": session.updated,
        "provider": session.provider,
        "model": session.model,
        "project": session.project,
        "directory": session.directory,
        "title": session.title,
        "status": get_daemon().sessions.status(session.id),
        "permission": session.permission,
    }


async def load_session(session_id: str) -> Session:
    session = await get_daemon().store.get_session(session_id)
    if session is None:
        raise SessionNotFound(session_id)
    return session


def _split_model(body: SessionCreate) -> tuple[str | None, str | None]:
    """`model: "anthropic/claude-sonnet-4-5"` names its provider unless one is given."""
    provider, model = body.provider, body.model
    if model is not None and not model.strip():
        raise InvalidRequest("model must not be empty", {"field": "model"})
    if provider is None and model and "/" in model:
        provider, model = model.split("/", 1)
        if not provider.strip() or not model.strip():
            raise InvalidRequest(
                f"model must be 'provider/model' with both parts, got {body.model!r}",
                {"field": "model"},
            )
    if provider is not None:
        known = {p["id"] for p in get_daemon().providers.list_providers()}
        if provider not in known:
            raise InvalidRequest(
                f"unknown provider {provider!r}; known: {', '.join(sorted(known))}",
                {"field": "provider"},
            )
    return provider, model


def permission_key_pattern(mcp_servers: Iterable[str]) -> str:
    """What a permission key may be (contract section 8): a built-in tool, a tool of a
    configured MCP server (`NAME_TOOL`), or a pattern where `*` matches any run."""
    alternatives = [re.escape(name) for name in sorted(TOOLS)]
    alternatives += [re.escape(server) + "_.+" for server in sorted(mcp_servers)]
    alternatives.append(r".*\*.*")
    return "^(" + "|".join(alternatives) + ")$"


def _check_permission(permission: dict[str, str]) -> None:
    """Keys are tool names: a typo (`"Bash"`) would otherwise silently leave `ask` in force."""
    servers = get_daemon().config.mcp
    pattern = re.compile(permission_key_pattern(servers))
    for name in permission:
        if not pattern.fullmatch(name):
            known = [*sorted(TOOLS), *(f"{s}_*" for s in sorted(servers))]
            raise InvalidRequest(
                f"permission names an unknown tool {name!r}; tools: {', '.join(known)}",
                {"field": f"permission.{name}"},
            )


async def create_session() -> tuple[Response, int]:
    daemon = get_daemon()
    body = await json_body(SessionCreate, empty_ok=True)
    provider, model = _split_model(body)
    _check_permission(body.permission)
    created_project = None
    if body.project is not None:
        project = await daemon.store.get_project(body.project)
        if project is None:
            raise NotFound(f"Project not found: {body.project}", {"field": "project"})
        directory = Path(project.path)
        if body.directory is not None:
            directory = await checked_directory_async(body.directory, "directory", daemon.config)
            if not directory.is_relative_to(project.path):
                raise InvalidRequest("directory must be inside the project", {"field": "directory"})
    else:
        raw = body.directory if body.directory is not None else str(daemon.workdir)
        directory = await checked_directory_async(raw, "directory", daemon.config)
        project = created_project = new_project(directory)
    stamp = now()
    session = Session(
        id=new_id("session"),
        created=stamp,
        updated=stamp,
        provider=provider,
        model=model,
        project=project.id,
        directory=str(directory),
        title=(body.title or "").strip() or f"Session in {os.path.basename(directory) or '/'}",
        permission=dict(body.permission),
    )
    session = await daemon.store.create_session(session, created_project)
    daemon.sessions.notify("session.created", session.id)
    return jsonify(session_json(session)), 201


async def list_sessions() -> Response:
    params = query(SessionsQuery)
    if not 1 <= params.limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}", {"field": "limit"})
    store = get_daemon().store
    if params.before is not None and await store.get_session(params.before) is None:
        raise InvalidRequest(f"unknown cursor session {params.before!r}", {"field": "before"})
    sessions = await store.list_sessions(
        limit=params.limit, before=params.before, project=params.project
    )
    return jsonify([session_json(s) for s in sessions])


async def get_session(session_id: str) -> Response:
    session = await load_session(session_id)
    body = session_json(session)
    daemon = get_daemon()
    compaction = await latest(daemon, session_id, "compaction")
    body["tokens"] = session_tokens(await usage_base(daemon, session_id, compaction))
    body["queue"] = queue.listed(get_daemon(), session_id)
    return jsonify(body)


def session_tokens(usage: dict) -> dict:
    """The session's token accounting (agent.turn.usage_base): the last context size and
    the totals of every turn and on-demand compaction."""
    return {
        "context": int(usage.get("context_tokens") or 0),
        "input": int(usage.get("input_tokens") or 0),
        "output": int(usage.get("output_tokens") or 0),
        "cost": float(usage.get("cost") or 0.0),
        "turns": int(usage.get("turns") or 0),
    }


async def delete_session(session_id: str) -> Response:
    if not await get_daemon().sessions.delete(session_id):
        raise SessionNotFound(session_id)
    return jsonify({"id": session_id, "deleted": True})


def register(app: QuartTrio) -> None:
    app.add_url_rule("/sessions", view_func=create_session, methods=["POST"])
    app.add_url_rule("/sessions", view_func=list_sessions, methods=["GET"])
    app.add_url_rule("/sessions/<session_id>", view_func=get_session, methods=["GET"])
    app.add_url_rule("/sessions/<session_id>", view_func=delete_session, methods=["DELETE"])
