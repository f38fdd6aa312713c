"""Crash recovery at start-up, graceful stop, and health when the database fails.

The state a dead daemon leaves is built with the real store (what is on disk after a
SIGKILL is exactly what was committed), then a real daemon is started on it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import trio

from opencoded.records import Event, Message, PermissionRequest, Session, Turn, new_id, now
from opencoded.recovery import INTERRUPTED_MESSAGE
from opencoded.storage import Store

from .conftest import open_test_store, start_daemon
from .daemon_process import DaemonProcess
from .fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm

pytestmark = pytest.mark.both_stores


def unix(path: Path) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(uds=str(path))
    return httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=10)


async def append(store: Store, session_id: str, seq: int, type_: str, data: dict) -> None:
    await store.append_event(Event(session_id, seq, type_, data, time.time()), lambda e: None)


async def left_running(data_dir: Path, directory: Path) -> dict[str, str]:
    """What a daemon killed mid-turn leaves: a running turn, its events, a pending request."""
    ids = {"session": new_id("ses"), "turn": new_id("turn"), "message": new_id("msg")}
    ids["other"], ids["permission"] = new_id("ses"), new_id("perm")
    async with open_test_store(data_dir) as store:
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
    async with running.daemon.sessions.hold(ids["session"]) as runtime:
        event = await runtime.log.append("text-delta", {"message_id": "m", "text": "x"})
    assert event.seq == 6
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
    async with open_test_store(tmpdir_short / "data") as store:
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


@pytest.mark.sqlite_only  # the SQLite files themselves
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
        # The database's files stop taking writes under the running daemon (immutable):
        # a write fails with a clear error, and health says so until writes work again.
        wal = running.data_dir / "opencode.db-wal"
        set_immutable(wal, True)
        try:
            refused = await client.post("/sessions", json={})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "STORAGE_ERROR"
            failed = await client.get("/health")
            assert failed.status_code == 503
            assert failed.json()["status"] == "error"
            assert failed.json()["database"].startswith("error: ")
        finally:
            set_immutable(wal, False)
        assert (await client.post("/sessions", json={})).status_code == 201
        assert (await client.get("/health")).status_code == 200
    await running.shutdown()


def set_immutable(path: Path, on: bool) -> None:
    done = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            raise AssertionError(f"chattr failed in CI: {done.stderr!r}")
        pytest.skip(f"chattr is not allowed here: {done.stderr.decode().strip()}")


@pytest.mark.sqlite_only  # the SQLite files themselves
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


# ---- a real daemon process killed (or stopped) in the middle of a turn ----------------------


def workdir(tmp: Path) -> Path:
    """A session directory next to the data dir (the daemon refuses its parent, `tmp`)."""
    path = tmp / "work"
    path.mkdir(exist_ok=True)
    return path


def agent_config(tmp: Path, fake: FakeLLM) -> Path:
    config = {
        "model": "anthropic/claude-sonnet-4-5",
        "provider": {"anthropic": {"options": {"apiKey": "sk-ant-test", "baseURL": fake.url}}},
        "permission": {"bash": "allow"},
        # These tests follow the command by the host pid it prints and a pid file outside
        # the session directory; the sandbox (its own pid namespace and /tmp) is tested in
        # tests/test_sandbox.py.
        "sandbox": {"mode": "off"},
    }
    path = tmp / "agent.json"
    path.write_text(json.dumps(config))
    return path


def slow_turn_with_sleep(fake: FakeLLM, pid_file: Path) -> None:
    """A slowly streamed answer, then `bash` running a command that would take 10 minutes."""
    command = f"sleep 600 & echo $! > {pid_file}; wait"
    fake.push(
        Reply(
            text=["Let ", "me ", "run ", "it."],
            tool_calls=[FakeToolCall("t1", "bash", {"command": command})],
            delay=0.05,
        ),
        Reply(text=["never reached"]),
    )


async def start_turn(client: httpx.AsyncClient, sid: str, pid_file: Path) -> list[dict]:
    """Send the message and read the NDJSON stream until the command is running."""
    seen: list[dict] = []
    body = {"parts": [{"type": "text", "text": "run the long job"}], "async": True}
    accepted = await client.post(f"/sessions/{sid}/messages", json=body)
    assert accepted.status_code == 202, accepted.text
    async with client.stream("GET", f"/sessions/{sid}/events") as stream:
        with trio.fail_after(15):
            async for event in sse_events(stream):
                seen.append(event)
                if event["type"] == "tool-call":
                    break  # nothing more comes until the command ends
                if event["type"] == "complete":
                    raise AssertionError(f"the turn ended early: {seen}")
        with trio.fail_after(10):  # polling another process's file
            while not (pid_file.exists() and pid_file.read_text().strip()):
                await trio.sleep(0.02)
    return seen


class sse_events:
    """Parse `id:/event:/data:` blocks of a Server-Sent Events response.

    An iterator object, not an async generator: a test that stops reading early leaves
    nothing for the garbage collector to finalise.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    def __aiter__(self) -> sse_events:
        return self

    async def __anext__(self) -> dict:
        event: dict = {}
        async for line in self.lines:
            if line.startswith("id:"):
                event["seq"] = int(line[3:].strip())
            elif line.startswith("event:"):
                event["type"] = line[6:].strip()
            elif line.startswith("data:"):
                event["data"] = json.loads(line[5:].strip())
            elif not line and "type" in event:
                return event
        raise StopAsyncIteration


async def replay_until_complete(client: httpx.AsyncClient, sid: str, after: int = 0) -> list[dict]:
    events = []
    async with client.stream("GET", f"/sessions/{sid}/events?after={after}") as stream:
        with trio.fail_after(10):
            async for event in sse_events(stream):
                events.append(event)
                if event["type"] == "complete":
                    break
    return events


def gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # a zombie waiting to be reaped runs no more


async def wait_gone(pid: int, timeout: float = 5) -> None:
    with trio.fail_after(timeout):
        while not gone(pid):
            await trio.sleep(0.02)


async def test_sigkill_mid_turn_then_restart(nursery: trio.Nursery, tmpdir_short: Path) -> None:
    async with open_fake_llm() as fake:
        config = agent_config(tmpdir_short, fake)
        pid_file = tmpdir_short / "sleep.pid"
        first = DaemonProcess(tmpdir_short, "--config", str(config))
        await first.start(nursery)
        async with unix(first.socket) as client:
            created = await client.post("/sessions", json={"directory": str(workdir(tmpdir_short))})
            sid = created.json()["id"]
            slow_turn_with_sleep(fake, pid_file)
            seen = await start_turn(client, sid, pid_file)
        sleep_pid = int(pid_file.read_text())
        assert not gone(sleep_pid)
        assert first.proc is not None
        first.proc.kill()  # SIGKILL: no clean-up of any kind
        await first.wait()
        # The command does not outlive the daemon (parent-death signal on its group).
        await wait_gone(sleep_pid)

        second = DaemonProcess(tmpdir_short, "--config", str(config))
        await second.start(nursery)
        async with unix(second.socket) as client:
            session = (await client.get(f"/sessions/{sid}")).json()
            assert session["status"] == "idle"
            events = await replay_until_complete(client, sid)
            # What the client saw before the kill is stored, seq for seq, and intact.
            assert events[: len(seen)] == seen
            assert [e["type"] for e in events[-2:]] == ["error", "complete"]
            assert events[-2]["data"]["code"] == "INTERRUPTED"
            assert events[-1]["data"]["status"] == "interrupted"
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            # The session takes new messages, and the model sees a consistent history.
            fake.push(Reply(text=["back again"]))
            body = {"parts": [{"type": "text", "text": "are you there?"}]}
            async with client.stream("POST", f"/sessions/{sid}/messages", json=body) as r:
                assert r.status_code == 200
                lines = [json.loads(line) async for line in r.aiter_lines() if line]
            assert lines[-1]["type"] == "complete"
            assert lines[-1]["data"]["status"] == "completed", lines
            assert lines[0]["seq"] == events[-1]["seq"] + 1
        assert second.proc is not None
        second.proc.terminate()
        assert await second.wait() == 0


async def test_sigterm_mid_turn_stops_within_5_s(nursery: trio.Nursery, tmpdir_short: Path) -> None:
    async with open_fake_llm() as fake:
        config = agent_config(tmpdir_short, fake)
        pid_file = tmpdir_short / "sleep.pid"
        daemon = DaemonProcess(tmpdir_short, "--config", str(config))
        await daemon.start(nursery)
        async with unix(daemon.socket) as client, unix(daemon.socket) as watcher:
            sid = (
                await client.post("/sessions", json={"directory": str(workdir(tmpdir_short))})
            ).json()["id"]
            slow_turn_with_sleep(fake, pid_file)
            seen = await start_turn(client, sid, pid_file)
            sleep_pid = int(pid_file.read_text())
            async with watcher.stream(
                "GET", f"/sessions/{sid}/events?after={seen[-1]['seq']}"
            ) as stream:
                assert daemon.proc is not None
                daemon.proc.send_signal(signal.SIGTERM)
                tail = []
                with trio.fail_after(5):
                    async for event in sse_events(stream):  # the watcher gets the end
                        tail.append(event)
                        if event["type"] == "complete":
                            break
                code = await daemon.wait(10)  # a hang bound (the contract: 5 s)
        assert code == 0
        assert tail[-1]["data"]["status"] == "aborted"
        assert gone(sleep_pid)
        assert not daemon.socket.exists()
        # Recorded as aborted, so the next start has nothing to recover.
        again = DaemonProcess(tmpdir_short, "--config", str(config))
        await again.start(nursery)
        async with unix(again.socket) as client:
            events = await replay_until_complete(client, sid)
            assert events[-1]["data"]["status"] == "aborted"
            assert "INTERRUPTED" not in json.dumps(events)
        assert "marked interrupted" not in again.stderr.decode()
        assert again.proc is not None
        again.proc.terminate()
        assert await again.wait() == 0
