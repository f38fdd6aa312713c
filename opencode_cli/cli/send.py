"""``opencode send``: one turn from a shell or a script."""

import sys
from typing import Annotated

import typer

from ._common import EXIT_ERROR, EXIT_OK, NoStartOpt, UrlOpt, client, usage_error


def send(
    message: Annotated[
        list[str] | None,
        typer.Argument(
            help="The message (words are joined). '-' or nothing with piped stdin reads stdin.",
            show_default=False,
        ),
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="Send to this session id.")
    ] = None,
    cont: Annotated[
        bool,
        typer.Option("--continue", "-c", help="Continue this directory's latest session."),
    ] = False,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="PROVIDER/MODEL for a new session.", show_default=False),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Allow every permission request (once each).")
    ] = False,
    title: Annotated[
        str | None,
        typer.Option("--title", help="Title of a new session [default: the message's first line]."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tools' whole output, not the first lines.")
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the raw NDJSON events.")] = False,
    queue: Annotated[
        bool,
        typer.Option(
            "--queue", help="If a turn is running, queue the message behind it and return."
        ),
    ] = False,
    url: UrlOpt = None,
    no_start: NoStartOpt = False,
) -> None:
    """Send a message and stream the reply (a new session in this directory unless told)."""
    from opencode_cli import InvalidRequestError, PayloadTooLargeError

    from ._output import error
    from ._sessions import attach, choose_session, title_for
    from ._turn import JsonRenderer, TextRenderer, permission_policy, run_turn

    text = _message_text(message)
    c = client(url, autostart=True, no_start=no_start)
    sid, created = choose_session(
        c, session=session, cont=cont, model=model, title=title or title_for(text)
    )
    render = JsonRenderer() if json_ else TextRenderer(verbose=verbose)
    if queue and not created and c.sessions.get(sid).status == "busy":
        _queue(c, sid, text, json_)
        raise typer.Exit(EXIT_OK)
    if not created:
        attach(c, sid, yes=yes, note=render.note)
    try:
        status = run_turn(c, sid, text, render, permission_policy(yes, render.note))
    except (InvalidRequestError, PayloadTooLargeError):
        # Refused before anything was stored (no provider, a body too large): do not leave
        # an empty session behind for every failed attempt.
        if created:
            c.sessions.delete(sid)
        raise
    if status != "completed":
        if not json_:
            error(f"turn ended with status {status!r} (session {sid})")
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_OK)


def _queue(c: object, sid: str, text: str, json_: bool) -> None:
    """Queue the message behind the running turn (or start it, if that turn just ended)."""
    import json
    from urllib.parse import quote

    from ._output import out, print_json

    body = {"parts": [{"type": "text", "text": text}], "queue": True, "async": True}
    path = f"/sessions/{quote(sid, safe='')}/messages"
    answer = json.loads(c._transport.request("POST", path, json=body))  # type: ignore[attr-defined]
    if json_:
        print_json(answer)
    elif answer.get("queued"):
        out(f"queued at position {answer['position']} ({answer['id']}) in session {sid}")
    else:
        out(f"started turn {answer['turn_id']} in session {sid} (follow: opencode chat)")


def _message_text(words: list[str] | None) -> str:
    if words == ["-"] or (not words and not sys.stdin.isatty()):
        text = sys.stdin.read()
    elif not words:
        raise usage_error("no message: give it as an argument, or pipe it on stdin")
    else:
        text = " ".join(words)
    if not text.strip():
        raise usage_error("the message is empty")
    return text


def register(app: typer.Typer) -> None:
    app.command()(send)
