"""What a turn tells its followers besides the answer (issue 14, frictions 6 and 7): a `retry`
event before each retry of a failed provider request, and titles written by the model when
config `titles` asks for them. The real daemon in-process, real HTTP, the fake LLM."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from opencoded.agent.titles import TITLE_SYSTEM, chosen_by_nobody, clean_title
from opencoded.providers.retry import public_url
from tests.conftest import short_tmp, start_daemon
from tests.fakes.llm import FakeLLM, Reply, open_fake_llm
from tests.test_agent import new_session, of_type, provider_config, run_turn, types


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


def seqs_follow(events: list[dict[str, Any]]) -> bool:
    seqs = [e["seq"] for e in events]
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


# ---- retry events ------------------------------------------------------------------------------


async def test_overloaded_provider_streams_retry_events_then_the_answer(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    d = await start_daemon(nursery, short_tmp(), provider_config(fake))
    fake.push(Reply(status=529), Reply(status=529), Reply(text=["fine"]))
    async with d.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "hi")
    retries = of_type(events, "retry")
    assert [r["attempt"] for r in retries] == [2, 3]
    for r in retries:
        assert r["max_attempts"] == 4 and r["reason"] == "HTTP 529 overloaded"
        assert (r["provider"], r["url"]) == ("anthropic", fake.url)
        assert 0 < r["delay_ms"] <= 8000
    assert types(events)[:2] == ["retry", "retry"]
    assert of_type(events, "message")[0]["content"] == "fine"
    assert of_type(events, "complete")[0]["status"] == "completed"
    assert seqs_follow(events)  # stored in the log like every event: each has its seq
    stored = await d.daemon.store.read_events(sid, 0)
    assert [e.data for e in stored if e.type == "retry"] == retries
    await d.shutdown()


async def test_unreachable_provider_says_connection_refused_and_its_url(
    nursery: trio.Nursery, project_dir: Path
) -> None:
    secret_url = "http://user:sk-secret@127.0.0.1:9/?key=sk-other"  # nothing listens on 9
    config = {
        "model": "anthropic/claude-sonnet-5-5",
        "provider": {"anthropic": {"options": {"apiKey": "sk-ant", "baseURL": secret_url}}},
    }
    d = await start_daemon(nursery, short_tmp(), config)
    async with d.unix() as client:
        sid = await new_session(client, project_dir)
        events = await run_turn(client, sid, "hi")
    retries = of_type(events, "retry")
    assert [(r["attempt"], r["max_attempts"]) for r in retries] == [(2, 4), (3, 4), (4, 4)]
    assert {r["reason"] for r in retries} == {"connection refused"}
    assert {r["url"] for r in retries} == {"http://127.0.0.1:9/"}
    assert types(events)[-2:] == ["error", "complete"]
    assert "sk-" not in str(retries)
    [error] = of_type(events, "error")  # the error names the URL it tried, without the key
    assert "unreachable at http://127.0.0.1:9/" in error["message"]
    assert "sk-" not in error["message"]
    await d.shutdown()


def test_public_url_drops_credentials() -> None:
    assert public_url("https://u:sk-x@api.example.com:8443/v1?key=k#f") == (
        "https://api.example.com:8443/v1"
    )
    assert public_url("http://[::1]:9/v1") == "http://[::1]:9/v1"
    assert public_url(None) is None


# ---- titles from the model ---------------------------------------------------------------------


async def session_title(client: Any, sid: str) -> str:
    return (await client.get(f"/sessions/{sid}")).json()["title"]


def title_requests(fake: FakeLLM) -> list[Any]:
    return [r for r in fake.requests if TITLE_SYSTEM[:40] in str(r.body.get("system"))]


async def test_model_titles_after_the_first_turn(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    d = await start_daemon(nursery, short_tmp(), provider_config(fake, titles="model"))
    fake.answer_containing(TITLE_SYSTEM[:40], Reply(text=['"Login bug', ' fix"']))
    fake.push(Reply(text=["on it"]))
    async with d.unix() as client:
        r = await client.post(
            "/sessions", json={"directory": str(project_dir), "title": "Fix the login bug"}
        )
        sid = r.json()["id"]
        async with client.stream("GET", "/events") as feed:
            lines = feed.aiter_lines()
            assert await lines.__anext__() == ": connected"
            events = await run_turn(client, sid, "Fix the login bug\nIt fails on empty passwords.")
            assert of_type(events, "complete")[0]["status"] == "completed"
            with trio.fail_after(10):  # the daemon feed says so, for session lists
                while not (line := await lines.__anext__()).startswith("data: {") or (
                    "session.updated" not in line
                ):
                    pass
            assert json.loads(line.removeprefix("data: ")) == {
                "type": "session.updated",
                "session_id": sid,
                "title": "Login bug fix",
            }
        assert await session_title(client, sid) == "Login bug fix"
        assert (await client.get(f"/sessions/{sid}")).json()["status"] == "idle"
        [asked] = title_requests(fake)
        assert "It fails on empty passwords." in str(asked.body["messages"])

        # A second turn asks for no other title; a title the user chose is kept.
        await run_turn(client, sid, "and the signup form")
        mine = await client.post(
            "/sessions", json={"directory": str(project_dir), "title": "My own name"}
        )
        await run_turn(client, mine.json()["id"], "something else")
        assert await session_title(client, mine.json()["id"]) == "My own name"
    assert len(title_requests(fake)) == 1
    await d.shutdown()


async def test_a_slow_title_delays_nothing_and_dies_with_its_session(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    d = await start_daemon(nursery, short_tmp(), provider_config(fake, titles="model"))
    fake.answer_containing(TITLE_SYSTEM[:40], Reply(stall=True))  # never answers
    async with d.unix() as client:
        sid = await new_session(client, project_dir)
        await run_turn(client, sid, "first")
        with trio.fail_after(10):
            while not title_requests(fake):
                await trio.sleep(0.02)
        # The title request hangs: the session is idle and takes the next message.
        assert (await client.get(f"/sessions/{sid}")).json()["status"] == "idle"
        events = await run_turn(client, sid, "second")
        assert of_type(events, "complete")[0]["status"] == "completed"
        assert fake.disconnects == 0
        assert (await client.delete(f"/sessions/{sid}")).status_code == 200
        with trio.fail_after(10):  # the delete cancelled it: the fake sees the request go
            await fake.disconnected.wait()
    await d.shutdown()


async def test_default_config_makes_no_title_request(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    d = await start_daemon(nursery, short_tmp(), provider_config(fake))
    fake.answer_containing(TITLE_SYSTEM[:40], Reply(text=["Not wanted"]))
    async with d.unix() as client:
        sid = await new_session(client, project_dir)
        await run_turn(client, sid, "first")
        await run_turn(client, sid, "second")
        assert await session_title(client, sid) == f"Session in {project_dir.name}"
    assert len(fake.requests) == 2 and not title_requests(fake)
    await d.shutdown()


def test_which_titles_the_model_may_replace() -> None:
    assert chosen_by_nobody("Session in proj", "/x/proj", "hello")
    assert chosen_by_nobody("Fix the login bug", "/x/proj", "\n Fix the  login bug\nmore")
    assert chosen_by_nobody("A long first line cut at a…", "/x", "A long first line cut at a word")
    assert not chosen_by_nobody("Release notes", "/x/proj", "Fix the login bug")
    assert clean_title('Title: "Fix login."\nextra') == "Fix login"
