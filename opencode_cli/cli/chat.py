"""``opencode chat``: a line-oriented chat on one session, for dumb terminals and pipes.

``opencode tui`` is the full-screen app and falls back to this off a terminal. Enter sends, the
reply streams, tool calls show as lines, permission requests are asked inline; Ctrl-C during a
turn aborts it (on the daemon) and returns to the prompt, Ctrl-D leaves.
"""

from typing import Annotated

import typer

from ._common import NoStartOpt, UrlOpt, client

PROMPT = "> "
HELP = "Enter sends · Ctrl-C aborts a turn · Ctrl-D or /exit leaves · /session shows the id"


def chat(
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="Chat in this session id.")
    ] = None,
    cont: Annotated[
        bool, typer.Option("--continue", "-c", help="Continue this directory's latest session.")
    ] = False,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="PROVIDER/MODEL for a new session.")
    ] = None,
    url: UrlOpt = None,
    no_start: NoStartOpt = False,
) -> None:
    """Chat with the agent line by line (for dumb terminals and pipes)."""
    import contextlib
    import sys

    from opencode_cli import APIError, ProtocolError

    from ._output import error, out, paint
    from ._sessions import choose_session
    from ._turn import TextRenderer, permission_policy, run_turn

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())

    c = client(url, autostart=True, no_start=no_start)
    sid, created = choose_session(c, session=session, cont=cont, model=model)
    if not created:
        from ._sessions import attach

        attach(c, sid, yes=False, note=lambda line: sys.stderr.write(line + "\n"))
    out(paint(f"opencode · session {sid}", "bold", sys.stdout))
    out(paint(HELP, "dim", sys.stdout))
    render = TextRenderer()
    ask = permission_policy(False, render.note)
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            out()
            return
        except KeyboardInterrupt:
            out()
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        if text == "/session":
            out(sid)
            continue
        try:
            status = run_turn(c, sid, text, render, ask)
        except KeyboardInterrupt:
            continue
        except (APIError, ProtocolError) as exc:
            error(str(exc))
            continue
        if status not in ("completed", "aborted"):
            error(f"turn ended with status {status!r}")


def register(app: typer.Typer) -> None:
    app.command()(chat)
