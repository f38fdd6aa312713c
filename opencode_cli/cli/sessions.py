"""``opencode sessions`` (list, show, delete, abort) and ``opencode messages``.

Other modules add subcommands with ``@sessions.group.command()`` (e.g. ``sessions prune``).
"""

from typing import Annotated, Any

import typer

from ._common import JsonOpt, UrlOpt, client

group = typer.Typer(help="List and manage sessions (no subcommand: list).", no_args_is_help=False)

IdArg = Annotated[str, typer.Argument(help="Session id.", show_default=False)]


@group.callback(invoke_without_command=True)
def _default(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many.")] = 50,
    before: Annotated[
        str | None, typer.Option("--before", help="Page cursor: the last id of the previous page.")
    ] = None,
    project: Annotated[str | None, typer.Option("--project", help="Only this project id.")] = None,
    url: UrlOpt = None,
    json_: JsonOpt = False,
) -> None:
    if ctx.invoked_subcommand is None:
        list_sessions(limit=limit, before=before, project=project, url=url, json_=json_)


@group.command("list")
def list_sessions(
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many.")] = 50,
    before: Annotated[
        str | None, typer.Option("--before", help="Page cursor: the last id of the previous page.")
    ] = None,
    project: Annotated[str | None, typer.Option("--project", help="Only this project id.")] = None,
    url: UrlOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List sessions, newest first."""
    from ._output import print_json, table, when

    items = client(url).sessions.list(limit=limit, before=before, project=project)
    if json_:
        print_json([s.raw for s in items])
        return
    rows = [
        (
            s.id,
            s.status,
            when(s.updated or s.created),
            model_label(s),
            s.directory,
            s.title,
        )
        for s in items
    ]
    table(("ID", "STATUS", "UPDATED", "MODEL", "DIRECTORY", "TITLE"), rows)


def model_label(s: Any) -> str:
    """`provider/model`, or `default` when the session follows the daemon's default."""
    if s.model is None:
        return f"{s.provider}/default" if s.provider else "default"
    return f"{s.provider}/{s.model}" if s.provider else s.model


@group.command()
def show(session_id: IdArg, url: UrlOpt = None, json_: JsonOpt = False) -> None:
    """Show one session."""
    from ._output import out, print_json, when

    s = client(url).sessions.get(session_id)
    if json_:
        print_json(s.raw)
        return
    for key, value in (
        ("id", s.id),
        ("title", s.title),
        ("status", s.status),
        ("model", model_label(s)),
        ("project", s.project),
        ("directory", s.directory),
        ("created", when(s.created)),
        ("updated", when(s.updated)),
    ):
        out(f"{key}: {'' if value is None else value}")


@group.command()
def delete(session_id: IdArg, url: UrlOpt = None) -> None:
    """Delete a session and its history."""
    client(url).sessions.delete(session_id)


@group.command()
def abort(session_id: IdArg, url: UrlOpt = None, json_: JsonOpt = False) -> None:
    """Abort the session's running turn."""
    from ._output import out, print_json

    aborted = client(url).sessions.abort(session_id)
    if json_:
        print_json({"aborted": aborted})
    else:
        out("aborted" if aborted else "no turn was running")


OptionalIdArg = Annotated[
    str | None,
    typer.Argument(help="Session id [default: this directory's latest].", show_default=False),
]


def messages(session_id: OptionalIdArg = None, url: UrlOpt = None, json_: JsonOpt = False) -> None:
    """Show a session's conversation (this directory's latest session by default)."""
    import sys

    from ._output import out, paint, print_json
    from ._turn import tool_summary

    c = client(url)
    session_id = session_id or directory_session(c)
    items = c.sessions.messages(session_id)
    if json_:
        print_json([m.raw for m in items])
        return
    for i, msg in enumerate(items):
        if i:
            out()
        out(paint(f"{msg.role}:", "bold", sys.stdout))
        for part in msg.parts:
            if part.type == "text":
                out(part.text or "")
            elif part.type == "tool":
                mark = " (error)" if part.error else ""
                out(f"→ {part.tool} {tool_summary(part.tool or '', part.args)}{mark}")


def diff(session_id: OptionalIdArg = None, url: UrlOpt = None) -> None:
    """Show the unified diff of a session's changes (this directory's latest by default)."""
    import sys
    from urllib.parse import quote

    from opencode_cli import APIError

    from ._common import EXIT_ERROR
    from ._output import error, paint

    c = client(url)
    session_id = session_id or directory_session(c)
    try:
        body = c._transport.request("GET", f"/sessions/{quote(session_id, safe='')}/diff")
    except APIError as exc:
        if exc.code == "NOT_FOUND" and "no route" in exc.message:
            error("this daemon does not serve GET /sessions/:id/diff yet; a newer opencoded does")
            raise typer.Exit(EXIT_ERROR) from None
        raise
    colours = {"+": "green", "-": "red", "@": "cyan"}
    for line in diff_text(body).splitlines():
        style = None if line.startswith(("+++", "---")) else colours.get(line[:1])
        sys.stdout.write((paint(line, style, sys.stdout) if style else line) + "\n")


def diff_text(raw: bytes) -> str:
    """A diff route's answer as unified diff text, whether plain text or wrapped in JSON."""
    import json

    text = raw.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    if isinstance(doc, dict):
        for key in ("diff", "patch"):
            if isinstance(doc.get(key), str):
                return doc[key]
        files = doc.get("files")
        if isinstance(files, list):
            return "\n".join(str(f.get("diff") or f.get("patch") or "") for f in files)
    return json.dumps(doc, indent=2)


def directory_session(c: Any) -> str:
    """This directory's latest session, or exit 1 saying there is none."""
    import os

    from ._common import EXIT_ERROR
    from ._output import error
    from ._sessions import latest_for_directory

    found = latest_for_directory(c, os.path.realpath(os.getcwd()))
    if found is None:
        error("no session in this directory: pass a session id (see `opencode sessions`)")
        raise typer.Exit(EXIT_ERROR)
    return found


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="sessions")
    app.command()(messages)
    app.command()(diff)
