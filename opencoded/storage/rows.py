"""Records to rows and back, the same for every SQL backend (columns in schema order)."""

from __future__ import annotations

import json

from ..records import Message, PermissionRequest, Session, Turn


def messages(rows: list[tuple]) -> list[Message]:
    return [Message(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]


def session_row(s: Session) -> tuple:
    return (
        s.id,
        s.created,
        s.updated,
        s.provider,
        s.model,
        s.project,
        s.directory,
        s.title,
        json.dumps(s.permission),
    )


def session(row: tuple) -> Session:
    return Session(*row[:8], permission=json.loads(row[8]))


def permission(row: tuple) -> PermissionRequest:
    return PermissionRequest(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6])


def turn_row(t: Turn) -> tuple:
    return (
        t.id,
        t.session_id,
        t.message_id,
        t.status,
        t.started,
        t.ended,
        t.input_tokens,
        t.output_tokens,
        t.cost,
        t.alive,
    )
