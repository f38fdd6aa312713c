"""The tool interface. Tools are what the agent may do to the session directory.

Every tool confines paths to `ToolContext.root` (see paths.py: opened relative to the root's
directory fd, never following a symlink) and reports failure as a `ToolOutput` with
`error=True` (or by raising `ToolError`, which the runner turns into one); a tool never
crashes a turn.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from opencoded.tools.sandbox import Jail

    from ..config import WebfetchConfig
    from .todo import TodoBoard


class ToolError(Exception):
    """A failure the model should read (bad argument, missing file, path escape...)."""


@attrs.frozen
class ToolContext:
    root: Path  # the session directory, already resolved
    bash_timeout: float = 120.0
    # How bash commands are sandboxed (sandbox.py); None runs them unconfined, but still
    # under the supervisor that kills their whole process tree.
    jail: Jail | None = None
    # Told the pid of a bash command's supervisor (also its process-group id) when it starts
    # and when it is gone, so the daemon can record it. Called in the Trio thread.
    on_spawn: Callable[[int], None] | None = None
    on_exit: Callable[[int], None] | None = None
    # The session-level tools: webfetch's settings, the session's task list (todo.py).
    webfetch: WebfetchConfig | None = None
    todos: TodoBoard | None = None


@attrs.frozen
class ToolOutput:
    output: str
    error: bool = False
    # (media type, base64 data) of images for the model (MCP results); `output` names them too.
    images: tuple[tuple[str, str], ...] = ()


class Tool(Protocol):
    name: str
    description: str
    input_schema: dict[str, Any]

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput: ...
