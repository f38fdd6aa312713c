"""Projects: named directories sessions work in. Validation shared by the routes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from .errors import InvalidRequest
from .records import Project, new_id, now
from .tools.sandbox import broad_root_reason

if TYPE_CHECKING:
    from .config import Config


async def checked_directory_async(path: str, field: str, config: Config | None = None) -> Path:
    """`checked_directory` in a worker thread: it touches the file system (resolve, stat,
    access), which can block (a slow or hung mount) and must not stall the event loop."""
    return await trio.to_thread.run_sync(checked_directory, path, field, config)


def checked_directory(path: str, field: str, config: Config | None = None) -> Path:
    """An absolute, existing directory, resolved (symlinks followed), or a 400.

    With `config`, also refuses directories too broad to confine anything (`/`, the home
    directory, the data directory...) unless `sandbox.allowBroadRoots` is set.
    """
    if not path:
        raise InvalidRequest(f"{field} must not be empty", {"field": field})
    if "\x00" in path:
        raise InvalidRequest(f"{field} contains a NUL byte", {"field": field})
    candidate = Path(path)
    if not candidate.is_absolute():
        raise InvalidRequest(f"{field} must be an absolute path, got {path!r}", {"field": field})
    try:
        resolved = candidate.resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError on 3.11)
        raise InvalidRequest(f"{field} cannot be resolved: {exc}", {"field": field}) from None
    if not resolved.is_dir():
        raise InvalidRequest(f"{field} is not a directory: {path}", {"field": field})
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise InvalidRequest(f"{field} is not readable by the daemon: {path}", {"field": field})
    if config is not None and (why := broad_root_reason(resolved, config)):
        raise InvalidRequest(
            f"{field} {path} is {why}: too broad to confine the agent to (the daemon's config "
            "can set sandbox.allowBroadRoots)",
            {"field": field},
        )
    return resolved


def new_project(directory: Path, name: str | None = None) -> Project:
    """A project record for directory, not yet stored.

    The store registers it only if the path is new (atomically, so concurrent requests
    for one directory agree on one project) and hands back the stored one.
    """
    return Project(new_id("proj"), name or directory.name or str(directory), str(directory), now())


def project_json(project: Project) -> dict:
    return {
        "id": project.id,
        "name": project.name,
        "path": project.path,
        "created": project.created,
    }
