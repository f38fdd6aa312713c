"""The storage interface. The HTTP layer and the agent only ever see this Protocol.

A PostgreSQL store can be added by implementing it; nothing above storage/ names SQLite.
Two kinds of writes exist: awaited ones (`create_session`, ...) that return once the data
is durable, and `append_event`, which queues the write and calls back once it is
committed. The event path is the hot one (a row per streamed token), so it must not make
the turn wait on a round trip per token; ordering is still exact because one writer
commits in submission order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from ..records import Event, Message, PermissionRequest, Project, Session, Turn


class StoreError(Exception):
    """The database failed (disk full, corrupt file...)."""


@attrs.frozen
class SessionSnapshot:
    """A session with what starting a turn needs from storage, read in one go."""

    session: Session
    messages: list[Message]  # in order
    last_seq: int | None  # None unless asked for


class PendingWrite(Protocol):
    """A write already queued to the store's writer."""

    async def wait(self) -> None:
        """Return once committed; raise StoreError if the write failed."""


class Store(Protocol):
    async def __aenter__(self) -> Store: ...
    async def __aexit__(self, *exc: object) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError unless the database answers."""

    # projects
    async def create_project(self, project: Project) -> Project:
        """Register the project; if its path is registered already, return that one."""

    async def get_project(self, project_id: str) -> Project | None: ...
    async def find_project_by_path(self, path: str) -> Project | None: ...
    async def list_projects(self) -> list[Project]: ...
    async def delete_project(self, project_id: str) -> bool: ...

    # sessions
    async def create_session(self, session: Session, new_project: Project | None = None) -> Session:
        """Store the session, and its project when it is new, in one transaction.

        Returns the stored session: if another request registered the same directory
        first, the session belongs to that project instead of `new_project`.
        """

    async def get_session(self, session_id: str) -> Session | None: ...
    async def list_sessions(
        self, *, limit: int, before: str | None = None, project: str | None = None
    ) -> list[Session]:
        """Newest first. before: a session id; only sessions created before it."""

    async def update_session(self, session: Session) -> None: ...
    async def delete_session(self, session_id: str) -> bool:
        """Delete the session with its messages, events, turns and permission requests."""

    async def prune_sessions(self, updated_before: int) -> list[str]:
        """Delete sessions not updated since `updated_before`; return their ids."""

    async def vacuum(self) -> None:
        """Give freed pages back to the file system (incrementally where possible)."""

    # events
    def append_event(
        self,
        event: Event,
        on_commit: Callable[[Event], None],
        on_lost: Callable[[Event], None] | None = None,
    ) -> None:
        """Queue the event; on_commit runs on the Trio thread once it is durable, or
        on_lost (in the same order) if the write failed, so nobody waits for it forever."""

    async def flush(self) -> None:
        """Return once every write submitted before the call is committed."""

    async def read_events(self, session_id: str, after: int, limit: int = 1000) -> list[Event]: ...
    async def last_seq(self, session_id: str) -> int: ...

    # messages, turns, permission requests
    async def save_message(self, message: Message) -> None:
        """Insert or replace (assistant messages grow part by part)."""

    async def list_messages(self, session_id: str) -> list[Message]: ...
    def submit_turn_start(self, message: Message, turn: Turn) -> PendingWrite:
        """Queue a turn's user message and Turn record as one write, without waiting.

        Writes commit in submission order, so both are stored before any event the turn
        appends afterwards: no client can see the turn without them. The turn awaits
        the result before it goes on, so a failed write still ends it cleanly.
        """

    async def save_turn(self, turn: Turn) -> None: ...
    async def get_turn(self, turn_id: str) -> Turn | None: ...
    async def running_turns(self) -> list[Turn]: ...
    async def save_permission(self, request: PermissionRequest) -> None: ...
    async def get_permission(self, request_id: str) -> PermissionRequest | None: ...
    async def pending_permissions(self, session_id: str) -> list[PermissionRequest]: ...
    async def expire_permissions(self, turn_ids: Sequence[str]) -> int: ...

    # service upkeep (crash recovery, retention)
    async def close_turn(self, turn: Turn, events: Sequence[Event]) -> None:
        """Store the turn's final record and its last events in one transaction, so a
        crash can never leave one without the other (recovery relies on it)."""

    async def prune_idle_sessions(self, updated_before: int, keep: Sequence[str]) -> list[str]:
        """Like prune_sessions, but never delete the sessions in `keep` (the busy ones)."""

    async def stale_sessions(self, updated_before: int) -> list[str]:
        """Ids of the sessions not updated since `updated_before` (retention candidates)."""

    # the turn-start read
    async def session_snapshot(
        self, session_id: str, *, with_last_seq: bool
    ) -> SessionSnapshot | None:
        """The session, its messages and (if asked) its last event seq; None if unknown.

        One call instead of get_session + list_messages + last_seq: each store call is a
        worker-thread round trip, and three of them were a fifth of what the daemon added
        to a turn's first token.
        """

    # the task list (todo tools): derived from the event log, no table of its own
    async def last_event(self, session_id: str, type: str) -> Event | None:
        """The session's latest stored event of this type, or None."""
