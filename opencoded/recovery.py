"""Crash recovery: close what a daemon that died (crash, OOM, SIGKILL) left open.

Runs once at start-up, before the first request is served, so no client ever sees a
turn that nobody runs. The store only holds what was committed, and everything a client
saw was committed first (see sessions.events), so recovery only has to *close* things:

- every turn still `running` ends as `interrupted`: its log gets an `error` event
  (code INTERRUPTED) and the `complete` event that every turn ends with, at the next
  seqs, in the same transaction as the turn record (a crash during recovery is
  recovered again, never twice);
- a turn whose `complete` event was stored but whose record was not (the daemon died
  between the two writes) just gets its record fixed from that event;
- the pending permission requests of those turns are expired: nobody waits for them.

Sessions need nothing: busy/idle is the live state of the SessionManager, which starts
empty, so every session is idle. Commands started by tools are gone already: the bash
tool's process group dies with the daemon (PR_SET_PDEATHSIG, see tools/bash.py).
"""

from __future__ import annotations

import logging
import time

import attrs

from .records import Event, Message, Turn
from .storage import Store

log = logging.getLogger(__name__)

OPEN = ("pending", "waiting", "running")  # tool part states of a call not finished
INTERRUPTED_MESSAGE = (
    "the daemon stopped while this turn was running (crash or kill); the turn was not finished"
)


async def recover(store: Store) -> list[Turn]:
    """Close every turn left running; return them as they are now stored."""
    closed = []
    for turn in await store.running_turns():
        closed.append(await _close(store, turn))  # also expires its permission requests
    if closed:
        log.warning(
            "recovered from an unclean stop: %d turn(s) marked interrupted, "
            "their pending permission requests expired",
            len(closed),
        )
    return closed


async def _close(store: Store, turn: Turn) -> Turn:
    last_seq = await store.last_seq(turn.session_id) or 0
    last = await store.read_events(turn.session_id, after=last_seq - 1, limit=1)
    last_event = last[0] if last else None
    message = await _interrupted_message(store, turn)
    if _is_complete_of(last_event, turn):
        assert last_event is not None
        data = last_event.data
        final = attrs.evolve(
            turn, status=data.get("status", "interrupted"), ended=last_event.created
        )
        await store.close_turn(final, [], message)
        return final
    # The turn ran at least until its last event and its last "alive" mark; a daemon
    # killed in a long tool call wrote no event for a while, but marked it alive.
    known = [t for t in (turn.alive, last_event.created if last_event else None) if t]
    ended = max([turn.started, *known])
    final = attrs.evolve(turn, status="interrupted", ended=ended)
    events = [
        Event(
            turn.session_id,
            last_seq + 1,
            "error",
            {"code": "INTERRUPTED", "message": INTERRUPTED_MESSAGE},
            time.time(),
        ),
        Event(turn.session_id, last_seq + 2, "complete", complete_data(final), time.time()),
    ]
    await store.close_turn(final, events, message)
    return final


async def _interrupted_message(store: Store, turn: Turn) -> Message | None:
    """The turn's assistant message with its unfinished tool calls marked interrupted
    (None if it has none): no stored part may say `running` for a turn that is over."""
    for message in await store.list_messages(turn.session_id):
        if message.id != turn.message_id:
            continue
        parts = [dict(p) for p in message.parts]
        unfinished = [p for p in parts if p.get("type") == "tool" and p.get("status") in OPEN]
        for part in unfinished:
            part["status"] = "interrupted"
        return attrs.evolve(message, parts=parts) if unfinished else None
    return None


def _is_complete_of(event: Event | None, turn: Turn) -> bool:
    return (
        event is not None
        and event.type == "complete"
        and event.data.get("message_id") == turn.message_id
    )


def complete_data(turn: Turn) -> dict[str, object]:
    """The contract's `complete` event data for a finished turn."""
    ended = turn.ended if turn.ended is not None else time.time()
    return {
        "message_id": turn.message_id,
        "turn_id": turn.id,
        "status": turn.status,
        "tokens": turn.input_tokens + turn.output_tokens,
        "input_tokens": turn.input_tokens,
        "output_tokens": turn.output_tokens,
        "cost": turn.cost,
        "duration_ms": max(0, round((ended - turn.started) * 1000)),
    }
