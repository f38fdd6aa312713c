"""Choosing the session for ``send`` and ``tui``: given, this directory's latest, or new."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import typer

from opencode_cli import Client, Event, Permission

from ._common import EXIT_ERROR, usage_error
from ._output import Spinner, is_tty, paint, warn

TITLE_CHARS = 60


def split_model(model: str | None) -> tuple[str | None, str | None]:
    """``provider/model`` → (provider, model); the model part may itself contain slashes."""
    if model is None:
        return None, None
    provider, sep, name = model.partition("/")
    if not sep or not provider or not name:
        raise usage_error(
            f"--model must be PROVIDER/MODEL, e.g. anthropic/claude-sonnet-4-5, not {model!r}"
        )
    return provider, name


def latest_for_directory(client: Client, directory: str) -> str | None:
    for session in client.sessions.iter(page_size=100):
        if session.directory and os.path.realpath(session.directory) == directory:
            return session.id
    return None


def choose_session(
    client: Client, *, session: str | None, cont: bool, model: str | None, title: str | None = None
) -> tuple[str, bool]:
    """The session to talk to, and whether it was created just now."""
    if session and cont:
        raise usage_error("use either --session or --continue, not both")
    if session and model:
        raise usage_error("--model only applies to a new session; drop it or --session")
    provider, name = split_model(model)
    directory = os.path.realpath(os.getcwd())
    if session:
        return session, False
    if cont:
        found = latest_for_directory(client, directory)
        if found:
            if model:
                warn("--model ignored: continuing an existing session")
            return found, False
    created = client.sessions.create(
        provider=provider, model=name, directory=directory, title=title
    )
    return created.id, True


def title_for(text: str) -> str:
    """A session title from its first message: the first non-empty line, cut at a word."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = " ".join(line.split())
    if len(line) <= TITLE_CHARS:
        return line
    cut = line[: TITLE_CHARS - 1].rsplit(" ", 1)[0] or line[: TITLE_CHARS - 1]
    return cut + "…"


def attach(client: Client, session_id: str, *, yes: bool, note: Callable[[str], None]) -> None:
    """Join a session that may be busy: answer what it waits for, then wait for it to be idle.

    A turn can wait on a permission nobody answers (its client left): show each request; a
    terminal asks, ``--yes`` allows once, a pipe stops with the command that answers it.
    """
    spinner = Spinner()
    try:
        while client.sessions.get(session_id).status == "busy":
            pending = client.permissions.list(session_id)
            if not pending:
                spinner.start("waiting for the session's running turn")
                time.sleep(0.2)
                continue
            spinner.stop()
            for p in pending:
                _answer_pending(client, session_id, p, yes=yes, note=note)
    finally:
        spinner.stop()


def _answer_pending(
    client: Client, session_id: str, p: Permission, *, yes: bool, note: Callable[[str], None]
) -> None:
    from ._turn import permission_policy, tool_summary

    what = f"{p.tool} {tool_summary(p.tool, p.args, 200)}"
    note(paint(f"session {session_id} is waiting for a permission answer:", "yellow", sys.stderr))
    if not yes and not is_tty(sys.stdin):
        note(f"  {p.id}: {what}")
        note(f"answer it with: opencode permissions answer {p.id} once|always|reject")
        raise typer.Exit(EXIT_ERROR)
    event = Event(type="permission", data={"id": p.id, "tool": p.tool, "args": p.args})
    client.permissions.respond(session_id, p.id, permission_policy(yes, note)(event))
