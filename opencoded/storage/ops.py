"""Write operations: what the group-committing writer hands a backend.

A backend applies a list of these in one transaction, each op atomically (an op that
fails is rolled back alone and its error returned in its place). They are plain records
so that a second backend (PostgreSQL) implements the same list of operations in its own
SQL and nothing above storage/ changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ..records import Event, Message, PermissionRequest, Project, Session, Turn


@attrs.frozen
class CreateProject:
    """Result: the stored project (an existing one if its path is registered already)."""

    project: Project


@attrs.frozen
class DeleteProject:
    """Result: whether it existed. Its sessions are kept, without a project."""

    project_id: str


@attrs.frozen
class CreateSession:
    """Result: the stored session (in the project that won a race for a new directory)."""

    session: Session
    new_project: Project | None = None


@attrs.frozen
class UpdateSession:
    session: Session


@attrs.frozen
class DeleteSessions:
    """Result: the ids that existed and are gone, with everything they own.
    `updated_before`: only those not updated since then (retention)."""

    ids: Sequence[str]
    updated_before: int | None = None


@attrs.frozen
class InsertEvents:
    """Result: the indexes of the events that could not be stored (the rest are)."""

    events: Sequence[Event]


@attrs.frozen
class SaveMessage:
    """Insert or replace (an assistant message grows part by part)."""

    message: Message


@attrs.frozen
class StartTurn:
    """A turn's user message and its Turn record, stored together."""

    message: Message
    turn: Turn


@attrs.frozen
class SaveTurn:
    turn: Turn


@attrs.frozen
class CloseTurn:
    """A turn's end in one transaction: its final record, its assistant message (if
    any), its pending permission requests expired, and its last events (`error`,
    `complete`). A crash can never leave one of them without the others."""

    turn: Turn
    events: Sequence[Event]
    message: Message | None = None


@attrs.frozen
class TouchTurns:
    """Mark running turns alive at `at` (so recovery knows how long they ran)."""

    turn_ids: Sequence[str]
    at: float


@attrs.frozen
class SavePermission:
    request: PermissionRequest


@attrs.frozen
class ExpirePermissions:
    """Result: how many pending requests of these turns were expired."""

    turn_ids: Sequence[str]


@attrs.frozen
class Flush:
    """Nothing: returns once everything queued before it is committed."""


WriteOp = (
    CreateProject
    | DeleteProject
    | CreateSession
    | UpdateSession
    | DeleteSessions
    | InsertEvents
    | SaveMessage
    | StartTurn
    | SaveTurn
    | CloseTurn
    | TouchTurns
    | SavePermission
    | ExpirePermissions
    | Flush
)
