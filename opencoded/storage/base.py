"""The backend interface: what a database must offer the daemon (see storage.store).

A backend is plain awaitable reads and one awaitable write, `apply(ops)`, which runs a
list of write operations (storage.ops) in one transaction. Group commit, backpressure
and the ordered publication of committed events live above it, in `Store`, so a second
backend (PostgreSQL) implements only this.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from ..records import Event, Message, PermissionRequest, Project, Session, Turn
from .ops import WriteOp


class StoreError(Exception):
    """The database failed (disk full, I/O error, locked or corrupt file...)."""


class StoreConflict(StoreError):
    """One write was refused by the data (a constraint), not by the database: e.g. an
    event for a session deleted meanwhile. It says nothing about the database's health."""


@attrs.frozen
class SessionSnapshot:
    """A session with what starting a turn needs from storage, read in one go."""

    session: Session
    # In order; None when the caller's `known` head matched (its copy is current).
    messages: list[Message] | None
    last_seq: int | None  # None unless asked for


MessagesHead = tuple[int, str]  # (how many messages, the last one's id): a version stamp


class Backend(Protocol):
    async def open(self) -> None:
        """Connect and migrate; raise StoreError with a one-line reason if impossible."""

    async def close(self) -> None: ...

    async def apply(self, ops: Sequence[WriteOp]) -> list[Any]:
        """Apply `ops` in order in one transaction; return one result per op.

        An op that fails is rolled back alone and its result is the exception (a
        StoreError or StoreConflict); the others stand. Raises StoreError if the
        transaction as a whole failed (nothing was applied).
        """

    async def ping(self) -> None:
        """Raise StoreError unless the database answers a read."""

    # projects
    async def get_project(self, project_id: str) -> Project | None: ...
    async def find_project_by_path(self, path: str) -> Project | None: ...
    async def list_projects(self) -> list[Project]: ...

    # sessions
    async def get_session(self, session_id: str) -> Session | None: ...
    async def list_sessions(
        self, *, limit: int, before: str | None = None, project: str | None = None
    ) -> list[Session]:
        """Newest first. before: a session id; only sessions created before it."""

    async def stale_sessions(self, updated_before: int) -> list[str]:
        """Ids of the sessions not updated since `updated_before`, oldest first."""

    async def session_snapshot(
        self, session_id: str, *, with_last_seq: bool, known: MessagesHead | None = None
    ) -> SessionSnapshot | None:
        """The session, its messages and (if asked) its last event seq; None if unknown.
        With `known`, the messages only if their head differs from it (messages are
        appended, and changed only by their own running turn)."""

    # events
    async def read_events(self, session_id: str, after: int, limit: int = 1000) -> list[Event]: ...
    async def last_seq(self, session_id: str) -> int | None:
        """The session's last event seq (0: none yet); None if there is no such session."""

    # messages, turns, permissions
    async def list_messages(self, session_id: str) -> list[Message]: ...
    async def get_turn(self, turn_id: str) -> Turn | None: ...
    async def running_turns(self) -> list[Turn]: ...
    async def get_permission(self, request_id: str) -> PermissionRequest | None: ...
    async def pending_permissions(self, session_id: str) -> list[PermissionRequest]: ...

    async def vacuum(self) -> None:
        """Give freed pages back to the file system (incrementally where possible)."""

    # the task list (todo tools): derived from the event log, no table of its own
    async def last_event(self, session_id: str, type: str) -> Event | None:
        """The session's latest stored event of this type, or None."""
