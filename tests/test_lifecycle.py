"""A session's life has one owner: shutdown, delete, idle reclaim, storage faults, restarts.

Each test reproduces a failure an outside review saw (issue 9) against the real daemon,
with the fault made real: another process holding the database's write lock, a full
file system (a small tmpfs), a second daemon process, kill -9.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from opencoded.records import Event, Session
from opencoded.storage import SQLiteStore
from opencoded.storage.store import MAX_BATCH_EVENTS, MAX_GROUP, QUEUE_JOBS

from .conftest import open_test_store, query_test_db, start_daemon
from .daemon_process import DaemonProcess
from .fakes.llm import FakeToolCall, Reply, open_fake_llm
from .test_agent import agent_daemon, fake, message_body, new_session
from .test_recovery import (
    agent_config,
    gone,
    replay_until_complete,
    slow_turn_with_sleep,
    unix,
    workdir,
)
from .test_recovery import start_turn as start_bash_turn

__all__ = ["fake"]  # the fixture, shared with the agent tests
pytestmark = pytest.mark.both_stores


def db_path(data_dir: Path) -> Path:
    return data_dir / "opencode.db"


@contextlib.contextmanager
def write_locked(data_dir: Path) -> Iterator[None]:
    """Another process's connection holds the database's write lock: every commit of the
    daemon waits (its busy timeout) as it would on a stalled disk."""
    conn = sqlite3.connect(db_path(data_dir), isolation_level=None, timeout=10)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


async def daemon_running_bash(
    nursery: trio.Nursery, tmp: Path, fake: Any
) -> tuple[DaemonProcess, Path, Path, dict[str, Any]]:
    """A daemon process whose session runs `bash` (a long sleep, its pid in a file)."""
    config = agent_config(tmp, fake)
    pid_file = tmp / "sleep.pid"
    daemon = DaemonProcess(tmp, "--config", str(config))
    await daemon.start(nursery)
    async with unix(daemon.socket) as client:
        created = await client.post("/sessions", json={"directory": str(workdir(tmp))})
        sid = created.json()
        slow_turn_with_sleep(fake, pid_file)
        await start_bash_turn(client, sid["id"], pid_file)
    return daemon, config, pid_file, sid


# ---- 1. shutdown is bounded, even with commits stalled -------------------------------------


@pytest.mark.sqlite_only
async def test_sigterm_exits_in_time_while_commits_stall(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    async with open_fake_llm() as fake:
        daemon, config, pid_file, sid = await daemon_running_bash(nursery, tmpdir_short, fake)
        assert daemon.proc is not None
        with write_locked(daemon.data_dir):
            daemon.proc.send_signal(signal.SIGTERM)
            # Before: the turn's end waited on the stalled writer past the shutdown
            # budget, and the session task then waited for ever (25 s and counting).
            code = await daemon.wait(10)
        assert code == 0
        assert gone(int(pid_file.read_text()))
        # The turn's end could not be stored: the next start closes it, once.
        again = DaemonProcess(tmpdir_short, "--config", str(config))
        await again.start(nursery)
        async with unix(again.socket) as client:
            events = await replay_until_complete(client, sid["id"])
        assert [e["type"] for e in events].count("complete") == 1
        assert events[-1]["data"]["status"] in ("aborted", "interrupted")
        assert again.proc is not None
        again.proc.terminate()
        assert await again.wait() == 0


# ---- 2. DELETE and a message cannot interleave --------------------------------------------


async def test_delete_racing_a_message_leaves_no_turn_and_no_rows(
    nursery: trio.Nursery, fake: Any, tmp_path: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    async with running.unix() as c:
        for _ in range(30):
            sid = await new_session(c, tmp_path)
            results: dict[str, int] = {}

            async def delete(sid: str = sid, results: dict[str, int] = results) -> None:
                results["delete"] = (await c.delete(f"/sessions/{sid}")).status_code

            async def message(sid: str = sid, results: dict[str, int] = results) -> None:
                body = message_body("hi", **{"async": True})
                results["post"] = (await c.post(f"/sessions/{sid}/messages", json=body)).status_code

            async with trio.open_nursery() as race:
                race.start_soon(delete)
                race.start_soon(message)
            assert results["delete"] == 200
            assert results["post"] in (202, 404), results
            with trio.fail_after(10):  # the turn a message started is aborted by the delete
                while (await c.get("/health")).json()["sessions_running"]:
                    await trio.sleep(0.01)
            assert (await c.get(f"/sessions/{sid}")).status_code == 404
            await running.daemon.store.flush()
            for table in ("events", "messages", "turns", "permissions"):
                count = f"SELECT count(*) FROM {table} WHERE session_id = ?"
                assert query_test_db(running.data_dir, count, (sid,))[0][0] == 0, table
    await running.shutdown()


async def test_the_schema_refuses_rows_of_a_missing_session(tmpdir_short: Path) -> None:
    async with open_test_store(tmpdir_short) as store:
        lost: list[Event] = []
        event = Event("session_missing", 1, "text-delta", {"text": "x"}, 1.0)
        await store.append_event(event, lambda e: None, lost.append)
        await store.flush()
        assert lost == [event]
        assert await store.read_events("session_missing", 0) == []


# ---- 3. reader connections are a fixed pool --------------------------------------------------


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(120)
@pytest.mark.sqlite_only
async def test_open_files_stay_flat_across_idle_periods(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    daemon = DaemonProcess(tmpdir_short)
    await daemon.start(nursery)
    assert daemon.proc is not None
    pid = daemon.proc.pid
    async with unix(daemon.socket) as client:
        await client.post("/sessions", json={"directory": str(workdir(tmpdir_short))})

    async def burst() -> int:
        async with unix(daemon.socket) as client, trio.open_nursery() as readers:
            for _ in range(16):  # several at once: several worker threads
                readers.start_soon(client.get, "/sessions")
        return open_fds(pid)

    counts = [await burst()]
    for _ in range(2):
        # Not synchronisation: the condition under test is Trio retiring worker threads
        # after 10 s idle (each retired reader thread leaked its connection before).
        await trio.sleep(11)
        counts.append(await burst())
    with trio.fail_after(5):  # closed connections' sockets go (see the next test)
        while open_fds(pid) > counts[0]:
            await trio.sleep(0.05)
    daemon.proc.terminate()
    assert await daemon.wait() == 0


async def test_a_closed_idle_connection_is_closed_by_the_daemon_at_once(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    daemon = DaemonProcess(tmpdir_short)
    await daemon.start(nursery)
    assert daemon.proc is not None
    pid = daemon.proc.pid
    before = open_fds(pid)
    for _ in range(10):
        sock = trio.socket.socket(trio.socket.AF_UNIX)
        await sock.connect(str(daemon.socket))
        await sock.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += await sock.recv(65536)
        # The scenario, not synchronisation: the client keeps the connection a moment
        # (idle keep-alive), then closes it. Before, the server side stayed open for
        # keep_alive_timeout (30 s), so a polling client piled up descriptors.
        await trio.sleep(0.2)
        sock.close()
    with trio.fail_after(5):
        while open_fds(pid) > before:
            await trio.sleep(0.05)
    daemon.proc.terminate()
    assert await daemon.wait() == 0


# ---- 4. one data dir, one daemon ----------------------------------------------------------


async def test_a_second_daemon_on_the_same_data_dir_refuses_to_start(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    first = DaemonProcess(tmpdir_short)
    await first.start(nursery)
    assert first.proc is not None
    other = Path(tempfile.mkdtemp(prefix="ocd", dir="/tmp"))
    second = DaemonProcess(other, "--data-dir", str(first.data_dir))
    result = await trio.run_process(second.args, env=second.env, capture_stderr=True, check=False)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1, lines
    assert f"pid {first.proc.pid}" in lines[0] and str(first.data_dir) in lines[0]
    async with unix(first.socket) as client:  # the first one is untouched
        assert (await client.get("/health")).status_code == 200
    first.proc.terminate()
    assert await first.wait() == 0


# ---- 5. a full disk: every turn still ends with one `complete`, in order -------------------


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "3m") -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            raise AssertionError(f"cannot mount a tmpfs in CI: {mounted.stderr}")
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the file system is full; return it (delete it to free space)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        chunk = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
        with contextlib.suppress(OSError):
            while True:  # the last few bytes
                f.write(b"\0" * 512)
    return filler


@pytest.mark.timeout(90)
@pytest.mark.sqlite_only
async def test_a_full_disk_ends_turns_cleanly_and_in_order(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    async with open_fake_llm() as fake:
        config = agent_config(tmpdir_short, fake)
        with small_tmpfs(tmpdir_short / "disk") as disk:
            args = ("--config", str(config), "--data-dir", str(disk / "data"))
            daemon = DaemonProcess(tmpdir_short, *args)
            await daemon.start(nursery)
            async with unix(daemon.socket) as c:
                sid = await new_session(c, workdir(tmpdir_short))
                (workdir(tmpdir_short) / "x.txt").write_text("x\n")
                # A tool step first (its assistant message is saved mid-turn), then text.
                fake.push(
                    Reply(tool_calls=[FakeToolCall("t1", "read", {"path": "x.txt"})]),
                    Reply(text=[f"w{i} " for i in range(400)], delay=0.01),
                )
                body = message_body("write a lot")
                async with c.stream("POST", f"/sessions/{sid}/messages", json=body) as r:
                    assert r.status_code == 200
                    lines = r.aiter_lines()
                    while json.loads(await lines.__anext__())["type"] != "text-delta":
                        pass
                    filler = await trio.to_thread.run_sync(fill, disk)
                    with trio.fail_after(20):
                        rest = [json.loads(line) async for line in lines if line]
                # The stream ends with the turn's error and complete, although neither
                # could be stored (before: it stopped with no complete at all).
                assert [e["type"] for e in rest[-2:]] == ["error", "complete"], rest[-3:]
                assert rest[-2]["data"]["code"] == "STORAGE_ERROR"
                assert rest[-1]["data"]["status"] == "error"
                health = await c.get("/health")
                assert health.status_code == 503
                assert health.json()["database"].startswith("error")
                assert (await c.get(f"/sessions/{sid}")).json()["status"] == "idle"
                # Still full: a new message is refused with a clear error, nothing stored.
                refused = await c.post(f"/sessions/{sid}/messages", json=message_body("more"))
                assert refused.status_code == 503
                assert refused.json()["error"]["code"] == "STORAGE_ERROR"
                filler.unlink()
                fake.push(Reply(text=["fine ", "again"]))
                async with c.stream("POST", f"/sessions/{sid}/messages", json=body) as r:
                    after = [json.loads(line) async for line in r.aiter_lines() if line]
                assert after[-1]["data"]["status"] == "completed"
                assert (await c.get("/health")).status_code == 200
                # The first turn's end was stored late, its message changed in place: the
                # turns after it send its text (the history kept in memory is not older).
                fake.push(Reply(text=["third"]))
                async with c.stream("POST", f"/sessions/{sid}/messages", json=body) as r:
                    third = [json.loads(line) async for line in r.aiter_lines() if line]
                assert third[-1]["data"]["status"] == "completed"
                for request in fake.requests[-2:]:
                    assert "w0 w1 " in json.dumps(request.body["messages"])
            assert daemon.proc is not None
            daemon.proc.terminate()
            assert await daemon.wait() == 0
            again = DaemonProcess(tmpdir_short, *args)
            await again.start(nursery)  # nothing left to recover
            assert "marked interrupted" not in again.stderr.decode()
            assert again.proc is not None
            again.proc.terminate()
            assert await again.wait() == 0
            events = stored_events(disk / "data", sid)
            assert_turns_end_in_order(events)
            statuses = [e["data"]["status"] for e in events if e["type"] == "complete"]
            assert statuses == ["error", "completed", "completed"]


def stored_events(data_dir: Path, sid: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db_path(data_dir))
    try:
        rows = conn.execute(
            "SELECT seq, type, data FROM events WHERE session_id = ? ORDER BY seq", (sid,)
        ).fetchall()
    finally:
        conn.close()
    return [{"seq": s, "type": t, "data": json.loads(d)} for s, t, d in rows]


def assert_turns_end_in_order(events: list[dict[str, Any]]) -> None:
    """`complete` is the last event of its turn, exactly once: no event of a turn comes
    after its complete."""
    ended: set[str] = set()
    for event in events:
        data = event["data"]
        owner = data.get("message_id") or (data.get("id") if event["type"] == "message" else None)
        if owner is not None:
            assert owner not in ended, f"{event} after its turn's complete"
        if event["type"] == "complete":
            ended.add(data["message_id"])


# ---- 6. kill -9: recovery closes the tool part and knows how long the turn ran -------------


@pytest.mark.timeout(60)
async def test_after_kill_9_tool_parts_are_closed_and_duration_is_real(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    async with open_fake_llm() as fake:
        daemon, config, _pid_file, sid = await daemon_running_bash(nursery, tmpdir_short, fake)
        # Wait until the daemon has marked the turn alive 2.5 s after it started.
        with trio.fail_after(20):
            while (ran := alive_for(daemon.data_dir)) < 2.5:
                await trio.sleep(0.1)
        assert daemon.proc is not None
        daemon.proc.kill()
        await daemon.wait()
        again = DaemonProcess(tmpdir_short, "--config", str(config))
        await again.start(nursery)
        async with unix(again.socket) as client:
            events = await replay_until_complete(client, sid["id"])
            messages = (await client.get(f"/sessions/{sid['id']}/messages")).json()
        assert events[-1]["data"]["status"] == "interrupted"
        assert events[-1]["data"]["duration_ms"] >= ran * 1000 - 1  # before: 17 ms
        tools = [p for m in messages for p in m["parts"] if p["type"] == "tool"]
        assert [p["status"] for p in tools] == ["interrupted"]  # before: "running"
        assert again.proc is not None
        again.proc.terminate()
        assert await again.wait() == 0


def alive_for(data_dir: Path) -> float:
    rows = query_test_db(
        data_dir, "SELECT alive - started FROM turns WHERE status = 'running' AND alive IS NOT NULL"
    )
    return rows[0][0] if rows else 0.0


# ---- 7. idle runtimes are reclaimed ---------------------------------------------------------


@pytest.mark.timeout(120)
async def test_a_thousand_touched_sessions_leave_nothing_open(
    nursery: trio.Nursery, fake: Any, tmp_path: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    async with running.unix() as c:
        sids = [await new_session(c, tmp_path) for _ in range(1000)]
        limit = trio.Semaphore(16)

        async def touch(i: int, sid: str) -> None:
            async with limit:
                if i % 2:  # a turn
                    body = message_body("hi")
                    r = await c.post(f"/sessions/{sid}/messages", json=body)
                    assert r.status_code == 200
                else:  # a follower that comes and goes
                    async with c.stream("GET", f"/sessions/{sid}/events?after=0") as r:
                        assert r.status_code == 200

        async with trio.open_nursery() as touches:
            for i, sid in enumerate(sids):
                touches.start_soon(touch, i, sid)
        with trio.fail_after(10):
            while (health := (await c.get("/health")).json())["sessions_open"]:
                await trio.sleep(0.02)
        assert health["sessions_running"] == 0
    await running.shutdown()


# ---- 8. the writer pushes back instead of growing memory ------------------------------------


@pytest.mark.sqlite_only
async def test_a_stalled_writer_pushes_back_on_the_appender(tmpdir_short: Path) -> None:
    async with SQLiteStore(tmpdir_short / "opencode.db") as store:
        await store.create_session(Session("s", 1, 1, None, None, None, "/tmp", "t"))
        queued = 0
        committed: list[int] = []

        async def append_forever() -> None:
            nonlocal queued
            while queued < 10 * QUEUE_JOBS * MAX_BATCH_EVENTS:
                queued += 1
                event = Event("s", queued, "text-delta", {"text": "x"}, 1.0)
                await store.append_event(event, lambda e: committed.append(e.seq))

        with write_locked(tmpdir_short):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(append_forever)
                with trio.fail_after(10):
                    await trio.testing.wait_all_tasks_blocked(cushion=0.1)
                # The appender waits: at most the bounded queue (and the group the writer
                # is committing) is held in memory.
                assert queued <= (QUEUE_JOBS + MAX_GROUP) * MAX_BATCH_EVENTS + 1
                nursery.cancel_scope.cancel()
        await store.flush()
        assert committed == list(range(1, len(committed) + 1))


# ---- 9. a write that raises something unexpected fails alone ------------------------------


@pytest.mark.sqlite_only
async def test_an_unexpected_write_error_does_not_stop_the_writer(tmpdir_short: Path) -> None:
    async with SQLiteStore(tmpdir_short / "opencode.db") as store:
        await store.create_session(Session("s", 1, 1, None, None, None, "/tmp", "t"))
        lost: list[int] = []
        committed: list[int] = []
        # 10**30 cannot be bound by SQLite: OverflowError, not an sqlite3.Error. Before,
        # it killed the writer thread silently and every later write hung.
        bad = Event("s", 1, "text-delta", {"text": "x"}, 10**30)  # type: ignore[arg-type]
        await store.append_event(
            bad, lambda e: committed.append(e.seq), lambda e: lost.append(e.seq)
        )
        good = Event("s", 2, "text-delta", {"text": "y"}, 1.0)
        await store.append_event(good, lambda e: committed.append(e.seq))
        with trio.fail_after(5):
            await store.flush()
            await store.create_session(Session("s2", 1, 1, None, None, None, "/tmp", "t"))
        assert lost == [1] and committed == [2]


# ---- 10. nothing blocks the Trio thread: a FIFO named AGENTS.md ---------------------------


async def test_a_fifo_agents_md_does_not_block_the_daemon(
    nursery: trio.Nursery, fake: Any, tmp_path: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    os.mkfifo(tmp_path / "AGENTS.md")
    async with running.unix() as c:
        sid = await new_session(c, tmp_path)
        with trio.fail_after(10):  # before: the daemon's one thread blocked in open()
            r = await c.post(f"/sessions/{sid}/messages", json=message_body("hi"))
            assert (await c.get("/health")).status_code == 200
        last = json.loads(r.text.strip().splitlines()[-1])
        assert last["data"]["status"] == "completed"
    await running.shutdown()


async def test_daemon_shutdown_is_clean_with_held_streams(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    running = await start_daemon(nursery, tmpdir_short)
    async with running.unix() as c:
        sid = (await c.post("/sessions", json={})).json()["id"]
        async with c.stream("GET", f"/sessions/{sid}/events") as r:
            assert r.status_code == 200
            with trio.fail_after(10):
                await running.shutdown()


async def test_a_refused_message_leaves_no_runtime_open(
    nursery: trio.Nursery, tmpdir_short: Path
) -> None:
    running = await start_daemon(nursery, tmpdir_short)  # no provider configured
    async with running.unix() as c:
        sid = await new_session(c, workdir(tmpdir_short))
        refused = await c.post(f"/sessions/{sid}/messages", json=message_body("hi"))
        assert refused.status_code == 400, refused.text
        # Before, the runtime opened for the message stayed for the daemon's lifetime.
        assert (await c.get("/health")).json()["sessions_open"] == 0
    await running.shutdown()
