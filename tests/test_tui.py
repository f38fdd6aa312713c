"""``opencode chat`` (the line chat) in a real pseudo-terminal, against a real daemon and the
fake LLM."""

from __future__ import annotations

from pathlib import Path

import pexpect

from opencode_cli import Client
from tests.cli_support import (
    DaemonProcess,
    FakeLLMProcess,
    cli_fixtures,
    run_cli,
    spawn_cli,
)

PROMPT = "> "


fake, daemon, workdir = cli_fixtures("oct")


def spawn(daemon: DaemonProcess, cwd: Path, *args: str, **env: str) -> pexpect.spawn:
    return spawn_cli(["chat", *args], daemon.env(**env), cwd, timeout=15)


def session_id(child: pexpect.spawn) -> str:
    child.expect(r"session (\S+)")
    return str(child.match.group(1))


def test_tui_chat_permission_and_ctrl_c(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    child = spawn(daemon, workdir, NO_COLOR="1")
    try:
        sid = session_id(child)
        child.expect_exact(PROMPT)

        fake.push(text=["Hello", " from", " the agent"], delay=0.05)
        child.sendline("hi")
        child.expect_exact("Hello from the agent")
        child.expect_exact(PROMPT)

        call = {"id": "w1", "name": "write", "input": {"path": "t.txt", "content": "tui\n"}}
        fake.push(text=[], tool_calls=[call])
        fake.push(text=["file written"])
        child.sendline("please write")
        child.expect_exact("write t.txt")  # the tool line
        child.expect_exact("Allow? [y]es, [n]o, [a]lways")
        child.sendline("y")
        child.expect_exact("file written")
        child.expect_exact(PROMPT)
        assert (workdir / "t.txt").read_text() == "tui\n"

        fake.push(text=["working", " forever"], hang=True)
        child.sendline("long task")
        child.expect_exact("working")
        child.sendintr()
        child.expect_exact("aborted")
        child.expect_exact(PROMPT)
        with Client(daemon.unix_url, backend="stdlib") as c:
            assert c.sessions.get(sid).status == "idle"
            statuses = []
            for event in c.sessions.events(sid, 0):
                if event.type == "complete":
                    statuses.append(event.data["status"])
                    if len(statuses) == 3:
                        break
        assert statuses == ["completed", "completed", "aborted"]

        fake.push(text=["still here"])
        child.sendline("again")
        child.expect_exact("still here")
        child.expect_exact(PROMPT)
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        child.close(force=True)


def test_tui_colours_on_a_terminal_unless_no_color(daemon: DaemonProcess, workdir: Path) -> None:
    coloured = spawn(daemon, workdir)
    plain = spawn(daemon, workdir, NO_COLOR="1")
    try:
        coloured.expect_exact(PROMPT)
        assert "\x1b[" in (coloured.before or "")
        plain.expect_exact(PROMPT)
        assert "\x1b[" not in (plain.before or "")
    finally:
        coloured.close(force=True)
        plain.close(force=True)


def test_tui_off_a_terminal_is_the_line_chat(daemon: DaemonProcess, workdir: Path) -> None:
    res = run_cli("tui", env=daemon.env(), input="/session\n/exit\n", cwd=workdir)
    assert res.returncode == 0, res.stderr
    first, sid = res.stdout.splitlines()[0], res.stdout.splitlines()[2].removeprefix(PROMPT)
    assert first == f"opencode · session {sid}"
