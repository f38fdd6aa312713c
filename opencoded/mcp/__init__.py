"""MCP servers as tool sources: the daemon's `McpManager`.

Servers are started when the daemon starts (in the background: a slow or broken server
never delays start-up), each as a task of the manager's nursery, and stopped when the
daemon stops. A turn waits at most `STARTUP_WAIT` seconds, once, for servers still on
their first attempt, so the first message after a daemon start sees their tools; after
that a turn offers whatever is connected at each step. See connection.py for one
server's life and docs/api.md for the config and the routes.
"""

from __future__ import annotations

from typing import Any

import trio

from ..config import McpServerConfig
from ..tools.base import ToolOutput
from .connection import McpServer
from .convert import McpTool

__all__ = ["STARTUP_WAIT", "McpManager", "McpServer", "McpTool"]

STARTUP_WAIT = 3.0


class UnknownServer(KeyError):
    pass


class McpManager:
    def __init__(self, servers: dict[str, McpServerConfig]) -> None:
        self.servers = {name: McpServer(name, config) for name, config in servers.items()}

    async def run(self) -> None:
        """Run every enabled server until cancelled (the daemon's shutdown)."""
        async with trio.open_nursery() as nursery:
            for server in self.servers.values():
                if server.config.enabled:
                    nursery.start_soon(server.run)

    async def wait_started(self, limit: float = STARTUP_WAIT) -> None:
        """Until every enabled server's first attempt settled, at most `limit` seconds."""
        with trio.move_on_after(limit):
            for server in self.servers.values():
                if server.config.enabled:
                    await server.first_attempt.wait()

    def tools(self) -> list[McpTool]:
        """The tools of the connected servers, in config order."""
        return [tool for server in self.servers.values() for tool in server.tools]

    def find(self, name: str) -> tuple[McpServer, McpTool] | None:
        for server in self.servers.values():
            for tool in server.tools:
                if tool.name == name:
                    return server, tool
        return None

    async def call(self, name: str, args: Any) -> ToolOutput:
        found = self.find(name)
        if found is None:
            return ToolOutput(f"The MCP tool {name!r} is no longer available.", error=True)
        if not isinstance(args, dict):
            return ToolOutput("arguments must be a JSON object", error=True)
        server, tool = found
        return await server.call(tool, args)

    def snapshot(self) -> list[dict[str, Any]]:
        return [server.snapshot() for server in self.servers.values()]

    async def restart(self, name: str, wait: float) -> McpServer:
        server = self.servers.get(name)
        if server is None:
            raise UnknownServer(name)
        if server.config.enabled:
            await server.restart(wait)
        return server
