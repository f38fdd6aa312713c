"""The agent's tools and the one entry point the agent loop calls: `run_tool`.

`run_tool` is where the promises of base.py are kept for every tool at once: arguments are
checked against the schema, any failure becomes a `ToolOutput` with `error=True` (only
cancellation propagates), and the text sent to the model is capped.
"""

from __future__ import annotations

import logging
from typing import Any

from opencoded.tools.base import Tool, ToolContext, ToolError, ToolOutput
from opencoded.tools.bash import BashTool
from opencoded.tools.files import EditTool, ListTool, ReadTool, WriteTool
from opencoded.tools.output import MAX_CHARS, MAX_LINES, NOTE_LINES, cap_head
from opencoded.tools.paths import PathEscapeError, relative_parts
from opencoded.tools.schema import validate_args
from opencoded.tools.search import GlobTool, GrepTool
from opencoded.tools.todo import TodoReadTool, TodoWriteTool
from opencoded.tools.webfetch import WebfetchTool

__all__ = [
    "MAX_CHARS",
    "MAX_LINES",
    "TOOLS",
    "PathEscapeError",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolOutput",
    "relative_parts",
    "run_tool",
    "tool_specs",
]

log = logging.getLogger(__name__)

TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        ReadTool(),
        WriteTool(),
        EditTool(),
        ListTool(),
        GlobTool(),
        GrepTool(),
        BashTool(),
        WebfetchTool(),
        TodoWriteTool(),
        TodoReadTool(),
    )
}


def tool_specs() -> list[tuple[str, str, dict[str, Any]]]:
    """(name, description, input_schema) of every tool, in a stable order, for the model."""
    return [(t.name, t.description, t.input_schema) for t in TOOLS.values()]


async def run_tool(name: str, args: Any, ctx: ToolContext) -> ToolOutput:
    """Run one tool call. Never raises, except trio.Cancelled (and other BaseExceptions)."""
    tool = TOOLS.get(name)
    if tool is None:
        return ToolOutput(f"unknown tool {name!r}; available: {', '.join(TOOLS)}", error=True)
    try:
        result = await tool.run(validate_args(tool.input_schema, args), ctx)
    except ToolError as exc:
        result = ToolOutput(str(exc), error=True)
    except Exception as exc:
        log.exception("tool %s failed", name)
        result = ToolOutput(f"tool {name} failed: {type(exc).__name__}: {exc}", error=True)
    return ToolOutput(
        cap_head(result.output, MAX_CHARS, MAX_LINES + NOTE_LINES), error=result.error
    )
