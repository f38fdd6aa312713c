"""Several real daemon processes on one real PostgreSQL (issue 11, docs/scaling.md).

Each instance has its own data dir and socket, as on separate machines; the session
directories are shared (one machine here: a shared file system in production).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from opencoded.storage.postgres import LEASE_SECONDS

from .daemon_process import DaemonProcess
from .fakes.llm import FakeLLM, Reply, open_fake_llm
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
    nursery: trio.Nursery, root: Path, database: str, fake: FakeLLM, n: int
) -> list[DaemonProcess]:
    config = agent_config(root, fake)
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
            with trio.fail_after(20):
                async for event in sse_events(stream):
                    watched.append(event)
                    if event["type"] == "complete":
                        break
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
        with trio.fail_after(LEASE_SECONDS + 15):
            events = await replay_until_complete(on_c, sid)
        assert events[: len(seen)] == seen
        assert [e["type"] for e in events[-2:]] == ["error", "complete"]
        assert events[-2]["data"]["code"] == "INTERRUPTED"
        assert events[-1]["data"]["status"] == "interrupted"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
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
