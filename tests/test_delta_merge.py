"""Text deltas that wait for the writer become one event (issue 16: cost per read, not per
token); a daemon that keeps up still sends every delta on its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.test_agent import (
    TurnStream,
    agent_daemon,
    message_body,
    new_session,
    of_type,
    run_turn,
    types,
)
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


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_a_burst_read_at_once_becomes_one_event_with_every_piece(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path, kind: str
) -> None:
    running = await agent_daemon(nursery, fake, kind=kind)
    fake.push(Reply(text=PIECES, one_write=True))
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "burst")
        deltas = of_type(events, "text-delta")
        # The first delta goes out alone (the first token is not held back); what came in
        # the same read after it is one event.
        assert 1 <= len(deltas) <= 2, [d["text"] for d in deltas]
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
