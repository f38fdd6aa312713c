"""Context compaction (issue 13): the real daemon against fake LLM servers that emulate a
small context window (they answer each provider's real overflow error past N tokens and
report the request's size as its usage)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from opencoded.agent.compaction import SUMMARY_ASK, reported_sizes
from opencoded.providers._errors import from_status
from tests.conftest import RunningDaemon, short_tmp, start_daemon
from tests.test_agent import (
    agent_daemon,
    message_body,
    new_session,
    of_type,
    provider_config,
    run_turn,
    wait_idle,
)

try:
    from tests.fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm
except ModuleNotFoundError:  # pragma: no cover - rootdir handling
    from fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


SUMMARY = "SUMMARY-OF-EARLIER-WORK: the user had big.txt read several times."
MODELS = {"anthropic": "claude-sonnet-5-5", "openai": "gpt-5.4"}


def big_file(directory: Path, chars: int) -> None:
    line = "the quick brown fox jumps over the lazy dog 0123456789\n"
    (directory / "big.txt").write_text(line * (chars // len(line) + 1))


def limited(kind: str, context: int, output: int = 1000) -> dict[str, Any]:
    """Config: the session's model with a small window (provider.P.models.M.limit)."""
    return {MODELS[kind]: {"limit": {"context": context, "output": output}}}


async def daemon_with_limits(
    nursery: trio.Nursery, fake: FakeLLM, kind: str, models: dict[str, Any]
) -> RunningDaemon:
    config = provider_config(fake, kind)
    config["provider"][kind]["models"] = models
    return await start_daemon(nursery, short_tmp(), config)


def read_turn(fake: FakeLLM, n: int) -> None:
    fake.push(
        Reply(tool_calls=[FakeToolCall(f"read{n}", "read", {"path": "big.txt"})]),
        Reply(text=[f"done {n}"]),
    )


async def turn_ok(client: httpx.AsyncClient, sid: str, text: str) -> list[dict[str, Any]]:
    events = await run_turn(client, sid, text)
    complete = of_type(events, "complete")
    assert complete and complete[-1]["status"] == "completed", events[-3:]
    return events


def request_text(fake: FakeLLM, index: int) -> str:
    import json

    return json.dumps(fake.requests[index].body)


# ---- the provider errors -------------------------------------------------------------------


def test_overflow_errors_are_recognised() -> None:
    anthropic = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 208310 tokens > 200000 maximum",
        },
    }
    err = from_status("Anthropic", 400, {}, anthropic, key_hint="")
    assert err.overflow and not err.retryable
    assert reported_sizes(err.message) == (208310, 200000)
    openai = {
        "error": {
            "message": "This model's maximum context length is 128000 tokens. However, your "
            "messages resulted in 130001 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        }
    }
    err = from_status("OpenAI", 400, {}, openai, key_hint="")
    assert err.overflow
    assert reported_sizes(err.message) == (130001, 128000)
    other = {"error": {"type": "invalid_request_error", "message": "max_tokens: must be > 0"}}
    assert not from_status("Anthropic", 400, {}, other, key_hint="").overflow


# ---- a long session ------------------------------------------------------------------------


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_fifty_turns_with_large_outputs_keep_completing(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path, kind: str
) -> None:
    window = 6000
    big_file(project_dir, 2400)
    running = await daemon_with_limits(nursery, fake, kind, limited(kind, window))
    fake.context_window = window
    fake.answer_containing(SUMMARY_ASK, Reply(text=[SUMMARY]))
    compactions: list[dict[str, Any]] = []
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        for n in range(50):
            read_turn(fake, n)
            events = await turn_ok(client, sid, f"read big.txt, round {n}")
            compactions += of_type(events, "compaction")
            assert of_type(events, "tool-result")[0]["error"] is False
        session = (await client.get(f"/sessions/{sid}")).json()
    assert fake.overflows == 0  # compacted before each step that would not fit
    assert all(fake.request_tokens(r.body) <= window for r in fake.requests)
    summaries = [c for c in compactions if c["summarised"]]
    assert summaries and all(c["tokens_after"] < c["tokens_before"] for c in compactions)
    assert any(SUMMARY in request_text(fake, i) for i in range(len(fake.requests)))
    print("COMPACTIONS", len(compactions), len(summaries))
    tokens = session["tokens"]
    assert tokens["turns"] == 50
    assert 0 < tokens["context"] <= window
    assert tokens["input"] > 50 * 2000


# ---- overflow: one compaction, one retry ---------------------------------------------------


@pytest.mark.parametrize("kind", ["anthropic", "openai"])
async def test_overflow_error_compacts_once_and_completes(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path, kind: str
) -> None:
    big_file(project_dir, 8000)
    running = await agent_daemon(nursery, fake, kind=kind)  # catalog window: 1M tokens
    fake.answer_containing(SUMMARY_ASK, Reply(text=[SUMMARY]))
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        for n in range(3):
            read_turn(fake, n)
            await turn_ok(client, sid, f"read big.txt, round {n}")
        fake.context_window = 5000  # the real window is far smaller than the catalog says
        sent = len(fake.requests)
        fake.push(Reply(text=["still here"]))
        events = await turn_ok(client, sid, "and now?")
    assert fake.overflows == 1
    [compaction] = of_type(events, "compaction")
    assert compaction["reason"] == "overflow"
    assert compaction["tokens_after"] < compaction["tokens_before"]
    retried = fake.requests[-1].body
    assert len(fake.requests) == sent + 2  # the refused request and the one retry
    assert fake.request_tokens(retried) <= 5000
    assert "".join(of_type(events, "text-delta")[i]["text"] for i in range(1)) == "still here"


async def test_overflow_that_compaction_cannot_fix_ends_the_turn(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    fake.context_window = 500  # smaller than the system prompt and tools alone
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "hello")
        assert of_type(events, "complete")[-1]["status"] == "error"
        assert "prompt is too long" in of_type(events, "error")[0]["message"]
        assert fake.overflows == 1  # nothing to compact: no retry
        fake.context_window = None
        await turn_ok(client, sid, "hello again")  # the session is not dead


# ---- on demand -----------------------------------------------------------------------------


async def test_compact_on_demand_shrinks_the_next_request(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    big_file(project_dir, 8000)
    running = await agent_daemon(nursery, fake)
    fake.answer_containing(SUMMARY_ASK, Reply(text=[SUMMARY]))
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        for n in range(3):
            read_turn(fake, n)
            await turn_ok(client, sid, f"FIRST-ASK-{n}: read big.txt")
        last_size = fake.request_tokens(fake.requests[-1].body)
        r = await client.post(f"/sessions/{sid}/compact")
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["summarised"] is True and result["reason"] == "manual"
        assert result["tokens_after"] < result["tokens_before"]
        again = await client.post(f"/sessions/{sid}/compact")
        assert again.json()["summarised"] is False  # only the last turn is left
        fake.push(Reply(text=["ok"]))
        await turn_ok(client, sid, "next")
        body = request_text(fake, -1)
        assert SUMMARY in body
        assert "FIRST-ASK-0" not in body and "FIRST-ASK-2" in body  # last turn verbatim
        assert fake.request_tokens(fake.requests[-1].body) < last_size // 2
        session = (await client.get(f"/sessions/{sid}")).json()
        assert session["tokens"]["turns"] == 4


async def test_compact_refuses_while_a_turn_runs(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        fake.push(Reply(text=["working"], hang=True))
        body = message_body("go", **{"async": True})
        r = await client.post(f"/sessions/{sid}/messages", json=body)
        assert r.status_code == 202
        r = await client.post(f"/sessions/{sid}/compact")
        assert r.status_code == 409 and r.json()["error"]["code"] == "SESSION_BUSY"
        await client.post(f"/sessions/{sid}/abort")
        await wait_idle(client, sid)
        assert (await client.post("/sessions/session_nope/compact")).status_code == 404
