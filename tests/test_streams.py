"""Live views of the event log: WebSocket, SSE, the daemon feed; replay, fan-out, shutdown.

Everything runs against a real daemon over real sockets. Turns come from the agent and
the fake LLM; elsewhere events are appended to the session's real EventLog, which goes
through the real storage and fan-out exactly as a turn's events do.
"""

from __future__ import annotations

import gc
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import websockets.sync.client
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from opencoded.http.routes import streams
from opencoded.records import Event
from opencoded.sessions import EventLog
from opencoded.sessions import events as events_module
from tests.conftest import RunningDaemon, short_tmp, start_daemon
from tests.fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm

pytestmark = pytest.mark.both_stores

# ---- helpers -------------------------------------------------------------------------------


def llm_config(fake: FakeLLM) -> dict[str, Any]:
    return {
        "model": "anthropic/claude-sonnet-4-5",
        "provider": {"anthropic": {"options": {"apiKey": "sk-ant-test", "baseURL": fake.url}}},
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


@pytest.fixture
async def agent_daemon(nursery: trio.Nursery, fake: FakeLLM) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(nursery, short_tmp(), llm_config(fake))
    yield running
    await running.shutdown()


async def new_session(daemon: RunningDaemon, directory: Path | None = None) -> str:
    body = {"directory": str(directory)} if directory else {}
    async with daemon.unix() as client:
        r = await client.post("/sessions", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def log_of(daemon: RunningDaemon, sid: str) -> EventLog:
    """The session's log, held open until the daemon's shutdown()."""
    return (await daemon.holds.enter_async_context(daemon.daemon.sessions.hold(sid))).log


def ws_url(daemon: RunningDaemon, path: str) -> str:
    return daemon.tcp_url.replace("http://", "ws://") + path


def auth(daemon: RunningDaemon) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Bearer {daemon.token}".encode())]


@asynccontextmanager
async def tcp_ws(
    daemon: RunningDaemon, sid: str, query: str = "", **kw: Any
) -> AsyncIterator[WebSocketConnection]:
    path = f"/sessions/{sid}/stream{query}"
    kw.setdefault("extra_headers", auth(daemon))
    host, port = daemon.tcp_url.removeprefix("http://").rsplit(":", 1)
    # Our own stream, closed whatever happens: open_websocket_url leaves its socket to
    # the garbage collector when the handshake is refused.
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        try:
            async with trio.open_nursery() as nursery:
                ws = await wrap_client_stream(nursery, stream, host, path, **kw)
                try:
                    yield ws
                finally:
                    await ws.aclose()
        except BaseExceptionGroup as group:  # the nursery's: a refusal, as the caller expects
            rejected = [e for e in group.exceptions if isinstance(e, ConnectionRejected)]
            if rejected:
                raise rejected[0] from None
            raise


@asynccontextmanager
async def unix_ws(daemon: RunningDaemon, path: str) -> AsyncIterator[WebSocketConnection]:
    stream = await trio.open_unix_socket(str(daemon.socket))
    async with stream, trio.open_nursery() as nursery:  # the stream closes even if refused
        ws = await wrap_client_stream(nursery, stream, "localhost", path)
        try:
            yield ws
        finally:
            await ws.aclose()


async def next_frame(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(10):
        return json.loads(await ws.get_message())


async def frames_until(ws: WebSocketConnection, kind: str) -> list[dict[str, Any]]:
    frames = [await next_frame(ws)]
    while frames[-1]["type"] != kind:
        frames.append(await next_frame(ws))
    return frames


async def frames_upto(ws: WebSocketConnection, seq: int) -> list[dict[str, Any]]:
    frames = [await next_frame(ws)]
    while frames[-1].get("seq", 0) < seq:
        frames.append(await next_frame(ws))
    return frames


class Sse:
    """A Server-Sent Events stream read message by message (comments kept apart)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next(self) -> dict[str, Any]:
        message: dict[str, Any] = {}
        with trio.fail_after(10):
            async for line in self.lines:
                if line == "":
                    if message:
                        return message
                elif line.startswith(":"):
                    self.comments.append(line)
                    if "ping" in line:
                        return {"comment": line}
                else:
                    field, _, value = line.partition(": ")
                    message[field] = value
        raise EOFError("stream ended")

    def events(self) -> Sse:
        """Events (not comments) with data parsed, until the stream ends.

        An iterator object rather than an async generator: a test that stops reading
        early leaves nothing to be finalised by the garbage collector.
        """
        return self

    def __aiter__(self) -> Sse:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while True:
            try:
                message = await self.next()
            except EOFError:
                raise StopAsyncIteration from None
            if "comment" not in message:
                return {**message, "data": json.loads(message["data"])}

    async def upto(self, seq: int) -> list[dict[str, Any]]:
        out = []
        async for message in self.events():
            out.append(message)
            if int(message["id"]) >= seq:
                break
        return out


@asynccontextmanager
async def sse(client: httpx.AsyncClient, path: str, **kw: Any) -> AsyncIterator[Sse]:
    async with client.stream("GET", path, **kw) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Sse(response)


def flat(event: dict[str, Any]) -> dict[str, Any]:
    """An SSE event in the WebSocket's flat frame shape, to compare the two views."""
    return {"type": event["event"], "seq": int(event["id"]), **event["data"]}


async def append_n(log: EventLog, n: int, text: str = "x") -> int:
    last = 0
    for i in range(n):
        last = (await log.append("text-delta", {"message_id": "msg_t", "text": f"{text}{i}"})).seq
    return last


# ---- a real turn, three watchers -----------------------------------------------------------


async def test_two_websockets_and_sse_see_the_same_turn_with_tools(
    agent_daemon: RunningDaemon, fake: FakeLLM, tmpdir_short: Path
) -> None:
    project = tmpdir_short / "p"
    project.mkdir()
    (project / "a.py").write_text("print('hi')\n")
    sid = await new_session(agent_daemon, project)
    fake.push(
        Reply(text=["Let me ", "look."], tool_calls=[FakeToolCall("t1", "read", {"path": "a.py"})])
    )
    fake.push(Reply(text=["It prints ", "hi."]))
    async with (
        tcp_ws(agent_daemon, sid, "?after=0") as one,
        unix_ws(agent_daemon, f"/sessions/{sid}/stream?after=0") as two,
        agent_daemon.tcp() as client,
        sse(client, f"/sessions/{sid}/events?after=0") as events,
    ):
        await one.send_message(json.dumps({"type": "message", "content": "What does a.py do?"}))
        first = await frames_until(one, "complete")
        second = await frames_until(two, "complete")
        third = [flat(e) async for e in _sse_until(events, "complete")]
    assert first == second == third
    assert [f["seq"] for f in first] == list(range(1, len(first) + 1))
    kinds = [f["type"] for f in first]
    assert "tool" not in kinds
    assert kinds.count("tool-call") == 1 and kinds.count("tool-result") == 1
    call = next(f for f in first if f["type"] == "tool-call")
    assert call["tool"] == "read" and call["args"] == {"path": "a.py"}
    result = next(f for f in first if f["type"] == "tool-result")
    assert "print('hi')" in result["output"] and result["error"] is False
    text = "".join(f["text"] for f in first if f["type"] == "text-delta")
    assert text == "Let me look.It prints hi."
    assert first[-1]["status"] == "completed"


async def _sse_until(events: Sse, kind: str) -> AsyncIterator[dict[str, Any]]:
    async for event in events.events():
        yield event
        if event["event"] == kind:
            return


# ---- replay and resume ---------------------------------------------------------------------


async def test_reconnect_with_after_gets_exactly_the_missing_events(
    daemon: RunningDaemon,
) -> None:
    sid = await new_session(daemon)
    log = await log_of(daemon, sid)
    await append_n(log, 10)
    async with tcp_ws(daemon, sid, "?after=0") as ws:
        seen = [f["seq"] for f in await frames_upto(ws, 10)]
        await append_n(log, 5, "live")
        seen += [f["seq"] for f in await frames_upto(ws, 13)]
    # Disconnected at 13 while the "turn" goes on.
    await append_n(log, 20, "missed")
    async with tcp_ws(daemon, sid, "?after=13") as ws:
        resumed = await frames_upto(ws, 35)
        marker = await log.append("complete", {"message_id": "msg_t", "status": "completed"})
        tail = await next_frame(ws)
    assert seen == list(range(1, 14))
    assert [f["seq"] for f in resumed] == list(range(14, 36))
    assert resumed[0]["text"] == "live3" and resumed[-1]["text"] == "missed19"
    assert tail == {
        "type": "complete",
        "seq": marker.seq,
        "message_id": "msg_t",
        "status": "completed",
    }


async def test_replay_then_live_while_events_keep_coming(daemon: RunningDaemon) -> None:
    """A watcher joining mid-stream with after=0 gets all, in order, once (no gap, no dup)."""
    sid = await new_session(daemon)
    log = await log_of(daemon, sid)
    await append_n(log, 1500)  # more than one storage read batch
    async with tcp_ws(daemon, sid, "?after=0") as ws, trio.open_nursery() as nursery:

        async def keep_appending() -> None:
            for _ in range(30):
                await append_n(log, 50)
                await trio.sleep(0)

        nursery.start_soon(keep_appending)
        frames = await frames_upto(ws, 3000)
    assert [f["seq"] for f in frames] == list(range(1, 3001))


async def test_without_after_the_websocket_starts_live(daemon: RunningDaemon) -> None:
    sid = await new_session(daemon)
    log = await log_of(daemon, sid)
    old = await append_n(log, 3)
    await log.wait_committed(old)
    async with tcp_ws(daemon, sid) as ws:
        await _wait_watchers(log, 1)
        new = await log.append("message", {"id": "m1", "role": "assistant", "content": "hi"})
        frame = await next_frame(ws)
    assert frame == {
        "type": "message",
        "seq": new.seq,
        "id": "m1",
        "role": "assistant",
        "content": "hi",
    }


async def _wait_watchers(log: EventLog, n: int) -> None:
    with trio.fail_after(5):
        while log.watcher_count < n:
            await trio.sleep(0.005)


async def test_sse_resumes_from_last_event_id_and_sends_heartbeats(
    daemon: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "SSE_HEARTBEAT", 0.05)
    sid = await new_session(daemon)
    log = await log_of(daemon, sid)
    await log.append("tool", {"id": "c1", "tool": "read", "args": {"path": "x"}})
    await append_n(log, 4)
    async with daemon.tcp() as client:
        # The header beats ?after= (a browser reconnects to the same URL with the header).
        path = f"/sessions/{sid}/events?after=0"
        async with sse(client, path, headers={"Last-Event-ID": "2"}) as events:
            got = await events.upto(5)
            assert await events.next() == {"comment": ": ping"}  # idle: a heartbeat
            await log.append("complete", {"message_id": "msg_t", "status": "completed"})
            after_ping = [e async for e in _sse_until(events, "complete")]
        async with sse(client, f"/sessions/{sid}/events?after=0") as events:
            first = (await events.upto(1))[0]
        bad = await client.get(f"/sessions/{sid}/events", headers={"Last-Event-ID": "x"})
        missing = await client.get("/sessions/session_nope/events")
    assert [int(e["id"]) for e in got] == [3, 4, 5]
    assert [e["event"] for e in got] == ["text-delta"] * 3
    assert got[0]["data"] == {"message_id": "msg_t", "text": "x1"}
    assert [(e["id"], e["event"]) for e in after_ping] == [("6", "complete")]
    assert first["event"] == "tool-call" and first["data"]["tool"] == "read"
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "Last-Event-ID"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "SESSION_NOT_FOUND"


# ---- a watcher that never reads -------------------------------------------------------------


async def test_stalled_watcher_blocks_nobody_and_holds_no_memory(
    daemon: RunningDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The policy at a buffer size that a few megabytes of events overflow (past the
    # kernel's socket buffers), so the test stays quick.
    monkeypatch.setattr(events_module, "WATCHER_BUFFER", 256)
    sid = await new_session(daemon)
    log = await log_of(daemon, sid)
    total, chunk = 3000, 100
    payload = "y" * 512
    seen_ws: list[int] = []
    seen_sse: list[int] = []
    async with (
        stalled_ws(daemon, f"/sessions/{sid}/stream?after=0") as stalled,
        tcp_ws(daemon, sid, "?after=0") as reader,
        daemon.tcp() as client,
        sse(client, f"/sessions/{sid}/events?after=0") as events,
    ):
        await _wait_watchers(log, 3)
        peak_buffered = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_collect_ws, reader, total, seen_ws)
            nursery.start_soon(_collect_sse, events, total, seen_sse)
            with trio.fail_after(30):
                for start in range(0, total, chunk):
                    for i in range(chunk):
                        await log.append(
                            "text-delta", {"message_id": "m", "text": f"{start + i}{payload}"}
                        )
                    await log.wait_committed(log.last_seq)
                    peak_buffered = max(peak_buffered, log.buffered)
        # Everyone else has everything; the stalled watcher was dropped from the fan-out,
        # and what the daemon still holds for it is bounded, not the whole backlog.
        dropped_to = log.watcher_count
        held = live_events(sid)
        # Now it reads: it catches up from storage, in order, nothing missing.
        caught_up = [f["seq"] for f in await frames_upto(stalled, total)]
    assert seen_ws == seen_sse == list(range(1, total + 1))
    assert dropped_to == 2
    assert peak_buffered <= 3 * events_module.WATCHER_BUFFER
    # At most its dropped channel's buffer and one storage read batch (1000).
    assert held <= events_module.WATCHER_BUFFER + 1000 + 10, held
    assert caught_up == list(range(1, total + 1))


def live_events(session_id: str) -> int:
    """How many of the session's Event objects exist in this (the daemon's) process."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Event) and o.session_id == session_id)


@asynccontextmanager
async def stalled_ws(daemon: RunningDaemon, path: str) -> AsyncIterator[WebSocketConnection]:
    """A client that reads nothing until told: a tiny receive buffer, a one-message queue.

    With the kernel's buffers this small, the daemon's sends to it block after a few
    kilobytes, as they would for a frozen client on a real network.
    """
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", int(daemon.tcp_url.rsplit(":", 1)[1])))
    async with trio.open_nursery() as nursery:
        ws = await wrap_client_stream(
            nursery,
            trio.SocketStream(sock),
            "127.0.0.1",
            path,
            extra_headers=auth(daemon),
            message_queue_size=1,
        )
        try:
            yield ws
        finally:
            await ws.aclose()


async def _collect_ws(ws: WebSocketConnection, total: int, out: list[int]) -> None:
    while not out or out[-1] < total:
        out.append(json.loads(await ws.get_message())["seq"])


async def _collect_sse(events: Sse, total: int, out: list[int]) -> None:
    async for event in events.events():
        out.append(int(event["id"]))
        if out[-1] >= total:
            return


# ---- transports and security --------------------------------------------------------------


async def test_websocket_over_the_unix_socket_needs_no_token(daemon: RunningDaemon) -> None:
    sid = await new_session(daemon)
    log = await log_of(daemon, sid)
    async with unix_ws(daemon, f"/sessions/{sid}/stream?after=0") as ws:
        event = await log.append("text-delta", {"message_id": "m", "text": "over unix"})
        frame = await next_frame(ws)
    assert frame == {"type": "text-delta", "seq": event.seq, "message_id": "m", "text": "over unix"}


async def test_tcp_websocket_auth_and_origin(daemon: RunningDaemon) -> None:
    sid = await new_session(daemon)
    log = await log_of(daemon, sid)
    with pytest.raises(ConnectionRejected) as no_token:
        async with tcp_ws(daemon, sid, extra_headers=[]):
            pass
    with pytest.raises(ConnectionRejected) as wrong_token:
        async with tcp_ws(daemon, sid, extra_headers=[(b"Authorization", b"Bearer nope")]):
            pass
    with pytest.raises(ConnectionRejected) as bad_origin:
        origin = [*auth(daemon), (b"Origin", b"https://evil.example")]
        async with tcp_ws(daemon, sid, extra_headers=origin):
            pass
    # A browser cannot set headers: ?token= is accepted.
    async with tcp_ws(daemon, sid, f"?after=0&token={daemon.token}", extra_headers=[]) as ws:
        event = await log.append("text-delta", {"message_id": "m", "text": "browser"})
        frame = await next_frame(ws)
    assert no_token.value.status_code == 401 and wrong_token.value.status_code == 401
    assert json.loads(no_token.value.body)["error"]["code"] == "UNAUTHORIZED"
    assert bad_origin.value.status_code == 403
    assert json.loads(bad_origin.value.body)["error"]["code"] == "PERMISSION_DENIED"
    assert frame["seq"] == event.seq and frame["text"] == "browser"


async def test_unknown_session_and_bad_after_refuse_the_handshake(daemon: RunningDaemon) -> None:
    sid = await new_session(daemon)
    with pytest.raises(ConnectionRejected) as missing:
        async with tcp_ws(daemon, "session_nope"):
            pass
    with pytest.raises(ConnectionRejected) as bad_after:
        async with tcp_ws(daemon, sid, "?after=-3"):
            pass
    assert missing.value.status_code == 404
    assert json.loads(missing.value.body)["error"]["code"] == "SESSION_NOT_FOUND"
    assert bad_after.value.status_code == 400
    assert json.loads(bad_after.value.body)["error"]["details"] == {"field": "after"}


async def test_bad_frames_get_error_frames_and_the_socket_stays_open(
    daemon: RunningDaemon,
) -> None:
    sid = await new_session(daemon)
    log = await log_of(daemon, sid)
    bad = [
        "not json",
        "[1, 2]",
        json.dumps({"type": "dance"}),
        json.dumps({"type": "message"}),
        json.dumps({"type": "message", "content": 5}),
        json.dumps({"type": "message", "content": "a", "parts": []}),
        json.dumps({"type": "message", "parts": [{"type": "image"}]}),
        json.dumps({"type": "abort", "now": True}),
        json.dumps({"type": "permission", "id": "perm_1", "response": "maybe"}),
    ]
    async with unix_ws(daemon, f"/sessions/{sid}/stream") as ws:
        answers = []
        for frame in bad:
            await ws.send_message(frame)
            answers.append(await next_frame(ws))
        await ws.send_message(
            json.dumps({"type": "permission", "id": "perm_x", "response": "once"})
        )
        unknown_permission = await next_frame(ws)
        await ws.send_message(json.dumps({"type": "abort"}))  # nothing running: no answer
        event = await log.append("text-delta", {"message_id": "m", "text": "still here"})
        after = await next_frame(ws)
    assert all(a["type"] == "error" and a["code"] == "INVALID_REQUEST" for a in answers), answers
    assert all("seq" not in a and a["message"] for a in answers)
    assert answers[6]["details"] == {"field": "parts[0].type"}
    assert unknown_permission["code"] == "NOT_FOUND"
    assert after["seq"] == event.seq and after["text"] == "still here"
    assert await daemon.daemon.store.last_seq(sid) == event.seq  # error frames are not stored


async def test_busy_then_abort_over_the_websocket(
    agent_daemon: RunningDaemon, fake: FakeLLM
) -> None:
    sid = await new_session(agent_daemon)
    fake.push(Reply(text=["thinking"], hang=True))
    async with unix_ws(agent_daemon, f"/sessions/{sid}/stream") as ws:
        await ws.send_message(json.dumps({"type": "message", "content": "go"}))
        await frames_until(ws, "text-delta")
        await ws.send_message(json.dumps({"type": "message", "content": "again"}))
        busy = await next_frame(ws)
        await ws.send_message(json.dumps({"type": "abort"}))
        end = (await frames_until(ws, "complete"))[-1]
    assert busy["type"] == "error" and busy["code"] == "SESSION_BUSY" and "seq" not in busy
    assert end["status"] == "aborted"


async def test_permission_answered_over_the_websocket(
    nursery: trio.Nursery, fake: FakeLLM, tmpdir_short: Path
) -> None:
    running = await start_daemon(nursery, short_tmp(), llm_config(fake))
    project = tmpdir_short / "p"
    project.mkdir()
    sid = await new_session(running, project)
    fake.push(Reply(tool_calls=[FakeToolCall("t1", "write", {"path": "n.txt", "content": "new"})]))
    fake.push(Reply(text=["done"]))
    async with unix_ws(running, f"/sessions/{sid}/stream") as ws:
        await ws.send_message(json.dumps({"type": "message", "content": "write it"}))
        asked = (await frames_until(ws, "permission"))[-1]
        answer = {"type": "permission", "id": asked["id"], "response": "once"}
        await ws.send_message(json.dumps(answer))
        rest = await frames_until(ws, "complete")
    await running.shutdown()
    assert asked["tool"] == "write" and asked["args"]["path"] == "n.txt"
    result = next(f for f in rest if f["type"] == "tool-result")
    assert result["error"] is False and (project / "n.txt").read_text() == "new"
    assert rest[-1]["status"] == "completed"


async def test_the_websockets_package_client(agent_daemon: RunningDaemon, fake: FakeLLM) -> None:
    """A client no one here wrote: `websockets` (sync, in a thread) sends the spec's message."""
    sid = await new_session(agent_daemon)
    fake.push(Reply(text=["Hello ", "from ", "the fake."]))
    url = ws_url(agent_daemon, f"/sessions/{sid}/stream")
    headers = {"Authorization": f"Bearer {agent_daemon.token}"}

    def talk() -> list[dict[str, Any]]:
        with websockets.sync.client.connect(url, additional_headers=headers, proxy=None) as ws:
            ws.send(json.dumps({"type": "message", "content": "Add logging to functions"}))
            frames = []
            while not frames or frames[-1]["type"] != "complete":
                frames.append(json.loads(ws.recv(timeout=10)))
            return frames

    with trio.fail_after(20):
        frames = await trio.to_thread.run_sync(talk)
    text = "".join(f["text"] for f in frames if f["type"] == "text-delta")
    assert text == "Hello from the fake."
    assert frames[-1]["status"] == "completed" and frames[-1]["message_id"]
    assert [f["seq"] for f in frames] == sorted({f["seq"] for f in frames})


# ---- the daemon-wide feed -----------------------------------------------------------------


async def test_daemon_feed_sees_created_busy_idle_deleted(
    agent_daemon: RunningDaemon, fake: FakeLLM
) -> None:
    fake.push(Reply(text=["ok"]))
    async with agent_daemon.tcp() as client, sse(client, "/events") as feed:
        with trio.fail_after(5):
            while agent_daemon.daemon.sessions.feed.listener_count < 1:
                await trio.sleep(0.005)
        sid = await new_session(agent_daemon)
        async with unix_ws(agent_daemon, f"/sessions/{sid}/stream") as ws:
            await ws.send_message(json.dumps({"type": "message", "content": "hi"}))
            await frames_until(ws, "complete")
        notices = []
        async for event in feed.events():
            notices.append((event["event"], event["data"].get("status")))
            if len(notices) == 3:
                break
        assert (await client.delete(f"/sessions/{sid}")).status_code == 200
        async for event in feed.events():
            notices.append((event["event"], event["data"]["session_id"]))
            break
    assert notices == [
        ("session.created", None),
        ("session.status", "busy"),
        ("session.status", "idle"),
        ("session.deleted", sid),
    ]


# ---- endings --------------------------------------------------------------------------------


async def test_deleting_a_watched_session_ends_its_streams(daemon: RunningDaemon) -> None:
    sid = await new_session(daemon)
    log = await log_of(daemon, sid)
    last = await log.append("text-delta", {"message_id": "m", "text": "last"})
    async with (
        unix_ws(daemon, f"/sessions/{sid}/stream?after=0") as ws,
        daemon.unix() as client,
        sse(client, f"/sessions/{sid}/events?after=0") as events,
    ):
        assert (await next_frame(ws))["seq"] == last.seq
        assert int((await events.upto(last.seq))[-1]["id"]) == last.seq
        assert (await client.delete(f"/sessions/{sid}")).status_code == 200
        with pytest.raises(ConnectionClosed) as closed:
            await next_frame(ws)
        rest = [e async for e in events.events()]  # ends instead of hanging
    assert closed.value.reason.code == 4404 and closed.value.reason.reason == "session deleted"
    assert rest == []


async def test_shutdown_closes_websockets_with_1001_after_the_aborted_turn(
    nursery: trio.Nursery, fake: FakeLLM
) -> None:
    running = await start_daemon(nursery, short_tmp(), llm_config(fake))
    sid = await new_session(running)
    idle_sid = await new_session(running)
    fake.push(Reply(text=["working"], hang=True))
    async with (
        unix_ws(running, f"/sessions/{sid}/stream") as busy_ws,
        unix_ws(running, f"/sessions/{idle_sid}/stream") as idle_ws,
        running.unix() as client,
        sse(client, f"/sessions/{sid}/events?after=0") as events,
        sse(client, "/events") as feed,
    ):
        await busy_ws.send_message(json.dumps({"type": "message", "content": "go"}))
        await frames_until(busy_ws, "text-delta")
        with trio.fail_after(5):
            async with trio.open_nursery() as n:
                n.start_soon(running.shutdown)
                frames = []
                with pytest.raises(ConnectionClosed) as busy_closed:
                    while True:
                        frames.append(await next_frame(busy_ws))
                with pytest.raises(ConnectionClosed) as idle_closed:
                    await next_frame(idle_ws)
                sse_events = [e["event"] async for e in events.events()]
                feed_events = [e["event"] async for e in feed.events()]
    assert frames[-1]["type"] == "complete" and frames[-1]["status"] == "aborted"
    for closed in (busy_closed, idle_closed):
        assert closed.value.reason.code == 1001
        assert closed.value.reason.reason == "daemon shutting down"
    assert sse_events[-1] == "complete"  # the stream ended cleanly after the last event
    assert "session.status" in feed_events  # idle was reported before the feed ended
