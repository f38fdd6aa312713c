"""Edge cases found in review: inputs that used to answer a 500 or hang."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from opencoded.errors import SessionBusy
from opencoded.records import Session
from opencoded.sessions import EventLog, SessionManager
from opencoded.storage import SQLiteStore

from .conftest import RunningDaemon


async def test_directory_with_nul_byte_is_a_400(daemon: RunningDaemon) -> None:
    async with daemon.unix() as c:
        r = await c.post("/sessions", json={"directory": "/tmp/a\u0000b"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["details"]["field"] == "directory"
        r = await c.post("/projects", json={"name": "p", "path": "/tmp/a\u0000b"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["details"]["field"] == "path"


async def test_file_path_with_unknown_user_home_is_a_400(
    daemon: RunningDaemon, project_dir: Path
) -> None:
    async with daemon.unix() as c:
        pid = (await c.post("/projects", json={"name": "p", "path": str(project_dir)})).json()["id"]
        for route in ("files", "files/content"):
            r = await c.get(f"/projects/{pid}/{route}", params={"path": "~no_such_user_x/f"})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["details"]["field"] == "path"


async def test_a_lost_event_write_does_not_hang_wait_committed(tmpdir_short: Path) -> None:
    path = tmpdir_short / "opencode.db"
    async with SQLiteStore(path) as store:
        await store.create_session(Session("session_x", 1, 1, None, None, None, "/tmp", "t"))
        log = EventLog("session_x", store, 0)
        with trio.fail_after(2):
            await log.wait_committed((await log.append("text-delta", {"text": "kept"})).seq)
        conn = sqlite3.connect(path, timeout=10)
        conn.execute(
            "CREATE TRIGGER refuse_events BEFORE INSERT ON events"
            " BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
        conn.commit()
        lost = await log.append("complete", {"status": "completed"})
        with trio.fail_after(2):
            await log.wait_committed(lost.seq)  # settled, though never stored
        conn.execute("DROP TRIGGER refuse_events")
        conn.commit()
        conn.close()
        after = await log.append("text-delta", {"text": "later"})
        with trio.fail_after(2):
            await log.wait_committed(after.seq)
        seen = []
        with trio.fail_after(2):
            async for event in log.follow(0, until_seq=after.seq):
                seen.append(event.seq)
        assert seen == [1, 3]  # the lost event is nowhere, the others are all there


async def test_no_session_runtime_opens_after_shutdown_began(tmpdir_short: Path) -> None:
    async with SQLiteStore(tmpdir_short / "opencode.db") as store:
        with trio.fail_after(2):  # a runtime opened after aclose() kept this nursery open
            async with trio.open_nursery() as nursery:
                manager = SessionManager(store, nursery)
                for sid in ("session_open", "session_late"):
                    await store.create_session(Session(sid, 1, 1, None, None, None, "/tmp", "t"))
                async with manager.hold("session_open"):
                    pass
                await manager.aclose()
                with pytest.raises(SessionBusy):
                    async with manager.hold("session_late"):
                        pass
                assert manager.running_count == 0 and manager.open_count == 0
