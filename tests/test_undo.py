"""Undo and diffs (issue 13): what write, edit and bash change is recorded; revert restores
the tree byte for byte, unrevert brings the changes back, user edits are conflicts, and a git
repository's index and HEAD are never touched. Real daemon, real tools, fake LLM."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.test_agent import agent_daemon, new_session, of_type, run_turn

try:
    from tests.fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm
except ModuleNotFoundError:  # pragma: no cover - rootdir handling
    from fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm

ALLOW = {"write": "allow", "edit": "allow", "bash": "allow"}
BASH = (
    "mkdir -p made/deep && echo made > made/deep/f.txt && rm -r sub "
    "&& printf 'new\\000bytes' > bin.dat && rm gone.txt"
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


def tree(root: Path) -> dict[str, Any]:
    """Every file's bytes and every directory, by path (`.git` left out)."""
    out: dict[str, Any] = {}
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        rel = Path(top).relative_to(root)
        for d in dirs:
            out[str(rel / d) + "/"] = "dir"
        for f in files:
            out[str(rel / f)] = (Path(top) / f).read_bytes()
    return out


def populate(root: Path) -> None:
    (root / "a.txt").write_text("alpha\nbeta\n")
    (root / "gone.txt").write_text("to be deleted\n")
    (root / "bin.dat").write_bytes(b"\x00\x01\x02old")
    (root / "sub").mkdir()
    (root / "sub" / "old.txt").write_text("old\n")


def push_changing_turn(fake: FakeLLM) -> None:
    fake.push(
        Reply(tool_calls=[FakeToolCall("w1", "write", {"path": "new/n.txt", "content": "n\n"})]),
        Reply(
            tool_calls=[
                FakeToolCall(
                    "e1", "edit", {"path": "a.txt", "old_string": "beta", "new_string": "BETA"}
                )
            ]
        ),
        Reply(tool_calls=[FakeToolCall("b1", "bash", {"command": BASH})]),
        Reply(text=["changed"]),
    )


async def changing_turn(client: httpx.AsyncClient, fake: FakeLLM, sid: str) -> list[dict]:
    push_changing_turn(fake)
    events = await run_turn(client, sid, "change things")
    assert of_type(events, "complete")[-1]["status"] == "completed"
    assert [r["error"] for r in of_type(events, "tool-result")] == [False, False, False]
    return events


async def messages_of(client: httpx.AsyncClient, sid: str) -> list[dict[str, Any]]:
    return (await client.get(f"/sessions/{sid}/messages")).json()


async def test_revert_restores_the_tree_byte_for_byte_and_unrevert_redoes(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    populate(project_dir)
    before = tree(project_dir)
    running = await agent_daemon(nursery, fake, permission=ALLOW)
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        events = await changing_turn(client, fake, sid)
        after = tree(project_dir)
        assert after != before and "made/deep/" in after and "sub/" not in after

        diff = (await client.get(f"/sessions/{sid}/diff")).text
        assert "--- /dev/null\n+++ b/new/n.txt\n" in diff and "+n\n" in diff
        assert "-beta\n+BETA\n" in diff
        assert "--- a/sub/old.txt\n+++ /dev/null\n" in diff
        assert "--- a/gone.txt\n+++ /dev/null\n" in diff
        assert "Binary files a/bin.dat and b/bin.dat differ" in diff
        turn_id = of_type(events, "complete")[-1]["turn_id"]
        assert (await client.get(f"/sessions/{sid}/diff", params={"turn": turn_id})).text == diff

        user = (await messages_of(client, sid))[0]
        r = await client.post(f"/sessions/{sid}/revert", json={"message_id": user["id"]})
        assert r.status_code == 200, r.text
        assert set(r.json()["files"]) >= {"a.txt", "new/n.txt", "sub/old.txt", "bin.dat"}
        assert tree(project_dir) == before
        assert all(m.get("reverted") for m in await messages_of(client, sid))
        assert (await client.get(f"/sessions/{sid}/diff")).text == ""

        r = await client.post(f"/sessions/{sid}/unrevert")
        assert r.status_code == 200, r.text
        assert tree(project_dir) == after
        assert not any(m.get("reverted") for m in await messages_of(client, sid))
        again = await client.post(f"/sessions/{sid}/unrevert")
        assert again.status_code == 409 and again.json()["error"]["code"] == "CONFLICT"


async def test_reverted_messages_leave_the_context_and_unrevert_ends_with_a_new_message(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    populate(project_dir)
    running = await agent_daemon(nursery, fake, permission=ALLOW)
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        fake.push(Reply(text=["first answer"]))
        await run_turn(client, sid, "FIRST-QUESTION")
        await changing_turn(client, fake, sid)
        second_user = (await messages_of(client, sid))[2]
        r = await client.post(f"/sessions/{sid}/revert", json={"message_id": second_user["id"]})
        assert r.status_code == 200, r.text
        fake.push(Reply(text=["fresh"]))
        await run_turn(client, sid, "something else")
        sent = str(fake.requests[-1].body)
        assert "FIRST-QUESTION" in sent and "change things" not in sent and "BETA" not in sent
        r = await client.post(f"/sessions/{sid}/unrevert")
        assert r.status_code == 409  # a message was sent since
        flags = [bool(m.get("reverted")) for m in await messages_of(client, sid)]
        assert flags == [False, False, True, True, False, False]


async def test_a_user_edit_after_the_turn_is_a_conflict(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    populate(project_dir)
    running = await agent_daemon(nursery, fake, permission=ALLOW)
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        await changing_turn(client, fake, sid)
        (project_dir / "a.txt").write_text("the user's own work\n")
        (project_dir / "mine.txt").write_text("a file of the user\n")
        edited = tree(project_dir)
        user = (await messages_of(client, sid))[0]
        r = await client.post(f"/sessions/{sid}/revert", json={"message_id": user["id"]})
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "CONFLICT" and error["details"]["files"] == ["a.txt"]
        assert "a.txt" in error["message"]
        assert tree(project_dir) == edited  # nothing touched
        assert not any(m.get("reverted") for m in await messages_of(client, sid))


def git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "HOME": str(root)}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    done = subprocess.run(
        ["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


@pytest.mark.skipif(
    shutil.which("git") is None and not os.environ.get("CI"), reason="git is not installed"
)
async def test_a_git_repository_is_left_alone(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    populate(project_dir)
    git(project_dir, "init", "-q")
    git(project_dir, "add", "-A")
    git(project_dir, "commit", "-qm", "base")
    git(project_dir, "stash", "list")
    head = git(project_dir, "rev-parse", "HEAD")
    index = (project_dir / ".git" / "index").read_bytes()
    refs = git(project_dir, "for-each-ref")
    before = tree(project_dir)
    running = await agent_daemon(nursery, fake, permission=ALLOW)
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        await changing_turn(client, fake, sid)
        user = (await messages_of(client, sid))[0]
        r = await client.post(f"/sessions/{sid}/revert", json={"message_id": user["id"]})
        assert r.status_code == 200, r.text
    assert (project_dir / ".git" / "index").read_bytes() == index
    assert git(project_dir, "rev-parse", "HEAD") == head
    assert git(project_dir, "for-each-ref") == refs
    assert git(project_dir, "stash", "list") == ""
    assert tree(project_dir) == before
    assert git(project_dir, "status", "--porcelain") == ""


async def test_diff_and_revert_errors(
    nursery: trio.Nursery, fake: FakeLLM, project_dir: Path
) -> None:
    running = await agent_daemon(nursery, fake)
    async with running.unix() as client:
        sid = await new_session(client, project_dir)
        r = await client.get(f"/sessions/{sid}/diff")
        assert r.status_code == 200 and r.text == ""
        assert r.headers["content-type"].startswith("text/plain")
        assert (
            await client.get(f"/sessions/{sid}/diff", params={"turn": "turn_x"})
        ).status_code == 404
        r = await client.post(f"/sessions/{sid}/revert", json={"message_id": "msg_nope"})
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "message_id"
        assert (await client.post(f"/sessions/{sid}/unrevert")).status_code == 409
        assert (await client.get("/sessions/session_nope/diff")).status_code == 404
