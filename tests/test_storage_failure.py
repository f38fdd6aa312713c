"""A database that refuses a write: the turn ends cleanly and nothing is half-stored.

The failure is injected in the database itself (a trigger that aborts inserts into
`turns`), so the daemon's own code runs unchanged.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import trio

from .conftest import RunningDaemon
from .fakes.llm import FakeLLM
from .test_agent import agent_daemon, fake, message_body, new_session

__all__ = ["fake"]  # the fixture, shared with the agent tests


def set_turn_insert_failure(daemon: RunningDaemon, on: bool) -> None:
    conn = sqlite3.connect(daemon.data_dir / "opencode.db", timeout=10)
    try:
        if on:
            conn.execute(
                "CREATE TRIGGER refuse_turns BEFORE INSERT ON turns"
                " BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
            )
        else:
            conn.execute("DROP TRIGGER refuse_turns")
        conn.commit()
    finally:
        conn.close()


async def test_failed_turn_start_write_ends_the_turn(
    nursery: trio.Nursery, fake: FakeLLM, tmp_path: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    async with running.unix() as c:
        sid = await new_session(c, tmp_path)
        set_turn_insert_failure(running, True)
        r = await c.post(f"/sessions/{sid}/messages", json=message_body("hello"))
        # The message could not be stored: the client is told so at once.
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "STORAGE_ERROR"
        # Nothing half-stored: the user message went with the failed Turn record.
        assert (await c.get(f"/sessions/{sid}/messages")).json() == []
        assert (await c.get(f"/sessions/{sid}")).json()["status"] == "idle"
        # While the database still refuses, a new message is refused the same way.
        r = await c.post(f"/sessions/{sid}/messages", json=message_body("hello"))
        assert r.status_code == 503, r.text
        set_turn_insert_failure(running, False)
        r = await c.post(f"/sessions/{sid}/messages", json=message_body("again"))
        last = json.loads(r.text.strip().splitlines()[-1])
        assert (last["type"], last["data"]["status"]) == ("complete", "completed")
        roles = [m["role"] for m in (await c.get(f"/sessions/{sid}/messages")).json()]
        assert roles == ["user", "assistant"]
    await running.shutdown()


async def test_stream_ends_when_the_complete_event_cannot_be_stored(
    nursery: trio.Nursery, fake: FakeLLM, tmp_path: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    async with running.unix() as c:
        sid = await new_session(c, tmp_path)
        conn = sqlite3.connect(running.data_dir / "opencode.db", timeout=10)
        conn.execute(
            "CREATE TRIGGER refuse_complete BEFORE INSERT ON events WHEN NEW.type = 'complete'"
            " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        conn.commit()
        conn.close()
        with trio.fail_after(10):  # before the fix this waited forever
            r = await c.post(f"/sessions/{sid}/messages", json=message_body("hello"))
        types = [json.loads(line)["type"] for line in r.text.splitlines() if line]
        # Not stored, but the turn's own stream still ends with its complete.
        assert "text-delta" in types and types[-1] == "complete"
        assert (await c.get(f"/sessions/{sid}")).json()["status"] == "idle"
    await running.shutdown()
