"""``opencode undo``, ``redo``, ``fork`` and ``compact``: a session's history and files.

Each takes an optional session id; without one, this directory's latest session.
"""

from typing import Annotated, Any

import typer

from ._common import JsonOpt, UrlOpt, client
from .sessions import OptionalIdArg, directory_session


def _call(c: Any, method: str, path: str, body: Any = None) -> Any:
    import json

    raw = c._transport.request(method, path, json=body if body is not None else {})
    return json.loads(raw) if raw else None


def _path(session_id: str, tail: str) -> str:
    from urllib.parse import quote

    return f"/sessions/{quote(session_id, safe='')}/{tail}"


def _report(result: dict[str, Any], what: str, json_: bool) -> None:
    from ._output import out, print_json

    if json_:
        print_json(result)
        return
    files = result.get("files") or []
    count = len(result.get("messages") or [])
    out(f"{what} {count} message(s); files restored: {', '.join(files) or 'none'}")


def undo(session_id: OptionalIdArg = None, url: UrlOpt = None, json_: JsonOpt = False) -> None:
    """Revert the last turn: its file changes are undone, its messages marked reverted."""
    from ._common import EXIT_ERROR
    from ._output import error

    c = client(url)
    session_id = session_id or directory_session(c)
    messages = _call(c, "GET", _path(session_id, "messages"))
    users = [m for m in messages if m["role"] == "user" and not m.get("reverted")]
    if not users:
        error("nothing to undo: no turn that is not reverted already")
        raise typer.Exit(EXIT_ERROR)
    result = _call(c, "POST", _path(session_id, "revert"), {"message_id": users[-1]["id"]})
    _report(result, "reverted", json_)


def redo(session_id: OptionalIdArg = None, url: UrlOpt = None, json_: JsonOpt = False) -> None:
    """Undo the last `opencode undo` (while no message was sent since)."""
    c = client(url)
    session_id = session_id or directory_session(c)
    _report(_call(c, "POST", _path(session_id, "unrevert")), "restored", json_)


def fork(
    session_id: OptionalIdArg = None,
    message: Annotated[
        str | None,
        typer.Option("--message", help="Copy the history up to this message id (default: all)."),
    ] = None,
    url: UrlOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Make a new session with this one's history (the files are not copied)."""
    from ._output import out, print_json

    c = client(url)
    session_id = session_id or directory_session(c)
    body = {"message_id": message} if message else {}
    forked = _call(c, "POST", _path(session_id, "fork"), body)
    if json_:
        print_json(forked)
        return
    out(forked["id"])


def compact(session_id: OptionalIdArg = None, url: UrlOpt = None, json_: JsonOpt = False) -> None:
    """Summarise the session's history before its last turn, to free context."""
    from ._output import out, print_json

    c = client(url)
    session_id = session_id or directory_session(c)
    result = _call(c, "POST", _path(session_id, "compact"))
    if json_:
        print_json(result)
    elif result.get("summarised"):
        out(f"compacted: about {result['tokens_before']} → {result['tokens_after']} tokens")
    else:
        out("nothing to compact: only the last turn is in the context")


def register(app: typer.Typer) -> None:
    for command in (undo, redo, fork, compact):
        app.command()(command)
