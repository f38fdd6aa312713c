"""Operations on a whole session outside a turn: compact on demand, fork.

Each runs under the session's lock with no turn running (409 SESSION_BUSY otherwise), so
nothing it reads can change under it and no turn starts meanwhile.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from ..daemon import Daemon
from ..errors import InvalidRequest, ProviderFailure, SessionNotFound
from ..providers import catalog
from ..providers.base import ProviderError
from ..records import Message, Session, new_id, now
from ..sessions import SessionRuntime
from ..storage.base import SessionSnapshot
from . import compaction, toolbox
from .api import _busy, _project_root, _resolve_model
from .latest import latest as cached_event
from .latest import remember
from .prompt import system_prompt
from .turn import session_usage, usage_base


@asynccontextmanager
async def idle_session(daemon: Daemon, session_id: str) -> AsyncIterator[SessionRuntime]:
    """The session's runtime, its lock held, no turn running (else SESSION_BUSY)."""
    sessions = daemon.sessions
    async with sessions.hold(session_id) as runtime, sessions.locked(session_id):
        sessions.refuse_if_stopping(session_id)
        if runtime.busy or runtime.closed:
            raise _busy(session_id, runtime.turn)
        await sessions.store_pending_end(runtime)
        yield runtime


async def snapshot(daemon: Daemon, session_id: str) -> SessionSnapshot:
    found = await daemon.store.session_snapshot(session_id, with_last_seq=False)
    if found is None:
        raise SessionNotFound(session_id)
    return found


async def _kept(daemon: Daemon, session_id: str, messages: list[Message]) -> list[Message]:
    """The messages not reverted (agent.undo)."""
    from .undo import revert_state

    reverted, _ = await revert_state(daemon, session_id)
    return [m for m in messages if m.id not in reverted]


def split_last_turn(history: list[Message]) -> tuple[list[Message], list[Message]]:
    """(messages before the last turn, the last turn's messages)."""
    if not history:
        return [], []
    last = history[-1].turn_id
    return [m for m in history if m.turn_id != last], [m for m in history if m.turn_id == last]


async def compact_session(daemon: Daemon, session_id: str) -> dict[str, Any]:
    """`POST /sessions/:id/compact`: summarise the history before the last turn.

    Appends `compaction` (and `usage`, for the summariser's tokens) to the log; returns
    the compaction's data. Nothing to summarise: `summarised` false, no event.
    """
    async with idle_session(daemon, session_id) as runtime:
        snap = await snapshot(daemon, session_id)
        session, history = snap.session, await _kept(daemon, session_id, snap.messages)
        provider_id, model = _resolve_model(daemon, session)
        earlier, current = split_last_turn(history)
        latest = await cached_event(daemon, session_id, "compaction")
        ctx = compaction.build_context(earlier, current, latest.data if latest else None)
        root = await _project_root(daemon, session)
        directory = Path(session.directory).resolve()
        system = await trio.to_thread.run_sync(system_prompt, directory, root)
        tools = await toolbox.offered(daemon)
        before = compaction.raw_estimate(system, tools, ctx.messages())
        data: dict[str, Any] = {
            "tokens_before": before,
            "tokens_after": before,
            "reason": "manual",
            "elided": 0,
            "summarised": False,
            "summary": ctx.summary,
            "upto": ctx.upto,
            "elided_through": ctx.elided_through,
        }
        if not ctx.earlier:
            return data
        context, output = daemon.providers.limits(provider_id, model)
        limits = compaction.Limits(context, output)
        request = compaction.summary_request(
            model,
            ctx.summary,
            ctx.earlier,
            compaction.summary_budget(limits),
            output or compaction.SUMMARY_MAX_TOKENS,
        )
        try:
            provider = await daemon.providers.load(provider_id)
            text, usage = await compaction.summarise(provider, request)
        except ProviderError as err:
            raise ProviderFailure(err.message, {"provider": provider_id}) from None
        ctx.summary, ctx.upto, ctx.earlier = text, ctx.earlier_last, []
        after = compaction.raw_estimate(system, tools, ctx.messages())
        data.update(tokens_after=after, summarised=True, summary=text, upto=ctx.upto)
        base = await usage_base(daemon, session_id, latest)
        data["session"] = _spent(base, usage, model, after)
        event = await runtime.log.append("compaction", data)
        remember(daemon, event)
        await runtime.log.wait_committed(event.seq)
        return data


def _spent(base: dict[str, Any], usage: list[Any], model: str, context: int) -> dict[str, Any]:
    """The session's totals with the summariser's tokens added (not a turn)."""
    tokens_in = sum(u.input_tokens + u.cache_read_tokens + u.cache_write_tokens for u in usage)
    tokens_out = sum(u.output_tokens for u in usage)
    cost = sum(catalog.cost(model, u) for u in usage)
    data = session_usage(base, context, tokens_in, tokens_out, cost)
    data["turns"] = int(base.get("turns") or 0)
    return data


async def fork_session(daemon: Daemon, session_id: str, message_id: str | None) -> Session:
    """`POST /sessions/:id/fork`: a new session with this one's history up to and with
    `message_id` (all of it without one). The files are not copied: the fork works in
    the same directory. The latest summary comes along when the copied history has what
    it covers. NotFound for an unknown message."""
    snap = await snapshot(daemon, session_id)
    source, history = snap.session, await _kept(daemon, session_id, snap.messages)
    if message_id is not None:
        ids = [m.id for m in history]
        if message_id not in ids:
            raise InvalidRequest(
                f"no message {message_id} in session {session_id}", {"field": "message_id"}
            )
        history = history[: ids.index(message_id) + 1]
    stamp = now()
    fork = attrs.evolve(
        source,
        id=new_id("session"),
        created=stamp,
        updated=stamp,
        title=f"Fork of {source.title}"[:200],
    )
    fork = await daemon.store.create_session(fork)
    new_ids: dict[str, str] = {}
    turns: dict[str, str] = {}
    for message in history:
        new_ids[message.id] = new_id("msg")
        turn = turns.setdefault(message.turn_id, new_id("turn"))
        await daemon.store.save_message(
            attrs.evolve(message, id=new_ids[message.id], session_id=fork.id, turn_id=turn)
        )
    latest = await cached_event(daemon, session_id, "compaction")
    summary, upto = compaction.summary_state(latest.data if latest else None)
    if summary and upto in new_ids:
        assert latest is not None
        data = {**latest.data, "upto": new_ids[upto], "reason": "fork"}
        data.pop("session", None)
        async with daemon.sessions.hold(fork.id) as runtime:
            event = await runtime.log.append("compaction", data)
            remember(daemon, event)
            await runtime.log.wait_committed(event.seq)
    daemon.sessions.notify("session.created", fork.id)
    return fork
