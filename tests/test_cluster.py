"""Several real daemon processes on one real PostgreSQL (issue 11, docs/scaling.md).

Each instance has its own data dir and socket, as on separate machines; the session
directories are shared (one machine here: a shared file system in production).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import psycopg
import pytest
import trio
from trio_websocket import open_websocket_url

from opencoded.storage.postgres import LEASE_SECONDS, PostgresBackend

from . import pg_support
from .conftest import start_daemon
from .daemon_process import DaemonProcess
from .fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm
from .test_recovery import (
    agent_config,
    replay_until_complete,
    slow_turn_with_sleep,
    sse_events,
    start_turn,
    unix,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as llm:
        yield llm


async def start_cluster(
    nursery: trio.Nursery, root: Path, database: str, fake: FakeLLM, n: int, *, bash: str = "allow"
) -> list[DaemonProcess]:
    config = agent_config(root, fake)
    settings = json.loads(config.read_text())
    settings["permission"]["bash"] = bash
    config.write_text(json.dumps(settings))
    instances = []
    for name in "abc"[:n]:
        (root / name).mkdir()
        instance = DaemonProcess(root / name, "--config", str(config), "--database", database)
        await instance.start(nursery)
        instances.append(instance)
    return instances


def workdir(root: Path) -> str:
    path = root / "work"
    path.mkdir(exist_ok=True)
    return str(path)


async def new_session(instance: DaemonProcess, root: Path) -> str:
    async with unix(instance.socket) as client:
        created = await client.post("/sessions", json={"directory": workdir(root)})
        assert created.status_code == 201, created.text
        return created.json()["id"]


def slow_reply(fake: FakeLLM, pieces: int = 40) -> None:
    fake.push(Reply(text=[f"w{i} " for i in range(pieces)], delay=0.05))


async def wait_status(client: httpx.AsyncClient, sid: str, status: str) -> None:
    with trio.fail_after(10):  # another process's state, polled with a bound
        while (await client.get(f"/sessions/{sid}")).json()["status"] != status:
            await trio.sleep(0.02)


def stop_all(instances: list[DaemonProcess]) -> None:
    for instance in instances:
        if instance.proc is not None and instance.proc.returncode is None:
            instance.proc.terminate()


async def test_a_watcher_on_b_sees_a_turn_on_a_live_and_after_reconnecting(
    nursery: trio.Nursery, tmpdir_short: Path, pg_database: str, fake: FakeLLM
) -> None:
    a, b = await start_cluster(nursery, tmpdir_short, pg_database, fake, 2)
    sid = await new_session(a, tmpdir_short)
    slow_reply(fake)
    watched: list[dict] = []
    async with unix(b.socket) as on_b, unix(a.socket) as on_a:
        async with on_b.stream("GET", f"/sessions/{sid}/events?after=0") as stream:
            assert stream.status_code == 200
            body = {"parts": [{"type": "text", "text": "hi"}], "async": True}
            accepted = await on_a.post(f"/sessions/{sid}/messages", json=body)
            assert accepted.status_code == 202, accepted.text
            await wait_status(on_b, sid, "busy")  # B knows the turn runs (on A)
            with trio.fail_after(20):
                async for event in sse_events(stream):
                    watched.append(event)
                    if event["type"] == "complete":
                        break
        await wait_status(on_b, sid, "idle")
        stored = await replay_until_complete(on_a, sid)
        assert watched == stored  # no gap, no duplicate, same order, same data
        assert [e["seq"] for e in watched] == list(range(1, len(watched) + 1))
        text = "".join(e["data"]["text"] for e in watched if e["type"] == "text-delta")
        assert text == "".join(f"w{i} " for i in range(40))
        # Reconnecting to B with `after` gives exactly the rest, from the table.
        middle = watched[len(watched) // 2]["seq"]
        rest = await replay_until_complete(on_b, sid, after=middle)
        assert rest == watched[middle:]
    stop_all([a, b])


async def test_two_messages_at_once_on_two_instances_one_turn(
    nursery: trio.Nursery, tmpdir_short: Path, pg_database: str, fake: FakeLLM
) -> None:
    a, b = await start_cluster(nursery, tmpdir_short, pg_database, fake, 2)
    sid = await new_session(a, tmpdir_short)
    slow_reply(fake)
    slow_reply(fake)  # there if both were (wrongly) accepted
    answers: dict[str, httpx.Response] = {}
    body = {"parts": [{"type": "text", "text": "hi"}], "async": True}

    async def send(name: str, instance: DaemonProcess) -> None:
        async with unix(instance.socket) as client:
            answers[name] = await client.post(f"/sessions/{sid}/messages", json=body)

    async with trio.open_nursery() as both:
        both.start_soon(send, "a", a)
        both.start_soon(send, "b", b)
    codes = sorted(r.status_code for r in answers.values())
    assert codes == [202, 409], {k: r.text for k, r in answers.items()}
    refused = next(r for r in answers.values() if r.status_code == 409)
    assert refused.json()["error"]["code"] == "SESSION_BUSY"
    async with unix(b.socket) as client:
        events = await replay_until_complete(client, sid)
        assert events[-1]["data"]["status"] == "completed"
        # The turn is over anywhere: the other instance takes the next message.
        fake.push(Reply(text=["again"]))
        body["async"] = False
        again = await client.post(f"/sessions/{sid}/messages", json=body)
        assert again.status_code == 200, again.text
        lines = [json.loads(line) for line in again.text.splitlines() if line]
        assert lines[-1]["data"]["status"] == "completed"
        assert lines[0]["seq"] == events[-1]["seq"] + 1  # seqs follow the other instance's
    stop_all([a, b])


async def test_kill_9_of_the_owner_a_survivor_interrupts_its_turn(
    nursery: trio.Nursery, tmpdir_short: Path, pg_database: str, fake: FakeLLM
) -> None:
    a, b, c = await start_cluster(nursery, tmpdir_short, pg_database, fake, 3)
    sid = await new_session(a, tmpdir_short)
    pid_file = tmpdir_short / "sleep.pid"
    slow_turn_with_sleep(fake, pid_file)
    async with unix(a.socket) as on_a:
        seen = await start_turn(on_a, sid, pid_file)
    async with unix(b.socket) as on_b:
        busy = await on_b.post(
            f"/sessions/{sid}/messages", json={"parts": [{"type": "text", "text": "x"}]}
        )
        assert busy.status_code == 409  # the turn runs on A
    assert a.proc is not None
    a.proc.kill()
    await a.wait()
    async with unix(c.socket) as on_c:
        # A survivor closes the turn once A's lease expires (the database's clock).
        events: list[dict] = []
        url = f"/sessions/{sid}/events?after=0"
        async with on_c.stream("GET", url, timeout=None) as stream:  # bounded below
            with trio.fail_after(LEASE_SECONDS + 15):
                async for event in sse_events(stream):
                    events.append(event)
                    if event["type"] == "complete":
                        break
        assert events[: len(seen)] == seen
        assert [e["type"] for e in events[-2:]] == ["error", "complete"]
        assert events[-2]["data"]["code"] == "INTERRUPTED"
        assert events[-1]["data"]["status"] == "interrupted"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        await wait_status(on_c, sid, "idle")  # A's turn was closed by a survivor
        fake.push(Reply(text=["back"]))
        again = await on_c.post(
            f"/sessions/{sid}/messages", json={"parts": [{"type": "text", "text": "there?"}]}
        )
        assert again.status_code == 200, again.text
        last = json.loads(again.text.splitlines()[-1])
        assert last["data"]["status"] == "completed"
    stop_all([b, c])


async def test_one_token_for_the_cluster(
    nursery: trio.Nursery, tmpdir_short: Path, pg_database: str, fake: FakeLLM
) -> None:
    a, b = await start_cluster(nursery, tmpdir_short, pg_database, fake, 2)
    token = a.token()
    assert token.startswith("sk-opencode-") and b.token() == token
    for instance in (a, b):
        async with httpx.AsyncClient(base_url=instance.url, trust_env=False) as client:
            ok = await client.get("/sessions", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
            refused = await client.get("/sessions", headers={"Authorization": "Bearer sk-x"})
            assert refused.status_code == 401
    stop_all([a, b])


async def test_abort_sent_to_c_ends_the_turn_running_on_a(
    nursery: trio.Nursery, tmpdir_short: Path, pg_database: str, fake: FakeLLM
) -> None:
    a, b, c = await start_cluster(nursery, tmpdir_short, pg_database, fake, 3)
    sid = await new_session(a, tmpdir_short)
    pid_file = tmpdir_short / "sleep.pid"
    slow_turn_with_sleep(fake, pid_file)
    async with unix(a.socket) as on_a:
        await start_turn(on_a, sid, pid_file)
    async with unix(c.socket) as on_c:
        started = time.monotonic()
        aborted = await on_c.post(f"/sessions/{sid}/abort")
        elapsed = time.monotonic() - started
        assert aborted.status_code == 200 and aborted.json() == {"aborted": True}
        assert elapsed < 5  # the answer waits until A recorded the end (bounded)
        events = await replay_until_complete(on_c, sid)
        assert events[-1]["data"]["status"] == "aborted"
        again = await on_c.post(f"/sessions/{sid}/abort")
        assert again.json() == {"aborted": False}  # nothing runs anywhere now
    stop_all([a, b, c])


async def test_a_permission_answer_sent_to_c_reaches_the_turn_on_a(
    nursery: trio.Nursery, tmpdir_short: Path, pg_database: str, fake: FakeLLM
) -> None:
    a, b, c = await start_cluster(nursery, tmpdir_short, pg_database, fake, 3, bash="ask")
    sid = await new_session(a, tmpdir_short)
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "bash", {"command": "echo from-a"})]),
        Reply(text=["done"]),
    )
    body = {"parts": [{"type": "text", "text": "run it"}], "async": True}
    async with unix(a.socket) as on_a, unix(c.socket) as on_c:
        accepted = await on_a.post(f"/sessions/{sid}/messages", json=body)
        assert accepted.status_code == 202
        with trio.fail_after(15):  # polling another process's state, bounded
            while not (pending := (await on_c.get(f"/sessions/{sid}/permissions")).json()):
                await trio.sleep(0.05)
        assert [p["tool"] for p in pending] == ["bash"]
        answer = await on_c.post(
            f"/sessions/{sid}/permissions/{pending[0]['id']}", json={"response": "once"}
        )
        assert answer.status_code == 200, answer.text
        events = await replay_until_complete(on_c, sid)
        assert events[-1]["data"]["status"] == "completed"
        results = [e for e in events if e["type"] == "tool-result"]
        assert "from-a" in json.dumps(results)
        twice = await on_c.post(
            f"/sessions/{sid}/permissions/{pending[0]['id']}", json={"response": "once"}
        )
        assert twice.status_code == 404  # answered: no one waits for it any more
    stop_all([a, b, c])


async def test_postgresql_down_clear_errors_health_503_then_back(
    nursery: trio.Nursery, tmpdir_short: Path, pg_server: pg_support.PgServer
) -> None:
    """A private server (the shared one must stay up): stopped under a running daemon."""
    private = pg_support.start_server()
    try:
        running = await start_daemon(nursery, tmpdir_short, {"database": private.url()})
        async with running.unix() as client:
            kept = (await client.post("/sessions", json={})).json()["id"]
            assert (await client.get("/health")).json()["database"] == "ok"
            await trio.to_thread.run_sync(private.pause)
            health = await client.get("/health")
            assert health.status_code == 503, health.text
            assert health.json()["database"].startswith("error: ")
            refused = await client.post("/sessions", json={})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "STORAGE_ERROR"
            assert (await client.get(f"/sessions/{kept}")).status_code == 503
            await trio.to_thread.run_sync(private.resume)
            with trio.fail_after(20):  # the pool reconnects on its own, bounded
                while (await client.get("/health")).status_code != 200:
                    await trio.sleep(0.1)
            assert (await client.get(f"/sessions/{kept}")).status_code == 200  # nothing lost
            assert (await client.post("/sessions", json={})).status_code == 201
        await running.shutdown()
    finally:
        await trio.to_thread.run_sync(private.stop)


async def test_retention_runs_once_per_cluster(pg_database: str) -> None:
    """Two instances' backends on one database: one wins each retention interval."""
    first, second = PostgresBackend(pg_database), PostgresBackend(pg_database)
    await first.open()
    await second.open()
    try:
        claims = [await b.claim_periodic("retention", 3600) for b in (first, second, first)]
        assert claims == [True, False, False]
        assert await second.claim_periodic("retention", 0)  # its interval has passed
    finally:
        await first.close()
        await second.close()


# ---- nginx in front, with the configuration docs/scaling.md gives ----------------------------


def nginx_config(upstreams: list[str], port: int, prefix: Path) -> str:
    """The documented server block, with our ports, in a minimal nginx.conf."""
    doc = (Path(__file__).parent.parent / "docs" / "scaling.md").read_text()
    block = doc.split("```nginx\n", 1)[1].split("```", 1)[0]
    servers = "".join(f"    server {u};\n" for u in upstreams)
    block = block.replace("    server 127.0.0.1:3001;\n    server 127.0.0.1:3002;\n", servers)
    block = block.replace("listen 3000;", f"listen 127.0.0.1:{port};")
    temp = "".join(
        f"{kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"pid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'};\n"
        f"worker_rlimit_nofile 20000;\nevents {{ worker_connections 8192; }}\n"
        f"http {{\naccess_log off;\n{temp}{block}}}\n"
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_two_instances_behind_nginx_with_the_documented_config(
    nursery: trio.Nursery, tmpdir_short: Path, pg_database: str, fake: FakeLLM
) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (Debian package nginx; .ci/run installs it)")
        pytest.skip("nginx is not installed (Debian package nginx)")
    a, b = await start_cluster(nursery, tmpdir_short, pg_database, fake, 2)
    prefix = tmpdir_short / "nginx"
    prefix.mkdir()
    prefix.chmod(0o777)  # nginx's workers run as nobody
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config([i.url.removeprefix("http://") for i in (a, b)], port, prefix))
    proc = await nursery.start(
        partial(trio.run_process, [nginx, "-p", str(prefix), "-c", str(conf), "-g",
                "daemon off;"], check=False)
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {a.token()}"}
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, trust_env=False) as lb:
            with trio.fail_after(10):  # nginx starting: polled, bounded
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await lb.get("/health")).status_code == 200:
                            break
                    await trio.sleep(0.05)
            sid = (await lb.post("/sessions", json={"directory": workdir(tmpdir_short)})).json()[
                "id"
            ]
            slow_reply(fake, pieces=20)
            ws_url = f"ws://127.0.0.1:{port}/sessions/{sid}/stream?after=0"
            extra = [(b"Authorization", headers["Authorization"].encode())]
            async with (
                open_websocket_url(ws_url, extra_headers=extra) as ws,
                lb.stream("GET", f"/sessions/{sid}/events?after=0") as stream,
            ):
                assert stream.status_code == 200
                body = {"parts": [{"type": "text", "text": "hi"}], "async": True}
                assert (await lb.post(f"/sessions/{sid}/messages", json=body)).status_code == 202
                sse: list[dict] = []
                frames: list[dict] = []
                with trio.fail_after(20):
                    async for event in sse_events(stream):
                        sse.append(event)
                        if event["type"] == "complete":
                            break
                    while not frames or frames[-1]["type"] != "complete":
                        frames.append(json.loads(await ws.get_message()))
            assert [e["seq"] for e in sse] == [f["seq"] for f in frames]
            assert [e["seq"] for e in sse] == list(range(1, len(sse) + 1))
            assert sse[-1]["data"]["status"] == "completed"
    finally:
        proc.terminate()
        stop_all([a, b])


async def test_a_frozen_owner_writes_nothing_after_it_was_declared_dead(
    nursery: trio.Nursery, tmpdir_short: Path, pg_database: str, fake: FakeLLM
) -> None:
    a, b = await start_cluster(nursery, tmpdir_short, pg_database, fake, 2)
    sid = await new_session(a, tmpdir_short)
    fake.push(Reply(text=[f"t{i} " for i in range(400)], delay=0.05))  # 20 s of streaming
    body = {"parts": [{"type": "text", "text": "hi"}], "async": True}
    assert a.proc is not None
    async with unix(a.socket) as on_a, unix(b.socket) as on_b:
        assert (await on_a.post(f"/sessions/{sid}/messages", json=body)).status_code == 202
        try:
            closed = await freeze_until_declared_dead(a, on_b, sid)
            before = (await on_b.get(f"/sessions/{sid}/messages")).json()
        finally:
            a.proc.send_signal(signal.SIGCONT)
        # A wakes up, keeps streaming into its turn and finds its writes refused: its
        # turn ends there (its session goes idle on A), and nothing of it is stored.
        with trio.fail_after(30):  # polling another process's state, bounded
            while (await on_a.get(f"/sessions/{sid}")).json()["status"] != "idle":
                await trio.sleep(0.1)
        after = (await on_b.get(f"/sessions/{sid}/messages")).json()
        # A's turn is over on A too, so all it tried to write was tried: nothing of it
        # came after the survivor's `complete`.
        with psycopg.connect(pg_database) as conn:
            rows = conn.execute(
                "SELECT seq, type FROM events WHERE session_id = %s ORDER BY seq", (sid,)
            ).fetchall()
        assert rows == [(e["seq"], e["type"]) for e in closed]
        assert after == before  # nor a message (the partial reply it still held)
    stop_all([a, b])


async def freeze_until_declared_dead(
    a: DaemonProcess, on_b: httpx.AsyncClient, sid: str
) -> list[dict]:
    """SIGSTOP A while it streams; return the session's events once B closed the turn."""
    assert a.proc is not None
    url = f"/sessions/{sid}/events?after=0"
    async with on_b.stream("GET", url, timeout=None) as stream:
        events = sse_events(stream)  # one reader of the stream, used twice
        with trio.fail_after(10):
            async for event in events:
                if event["type"] == "text-delta":
                    break  # A is streaming
        a.proc.send_signal(signal.SIGSTOP)
        # B declares A dead once its lease expires and closes the turn.
        with trio.fail_after(LEASE_SECONDS + 15):
            async for event in events:
                if event["type"] == "complete":
                    assert event["data"]["status"] == "interrupted"
                    break
    return await replay_until_complete(on_b, sid)


async def _complete_of(instance: DaemonProcess, sid: str, text: str) -> dict:
    """Run one turn on `instance`; its `complete` data (the turn must have completed)."""
    async with unix(instance.socket) as client:
        body = {"parts": [{"type": "text", "text": text}]}
        with trio.fail_after(20):
            async with client.stream("POST", f"/sessions/{sid}/messages", json=body) as r:
                assert r.status_code == 200
                lines = [json.loads(line) async for line in r.aiter_lines() if line]
    assert lines[-1]["type"] == "complete", lines
    assert lines[-1]["data"]["status"] == "completed", lines
    return lines[-1]["data"]


def _sent_texts(body: dict) -> list[str]:
    """The text of every message the daemon sent the provider, in order."""
    out = []
    for message in body["messages"]:
        content = message["content"]
        blocks = [content] if isinstance(content, str) else content
        out += [b if isinstance(b, str) else b.get("text", "") for b in blocks]
    return out


async def test_turns_alternating_between_instances_each_send_the_whole_history(
    nursery: trio.Nursery, tmpdir_short: Path, pg_database: str, fake: FakeLLM
) -> None:
    """An instance keeps a session's history in memory between its turns (issue 16): a
    turn that ran on another instance in between must be in the next request."""
    a, b = await start_cluster(nursery, tmpdir_short, pg_database, fake, 2)
    sid = await new_session(a, tmpdir_short)
    plan = [(a, "one"), (a, "two"), (b, "three"), (a, "four"), (b, "five"), (b, "six")]
    for n, (instance, word) in enumerate(plan):
        fake.push(Reply(text=[f"answer {word}"]))
        await _complete_of(instance, sid, f"say {word}")
        expected = []
        for _, earlier in plan[:n]:
            expected += [f"say {earlier}", f"answer {earlier}"]
        assert _sent_texts(fake.requests[-1].body) == [*expected, f"say {word}"]
    stop_all([a, b])


async def test_session_totals_count_the_turns_of_every_instance(
    nursery: trio.Nursery, tmpdir_short: Path, pg_database: str, fake: FakeLLM
) -> None:
    """What an instance remembers of a session's latest events (its totals) must not
    miss the events another instance appended meanwhile."""
    a, b = await start_cluster(nursery, tmpdir_short, pg_database, fake, 2)
    sid = await new_session(a, tmpdir_short)
    totals = []
    for instance in (a, b, a, b, a):
        fake.push(Reply(text=["ok"], input_tokens=10, output_tokens=5))
        totals.append((await _complete_of(instance, sid, "go"))["session"])
    assert [t["turns"] for t in totals] == [1, 2, 3, 4, 5]
    assert totals[-1]["output_tokens"] == 25
    stop_all([a, b])
