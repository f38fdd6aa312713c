"""Text deltas that wait for the writer become one event (issue 16: cost per read, not per
token); a daemon that keeps up still sends every delta on its own."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from opencoded.records import Session
from opencoded.sessions.events import EventLog
from opencoded.storage import SQLiteStore
from tests.test_agent import (
    TurnStream,
    agent_daemon,
    message_body,
    new_session,
    of_type,
    run_turn,
    types,
)
from tests.test_lifecycle import write_locked
from tests.test_recovery import replay_until_complete

try:
    from tests.fakes.llm import FakeLLM, Reply, open_fake_llm
except ImportError:  # pragma: no cover
    from fakes.llm import FakeLLM, Reply, open_fake_llm

PIECES = [f"w{i} " for i in range(60)]


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


async def test_deltas_queued_while_the_writer_is_busy_become_one_event(
    tmpdir_short: Path,
) -> None:
    async with SQLiteStore(tmpdir_short / "opencode.db") as store:
        await store.create_session(Session("s", 1, 1, None, None, None, "/tmp", "t"))
        log = EventLog("s", store, 0)
        with write_locked(tmpdir_short):
            await log.append("text-delta", {"message_id": "m", "text": "first "})
            with trio.fail_after(10):  # the writer took it and waits for the lock
                await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            for piece in PIECES:
                await log.append_text("text-delta", {"message_id": "m", "text": piece})
            await log.append_text("text-delta", {"message_id": "n", "text": "other"})
            await log.append_text("message", {"message_id": "n", "text": "x"})
        await store.flush()
        stored = [(e.seq, e.type, e.data) for e in await store.read_events("s", 0)]
    assert stored == [
        (1, "text-delta", {"message_id": "m", "text": "first "}),
        (2, "text-delta", {"message_id": "m", "text": "".join(PIECES)}),
        (3, "text-delta", {"message_id": "n", "text": "other"}),  # another message's
        (4, "message", {"message_id": "n", "text": "x"}),  # another type
    ]


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_a_burst_read_at_once_arrives_whole_in_order_and_stored_as_streamed(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path, kind: str
) -> None:
    running = await agent_daemon(nursery, fake, kind=kind)
    fake.push(Reply(text=PIECES, one_write=True))
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "burst")
        deltas = of_type(events, "text-delta")
        # How many events the pieces make depends on how fast the daemon reads them
        # (merged while they wait for the writer); their text does not.
        assert "".join(d["text"] for d in deltas) == "".join(PIECES)
        assert types(events)[len(deltas) :] == ["message", "complete"]
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no seq lost to a merge
        # What is stored is what was streamed: the replay from storage has the same events.
        stored = await replay_until_complete(client, sid, after=seqs[0] - 1)
        assert [(e["seq"], e["type"], e["data"]) for e in stored] == [
            (e["seq"], e["type"], e["data"]) for e in events
        ]
    await running.shutdown()


async def test_a_stream_the_daemon_keeps_up_with_sends_every_delta_alone(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    pieces = ["one ", "two ", "three ", "four"]
    fake.push(Reply(text=pieces, lockstep=True))
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        body = message_body("paced")
        with trio.fail_after(20):
            async with client.stream("POST", f"/sessions/{sid}/messages", json=body) as r:
                stream = TurnStream(r)
                for _ in pieces[1:]:
                    await stream.until("text-delta")
                    fake.release()  # the next piece is sent only once this one was seen
                events = await stream.rest()
    assert [d["text"] for d in of_type(events, "text-delta")] == pieces
    await running.shutdown()


async def test_a_log_does_not_keep_other_sessions_logs_alive_after_their_writes(
    tmpdir_short: Path,
) -> None:
    """An event log remembers its last queued event (to merge into it); once written, that
    must not keep the write batch, and through its callbacks other logs, in memory."""
    async with SQLiteStore(tmpdir_short / "opencode.db") as store:
        for sid in ("live", *(f"s{i}" for i in range(20))):
            await store.create_session(Session(sid, 1, 1, None, None, None, "/tmp", "t"))
        live = EventLog("live", store, 0)
        gone = []
        for i in range(20):
            other = EventLog(f"s{i}", store, 0)
            # Both append back to back: one batch holds both logs' callbacks.
            await live.append_text("text-delta", {"message_id": "m", "text": "x"})
            await other.append("text-delta", {"message_id": "m", "text": "y"})
            gone.append(weakref.ref(other))
            del other
        await store.flush()
        gc.collect()
        assert [ref for ref in gone if ref() is not None] == []
