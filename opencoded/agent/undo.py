"""Diffs, revert and unrevert of what the agent changed (recorded by agent.changes).

The changes are in the tool parts of the stored assistant messages (`changes`). The
revert state is the latest `revert` or `unrevert` event of the session's log: its
`reverted` is every message id reverted so far (kept, shown as reverted, left out of the
context). A `revert` also keeps `previous` (the set before it) and `files` (what it did),
which is what `unrevert` undoes, as long as no message was sent since.
"""

from __future__ import annotations

from typing import Any

import trio

from ..daemon import Daemon
from ..errors import Conflict, InvalidRequest, NotFound
from ..records import Event, Message
from ..tools.base import ToolError
from . import changes
from .latest import latest as cached_event
from .latest import remember
from .session_ops import idle_session, snapshot


def blobs(daemon: Daemon) -> changes.Blobs:
    return changes.Blobs(daemon.config.data_path / "changes")


async def revert_state(daemon: Daemon, session_id: str) -> tuple[set[str], Event | None]:
    """(reverted message ids, the latest revert or unrevert event)."""
    events = [await cached_event(daemon, session_id, kind) for kind in ("revert", "unrevert")]
    latest = max((e for e in events if e is not None), key=lambda e: e.seq, default=None)
    return (set(latest.data.get("reverted") or ()) if latest else set()), latest


def message_changes(messages: list[Message]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(turn id, change list) of every tool call that changed files, in order."""
    out = []
    for message in messages:
        if message.role != "assistant":
            continue
        for part in message.parts:
            if part.get("type") == "tool" and part.get("changes"):
                out.append((message.turn_id, part["changes"]))
    return out


async def session_diff(daemon: Daemon, session_id: str, turn: str | None) -> str:
    """`GET /sessions/:id/diff[?turn=ID]`: the unified diff of the session's changes
    (reverted turns left out), or of one turn's."""
    snap = await snapshot(daemon, session_id)
    messages = list(snap.messages)
    if turn is not None:
        if not any(m.turn_id == turn for m in messages):
            raise NotFound(f"no turn {turn} in session {session_id}", {"field": "turn"})
        picked = [c for t, c in message_changes(messages) if t == turn]
    else:
        reverted, _ = await revert_state(daemon, session_id)
        kept = [m for m in messages if m.id not in reverted]
        picked = [c for _, c in message_changes(kept)]
    net = changes.net_changes(picked)
    return await trio.to_thread.run_sync(changes.unified_diff, blobs(daemon), net)


def _refused(exc: changes.Conflict) -> Conflict:
    return Conflict(
        f"cannot restore the files: {exc}; nothing was changed",
        {"files": exc.files},
    )


async def revert(daemon: Daemon, session_id: str, message_id: str) -> dict[str, Any]:
    """Restore the files to their state before `message_id`'s turn; mark that turn and
    every later message reverted."""
    async with idle_session(daemon, session_id) as runtime:
        snap = await snapshot(daemon, session_id)
        messages = list(snap.messages)
        target = next((m for m in messages if m.id == message_id), None)
        if target is None:
            raise InvalidRequest(
                f"no message {message_id} in session {session_id}", {"field": "message_id"}
            )
        reverted, _ = await revert_state(daemon, session_id)
        if target.id in reverted:
            raise InvalidRequest(
                f"message {message_id} is reverted already", {"field": "message_id"}
            )
        start = next(i for i, m in enumerate(messages) if m.turn_id == target.turn_id)
        undone = [m for m in messages[start:] if m.id not in reverted]
        net = changes.net_changes(c for _, c in message_changes(undone))
        done = await _restore(daemon, snap.session.directory, net)
        data = {
            "message_id": message_id,
            "reverted": sorted(reverted | {m.id for m in undone}),
            "previous": sorted(reverted),
            "messages": [m.id for m in undone],
            "files": done,
        }
        event = await runtime.log.append("revert", data)
        remember(daemon, event)
        await runtime.log.wait_committed(event.seq)
        return _answer(data)


async def unrevert(daemon: Daemon, session_id: str) -> dict[str, Any]:
    """Undo the latest revert, while no message has been sent since."""
    async with idle_session(daemon, session_id) as runtime:
        snap = await snapshot(daemon, session_id)
        reverted, latest = await revert_state(daemon, session_id)
        if latest is None or latest.type != "revert":
            raise Conflict("nothing to unrevert: the latest revert was undone or none was made")
        if snap.messages and snap.messages[-1].id not in reverted:
            raise Conflict("a message was sent after the revert: it cannot be undone any more")
        done = await _restore(daemon, snap.session.directory, latest.data.get("files") or [])
        data = {
            "message_id": latest.data.get("message_id"),
            "reverted": list(latest.data.get("previous") or []),
            "messages": list(latest.data.get("messages") or []),
            "files": done,
        }
        event = await runtime.log.append("unrevert", data)
        remember(daemon, event)
        await runtime.log.wait_committed(event.seq)
        return _answer(data)


async def _restore(
    daemon: Daemon, directory: str, net: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    from pathlib import Path

    root = Path(directory).resolve()
    try:
        return await trio.to_thread.run_sync(changes.restore, root, blobs(daemon), net)
    except changes.Conflict as exc:
        raise _refused(exc) from None
    except (ToolError, OSError) as exc:
        raise Conflict(f"cannot restore the files: {exc}", {"files": []}) from None


def _answer(data: dict[str, Any]) -> dict[str, Any]:
    """What the routes answer: the event's data without the bookkeeping."""
    return {
        "message_id": data["message_id"],
        "messages": data["messages"],
        "files": [f["path"] for f in data["files"] if not f["path"].endswith("/")],
    }
