"""`opencode diff/undo/redo/fork/compact` and `send --queue` (issue 13), as a user's shell runs
them: the installed CLI against a real daemon process and the fake LLM process."""

from __future__ import annotations

import json
from pathlib import Path

from opencode_cli import Client
from tests.cli_support import (
    DaemonProcess,
    FakeLLMProcess,
    cli_fixtures,
    run_cli,
    wait_for,
)

fake, daemon, workdir = cli_fixtures("och")


def ok(*args: str, daemon: DaemonProcess, cwd: Path) -> str:
    done = run_cli(*args, env=daemon.env(), cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_diff_undo_redo_fork_compact(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    (workdir / "a.txt").write_text("before\n")
    fake.push(
        text=[],
        tool_calls=[
            {"id": "w1", "name": "write", "input": {"path": "a.txt", "content": "after\n"}}
        ],
    )
    fake.push(text=["wrote it"])
    ok("send", "-y", "rewrite a.txt", daemon=daemon, cwd=workdir)
    fake.push(text=["second answer"])
    ok("send", "-c", "and now?", daemon=daemon, cwd=workdir)
    assert (workdir / "a.txt").read_text() == "after\n"

    diff = ok("diff", daemon=daemon, cwd=workdir)
    assert "-before" in diff and "+after" in diff

    fake.push(text=["SUMMARY of the first turn"])
    assert "compacted: about" in ok("compact", daemon=daemon, cwd=workdir)

    assert "reverted 2 message(s); files restored: none" in ok("undo", daemon=daemon, cwd=workdir)
    assert "files restored: a.txt" in ok("undo", daemon=daemon, cwd=workdir)
    assert (workdir / "a.txt").read_text() == "before\n"
    assert "restored 2 message(s); files restored: a.txt" in ok("redo", daemon=daemon, cwd=workdir)
    assert (workdir / "a.txt").read_text() == "after\n"

    forked = ok("fork", daemon=daemon, cwd=workdir).strip()
    with Client(daemon.unix_url) as c:
        assert forked.startswith("session_") and len(c.sessions.messages(forked)) == 2


def test_send_queue_while_a_turn_runs(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=["working"], hang=True)
    fake.push(text=["the queued reply"])
    with Client(daemon.unix_url) as c:
        sid = c.sessions.create(directory=str(workdir)).id
        c.sessions.submit(sid, "first")
        wait_for(lambda: c.sessions.get(sid).status == "busy", what="the turn to run")
        out = ok("send", "-s", sid, "--queue", "queued later", daemon=daemon, cwd=workdir)
        assert out.startswith("queued at position 1 (queued_")
        c.sessions.abort(sid)

        def texts() -> list[str]:
            return ["".join(p.text or "" for p in m.parts) for m in c.sessions.messages(sid)]

        wait_for(lambda: "the queued reply" in texts(), what="the queued turn")
        assert texts()[2] == "queued later"


def test_send_shows_a_compaction(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    (workdir / "big.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    for n in range(2):
        read = {"id": f"r{n}", "name": "read", "input": {"path": "big.txt"}}
        fake.push(text=[], tool_calls=[read])
        fake.push(text=[f"read {n}"])
        ok("send", *(["-c"] if n else []), f"read big.txt ({n})", daemon=daemon, cwd=workdir)
    last = fake.requests()[-1]["body"]
    fake.control("/_window", {"tokens": len(json.dumps(last)) // 4})  # the next one overflows
    try:
        fake.push(text=["still fine"])
        done = run_cli("send", "-c", "and now?", env=daemon.env(), cwd=workdir)
    finally:
        fake.control("/_window", {"tokens": None})
    assert done.returncode == 0, done.stderr
    assert "still fine" in done.stdout
    assert "context compacted" in done.stderr
