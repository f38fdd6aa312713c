"""`todowrite` and `todoread`: the session's task list, a plan the clients can show.

The list lives in the session's event log: `todowrite` appends a `todo` event carrying the
whole list, and the current list is the latest such event (`GET /sessions/:id/todo`). So it
is stored exactly when clients are told, goes away with the session, and needs no table.
The tools reach it through `ToolContext.todos`, which the turn fills in.
"""

from __future__ import annotations

from typing import Any, Protocol

from .base import ToolContext, ToolError, ToolOutput

STATUSES = ("pending", "in_progress", "completed")
MAX_ITEMS = 100
MAX_CONTENT = 1000
_MARKS = {"pending": "[ ]", "in_progress": "[~]", "completed": "[x]"}


class TodoBoard(Protocol):
    """One session's task list."""

    async def get(self) -> list[dict[str, str]]: ...
    async def put(self, todos: list[dict[str, str]]) -> None: ...


def render(todos: list[dict[str, str]]) -> str:
    if not todos:
        return "The task list is empty."
    done = sum(t["status"] == "completed" for t in todos)
    lines = [f"{_MARKS[t['status']]} {t['content']}" for t in todos]
    return "\n".join([*lines, f"({done} of {len(todos)} completed)"])


def check_todos(value: Any) -> list[dict[str, str]]:
    """The list as stored: [{content, status}], or ToolError naming the bad item."""
    if not isinstance(value, list):
        raise ToolError("invalid argument 'todos': expected an array of {content, status}")
    if len(value) > MAX_ITEMS:
        raise ToolError(f"invalid argument 'todos': at most {MAX_ITEMS} items")
    todos = []
    for index, item in enumerate(value):
        where = f"todos[{index}]"
        if not isinstance(item, dict):
            raise ToolError(f"invalid argument {where!r}: expected an object {{content, status}}")
        content, status = item.get("content"), item.get("status")
        if not isinstance(content, str) or not content.strip():
            raise ToolError(f"invalid argument '{where}.content': expected a non-empty string")
        if status not in STATUSES:
            raise ToolError(
                f"invalid argument '{where}.status': expected one of {', '.join(STATUSES)}"
            )
        todos.append({"content": content.strip()[:MAX_CONTENT], "status": status})
    return todos


def _board(ctx: ToolContext) -> TodoBoard:
    if ctx.todos is None:
        raise ToolError("the task list is not available here")
    return ctx.todos


class TodoWriteTool:
    name = "todowrite"
    description = (
        "Replace the session's task list (the user sees it). Use it for work of several "
        "steps: write the whole list each time, one item in_progress at a time, and mark "
        "items completed as soon as they are done."
    )
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "todos": {
                "type": "array",
                "description": "The whole list, in order",
                "items": {
                    "type": "object",
                    "properties": {
                        "content": {"type": "string", "description": "What to do"},
                        "status": {"type": "string", "enum": list(STATUSES)},
                    },
                    "required": ["content", "status"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["todos"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        todos = check_todos(args["todos"])
        await _board(ctx).put(todos)
        return ToolOutput(render(todos))


class TodoReadTool:
    name = "todoread"
    description = "Read the session's task list."
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        return ToolOutput(render(await _board(ctx).get()))
