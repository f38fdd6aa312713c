"""The daemon's records: what is stored and what the API returns.

Times are Unix seconds (integers), as in the spec's examples. `seq` numbers are per
session and start at 1. Records are frozen: a change is a new record (`attrs.evolve`).
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

import attrs

TurnStatus = Literal["running", "completed", "aborted", "error", "interrupted"]
PermissionStatus = Literal["pending", "once", "always", "reject", "expired"]

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id(prefix: str) -> str:
    """`prefix_` + 20 random base-36 characters (about 103 bits).

    One draw from the OS, then base 36: a turn makes several ids and 20 separate
    `secrets.choice` calls cost ten times as much.
    """
    n = secrets.randbelow(36**20)
    chars = []
    for _ in range(20):
        n, digit = divmod(n, 36)
        chars.append(_ALPHABET[digit])
    return prefix + "_" + "".join(chars)


def now() -> int:
    return int(time.time())


@attrs.frozen
class Project:
    id: str
    name: str
    path: str
    created: int


@attrs.frozen
class Session:
    id: str
    created: int
    updated: int
    provider: str | None
    model: str | None
    project: str | None
    directory: str
    title: str
    permission: dict[str, str] = attrs.Factory(dict)


@attrs.frozen
class Event:
    session_id: str
    seq: int
    type: str
    data: dict[str, Any]
    created: float


@attrs.frozen
class Message:
    """A user or assistant message. parts are already in wire shape (see docs/api.md)."""

    id: str
    session_id: str
    turn_id: str
    role: Literal["user", "assistant"]
    parts: list[dict[str, Any]]
    created: int


@attrs.frozen
class Turn:
    id: str
    session_id: str
    message_id: str  # the assistant message this turn produces
    status: TurnStatus
    started: float
    ended: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    alive: float | None = None  # last known alive while running (see recovery)


@attrs.frozen
class PermissionRequest:
    id: str
    session_id: str
    turn_id: str
    tool: str
    args: dict[str, Any]
    status: PermissionStatus
    created: int
