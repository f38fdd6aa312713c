"""Crash recovery at start-up, graceful stop, and health when the database fails.

The state a dead daemon leaves is built with the real store (what is on disk after a
SIGKILL is exactly what was committed), then a real daemon is started on it.
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from opencoded.records import Event, Message, PermissionRequest, Session, Turn, new_id, now
from opencoded.recovery import INTERRUPTED_MESSAGE
from opencoded.storage import SQLiteStore

from .conftest import start_daemon


async def append(store: SQLiteStore, session_id: str, seq: int, type_: str, data: dict) -> None:
    store.append_event(Event(session_id, seq, type_, data, time.time()), lambda e: None)


async def left_running(data_dir: Path, directory: Path) -> dict[str, str]:
    """What a daemon killed mid-turn leaves: a running turn, its events, a pending request."""
    ids = {"session": new_id("ses"), "turn": new_id("turn"), "message": new_id("msg")}
    ids["other"], ids["permission"] = new_id("ses"), new_id("perm")
    async with SQLiteStore(data_dir / "opencode.db") as store:
        for sid in (ids["session"], ids["other"]):
            await store.create_session(
                Session(sid, now(), now(), None, None, None, str(directory), "t")
            )
        user = Message(
            new_id("msg"),
            ids["session"],
            ids["turn"],
            "user",
            [{"type": "text", "text": "hi"}],
            now(),
        )
        await store.save_message(user)
        turn = Turn(
            ids["turn"],
            ids["session"],
            ids["message"],
            "running",
            time.time() - 3,
            None,
            7,
            2,
            0.01,
        )
        await store.save_turn(turn)
        await append(
            store, ids["session"], 1, "text-delta", {"message_id": ids["message"], "text": "Hel"}
        )
        await append(
            store, ids["session"], 2, "text-delta", {"message_id": ids["message"], "text": "lo"}
        )
        await append(
            store,
            ids["session"],
            3,
            "permission",
            {"id": ids["permission"], "tool": "bash", "args": {}},
        )
        await store.save_permission(
            PermissionRequest(
                ids["permission"],
                ids["session"],
                ids["turn"],
                "bash",
                {"command": "ls"},
                "pending",
                now(),
            )
        )
        await store.flush()
    return ids


async def test_a_turn_left_running_is_interrupted(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    (tmpdir_short / "data").mkdir(mode=0o700)
    ids = await left_running(tmpdir_short / "data", tmpdir_short)
    running = await start_daemon(nursery, tmpdir_short)
    store = running.daemon.store

    turn = await store.get_turn(ids["turn"])
    assert turn is not None and turn.status == "interrupted"
    assert turn.ended is not None and turn.ended >= turn.started
    events = await store.read_events(ids["session"], 0)
    assert [(e.seq, e.type) for e in events] == [
        (1, "text-delta"),
        (2, "text-delta"),
        (3, "permission"),
        (4, "error"),
        (5, "complete"),
    ]
    assert events[0].data["text"] == "Hel" and events[1].data["text"] == "lo"  # intact
    assert events[3].data == {"code": "INTERRUPTED", "message": INTERRUPTED_MESSAGE}
    complete = events[4].data
    assert complete["message_id"] == ids["message"]
    assert complete["status"] == "interrupted"
    assert (complete["input_tokens"], complete["output_tokens"], complete["tokens"]) == (7, 2, 9)
    assert complete["cost"] == 0.01
    assert complete["duration_ms"] >= 0
    permission = await store.get_permission(ids["permission"])
    assert permission is not None and permission.status == "expired"
    assert await store.pending_permissions(ids["session"]) == []
    assert await store.running_turns() == []
    async with running.unix() as client:
        for sid in (ids["session"], ids["other"]):
            assert (await client.get(f"/sessions/{sid}")).json()["status"] == "idle"
        assert (await client.get("/health")).json()["sessions_running"] == 0
    # A new event in that session continues the numbering (the log knows seq 5).
    runtime = await running.daemon.sessions.runtime(ids["session"])
    assert runtime.log.append("text-delta", {"message_id": "m", "text": "x"}).seq == 6
    await running.shutdown()


async def test_recovery_runs_once(nursery: trio.Nursery, tmpdir_short: Path) -> None:
    (tmpdir_short / "data").mkdir(mode=0o700)
    ids = await left_running(tmpdir_short / "data", tmpdir_short)
    first = await start_daemon(nursery, tmpdir_short)
    await first.shutdown()
    again = await start_daemon(nursery, tmpdir_short)
    events = await again.daemon.store.read_events(ids["session"], 0)
    assert [e.type for e in events].count("complete") == 1
    assert len(events) == 5
    await again.shutdown()


async def test_a_turn_whose_complete_was_stored_keeps_its_status(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    """Died between the `complete` event and the turn record: the event is the truth."""
    (tmpdir_short / "data").mkdir(mode=0o700)
    sid, tid, mid = new_id("ses"), new_id("turn"), new_id("msg")
    async with SQLiteStore(tmpdir_short / "data" / "opencode.db") as store:
        await store.create_session(
            Session(sid, now(), now(), None, None, None, str(tmpdir_short), "t")
        )
        await store.save_turn(Turn(tid, sid, mid, "running", time.time() - 1))
        await append(store, sid, 1, "text-delta", {"message_id": mid, "text": "done"})
        await append(
            store, sid, 2, "complete", {"message_id": mid, "status": "completed", "tokens": 3}
        )
        await store.flush()
    running = await start_daemon(nursery, tmpdir_short)
    turn = await running.daemon.store.get_turn(tid)
    assert turn is not None and turn.status == "completed"
    assert [e.type for e in await running.daemon.store.read_events(sid, 0)] == [
        "text-delta",
        "complete",
    ]
    await running.shutdown()


# ---- health -----------------------------------------------------------------------------


async def test_health_reports_and_fails_with_the_database(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    running = await start_daemon(nursery, tmpdir_short)
    async with running.unix() as client:
        ok = await client.get("/health")
        assert ok.status_code == 200
        body = ok.json()
        assert body["status"] == "ok" and body["database"] == "ok"
        assert body["version"] and body["uptime"] >= 0 and body["sessions_running"] == 0
        # The database stops answering under the running daemon: its writer goes away.
        await running.daemon.store.__aexit__(None, None, None)
        failed = await client.get("/health")
        assert failed.status_code == 503
        assert failed.json()["status"] == "error"
        assert failed.json()["database"].startswith("error: ")
    await running.shutdown()


async def test_health_fails_on_a_corrupt_database_file(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    running = await start_daemon(nursery, tmpdir_short)
    db = running.data_dir / "opencode.db"
    async with running.unix() as client:
        assert (await client.get("/health")).status_code == 200
        await running.daemon.store.vacuum()  # everything in the main file, WAL emptied
        with open(db, "r+b") as f:
            f.write(b"this is not an SQLite file, not any more" * 100)
        response = await client.get("/health")
        assert response.status_code == 503, response.text
        assert "error" in response.json()["database"]
    await running.shutdown()
