"""``opencode permissions [SESSION]`` and ``opencode permissions answer ID once|always|reject``.

A turn that asks for a permission waits until some client answers, whoever started it: these
commands see and answer requests from any shell (a ``send`` that was piped, a closed TUI).
"""

from typing import TYPE_CHECKING, Annotated

import typer

from ._common import EXIT_ERROR, JsonOpt, UrlOpt, client, usage_error

if TYPE_CHECKING:
    from opencode_cli import Client, Permission

ANSWERS = ("once", "always", "reject")


def pending(c: "Client", session: str | None = None) -> "list[tuple[str, Permission]]":
    """(session id, request) for one session, or for every busy session."""
    if session:
        return [(session, p) for p in c.permissions.list(session)]
    found = []
    for s in c.sessions.iter(page_size=100):
        if s.status == "busy":
            found += [(s.id, p) for p in c.permissions.list(s.id)]
    return found


def permissions(
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="[SESSION] to list (default: all busy ones), or: answer ID once|always|reject",
            show_default=False,
        ),
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="The request's session (for answer).")
    ] = None,
    url: UrlOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List pending permission requests, or answer one.

    opencode permissions [SESSION] · opencode permissions answer ID once|always|reject
    """
    args = args or []
    if args[:1] == ["answer"]:
        if len(args) != 3:
            raise usage_error("usage: opencode permissions answer ID once|always|reject")
        answer(client(url), args[1], args[2], session)
    elif len(args) > 1:
        raise usage_error("give at most one session id (or: answer ID once|always|reject)")
    else:
        list_pending(client(url), args[0] if args else session, json_)


def list_pending(c: "Client", session: str | None, json_: bool) -> None:
    from ._output import err, print_json, table
    from ._turn import tool_summary

    items = pending(c, session)
    if json_:
        print_json([{"session": sid, **p.raw} for sid, p in items])
        return
    rows = [(p.id, sid, p.tool, tool_summary(p.tool, p.args, 80)) for sid, p in items]
    table(("ID", "SESSION", "TOOL", "REQUEST"), rows)
    if not rows:
        err("no pending permission requests")
    else:
        err("answer with: opencode permissions answer ID once|always|reject")


def answer(c: "Client", permission_id: str, response: str, session: str | None) -> None:
    """Answer a pending request; its session is found among the busy ones unless given."""
    from ._output import error, out

    if response not in ANSWERS:
        raise usage_error(f"answer must be one of {', '.join(ANSWERS)}, not {response!r}")
    owner = session or next((sid for sid, p in pending(c) if p.id == permission_id), None)
    if owner is None:
        error(f"no pending permission request {permission_id!r} (see `opencode permissions`)")
        raise typer.Exit(EXIT_ERROR)
    c.permissions.respond(owner, permission_id, response)  # type: ignore[arg-type]
    out(f"{response}: {permission_id} (session {owner})")


def register(app: typer.Typer) -> None:
    app.command()(permissions)
