"""Path confinement: the one place that decides whether a path is inside a session's root.

Tools and the HTTP file routes both call `resolve_inside`, so the rule ("after resolving `..`
and symlinks, the path must be the root or below it") cannot drift between them. It touches
the disk (to read symlinks), so async callers run it in a worker thread.
"""

from __future__ import annotations

import os
from pathlib import Path

from opencoded.tools.base import ToolError


class PathEscapeError(ToolError):
    """The path points outside the root, directly or through a symlink."""


def resolve_inside(root: Path, path: str | os.PathLike[str]) -> Path:
    """Resolve `path` (relative to `root`, or absolute) and refuse it unless it is inside.

    Every symlink on the way is followed, including a final one that dangles, so a link
    inside the root that points outside is refused even when its target does not exist yet
    (otherwise `write` could create a file outside the root through it).
    """
    text = os.fspath(path)
    if "\x00" in text:
        raise ToolError("path contains a NUL byte")
    real_root = Path(root).resolve()
    try:
        # `~user` of an unknown user: RuntimeError
        candidate = Path(text).expanduser() if text.startswith("~") else Path(text)
        if not candidate.is_absolute():
            candidate = real_root / candidate
        resolved = candidate.resolve()
    except (RuntimeError, OSError) as exc:  # symlink loop (RuntimeError on 3.11)
        raise ToolError(f"cannot resolve path {text!r}: {exc}") from exc
    if not resolved.is_relative_to(real_root):
        raise PathEscapeError(f"path is outside the session directory: {text}")
    return resolved


def relative_to_root(root: Path, path: Path) -> str:
    """How a resolved path is shown to the model and clients: relative, '.' for the root."""
    rel = path.relative_to(Path(root).resolve())
    return rel.as_posix() if rel.parts else "."
