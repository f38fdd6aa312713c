from __future__ import annotations

import os
import stat
from pathlib import Path

import attrs
import trio
from quart import Response, jsonify
from quart_trio import QuartTrio

from ...config import MAX_BODY_BYTES
from ...errors import ApiError, InvalidRequest, NotFound, PayloadTooLarge, PermissionDenied
from ...projects import checked_directory_async, new_project, project_json
from ...records import Project
from ...tools import paths
from ...tools.base import ToolError
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
    directory = await checked_directory_async(body.path, "path", get_daemon().config)
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


def _api_error(exc: ToolError, path: str) -> ApiError:
    """A confinement refusal as the API error a client can act on (never a 500)."""
    path = path if len(path) <= 200 else path[:200] + "…"
    details = {"field": "path", "path": path}
    if isinstance(exc, paths.NotFoundError):
        return NotFound(f"no such file or directory: {path}", details)
    if isinstance(exc, paths.FileRefused):
        return PermissionDenied(str(exc), details)
    if isinstance(exc, paths.PathEscapeError):
        return InvalidRequest(f"path is outside the project directory: {path}", details)
    return InvalidRequest(str(exc), details)


def _entry(dir_fd: int, prefix: str, entry: os.DirEntry) -> dict:
    info = os.stat(entry.name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        kind = "symlink"
    elif stat.S_ISDIR(info.st_mode):
        kind = "directory"
    elif stat.S_ISREG(info.st_mode):
        kind = "file"
    else:
        kind = "other"  # FIFO, socket, device: listed, never opened
    rel = prefix + entry.name
    return {"name": entry.name, "path": rel, "type": kind, "size": info.st_size}


def _listing(root: Path, path: str) -> list[dict]:
    parts = paths.relative_parts(root, path or ".")
    prefix = "" if not parts else paths.shown_path(parts) + "/"
    listed = []
    with paths.open_root(root) as root_fd:
        fd = paths.open_dir(root_fd, parts, path or ".")
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    listed.append(_entry(fd, prefix, entry))
                except FileNotFoundError:
                    continue  # removed while we listed
    finally:
        os.close(fd)
    return sorted(listed, key=lambda e: e["name"])


async def _on_disk(fn, root: str, path: str):
    """Run blocking file work in a thread; refusals and file system errors become API
    errors (400/403/404/413), never a 500."""
    try:
        return await trio.to_thread.run_sync(fn, Path(root), path)
    except ToolError as exc:
        raise _api_error(exc, path) from None
    except PermissionError:
        raise PermissionDenied(f"the daemon may not read {path}", {"field": "path"}) from None
    except FileNotFoundError:
        raise NotFound(f"no such file or directory: {path}", {"field": "path"}) from None
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror}", {"field": "path"}) from None


async def list_files(project_id: str) -> Response:
    project = await _project(project_id)
    params = query(FilesQuery)
    return jsonify(await _on_disk(_listing, project.path, params.path))


def _read_text(root: Path, path: str) -> bytes:
    parts = paths.relative_parts(root, path)
    with paths.open_root(root) as root_fd:
        try:
            fd = paths.open_regular(root_fd, parts, path)
        except paths.IsADirectory:
            raise InvalidRequest(f"not a regular file: {path}", {"field": "path"}) from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"file over {MAX_BODY_BYTES} bytes", {"path": path})
    return data


async def file_content(project_id: str) -> Response:
    project = await _project(project_id)
    params = query(FilesQuery)
    if not params.path:
        raise InvalidRequest("path is required", {"field": "path"})
    data = await _on_disk(_read_text, project.path, params.path)
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
