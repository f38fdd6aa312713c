"""Retention: old sessions go (with messages and events), busy ones stay, the file shrinks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest
import trio

from opencoded.config import Config
from opencoded.records import Event, Message, Session, new_id, now
from opencoded.retention import DAY
from opencoded.storage import Store

from .conftest import RunningDaemon, open_test_store, start_daemon

pytestmark = pytest.mark.both_stores

PAYLOAD = "x" * 4000


async def make_session(store: Store, directory: Path, *, events: int, age_days: float) -> str:
    """A session with a big event log and a message, last updated `age_days` ago."""
    sid = new_id("ses")
    updated = now() - int(age_days * DAY)
    await store.create_session(
        Session(sid, updated, updated, None, None, None, str(directory), "t")
    )
    for seq in range(1, events + 1):
        event = Event(sid, seq, "text-delta", {"message_id": "m", "text": PAYLOAD}, time.time())
        await store.append_event(event, lambda e: None)
    await store.save_message(
        Message(new_id("msg"), sid, "turn", "user", [{"type": "text", "text": "hi"}], updated)
    )
    return sid


async def age(store: Store, sid: str, days: float) -> None:
    session = await store.get_session(sid)
    assert session is not None
    await store.update_session(attrs.evolve(session, updated=now() - int(days * DAY)))


def db_size(running: RunningDaemon) -> int:
    return os.path.getsize(running.data_dir / "opencode.db")


async def test_prune_removes_exactly_the_old_sessions_and_the_file_shrinks(
    nursery: trio.Nursery, tmpdir_short: Path, store_kind: str
) -> None:
    running = await start_daemon(nursery, tmpdir_short)
    sqlite = store_kind == "sqlite"  # PostgreSQL: no file of ours; autovacuum reuses space
    store = running.daemon.store
    old = [await make_session(store, tmpdir_short, events=150, age_days=40) for _ in range(8)]
    kept = [await make_session(store, tmpdir_short, events=150, age_days=0) for _ in range(4)]
    kept.append(await make_session(store, tmpdir_short, events=150, age_days=29.5))  # just inside
    await store.flush()
    await store.vacuum()  # everything in the main file: a fair "before"
    before = db_size(running) if sqlite else 0
    assert before > 5_000_000 or not sqlite

    async with running.unix() as client:
        response = await client.post("/sessions/prune", json={"older_than_days": 30})
        assert response.status_code == 200
        assert sorted(response.json()["deleted"]) == sorted(old)
        for sid in old:
            assert (await client.get(f"/sessions/{sid}")).status_code == 404
        for sid in kept:
            assert (await client.get(f"/sessions/{sid}")).status_code == 200

    for sid in old:
        assert await store.read_events(sid, 0) == []
        assert await store.list_messages(sid) == []
    for sid in kept:
        assert len(await store.read_events(sid, 0, limit=1000)) == 150
        assert len(await store.list_messages(sid)) == 1
    if sqlite:
        after = db_size(running)
        # 8 of 13 equal sessions went: the file must lose most of their share, not keep it.
        assert after < before * 0.55, (before, after)
    await running.shutdown()


async def test_a_busy_session_is_never_pruned(nursery: trio.Nursery, tmpdir_short: Path) -> None:
    running = await start_daemon(nursery, tmpdir_short)
    store, sessions = running.daemon.store, running.daemon.sessions
    sid = await make_session(store, tmpdir_short, events=1, age_days=90)
    release = trio.Event()

    async def body(runtime: object, turn: object) -> None:
        await release.wait()

    async with sessions.locked(sid):
        runtime = sessions.open_locked(sid, await store.last_seq(sid) or 0)
        turn = sessions.start_turn(runtime, "turn_x", "msg_x", body)
    async with running.unix() as client:
        response = await client.post("/sessions/prune", json={"older_than_days": 1})
        assert response.json() == {"deleted": []}
        release.set()
        await turn.done.wait()
        response = await client.post("/sessions/prune", json={"older_than_days": 1})
        assert response.json() == {"deleted": [sid]}
    await running.shutdown()


async def test_prune_route_next_to_the_session_routes(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    running = await start_daemon(nursery, tmpdir_short)
    async with running.unix() as client:
        # /sessions/<session_id> is GET/DELETE: "prune" there is just an unknown session.
        for method in ("GET", "DELETE"):
            response = await client.request(method, "/sessions/prune")
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "SESSION_NOT_FOUND"
        for body in ({}, {"older_than_days": "30d"}, {"older_than_days": -1}, {"days": 3}):
            response = await client.post("/sessions/prune", json=body)
            assert response.status_code == 400, body
            assert response.json()["error"]["code"] == "INVALID_REQUEST"
        assert (await client.post("/sessions/prune", json={"older_than_days": 0.5})).json() == {
            "deleted": []
        }
    async with running.tcp(token=False) as client:
        response = await client.post("/sessions/prune", json={"older_than_days": 30})
        assert response.status_code == 401
    async with running.tcp() as client:
        response = await client.post("/sessions/prune", json={"older_than_days": 30})
        assert response.json() == {"deleted": []}
    await running.shutdown()


async def test_the_background_task_prunes_on_its_own(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    (tmpdir_short / "data").mkdir(mode=0o700)
    async with open_test_store(tmpdir_short / "data") as store:
        old = await make_session(store, tmpdir_short, events=20, age_days=10)
        fresh = await make_session(store, tmpdir_short, events=20, age_days=1)
        await store.flush()
    config = {"retention": {"days": 7, "intervalHours": 24}}
    running = await start_daemon(nursery, tmpdir_short, config)
    store = running.daemon.store
    with trio.fail_after(5):
        while await store.get_session(old) is not None:
            await trio.sleep(0.02)
    assert await store.read_events(old, 0) == []
    assert await store.get_session(fresh) is not None
    assert len(await store.read_events(fresh, 0)) == 20
    await running.shutdown()


def test_retention_is_off_by_default() -> None:
    assert Config().retention.days is None


async def test_cli_sessions_prune(nursery: trio.Nursery, tmpdir_short: Path) -> None:
    (tmpdir_short / "data").mkdir(mode=0o700)
    async with open_test_store(tmpdir_short / "data") as store:
        old = await make_session(store, tmpdir_short, events=3, age_days=45)
        recent = await make_session(store, tmpdir_short, events=3, age_days=3)
        await store.flush()
    running = await start_daemon(nursery, tmpdir_short)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCODE_")}
    env.update(OPENCODE_URL=f"unix://{running.socket}", NO_COLOR="1")
    opencode = str(Path(sys.executable).parent / "opencode")

    async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return await trio.run_process(
            [opencode, "sessions", "prune", *args], env=env, capture_stdout=True,
            capture_stderr=True, check=False,
        )  # fmt: skip

    bad = await cli("--older-than", "a month")
    assert bad.returncode == 2 and b"not an age" in bad.stderr
    unconfirmed = await cli("--older-than", "30d")  # stdin is no terminal: --yes is needed
    assert unconfirmed.returncode == 2 and b"--yes" in unconfirmed.stderr
    done = await cli("--older-than", "30d", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == [old]
    assert done.stderr.decode().strip() == "removed 1 session(s)"
    done = await cli("--older-than", "2w", "--json")
    assert json.loads(done.stdout) == []
    done = await cli("--older-than", "48h", "--json", "--yes")
    assert json.loads(done.stdout) == [recent]
    await running.shutdown()


def test_parse_age() -> None:
    from opencode_cli.cli.daemon import parse_age

    assert parse_age("30d") == 30
    assert parse_age("30") == 30
    assert parse_age("2w") == 14
    assert parse_age("12h") == 0.5
    assert parse_age("90min") == 90 / 1440
    for bad in ("", "-3d", "3y", "d", "1.d", "90m", "6mo"):
        with pytest.raises(ValueError):
            parse_age(bad)
