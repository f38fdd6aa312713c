"""Fork and queued messages (issue 13), through the real daemon and the fake LLM server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.test_agent import agent_daemon, message_body, new_session, run_turn, wait_idle

try:
    from tests.fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm
except ModuleNotFoundError:  # pragma: no cover - rootdir handling
    from fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


def texts(messages: list[dict[str, Any]]) -> list[str]:
    out = []
    for m in messages:
        text = "".join(p.get("text", "") for p in m["parts"] if p["type"] == "text")
        out.append(f"{m['role']}:{text}")
    return out


async def messages_of(client: httpx.AsyncClient, sid: str) -> list[dict[str, Any]]:
    r = await client.get(f"/sessions/{sid}/messages")
    assert r.status_code == 200, r.text
    return r.json()


async def wait_for(client: httpx.AsyncClient, sid: str, count: int) -> list[dict[str, Any]]:
    """Until the session has `count` stored messages and is idle (bounded)."""
    with trio.fail_after(10):
        while True:
            messages = await messages_of(client, sid)
            session = (await client.get(f"/sessions/{sid}")).json()
            if len(messages) >= count and session["status"] == "idle" and not session["queue"]:
                return messages
            await trio.sleep(0.02)


async def start_waiting_turn(client: httpx.AsyncClient, fake: FakeLLM, sid: str) -> str:
    """A turn that waits on a permission question (busy until it is answered)."""
    fake.push(Reply(tool_calls=[FakeToolCall("b1", "bash", {"command": "echo hi"})]))
    fake.push(Reply(text=["first done"]))
    r = await client.post(f"/sessions/{sid}/messages", json=message_body("go", **{"async": True}))
    assert r.status_code == 202, r.text
    with trio.fail_after(10):
        while not (pending := (await client.get(f"/sessions/{sid}/permissions")).json()):
            await trio.sleep(0.02)
    return pending[0]["id"]


async def send_queued(client: httpx.AsyncClient, sid: str, text: str) -> httpx.Response:
    return await client.post(f"/sessions/{sid}/messages", json=message_body(text, queue=True))


# ---- queued messages -----------------------------------------------------------------------


async def test_queued_messages_run_in_order_after_the_turn(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        permission = await start_waiting_turn(client, fake, sid)
        busy = await client.post(f"/sessions/{sid}/messages", json=message_body("no queue"))
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "SESSION_BUSY"
        fake.push(Reply(text=["reply one"]), Reply(text=["reply two"]))
        first = await send_queued(client, sid, "queued one")
        second = await send_queued(client, sid, "queued two")
        assert first.status_code == 202 and second.status_code == 202
        assert first.json()["queued"] is True and first.json()["position"] == 1
        assert second.json()["position"] == 2
        session = (await client.get(f"/sessions/{sid}")).json()
        assert [q["id"] for q in session["queue"]] == [first.json()["id"], second.json()["id"]]
        assert session["queue"][0]["parts"] == [{"type": "text", "text": "queued one"}]
        r = await client.post(
            f"/sessions/{sid}/permissions/{permission}", json={"response": "reject"}
        )
        assert r.status_code == 200
        messages = await wait_for(client, sid, 6)
    assert texts(messages) == [
        "user:go",
        "assistant:first done",
        "user:queued one",
        "assistant:reply one",
        "user:queued two",
        "assistant:reply two",
    ]
    # The second queued turn saw the first one's exchange in its context.
    assert "reply one" in json.dumps(fake.requests[-1].body)


async def test_a_queued_message_can_be_cancelled(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        permission = await start_waiting_turn(client, fake, sid)
        fake.push(Reply(text=["reply two"]))
        first = (await send_queued(client, sid, "queued one")).json()
        await send_queued(client, sid, "queued two")
        r = await client.delete(f"/sessions/{sid}/queue/{first['id']}")
        assert r.status_code == 200 and r.json() == {"id": first["id"], "cancelled": True}
        again = await client.delete(f"/sessions/{sid}/queue/{first['id']}")
        assert again.status_code == 404
        queue = (await client.get(f"/sessions/{sid}")).json()["queue"]
        assert [(q["parts"][0]["text"], q["position"]) for q in queue] == [("queued two", 1)]
        await client.post(f"/sessions/{sid}/permissions/{permission}", json={"response": "reject"})
        messages = await wait_for(client, sid, 4)
    assert texts(messages) == [
        "user:go",
        "assistant:first done",
        "user:queued two",
        "assistant:reply two",
    ]


async def test_abort_then_the_queue_continues(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        fake.push(Reply(text=["working"], hang=True), Reply(text=["queued reply"]))
        r = await client.post(
            f"/sessions/{sid}/messages", json=message_body("go", **{"async": True})
        )
        assert r.status_code == 202
        await fake.wait_requests(1)
        assert (await send_queued(client, sid, "after abort")).status_code == 202
        assert (await client.post(f"/sessions/{sid}/abort")).json() == {"aborted": True}
        messages = await wait_for(client, sid, 4)
    assert texts(messages)[2:] == ["user:after abort", "assistant:queued reply"]


async def test_queue_when_idle_sends_at_once(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        fake.push(Reply(text=["hi"]))
        async with client.stream(
            "POST", f"/sessions/{sid}/messages", json=message_body("hello", queue=True)
        ) as r:
            assert r.status_code == 200  # no turn ran: an ordinary turn stream
            await r.aread()
        await wait_idle(client, sid)
        assert (await client.get(f"/sessions/{sid}")).json()["queue"] == []


# ---- fork ----------------------------------------------------------------------------------


async def test_fork_copies_the_history(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        fake.push(Reply(text=["answer one"]), Reply(text=["answer two"]))
        await run_turn(client, sid, "question one")
        await run_turn(client, sid, "question two")
        original = await messages_of(client, sid)

        r = await client.post(f"/sessions/{sid}/fork")
        assert r.status_code == 201, r.text
        whole = r.json()
        assert whole["id"] != sid and whole["directory"] == str(project_dir)
        copied = await messages_of(client, whole["id"])
        assert texts(copied) == texts(original)
        assert not {m["id"] for m in copied} & {m["id"] for m in original}

        r = await client.post(f"/sessions/{sid}/fork", json={"message_id": original[1]["id"]})
        assert r.status_code == 201, r.text
        part = r.json()["id"]
        assert texts(await messages_of(client, part)) == [
            "user:question one",
            "assistant:answer one",
        ]
        fake.push(Reply(text=["forked answer"]))
        await run_turn(client, part, "another way")
        sent = json.dumps(fake.requests[-1].body)
        assert "answer one" in sent and "question two" not in sent
        assert texts(await messages_of(client, sid)) == texts(original)  # untouched

        r = await client.post(f"/sessions/{sid}/fork", json={"message_id": "msg_nope"})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "message_id"
        assert (await client.post("/sessions/session_nope/fork")).status_code == 404
