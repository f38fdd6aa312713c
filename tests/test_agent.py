"""Full turns through the real daemon, real HTTP, the real SDKs and the fake LLM server."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import RunningDaemon, short_tmp, start_daemon
from tests.proc_support import await_marked, new_marker

pytestmark = pytest.mark.both_stores

try:
    from tests.fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm
except ModuleNotFoundError:  # pragma: no cover - rootdir handling
    from fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm

SPEC_KEYS = {"message_id", "status", "tokens", "input_tokens", "output_tokens", "cost"}


# ---- helpers -------------------------------------------------------------------------------


def provider_config(fake: FakeLLM, kind: str = "anthropic", **extra: Any) -> dict[str, Any]:
    if kind == "anthropic":
        config = {
            "model": "anthropic/claude-sonnet-5-5",
            "provider": {"anthropic": {"options": {"apiKey": "sk-ant-test", "baseURL": fake.url}}},
        }
    else:
        config = {
            "model": "openai/gpt-5.4",
            "provider": {"openai": {"options": {"apiKey": "sk-test", "baseURL": fake.openai_url}}},
        }
    config.update(extra)
    return config


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


async def agent_daemon(nursery: trio.Nursery, fake: FakeLLM, **config: Any) -> RunningDaemon:
    kind = config.pop("kind", "anthropic")
    return await start_daemon(nursery, short_tmp(), provider_config(fake, kind, **config))


async def new_session(client: httpx.AsyncClient, directory: Path) -> str:
    r = await client.post("/sessions", json={"directory": str(directory)})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def message_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"parts": [{"type": "text", "text": text}], **extra}


class TurnStream:
    """An NDJSON turn stream read line by line, so a test can act between events."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.events: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        while True:
            line = await self.lines.__anext__()
            if line:
                event = json.loads(line)
                self.events.append(event)
                return event

    async def until(self, kind: str) -> dict[str, Any]:
        while (event := await self.next())["type"] != kind:
            pass
        return event

    async def rest(self) -> list[dict[str, Any]]:
        async for line in self.lines:
            if line:
                self.events.append(json.loads(line))
        return self.events


async def run_turn(client: httpx.AsyncClient, sid: str, text: str) -> list[dict[str, Any]]:
    async with client.stream("POST", f"/sessions/{sid}/messages", json=message_body(text)) as r:
        assert r.status_code == 200, (await r.aread()).decode()
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return await TurnStream(r).rest()


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == kind]


async def wait_idle(client: httpx.AsyncClient, sid: str, timeout: float = 5) -> None:
    with trio.fail_after(timeout):
        while (await client.get(f"/sessions/{sid}")).json()["status"] != "idle":
            await trio.sleep(0.01)


def process_gone(pid: int) -> bool:
    """True when pid no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" in state.split()[1]


def anthropic_blocks(request_body: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, block type) of every content block the daemon sent."""
    return [(m["role"], b["type"]) for m in request_body["messages"] for b in m["content"]]


# ---- text-only turns -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_text_only_turn(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path, kind: str
) -> None:
    running = await agent_daemon(nursery, fake, kind=kind)
    fake.push(Reply(text=["Hel", "lo!"], input_tokens=100, output_tokens=20))
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "Say hello")
        assert types(events) == ["text-delta", "text-delta", "message", "complete"]
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == 4
        assert [d["text"] for d in of_type(events, "text-delta")] == ["Hel", "lo!"]
        message = of_type(events, "message")[0]
        assert message["role"] == "assistant" and message["content"] == "Hello!"
        complete = events[-1]["data"]
        assert SPEC_KEYS | {"duration_ms"} <= set(complete)
        assert complete["status"] == "completed"
        assert complete["input_tokens"] == 100 and complete["output_tokens"] == 20
        assert complete["tokens"] == 120
        assert complete["cost"] > 0  # both default models are in the price table
        assert message["id"] == complete["message_id"]

        listing = (await client.get(f"/sessions/{sid}/messages")).json()
        assert [m["role"] for m in listing] == ["user", "assistant"]
        assert all(set(m) == {"id", "role", "created", "parts"} for m in listing)
        assert listing[0]["parts"] == [{"type": "text", "text": "Say hello"}]
        assert listing[1]["parts"] == [{"type": "text", "text": "Hello!"}]
        assert listing[1]["id"] == complete["message_id"]
    sent = fake.requests[0].body
    system = json.dumps(sent.get("system") or sent["messages"][0])
    assert str(project_dir) in system and "bash" in system
    await running.shutdown()


async def test_system_prompt_includes_agents_md(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    (project_dir / "AGENTS.md").write_text("Always answer in haiku.\n")
    running = await agent_daemon(nursery, fake)
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        await run_turn(client, sid, "hi")
    system = fake.requests[0].body["system"][0]["text"]
    assert "Always answer in haiku." in system
    assert time.strftime("%Y") in system
    await running.shutdown()


# ---- tools ---------------------------------------------------------------------------------


async def test_read_edit_bash_turn(nursery: trio.Nursery, fake: FakeLLM, project_dir: Path) -> None:
    running = await agent_daemon(nursery, fake, permission={"edit": "allow", "bash": "allow"})
    fake.push(
        Reply(
            text=["Let me look."], tool_calls=[FakeToolCall("t1", "read", {"path": "src/main.py"})]
        ),
        Reply(
            tool_calls=[
                FakeToolCall(
                    "t2",
                    "edit",
                    {"path": "src/main.py", "old_string": "hello", "new_string": "world"},
                )
            ]
        ),
        Reply(tool_calls=[FakeToolCall("t3", "bash", {"command": "python3 src/main.py"})]),
        Reply(text=["Done: it prints world."]),
    )
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "Change hello to world")
    assert (project_dir / "src" / "main.py").read_text() == "print('world')\n"
    # The spec's shape: message, tool, tool-result, ..., complete with tokens and cost.
    shape = [t for t in types(events) if t != "text-delta"]
    assert shape == [
        "message",
        "tool",
        "tool-result",
        "tool",
        "tool-result",
        "tool",
        "tool-result",
        "message",
        "complete",
    ]
    for event in events:
        assert set(event) == {"type", "seq", "data"}
    tools = of_type(events, "tool")
    assert tools[0] == {"id": "t1", "tool": "read", "args": {"path": "src/main.py"}}
    results = of_type(events, "tool-result")
    assert [(r["id"], r["tool"], r["error"]) for r in results] == [
        ("t1", "read", False),
        ("t2", "edit", False),
        ("t3", "bash", False),
    ]
    assert "print('hello')" in results[0]["output"]
    assert "world" in results[2]["output"]
    complete = events[-1]["data"]
    assert complete["status"] == "completed"
    assert complete["tokens"] == 4 * 15 and complete["cost"] > 0

    # The model saw each result: the second request carries the read output.
    second = fake.requests[1].body
    assert ("assistant", "tool_use") in anthropic_blocks(second)
    result = second["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and "print('hello')" in json.dumps(result)

    async with running.unix() as client:
        listing = (await client.get(f"/sessions/{sid}/messages")).json()
    parts = listing[1]["parts"]
    assert [p["type"] for p in parts] == ["text", "tool", "tool", "tool", "text"]
    bash_part = parts[3]
    assert bash_part["tool"] == "bash" and bash_part["status"] == "completed"
    assert bash_part["error"] is False and "world" in bash_part["output"]
    assert bash_part["args"] == {"command": "python3 src/main.py"}
    await running.shutdown()


async def test_bash_rejected_via_permission_route(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)  # bash: ask (the default)
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "bash", {"command": "touch marker"})]),
        Reply(text=["Understood, I will not run it."]),
    )
    async with running.unix() as client, running.unix() as other:
        sid = await new_session(client, project_dir)
        url = f"/sessions/{sid}/messages"
        async with client.stream("POST", url, json=message_body("make a marker")) as r:
            stream = TurnStream(r)
            asked = await stream.until("permission")
            assert asked["data"]["tool"] == "bash"
            assert asked["data"]["args"] == {"command": "touch marker"}
            pid = asked["data"]["id"]
            pending = (await other.get(f"/sessions/{sid}/permissions")).json()
            assert [(p["id"], p["tool"], p["args"]) for p in pending] == [
                (pid, "bash", {"command": "touch marker"})
            ]
            assert isinstance(pending[0]["created"], int)
            answer = await other.post(
                f"/sessions/{sid}/permissions/{pid}", json={"response": "reject"}
            )
            assert answer.status_code == 200, answer.text
            again = await other.post(
                f"/sessions/{sid}/permissions/{pid}", json={"response": "once"}
            )
            assert again.status_code == 404
            events = await stream.rest()
        assert (await other.get(f"/sessions/{sid}/permissions")).json() == []
    assert not (project_dir / "marker").exists()
    result = of_type(events, "tool-result")[0]
    assert result["error"] is True and "refused" in result["output"]
    assert events[-1]["data"]["status"] == "completed"
    sent = fake.requests[1].body["messages"][-1]["content"][0]
    assert sent["type"] == "tool_result" and sent["is_error"] is True
    stored = await running.daemon.store.get_permission(pid)
    assert stored is not None and stored.status == "reject"
    await running.shutdown()


async def test_always_is_remembered_for_the_session(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "bash", {"command": "echo one"})]),
        Reply(tool_calls=[FakeToolCall("t2", "bash", {"command": "echo two"})]),
        Reply(text=["done"]),
    )
    async with running.unix() as client, running.unix() as other:
        sid = await new_session(client, project_dir)
        url = f"/sessions/{sid}/messages"
        async with client.stream("POST", url, json=message_body("run two commands")) as r:
            stream = TurnStream(r)
            asked = await stream.until("permission")
            pid = asked["data"]["id"]
            await other.post(f"/sessions/{sid}/permissions/{pid}", json={"response": "always"})
            events = await stream.rest()
        session = (await other.get(f"/sessions/{sid}")).json()
    assert types(events).count("permission") == 1  # the second bash ran without asking
    outputs = [r["output"] for r in of_type(events, "tool-result")]
    assert "one" in outputs[0] and "two" in outputs[1]
    assert session["permission"] == {"bash": "allow"}
    await running.shutdown()


async def test_deny_refuses_without_asking(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake, permission={"write": "deny"})
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "write", {"path": "x.txt", "content": "x"})]),
        Reply(text=["ok"]),
    )
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "write x")
    assert "permission" not in types(events)
    result = of_type(events, "tool-result")[0]
    assert result["error"] is True and "denied" in result["output"]
    assert not (project_dir / "x.txt").exists()
    await running.shutdown()


async def test_step_limit_ends_the_turn(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake, agent={"maxSteps": 2})
    for n in range(3):
        fake.push(Reply(tool_calls=[FakeToolCall(f"t{n}", "list", {})]))
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "loop forever")
    assert len(fake.requests) == 2
    results = of_type(events, "tool-result")
    assert results[0]["error"] is False and "step limit" in results[1]["output"]
    assert of_type(events, "error")[0]["code"] == "MAX_STEPS"
    assert events[-1]["data"]["status"] == "error"
    await running.shutdown()


# ---- provider failures ---------------------------------------------------------------------


async def test_provider_429_then_success(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    fake.push(Reply(status=429, retry_after=0), Reply(text=["after the wait"]))
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "hi")
    assert len(fake.requests) == 2
    assert "error" not in types(events)
    assert of_type(events, "message")[0]["content"] == "after the wait"
    assert events[-1]["data"]["status"] == "completed"
    await running.shutdown()


async def test_provider_429_beyond_retries_is_rate_limited(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    fake.push(Reply(status=429, retry_after=3600))  # longer than the retry policy waits
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "hi")
        turn = await running.daemon.store.get_turn(events[-1]["data"]["turn_id"])
    assert types(events) == ["error", "complete"]
    assert events[0]["data"]["code"] == "RATE_LIMITED"
    assert events[-1]["data"]["status"] == "error"
    assert turn is not None and turn.status == "error"
    await running.shutdown()


async def test_provider_401(nursery: trio.Nursery, fake: FakeLLM, project_dir: Path) -> None:
    running = await agent_daemon(nursery, fake)
    fake.push(Reply(status=401))
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "hi")
        listing = (await client.get(f"/sessions/{sid}/messages")).json()
    assert len(fake.requests) == 1  # a bad key is not retried
    assert types(events) == ["error", "complete"]
    error = events[0]["data"]
    assert error["code"] == "PROVIDER_ERROR"
    assert "401" in error["message"] and "ANTHROPIC_API_KEY" in error["message"]
    assert events[-1]["data"]["status"] == "error"
    assert [m["role"] for m in listing] == ["user"]  # no empty assistant message
    await running.shutdown()


async def test_stream_cut_midway(nursery: trio.Nursery, fake: FakeLLM, project_dir: Path) -> None:
    running = await agent_daemon(nursery, fake)
    # message_start, block start, ping, 2 deltas, then the connection drops.
    fake.push(Reply(text=["partial ", "answer", " never"], cut_after=5))
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "hi")
        listing = (await client.get(f"/sessions/{sid}/messages")).json()
    assert types(events) == ["text-delta", "text-delta", "error", "complete"]
    assert events[2]["data"]["code"] == "PROVIDER_ERROR"
    assert events[-1]["data"]["status"] == "error"
    # What reached the user is kept.
    assert listing[1]["parts"] == [{"type": "text", "text": "partial answer"}]
    await running.shutdown()


async def test_no_provider_is_a_clear_400(daemon: RunningDaemon, project_dir: Path) -> None:
    async with daemon.unix() as client:
        sid = await new_session(client, project_dir)
        r = await client.post(f"/sessions/{sid}/messages", json=message_body("hi"))
        listing = (await client.get(f"/sessions/{sid}/messages")).json()
    assert r.status_code == 400
    assert "ANTHROPIC_API_KEY" in r.json()["error"]["message"]
    assert listing == []


# ---- abort, busy, async, disconnect --------------------------------------------------------


async def test_abort_during_bash_kills_the_process(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake, permission={"bash": "allow"})
    marker = new_marker()  # a pid printed by a sandboxed command is not a host pid
    command = f"sleep {marker} & wait"
    fake.push(Reply(tool_calls=[FakeToolCall("t1", "bash", {"command": command})]))
    async with running.unix() as client, running.unix() as other:
        sid = await new_session(client, project_dir)
        url = f"/sessions/{sid}/messages"
        async with client.stream("POST", url, json=message_body("sleep")) as r:
            stream = TurnStream(r)
            await stream.until("tool")
            await await_marked(marker, 1, 5)
            with trio.fail_after(5):  # a hang bound; abort latency is measured in bench/
                aborted = await other.post(f"/sessions/{sid}/abort")
            assert aborted.json() == {"aborted": True}
            events = await stream.rest()
        assert events[-1]["type"] == "complete"
        assert events[-1]["data"]["status"] == "aborted"
        await await_marked(marker, 0, 2)

        # The session takes the next message at once (not 409: nothing is left busy).
        with trio.fail_after(5):
            async with other.stream("POST", url, json=message_body("again")) as r:
                assert r.status_code == 200
                again = await TurnStream(r).rest()
        assert again[-1]["data"]["status"] == "completed"
        listing = (await client.get(f"/sessions/{sid}/messages")).json()
        assert (await other.post(f"/sessions/{sid}/abort")).json() == {"aborted": False}
    tool_part = listing[1]["parts"][0]
    assert tool_part["status"] == "aborted" and tool_part["output"] is None
    # The next turn told the model that the call never finished.
    blocks = fake.requests[1].body["messages"]
    assert blocks[1]["content"][0]["type"] == "tool_use"
    assert blocks[2]["content"][0]["is_error"] is True
    await running.shutdown()


async def test_second_message_is_busy_and_async_is_202(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    fake.push(Reply(text=["thinking", "..."], hang=True))
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        url = f"/sessions/{sid}/messages"
        first = await client.post(url, json=message_body("one", **{"async": True}))
        assert first.status_code == 202, first.text
        body = first.json()
        assert set(body) >= {"message_id", "seq"} and isinstance(body["seq"], int)
        second = await client.post(url, json=message_body("two"))
        assert second.status_code == 409
        assert second.json()["error"]["code"] == "SESSION_BUSY"
        assert (await client.get(f"/sessions/{sid}")).json()["status"] == "busy"
        await fake.wait_requests(1)
        assert (await client.post(f"/sessions/{sid}/abort")).json() == {"aborted": True}
        listing = (await client.get(f"/sessions/{sid}/messages")).json()
    assert [m["parts"][0]["text"] for m in listing if m["role"] == "user"] == ["one"]
    log = await running.daemon.store.read_events(sid, body["seq"])
    assert log[-1].type == "complete" and log[-1].data["message_id"] == body["message_id"]
    assert log[-1].data["status"] == "aborted"
    await running.shutdown()


async def test_client_disconnect_does_not_stop_the_turn(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    fake.push(Reply(text=["a", "b", "c", "d"], delay=0.05))
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        url = f"/sessions/{sid}/messages"
        async with client.stream("POST", url, json=message_body("go")) as r:
            first = await TurnStream(r).next()
            assert first["type"] == "text-delta"
        # The response is closed; the turn runs on in its session's nursery.
        await wait_idle(client, sid)
        listing = (await client.get(f"/sessions/{sid}/messages")).json()
    assert listing[1]["parts"] == [{"type": "text", "text": "abcd"}]
    assert fake.disconnects == 0
    events = await running.daemon.store.read_events(sid, 0)
    assert events[-1].type == "complete" and events[-1].data["status"] == "completed"
    await running.shutdown()


# ---- persistence ---------------------------------------------------------------------------


async def test_context_is_rebuilt_from_storage_after_restart(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    tmp = short_tmp()
    config = provider_config(fake)
    first = await start_daemon(nursery, tmp, config)
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "read", {"path": "README.md"})]),
        Reply(text=["It is a demo."]),
    )
    async with first.unix() as client:
        sid = await new_session(client, project_dir)
        await run_turn(client, sid, "What is this project?")
    await first.shutdown()

    second = await start_daemon(nursery, tmp, config)
    async with second.unix() as client:
        events = await run_turn(client, sid, "Thanks. And now?")
    assert events[-1]["data"]["status"] == "completed"
    sent = fake.requests[-1].body["messages"]
    assert anthropic_blocks(fake.requests[-1].body) == [
        ("user", "text"),
        ("assistant", "tool_use"),
        ("user", "tool_result"),
        ("assistant", "text"),
        ("user", "text"),
    ]
    assert sent[0]["content"][0]["text"] == "What is this project?"
    assert "# demo" in json.dumps(sent[2]["content"][0])
    assert sent[3]["content"][0]["text"] == "It is a demo."
    assert sent[4]["content"][0]["text"] == "Thanks. And now?"
    await second.shutdown()


# ---- validation ----------------------------------------------------------------------------


async def test_validation_errors(daemon: RunningDaemon, project_dir: Path) -> None:
    async with daemon.unix() as client:
        sid = await new_session(client, project_dir)
        url = f"/sessions/{sid}/messages"
        cases = [
            ({"parts": []}, "parts"),
            ({"parts": [{"type": "image", "url": "x"}]}, "parts[0].type"),
            ({"parts": [{"type": "text"}]}, "parts[0].text"),
            ({"parts": [{"type": "text", "text": 5}]}, "parts[0].text"),
            ({"parts": "hello"}, "parts"),
            ({}, "parts"),
            ({"parts": [{"type": "text", "text": "hi"}], "async": "yes"}, "async"),
            ({"parts": [{"type": "text", "text": "hi"}], "bogus": 1}, "bogus"),
        ]
        for body, field in cases:
            r = await client.post(url, json=body)
            assert r.status_code == 400, (body, r.text)
            error = r.json()["error"]
            assert error["code"] == "INVALID_REQUEST"
            assert error["details"]["field"] == field, (body, error)
        missing = await client.post("/sessions/session_nope/messages", json=message_body("hi"))
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "SESSION_NOT_FOUND"
        perm = f"/sessions/{sid}/permissions/perm_nope"
        assert (await client.post(perm, json={"response": "once"})).status_code == 404
        bad = await client.post(perm, json={"response": "sometimes"})
        assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "response"
        assert (await client.get("/sessions/session_nope/messages")).status_code == 404
        assert (await client.post("/sessions/session_nope/abort")).status_code == 404
        assert (await client.get(f"/sessions/{sid}/messages")).json() == []
        assert (await client.get(f"/sessions/{sid}/permissions")).json() == []
        document = (await client.get("/openapi.json")).json()
    for path in (
        "/sessions/{session_id}/messages",
        "/sessions/{session_id}/abort",
        "/sessions/{session_id}/permissions",
        "/sessions/{session_id}/permissions/{permission_id}",
    ):
        assert path in document["paths"]
    assert "MessageCreate" in document["components"]["schemas"]


async def test_abort_while_waiting_for_permission(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    fake.push(Reply(tool_calls=[FakeToolCall("t1", "bash", {"command": "touch marker"})]))
    async with running.unix() as client, running.unix() as other:
        sid = await new_session(client, project_dir)
        url = f"/sessions/{sid}/messages"
        async with client.stream("POST", url, json=message_body("make a marker")) as r:
            stream = TurnStream(r)
            pid = (await stream.until("permission"))["data"]["id"]
            assert (await other.post(f"/sessions/{sid}/abort")).json() == {"aborted": True}
            events = await stream.rest()
        assert events[-1]["data"]["status"] == "aborted"
        assert (await other.get(f"/sessions/{sid}/permissions")).json() == []
        late = await other.post(f"/sessions/{sid}/permissions/{pid}", json={"response": "once"})
        assert late.status_code == 404
    stored = await running.daemon.store.get_permission(pid)
    assert stored is not None and stored.status == "expired"
    assert not (project_dir / "marker").exists()
    await running.shutdown()


async def test_openai_tool_round_trip(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake, kind="openai")
    fake.push(
        Reply(tool_calls=[FakeToolCall("call_1", "read", {"path": "README.md"})]),
        Reply(text=["A demo."]),
    )
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "what is it?")
    assert [t for t in types(events) if t != "text-delta"] == [
        "tool",
        "tool-result",
        "message",
        "complete",
    ]
    sent = fake.requests[1].body["messages"]
    tool_messages = [m for m in sent if m["role"] == "tool"]
    assert tool_messages and tool_messages[0]["tool_call_id"] == "call_1"
    assert "# demo" in tool_messages[0]["content"]
    await running.shutdown()


async def test_shutdown_aborts_a_running_turn(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    fake.push(Reply(text=["never", "ends"], hang=True))
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        url = f"/sessions/{sid}/messages"
        async with client.stream("POST", url, json=message_body("hang")) as r:
            stream = TurnStream(r)
            await stream.until("text-delta")
            running.stop.set()
            events = await stream.rest()
    assert events[-1]["type"] == "complete"
    assert events[-1]["data"]["status"] == "aborted"
    with trio.fail_after(10):
        await running.finished.wait()


async def test_a_turn_whose_directory_became_a_symlink_loop_fails_with_the_plain_error(
    nursery: trio.Nursery, fake: FakeLLM, tmp_path: Path
) -> None:
    """Turn setup runs two steps at once; a failure of one is reported as itself, not as a
    group of exceptions."""
    directory = tmp_path / "gone"
    directory.mkdir()
    running = await agent_daemon(nursery, fake)
    async with running.unix() as client:
        sid = await new_session(client, directory)
        directory.rmdir()
        directory.symlink_to(directory)  # resolving it raises (turn setup fails)
        events = await run_turn(client, sid, "hello")
    errors = of_type(events, "error")
    assert events[-1]["type"] == "complete" and events[-1]["data"]["status"] == "error"
    assert len(errors) == 1 and "RuntimeError" in errors[0]["message"], errors
    assert "Group" not in errors[0]["message"], errors
    await running.shutdown()
