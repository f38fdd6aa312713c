"""``opencode mcp`` (list the MCP servers the daemon runs) and ``opencode mcp restart NAME``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ._common import JsonOpt, UrlOpt, client

group = typer.Typer(help="MCP servers: status, errors and tools (no subcommand: list).")

ToolsOpt = Annotated[bool, typer.Option("--tools", "-t", help="Also list each server's tools.")]


def _row(server: dict[str, Any]) -> tuple[Any, ...]:
    detail = server.get("error") or ""
    if not detail and server.get("restarts"):
        detail = f"restarted {server['restarts']}x; last error: {server.get('last_error') or '-'}"
    return (
        server.get("name"),
        server.get("type"),
        server.get("status"),
        len(server.get("tools") or []),
        detail,
    )


@group.callback(invoke_without_command=True)
def _default(
    ctx: typer.Context, url: UrlOpt = None, json_: JsonOpt = False, tools: ToolsOpt = False
) -> None:
    if ctx.invoked_subcommand is None:
        list_servers(url=url, json_=json_, tools=tools)


@group.command("list")
def list_servers(url: UrlOpt = None, json_: JsonOpt = False, tools: ToolsOpt = False) -> None:
    """List the configured MCP servers with their status and tools."""
    from ._output import out, print_json, table

    servers = client(url).mcp_servers()
    if json_:
        print_json(servers)
        return
    if not servers:
        out('No MCP servers configured (config "mcp").')
        return
    table(("NAME", "TYPE", "STATUS", "TOOLS", "ERROR"), [_row(s) for s in servers])
    if tools:
        for server in servers:
            for tool in server.get("tools") or []:
                first = (tool.get("description") or "").strip().splitlines()[:1]
                out(f"  {tool.get('name')}  {first[0][:80] if first else ''}".rstrip())


@group.command()
def restart(
    name: Annotated[str, typer.Argument(help='Server name (a key of config "mcp").')],
    url: UrlOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Reconnect one MCP server now (restarting its process); waits until it is up or failed."""
    from ._common import EXIT_ERROR
    from ._output import out, print_json

    server = client(url).mcp_restart(name)
    if json_:
        print_json(server)
    else:
        out(f"{server.get('name')}: {server.get('status')}" + (
            f" ({server['error']})" if server.get("error") else ""
        ))  # fmt: skip
    if server.get("status") != "connected":
        raise typer.Exit(EXIT_ERROR)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="mcp")
