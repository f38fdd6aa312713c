"""A provider that stalls must not keep a session busy (issue 10, "Hangs").

`agent.streamIdleTimeout` bounds the wait for the provider's next byte, before its headers
as after some output. A stall before anything reached the user is retried like any dropped
stream; a stall after output ends the turn with `error` then `complete`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from opencoded.config import load_config
from tests.conftest import RunningDaemon, short_tmp, start_daemon
from tests.fakes.llm import FakeLLM, Reply, open_fake_llm

IDLE = 0.5


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


def config(fake: FakeLLM, kind: str) -> dict[str, Any]:
    if kind == "anthropic":
        provider = {"anthropic": {"options": {"apiKey": "k", "baseURL": fake.url}}}
        model = "anthropic/claude-sonnet-5-5"
    else:
        provider = {"openai": {"options": {"apiKey": "k", "baseURL": fake.openai_url}}}
        model = "openai/gpt-5.4"
    return {"model": model, "provider": provider, "agent": {"streamIdleTimeout": IDLE}}


async def turn(c: httpx.AsyncClient, directory: Path) -> tuple[str, list[dict[str, Any]]]:
    sid = (await c.post("/sessions", json={"directory": str(directory)})).json()["id"]
    body = {"parts": [{"type": "text", "text": "hi"}]}
    # Bounded far below the old 600 s read timeout: the turn must end by itself.
    with trio.fail_after(20):
        r = await c.post(f"/sessions/{sid}/messages", json=body, timeout=30)
    return sid, [json.loads(line) for line in r.text.splitlines() if line]


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_stall_after_output_ends_the_turn_with_error_and_complete(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path, kind: str
) -> None:
    running: RunningDaemon = await start_daemon(nursery, short_tmp(), config(fake, kind))
    fake.push(Reply(text=["thinking", "..."], hang=True))
    async with running.unix() as c:
        sid, events = await turn(c, project_dir)
        kinds = [e["type"] for e in events]
        assert kinds[-1] == "complete" and "error" in kinds, kinds
        error = next(e["data"] for e in events if e["type"] == "error")
        assert "streamIdleTimeout" in error["message"], error
        assert events[-1]["data"]["status"] == "error"
        assert (await c.get(f"/sessions/{sid}")).json()["status"] == "idle"
    assert fake.disconnects >= 1
    await running.shutdown()


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_stall_before_headers_is_retried(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path, kind: str
) -> None:
    running = await start_daemon(nursery, short_tmp(), config(fake, kind))
    fake.push(Reply(stall=True), Reply(text=["second ", "try"]))
    async with running.unix() as c:
        _, events = await turn(c, project_dir)
        kinds = [e["type"] for e in events]
        assert kinds[-1] == "complete" and "error" not in kinds, events
        text = "".join(e["data"]["text"] for e in events if e["type"] == "text-delta")
        assert text == "second try"
    assert len(fake.requests) == 2 and fake.disconnects == 1
    await running.shutdown()


def test_idle_timeout_defaults_and_is_checked() -> None:
    assert load_config(Path("/nonexistent.json"), env={}).agent.stream_idle_timeout == 90.0
    from opencoded.config import ConfigError

    for bad in (0, -1):
        with pytest.raises(ConfigError, match="streamIdleTimeout"):
            load_config(
                Path("/nonexistent.json"), env={}, overrides={"agent": {"streamIdleTimeout": bad}}
            )
