from __future__ import annotations

import os
import stat
from pathlib import Path

import attrs
import trio
from quart import Response, jsonify
from quart_trio import QuartTrio

from ...config import MAX_BODY_BYTES
from ...errors import InvalidRequest, NotFound, PayloadTooLarge, PermissionDenied
from ...projects import checked_directory, new_project, project_json
from ...records import Project
from ...tools.base import ToolError
from ...tools.paths import resolve_inside
from ..app import get_daemon
from ..params import json_body, query


@attrs.frozen
class ProjectCreate:
    name: str
    path: str


@attrs.frozen
class FilesQuery:
    path: str = ""


async def list_projects() -> Response:
    projects = await get_daemon().store.list_projects()
    return jsonify([project_json(p) for p in projects])


async def create_project() -> tuple[Response, int]:
    body = await json_body(ProjectCreate)
    if not body.name.strip():
        raise InvalidRequest("name must not be empty", {"field": "name"})
    directory = checked_directory(body.path, "path")
    store = get_daemon().store
    candidate = new_project(directory, body.name.strip())
    project = await store.create_project(candidate)
    return jsonify(project_json(project)), 201 if project.id == candidate.id else 200


async def _project(project_id: str) -> Project:
    project = await get_daemon().store.get_project(project_id)
    if project is None:
        raise NotFound(f"Project not found: {project_id}", {"projectId": project_id})
    return project


async def get_project(project_id: str) -> Response:
    return jsonify(project_json(await _project(project_id)))


async def delete_project(project_id: str) -> Response:
    if not await get_daemon().store.delete_project(project_id):
        raise NotFound(f"Project not found: {project_id}", {"projectId": project_id})
    return jsonify({"id": project_id, "deleted": True})


def _confined(root: str, path: str) -> Path:
    try:
        return resolve_inside(Path(root), path or ".")
    except ToolError:
        raise InvalidRequest(
            f"path is outside the project directory: {path}", {"field": "path"}
        ) from None


def _entry(root: Path, entry: os.DirEntry) -> dict:
    info = entry.stat(follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        kind = "symlink"
    elif stat.S_ISDIR(info.st_mode):
        kind = "directory"
    else:
        kind = "file"
    rel = os.path.relpath(entry.path, root)
    return {"name": entry.name, "path": rel, "type": kind, "size": info.st_size}


def _listing(root: Path, directory: Path) -> list[dict]:
    if not directory.is_dir():
        raise InvalidRequest(f"not a directory: {directory.relative_to(root)}", {"field": "path"})
    listed = []
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                listed.append(_entry(root, entry))
            except FileNotFoundError:
                continue  # removed while we listed
    return sorted(listed, key=lambda e: e["name"])


async def _on_disk(fn, *args):
    """Run blocking file work in a thread; file system refusals become API errors."""
    try:
        return await trio.to_thread.run_sync(fn, *args)
    except PermissionError as exc:
        raise PermissionDenied(
            f"the daemon may not read {exc.filename}", {"field": "path"}
        ) from None
    except FileNotFoundError as exc:
        raise NotFound(f"no such file or directory: {exc.filename}", {"field": "path"}) from None
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read {exc.filename}: {exc.strerror}", {"field": "path"}
        ) from None


async def list_files(project_id: str) -> Response:
    project = await _project(project_id)
    params = query(FilesQuery)
    root = Path(project.path).resolve()
    target = _confined(project.path, params.path)
    if not target.exists():
        raise NotFound(f"no such directory: {params.path}", {"path": params.path})
    return jsonify(await _on_disk(_listing, root, target))


def _read_text(path: Path) -> bytes:
    if not path.is_file():
        raise InvalidRequest(f"not a regular file: {path.name}", {"field": "path"})
    if path.stat().st_size > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"file over {MAX_BODY_BYTES} bytes", {"path": str(path)})
    return path.read_bytes()


async def file_content(project_id: str) -> Response:
    project = await _project(project_id)
    params = query(FilesQuery)
    if not params.path:
        raise InvalidRequest("path is required", {"field": "path"})
    target = _confined(project.path, params.path)
    if not target.exists():
        raise NotFound(f"no such file: {params.path}", {"path": params.path})
    data = await _on_disk(_read_text, target)
    try:
        data.decode("utf-8")
        content_type = "text/plain; charset=utf-8"
    except UnicodeDecodeError:
        content_type = "application/octet-stream"
    return Response(data, content_type=content_type)


def register(app: QuartTrio) -> None:
    app.add_url_rule("/projects", view_func=list_projects, methods=["GET"])
    app.add_url_rule("/projects", view_func=create_project, methods=["POST"])
    app.add_url_rule("/projects/<project_id>", view_func=get_project, methods=["GET"])
    app.add_url_rule("/projects/<project_id>", view_func=delete_project, methods=["DELETE"])
    app.add_url_rule("/projects/<project_id>/files", view_func=list_files, methods=["GET"])
    app.add_url_rule(
        "/projects/<project_id>/files/content", view_func=file_content, methods=["GET"]
    )
