"""MCP servers as tool sources, through the real daemon, real HTTP and the fake LLM.

The servers are real: the reference "everything" server from npm (the MCP project's own,
pinned in tests/mcp_servers/package-lock.json, installed by .ci/run), started as a user
configures it, once over stdio and once over streamable HTTP; and tests/mcp_servers/flaky.py,
written here for the failures (crash, hang, a bad schema, a child left behind).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from opencoded.config import ConfigError, load_config
from tests.conftest import RunningDaemon, short_tmp, start_daemon
from tests.fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm
from tests.test_agent import (
    TurnStream,
    message_body,
    new_session,
    of_type,
    process_gone,
    provider_config,
    run_turn,
    types,
)

SERVERS = Path(__file__).parent / "mcp_servers"
EVERYTHING = SERVERS / "node_modules" / ".bin" / "mcp-server-everything"
FLAKY = SERVERS / "flaky.py"


def everything_command() -> list[str]:
    if not EVERYTHING.exists() or shutil.which("node") is None:
        reason = "the npm 'everything' MCP server is missing: npm ci --prefix tests/mcp_servers"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return [str(EVERYTHING), "stdio"]


def flaky(*args: str, **extra: Any) -> dict[str, Any]:
    return {"type": "local", "command": [sys.executable, str(FLAKY), *args], **extra}


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


async def mcp_daemon(
    nursery: trio.Nursery, fake: FakeLLM, mcp: dict[str, Any], **config: Any
) -> RunningDaemon:
    return await start_daemon(nursery, short_tmp(), provider_config(fake, mcp=mcp, **config))


async def server_state(
    client: httpx.AsyncClient, name: str, until: Any = None, timeout: float = 30
) -> dict[str, Any]:
    """The server's GET /mcp entry, once `until(entry)` holds (default: not starting)."""
    until = until or (lambda s: s["status"] != "starting")
    with trio.fail_after(timeout):
        while True:
            r = await client.get("/mcp")
            assert r.status_code == 200, r.text
            entry = next(s for s in r.json() if s["name"] == name)
            if until(entry):
                return entry
            await trio.sleep(0.05)


def connected(entry: dict[str, Any]) -> bool:
    return entry["status"] == "connected"


def offered_tools(fake: FakeLLM, index: int = 0) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in fake.requests[index].body["tools"]}


def sent_results(fake: FakeLLM, index: int) -> list[dict[str, Any]]:
    """The tool_result blocks of the daemon's request number `index` to the model."""
    last = fake.requests[index].body["messages"][-1]["content"]
    return [b for b in last if b["type"] == "tool_result"]


# ---- a real server over stdio --------------------------------------------------------------


async def test_stdio_server_tool_runs_in_a_turn(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    command = everything_command()
    mcp = {"everything": {"type": "local", "command": command}}
    running = await mcp_daemon(nursery, fake, mcp, permission={"everything_*": "allow"})
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "everything_echo", {"message": "hi there"})]),
        Reply(text=["It said hi."]),
    )
    async with running.unix() as client:
        entry = await server_state(client, "everything")
        assert entry["status"] == "connected", entry
        names = {t["name"]: t["tool"] for t in entry["tools"]}
        assert names["everything_echo"] == "echo"
        assert names["everything_get-sum"] == "get-sum"
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "echo something")
    assert "permission" not in types(events)  # "everything_*": "allow"
    assert of_type(events, "tool")[0]["tool"] == "everything_echo"
    result = of_type(events, "tool-result")[0]
    assert result == {
        "id": "t1",
        "tool": "everything_echo",
        "output": "Echo: hi there",
        "error": False,
    }
    assert events[-1]["data"]["status"] == "completed"
    # The model was offered the tool with the server's own schema, and got the result.
    echo = offered_tools(fake)["everything_echo"]
    assert echo["input_schema"]["properties"]["message"]["type"] == "string"
    assert "read" in offered_tools(fake)  # next to the built-in tools
    assert sent_results(fake, 1)[0]["content"] == "Echo: hi there"
    await running.shutdown()


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_image_results_reach_the_model(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path, kind: str
) -> None:
    mcp = {"everything": {"type": "local", "command": everything_command()}}
    config = provider_config(fake, kind, mcp=mcp, permission={"*": "allow"})
    running = await start_daemon(nursery, short_tmp(), config)
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "everything_get-tiny-image", {})]),
        Reply(text=["a logo"]),
    )
    async with running.unix() as client:
        await server_state(client, "everything", connected)
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "show me")
    output = of_type(events, "tool-result")[0]["output"]
    assert "[image image/png, about" in output  # the log and the stored message name it
    sent = fake.requests[1].body["messages"]
    if kind == "anthropic":
        content = sent[-1]["content"][0]["content"]
        assert content[0] == {"type": "text", "text": output}
        image = next(part for part in content if part["type"] == "image")
        assert image["source"]["type"] == "base64"
        assert image["source"]["media_type"] == "image/png"
        assert base64.b64decode(image["source"]["data"]).startswith(b"\x89PNG")
    else:
        tool_message, images = sent[-2], sent[-1]
        assert tool_message["role"] == "tool" and tool_message["content"] == output
        assert images["role"] == "user"
        url = next(p for p in images["content"] if p["type"] == "image_url")["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        assert base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG")
    await running.shutdown()


async def test_mcp_tool_asks_permission_by_default(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    mcp = {"everything": {"type": "local", "command": everything_command()}}
    running = await mcp_daemon(nursery, fake, mcp)
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "everything_get-sum", {"a": 2, "b": 40})]),
        Reply(tool_calls=[FakeToolCall("t2", "everything_get-sum", {"a": 1, "b": 1})]),
        Reply(text=["42, then 2"]),
    )
    async with running.unix() as client, running.unix() as other:
        await server_state(client, "everything", connected)
        sid = await new_session(client, project_dir)
        url = f"/sessions/{sid}/messages"
        async with client.stream("POST", url, json=message_body("add")) as r:
            stream = TurnStream(r)
            asked = await stream.until("permission")
            assert asked["data"]["tool"] == "everything_get-sum"
            assert asked["data"]["args"] == {"a": 2, "b": 40}
            pid = asked["data"]["id"]
            answer = await other.post(
                f"/sessions/{sid}/permissions/{pid}", json={"response": "always"}
            )
            assert answer.status_code == 200, answer.text
            events = await stream.rest()
        session = (await other.get(f"/sessions/{sid}")).json()
    assert types(events).count("permission") == 1  # `always` covered the second call
    outputs = [r["output"] for r in of_type(events, "tool-result")]
    assert outputs == ["The sum of 2 and 40 is 42.", "The sum of 1 and 1 is 2."]
    assert session["permission"] == {"everything_get-sum": "allow"}
    await running.shutdown()


async def test_permission_patterns_deny_a_server(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    mcp = {"flaky": flaky()}
    permission = {"flaky_*": "deny", "flaky_ech*": "allow"}  # the longest pattern wins
    running = await mcp_daemon(nursery, fake, mcp, permission=permission)
    fake.push(
        Reply(
            tool_calls=[
                FakeToolCall("t1", "flaky_spawn", {}),
                FakeToolCall("t2", "flaky_echo", {"text": "ok"}),
            ]
        ),
        Reply(text=["done"]),
    )
    async with running.unix() as client:
        await server_state(client, "flaky", connected)
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "go")
    assert "permission" not in types(events)
    denied, echoed = of_type(events, "tool-result")
    assert denied["error"] is True and "denied" in denied["output"]
    assert echoed == {"id": "t2", "tool": "flaky_echo", "output": "flaky says: ok", "error": False}
    await running.shutdown()


# ---- a real server over streamable HTTP ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def everything_http() -> AsyncIterator[str]:
    """The everything server in its streamable-HTTP mode; yields its /mcp URL."""
    command = [*everything_command()[:1], "streamableHttp"]
    port = free_port()
    env = {**os.environ, "PORT": str(port)}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        with trio.fail_after(20):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    await stream.aclose()
                    break
                except OSError:
                    assert process.poll() is None, "the everything server exited"
                    await trio.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def test_streamable_http_server_tool_runs_in_a_turn(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path, everything_http: str
) -> None:
    mcp = {"remote": {"type": "remote", "url": everything_http, "headers": {"X-Test": "1"}}}
    running = await mcp_daemon(nursery, fake, mcp, permission={"remote_*": "allow"})
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "remote_get-sum", {"a": 20, "b": 22})]),
        Reply(text=["42"]),
    )
    async with running.unix() as client:
        entry = await server_state(client, "remote")
        assert entry["status"] == "connected" and entry["type"] == "remote", entry
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "add over http")
    result = of_type(events, "tool-result")[0]
    assert result["output"] == "The sum of 20 and 22 is 42." and result["error"] is False
    assert sent_results(fake, 1)[0]["content"] == "The sum of 20 and 22 is 42."
    await running.shutdown()


# ---- abort ---------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["everything", "flaky"])
async def test_abort_during_a_slow_mcp_call(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path, server: str
) -> None:
    if server == "everything":
        mcp = {server: {"type": "local", "command": everything_command()}}
        call = FakeToolCall("t1", "everything_trigger-long-running-operation", {"duration": 60})
        after = FakeToolCall("t2", "everything_echo", {"message": "still here"})
        still = "Echo: still here"
    else:
        mcp = {server: flaky()}
        call = FakeToolCall("t1", "flaky_slow", {})  # never answered at all
        after = FakeToolCall("t2", "flaky_echo", {"text": "still here"})
        still = "flaky says: still here"
    running = await mcp_daemon(nursery, fake, mcp, permission={"*": "allow"})
    fake.push(Reply(tool_calls=[call]), Reply(tool_calls=[after]), Reply(text=["ok"]))
    async with running.unix() as client, running.unix() as other:
        await server_state(client, server, connected)
        sid = await new_session(client, project_dir)
        url = f"/sessions/{sid}/messages"
        async with client.stream("POST", url, json=message_body("slow")) as r:
            stream = TurnStream(r)
            await stream.until("tool")
            with trio.fail_after(5):  # abort answers once the turn has ended (a hang bound)
                aborted = await other.post(f"/sessions/{sid}/abort")
            events = await stream.rest()
        assert aborted.json() == {"aborted": True}
        assert events[-1]["type"] == "complete"
        assert events[-1]["data"]["status"] == "aborted"
        assert "tool-result" not in types(events)
        # The server is still there for the next turn.
        again = await run_turn(client, sid, "again")
        assert of_type(again, "tool-result")[0]["output"] == still
        assert (await server_state(client, server))["restarts"] == 0
    await running.shutdown()


# ---- failures: crash, hang, bad schema, missing command ------------------------------------


async def test_crashed_server_is_restarted_and_reported(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    pids = short_tmp() / "pids"
    mcp = {"flaky": flaky(environment={"FLAKY_PIDS": str(pids)})}
    running = await mcp_daemon(nursery, fake, mcp, permission={"flaky_*": "allow"})
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "flaky_crash", {})]),
        Reply(text=["it crashed"]),
        Reply(tool_calls=[FakeToolCall("t2", "flaky_echo", {"text": "back"})]),
        Reply(text=["it is back"]),
    )
    async with running.unix() as client:
        first = await server_state(client, "flaky", connected)
        assert first["restarts"] == 0
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "crash it")
        result = of_type(events, "tool-result")[0]
        assert result["error"] is True and "flaky" in result["output"]
        assert events[-1]["data"]["status"] == "completed"  # the turn goes on

        entry = await server_state(client, "flaky", lambda s: connected(s) and s["restarts"])
        assert entry["restarts"] == 1
        assert "connection lost" in entry["last_error"]
        assert "crashing on purpose" in entry["last_error"]  # its stderr says why
        assert entry["error"] is None
        assert len(pids.read_text().split()) == 2  # a new process

        events = await run_turn(client, sid, "again")
        assert of_type(events, "tool-result")[0]["output"] == "flaky says: back"
    await running.shutdown()


async def test_a_call_that_hangs_times_out(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    mcp = {"flaky": flaky(toolTimeout=300)}
    running = await mcp_daemon(nursery, fake, mcp, permission={"flaky_*": "allow"})
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "flaky_slow", {})]),
        Reply(tool_calls=[FakeToolCall("t2", "flaky_echo", {"text": "fine"})]),
        Reply(text=["ok"]),
    )
    async with running.unix() as client:
        await server_state(client, "flaky", connected)
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "slow")
        assert (await server_state(client, "flaky"))["restarts"] == 0
    slow, echo = of_type(events, "tool-result")
    assert slow["error"] is True and "gave no result within 0.3 s" in slow["output"]
    assert echo["output"] == "flaky says: fine"
    assert events[-1]["data"]["status"] == "completed"
    await running.shutdown()


async def test_broken_servers_never_block_the_daemon_or_a_turn(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    mcp = {
        "flaky": flaky(),
        "badschema": flaky("--bad-schema"),
        "hangs": flaky("--hang", timeout=500),
        "missing": {"type": "local", "command": ["/nonexistent/mcp-server"]},
        "nowhere": {"type": "remote", "url": f"http://127.0.0.1:{free_port()}/mcp"},
        "off": {"type": "local", "command": ["/nonexistent/off"], "enabled": False},
    }
    running = await mcp_daemon(nursery, fake, mcp)
    fake.push(Reply(text=["fine"]))
    async with running.unix() as client:
        # The daemon answers at once, whatever the servers do.
        listing = {s["name"]: s for s in (await client.get("/mcp")).json()}
        assert list(listing) == ["flaky", "badschema", "hangs", "missing", "nowhere", "off"]
        assert listing["off"]["status"] == "disabled"
        flaky_state = await server_state(client, "flaky", connected)
        tools = [(t["name"], t["tool"]) for t in flaky_state["tools"]]
        assert ("flaky_dup_name", "dup.name") in tools
        assert [t for _, t in tools] == ["echo", "crash", "slow", "spawn", "dup.name", "grow"]
        assert flaky_state["skipped"] == [
            "dup_name: its name 'flaky_dup_name' clashes with 'dup.name'"
        ]
        bad = await server_state(client, "badschema", lambda s: s["status"] == "failed")
        assert bad["error"].startswith("invalid tools/list answer: tools.7.inputSchema.type:")
        hangs = await server_state(client, "hangs", lambda s: s["status"] == "failed")
        assert hangs["error"] == "no answer within 0.5 s" and hangs["tools"] == []
        missing = await server_state(client, "missing", lambda s: s["status"] == "failed")
        assert "command not found" in missing["error"]
        nowhere = await server_state(client, "nowhere", lambda s: s["status"] == "failed")
        assert "ConnectError" in nowhere["error"]
        assert isinstance(nowhere["retry_at"], float)

        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "hello")
        assert events[-1]["data"]["status"] == "completed"
    offered = offered_tools(fake)
    assert "flaky_echo" in offered and "flaky_dup_name" in offered
    assert not any(name.startswith(("badschema_", "hangs_", "missing_")) for name in offered)
    await running.shutdown()


async def test_changed_tool_list_is_read_again(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await mcp_daemon(nursery, fake, {"flaky": flaky()}, permission={"*": "allow"})
    fake.push(
        Reply(tool_calls=[FakeToolCall("t1", "flaky_grow", {})]),
        Reply(text=["grown"]),
        Reply(tool_calls=[FakeToolCall("t2", "flaky_extra", {})]),
        Reply(text=["done"]),
    )
    async with running.unix() as client:
        before = await server_state(client, "flaky", connected)
        assert "flaky_extra" not in [t["name"] for t in before["tools"]]
        sid = await new_session(client, project_dir)
        await run_turn(client, sid, "grow")
        after = await server_state(
            client, "flaky", lambda s: "flaky_extra" in [t["name"] for t in s["tools"]]
        )
        assert after["restarts"] == 0  # the same connection
        events = await run_turn(client, sid, "use it")
    assert "flaky_extra" not in offered_tools(fake, 0)
    assert "flaky_extra" in offered_tools(fake, 2)
    assert of_type(events, "tool-result")[0]["output"] == "extra works"
    await running.shutdown()


async def test_restart_route(nursery: trio.Nursery, fake: FakeLLM) -> None:
    pids = short_tmp() / "pids"
    mcp = {
        "flaky": flaky(environment={"FLAKY_PIDS": str(pids)}),
        "off": {"type": "local", "command": ["x"], "enabled": False},
    }
    running = await mcp_daemon(nursery, fake, mcp)
    async with running.unix() as client:
        await server_state(client, "flaky", connected)
        first_pid = int(pids.read_text().split()[0])
        r = await client.post("/mcp/flaky/restart")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "connected" and r.json()["restarts"] == 1
        assert [int(p) for p in pids.read_text().split()][1:] != [first_pid]
        with trio.fail_after(5):
            while not process_gone(first_pid):
                await trio.sleep(0.02)
        missing = await client.post("/mcp/nope/restart")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
        off = await client.post("/mcp/off/restart")
        assert off.status_code == 400 and off.json()["error"]["code"] == "INVALID_REQUEST"
    await running.shutdown()


async def test_shutdown_stops_the_server_and_what_it_started(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    pids = short_tmp() / "pids"
    mcp = {"flaky": flaky(environment={"FLAKY_PIDS": str(pids)})}
    running = await mcp_daemon(nursery, fake, mcp, permission={"flaky_*": "allow"})
    fake.push(Reply(tool_calls=[FakeToolCall("t1", "flaky_spawn", {})]), Reply(text=["ok"]))
    async with running.unix() as client:
        await server_state(client, "flaky", connected)
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "spawn")
    child = int(of_type(events, "tool-result")[0]["output"])
    server = int(pids.read_text().split()[0])
    assert not process_gone(child) and not process_gone(server)
    await running.shutdown()
    # flaky exits on stdin EOF and leaves its child: the group kill ends the child too.
    assert process_gone(server)
    with trio.fail_after(5):
        while not process_gone(child):
            await trio.sleep(0.02)


async def test_a_stubborn_server_is_killed_at_shutdown(
    nursery: trio.Nursery, fake: FakeLLM
) -> None:
    pids = short_tmp() / "pids"
    mcp = {"stubborn": flaky("--stubborn", environment={"FLAKY_PIDS": str(pids)})}
    running = await mcp_daemon(nursery, fake, mcp)
    async with running.unix() as client:
        await server_state(client, "stubborn", connected)
    server = int(pids.read_text().split()[0])
    # stdin closed, 1 s; SIGTERM (ignored), 1 s; SIGKILL: the shutdown ends (the contract's
    # 5 s exit; the bound here is for a hang, generous on a loaded machine).
    with trio.fail_after(10):
        await running.shutdown()
    assert process_gone(server)


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ({"a": {"type": "local"}}, '"command"'),
        ({"a b": {"type": "local", "command": ["x"]}}, "letters, digits"),
        ({"a": {"type": "remote", "url": "file:///etc/passwd"}}, '"url"'),
        ({"a": {"type": "stdio", "command": ["x"]}}, "'local', 'remote'"),
    ],
)
def test_mcp_config_is_checked(tmp_path: Path, servers: dict[str, Any], message: str) -> None:
    path = tmp_path / "opencode.json"
    path.write_text(json.dumps({"mcp": servers}))
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert message in str(caught.value)


def test_permission_patterns() -> None:
    from opencoded.config import permission_lookup

    table = {"*": "ask", "everything_*": "allow", "everything_get-*": "deny", "a.b": "allow"}
    assert permission_lookup(table, "everything_echo") == "allow"
    assert permission_lookup(table, "everything_get-sum") == "deny"  # the longest pattern
    assert permission_lookup(table, "bash") == "ask"
    assert permission_lookup({"bash": "deny", "*": "allow"}, "bash") == "deny"  # exact first
    assert permission_lookup(table, "axb") == "ask"  # "." is not a regex
    assert permission_lookup({"x*": "allow"}, "x") == "allow"  # `*` matches nothing too
    assert permission_lookup({"x*": "allow"}, "yx") is None
