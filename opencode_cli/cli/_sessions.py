"""Choosing the session for ``send`` and ``tui``: given, this directory's latest, or new."""

from __future__ import annotations

import os

from opencode_cli import Client

from ._common import usage_error
from ._output import warn


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
