"""Session titles written by the model (config `"titles": "model"`).

By default a session keeps the title it was created with: clients give the first line of the
first message (`opencode send`, the TUI), else it is `Session in <directory>`. With
`"titles": "model"` the daemon asks the session's model for a short title once the session's
first turn has completed, as the peers do. That costs one more small provider request per
session, so it is off unless asked for.

The request runs as a background task of the session (`SessionManager.start_background`):
the turn's `complete` has been stored and sent before it starts, the session is idle while it
runs, a delete cancels it, and any failure is only logged (at DEBUG): a title is a nicety.
Only a title nobody chose is replaced: the default one, or the first line of the first message
(as the clients make it, possibly cut with "…").
"""

from __future__ import annotations

import logging
import os
from contextlib import aclosing

import attrs
import trio

from ..daemon import Daemon
from ..providers.base import ChatMessage, ChatRequest, TextBlock, TextDelta
from ..records import Message, Session

log = logging.getLogger(__name__)

TITLE_TIMEOUT = 30.0  # seconds for the whole request
TITLE_CHARS = 80
TITLE_SYSTEM = (
    "You name conversations. Reply with a title of at most six words for the conversation "
    "that starts with the user's message: the title only, in the message's language, with no "
    "quotes and no final punctuation."
)


def first_text(message: Message) -> str:
    return "\n".join(
        str(p.get("text", "")) for p in message.parts if isinstance(p, dict) and p.get("text")
    )


def _first_line(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return " ".join(line.split())


def chosen_by_nobody(title: str, directory: str, first_message: str) -> bool:
    """The default title, or the first message's first line (whole or cut at a word)."""
    if title == f"Session in {os.path.basename(directory) or '/'}":
        return True
    stem = title.removesuffix("…").strip()
    return bool(stem) and _first_line(first_message).startswith(stem)


def clean_title(text: str) -> str:
    """The model's answer as a title: its first line, without quotes or a final stop."""
    line = _first_line(text).removeprefix("Title:").strip("\"'`*# ").rstrip(".!").strip()
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


def start_after_first_turn(
    daemon: Daemon, session: Session, provider_id: str, model: str, history: list[Message]
) -> None:
    """Start the title request if config asks for model titles, this was the session's
    first turn (its history holds one user message) and nobody chose its title."""
    users = [m for m in history if m.role == "user"]
    if daemon.config.titles != "model" or len(users) != 1:
        return
    text = first_text(users[0])
    if not text.strip() or not chosen_by_nobody(session.title, session.directory, text):
        return

    async def title() -> None:
        await write_title(daemon, session.id, provider_id, model, text)

    daemon.sessions.start_background(session.id, title)


async def write_title(
    daemon: Daemon, session_id: str, provider_id: str, model: str, text: str
) -> None:
    try:
        title = await ask_model(daemon, provider_id, model, text)
        if not title:
            return
        async with daemon.sessions.locked(session_id):
            session = await daemon.store.get_session(session_id)
            if session is None or not chosen_by_nobody(session.title, session.directory, text):
                return
            await daemon.store.update_session(attrs.evolve(session, title=title))
        daemon.sessions.notify("session.updated", session_id, title=title)
    except Exception as exc:  # a background task must not raise: it would end the daemon
        log.debug("no model title for session %s: %s", session_id, exc)


async def ask_model(daemon: Daemon, provider_id: str, model: str, text: str) -> str:
    """One request, no retries and no tools: a title is not worth waiting for."""
    provider = daemon.providers.get(provider_id)
    request = ChatRequest(
        model=model,
        system=TITLE_SYSTEM,
        messages=(ChatMessage("user", (TextBlock(text[:4000]),)),),
        max_tokens=60,
    )
    answer: list[str] = []
    with trio.move_on_after(TITLE_TIMEOUT):
        async with aclosing(provider.stream(request)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    answer.append(event.text)
    return clean_title("".join(answer))
