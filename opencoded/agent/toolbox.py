"""What a turn may call: the built-in tools and the tools of the connected MCP servers.

The turn asks here for the tools to offer at each step, whether a name is a tool (so it
goes through the permission rules), and to run a call; it also gets the session's task
list for the `todo` tools here. MCP tools run through the daemon's McpManager.
"""

from __future__ import annotations

import functools

import attrs

from ..daemon import Daemon
from ..providers.base import ToolSpec
from ..records import Event
from ..sessions.events import EventLog
from ..storage import Store
from ..tools import TOOLS, ToolContext, ToolOutput, run_tool, tool_specs
from ..tools.output import MAX_CHARS, MAX_LINES, NOTE_LINES, cap_head


@functools.cache
def _built_in() -> tuple[ToolSpec, ...]:
    return tuple(ToolSpec(n, d, s) for n, d, s in tool_specs())


async def offered(daemon: Daemon) -> tuple[ToolSpec, ...]:
    """The tools for the next step: built-ins, then each connected MCP server's."""
    await daemon.mcp.wait_started()  # once: servers on their first attempt, bounded
    mcp = tuple(ToolSpec(t.name, t.description, t.input_schema) for t in daemon.mcp.tools())
    return _built_in() + mcp


def known(daemon: Daemon, name: str) -> bool:
    return name in TOOLS or daemon.mcp.find(name) is not None


async def run(daemon: Daemon, name: str, args: object, ctx: ToolContext) -> ToolOutput:
    """Run one call. Never raises, except trio.Cancelled."""
    if name in TOOLS or daemon.mcp.find(name) is None:
        return await run_tool(name, args, ctx)
    result = await daemon.mcp.call(name, args)
    text = cap_head(result.output, MAX_CHARS, MAX_LINES + NOTE_LINES)
    return ToolOutput(text, result.error, result.images)


@attrs.frozen
class SessionTodos:
    """A session's task list: the latest `todo` event of its log (see tools/todo.py)."""

    store: Store
    log: EventLog
    session_id: str

    async def get(self) -> list[dict[str, str]]:
        return await read_todos(self.store, self.session_id)

    async def put(self, todos: list[dict[str, str]]) -> None:
        event = await self.log.append("todo", {"todos": todos})
        await self.log.wait_committed(event.seq)


async def read_todos(store: Store, session_id: str) -> list[dict[str, str]]:
    event: Event | None = await store.last_event(session_id, "todo")
    return list(event.data.get("todos", [])) if event is not None else []


def tool_context(daemon: Daemon, log: EventLog, session_id: str, **base: object) -> ToolContext:
    """The turn's ToolContext, with what the session-level tools need."""
    todos = SessionTodos(daemon.store, log, session_id)
    return ToolContext(**base, webfetch=daemon.config.webfetch, todos=todos)  # type: ignore[arg-type]
