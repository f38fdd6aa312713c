"""A session's conversation kept in memory between its turns, so that starting a turn
costs the same at the 500th turn as at the first (issue 16).

Storage stays the truth. A turn start asks storage for the messages' head (how many,
and the last one's id) and uses this copy only when it matches; otherwise it reads the
messages, as after a restart. The copy is what the last turn on this instance stored,
with the provider conversation of each message converted once. Messages are only
appended, and changed only by their own running turn, so an equal head means an equal
history (another instance's turn, a fork, a delete all change the head or the session).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ..records import Message
from ..storage.base import MessagesHead
from .context import Converted
from .permissions import agent_state

if TYPE_CHECKING:
    from ..daemon import Daemon

SESSIONS_KEPT = 16  # sessions whose history stays in memory (most recently used)


@attrs.define(eq=False)
class History:
    messages: list[Message]
    converted: Converted = attrs.Factory(dict)

    @property
    def head(self) -> MessagesHead | None:
        return (len(self.messages), self.messages[-1].id) if self.messages else None


def cached(daemon: Daemon, session_id: str) -> History | None:
    return agent_state(daemon).histories.get(session_id)


def keep(daemon: Daemon, session_id: str, messages: list[Message], converted: Converted) -> None:
    """Remember the session's messages as just stored (most recently used last)."""
    histories = agent_state(daemon).histories
    histories.pop(session_id, None)
    # `converted` holds only messages of this history: conversation() fills it from them,
    # and messages are never removed from a session.
    histories[session_id] = History(messages, converted)
    while len(histories) > SESSIONS_KEPT:
        histories.pop(next(iter(histories)))
