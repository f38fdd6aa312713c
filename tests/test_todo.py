"""The session task list: `todowrite`/`todoread` through turns, the `todo` event and
`GET /sessions/:id/todo`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.conftest import RunningDaemon, short_tmp, start_daemon
from tests.fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm
from tests.test_agent import new_session, of_type, provider_config, run_turn, types

pytestmark = pytest.mark.both_stores

PLAN = [
    {"content": "Read the failing test", "status": "completed"},
    {"content": "Fix the parser", "status": "in_progress"},
    {"content": "Run the suite", "status": "pending"},
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


@pytest.fixture
async def running(nursery: trio.Nursery, fake: FakeLLM) -> AsyncIterator[RunningDaemon]:
    daemon = await start_daemon(nursery, short_tmp(), provider_config(fake))
    yield daemon
    await daemon.shutdown()


async def test_todowrite_then_read_through_turns(
    running: RunningDaemon, fake: FakeLLM, project_dir: Path
) -> None:
    done = [{**item, "status": "completed"} for item in PLAN]
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "todowrite", {"todos": PLAN})]),
        Reply(tool_calls=[FakeToolCall("t2", "todoread", {})]),
        Reply(text=["planned"]),
        Reply(tool_calls=[FakeToolCall("t3", "todowrite", {"todos": done})]),
        Reply(text=["all done"]),
    )
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        assert (await client.get(f"/sessions/{sid}/todo")).json() == []
        events = await run_turn(client, sid, "plan the fix")
        assert "permission" not in types(events)  # the task list needs no permission
        assert of_type(events, "todo") == [{"todos": PLAN}]
        # The event comes with the call, before its result.
        order = [e["type"] for e in events if e["type"] in ("tool", "todo", "tool-result")]
        assert order[:3] == ["tool", "todo", "tool-result"]
        written, read = of_type(events, "tool-result")
        assert written["error"] is False and read["error"] is False
        assert read["output"] == (
            "[x] Read the failing test\n[~] Fix the parser\n[ ] Run the suite\n(1 of 3 completed)"
        )
        assert (await client.get(f"/sessions/{sid}/todo")).json() == PLAN

        events = await run_turn(client, sid, "finish")
        assert of_type(events, "todo") == [{"todos": done}]
        assert (await client.get(f"/sessions/{sid}/todo")).json() == done
        # Replayed from the log like any event.
        replayed = []
        with trio.fail_after(10):
            async with client.stream("GET", f"/sessions/{sid}/events?after=0") as r:
                async for line in r.aiter_lines():
                    if line == "event: todo":
                        replayed.append(line)
                    if line == "event: complete" and len(replayed) == 2:
                        break
        assert len(replayed) == 2


async def test_bad_todos_are_refused_and_nothing_changes(
    running: RunningDaemon, fake: FakeLLM, project_dir: Path
) -> None:
    bad = [{"content": "x", "status": "done"}]
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "todowrite", {"todos": bad})]),
        Reply(tool_calls=[FakeToolCall("t2", "todowrite", {"todos": "write tests"})]),
        Reply(text=["sorry"]),
    )
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "plan")
        assert (await client.get(f"/sessions/{sid}/todo")).json() == []
    assert "todo" not in types(events)
    first, second = of_type(events, "tool-result")
    assert first["error"] is True and "todos[0].status" in first["output"]
    assert second["error"] is True and "expected an array" in second["output"]


async def test_todo_of_an_unknown_session_is_404(running: RunningDaemon) -> None:
    async with running.unix() as client:
        r = await client.get("/sessions/session_nope/todo")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "SESSION_NOT_FOUND"
