"""``opencode tui``: the full-screen terminal app (``opencode_cli.tui``, built on Textual).

Textual is imported inside the command only: every other command starts as fast as before.
Off a terminal (a pipe, ``TERM=dumb``) it runs the line chat (``opencode chat``) instead.
"""

import os
import sys
from typing import Annotated

import typer

from ._common import NoStartOpt, UrlOpt, client


def tui(
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="Open this session id.")
    ] = None,
    cont: Annotated[
        bool, typer.Option("--continue", "-c", help="Open this directory's latest session.")
    ] = False,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="PROVIDER/MODEL for new sessions.")
    ] = None,
    url: UrlOpt = None,
    no_start: NoStartOpt = False,
) -> None:
    """Full-screen app: conversation, tools, permissions, sessions, models (Ctrl-Q quits)."""
    from ._output import is_tty

    if not (is_tty(sys.stdin) and is_tty(sys.stdout)) or os.environ.get("TERM") == "dumb":
        from .chat import chat

        chat(session=session, cont=cont, model=model, url=url, no_start=no_start)
        return
    from ._sessions import latest_for_directory, split_model

    provider, name = split_model(model)
    c = client(url, autostart=True, no_start=no_start)
    if cont and not session:
        session = latest_for_directory(c, os.path.realpath(os.getcwd()))
    from opencode_cli.tui import OpencodeApp

    app = OpencodeApp(url=url, session_id=session, model=f"{provider}/{name}" if provider else None)
    app.run()


def register(app: typer.Typer) -> None:
    app.command()(tui)
