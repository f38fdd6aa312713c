"""``opencode tui`` headless: Textual's pilot drives the real app against a real daemon (a
subprocess) and the fake LLM. pytest runs async tests under Trio here, and Textual needs
asyncio, so each test is a plain function that runs its scenario with ``asyncio.run``."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, ListView, Static

from opencode_cli import Client
from opencode_cli.tui import OpencodeApp
from opencode_cli.tui.widgets import (
    AssistantText,
    ModelPicker,
    Notice,
    PermissionScreen,
    SessionItem,
    ToolBlock,
    UserMessage,
)
from tests.cli_support import (
    OPENCODE,
    DaemonProcess,
    FakeLLMProcess,
    cli_fixtures,
    rmtree,
    run_cli,
    short_tmp,
    start_daemon,
)

SIZE = (140, 40)


fake, daemon, workdir = cli_fixtures("ocu")


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


async def until(pilot: Pilot, condition: Callable[[], object], what: str, timeout: float = 20.0):
    """Let the app run until ``condition()`` is truthy (bounded); returns its value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)
    return value


async def say(pilot: Pilot, text: str) -> None:
    prompt = pilot.app.query_one("#prompt", Input)
    prompt.focus()
    prompt.value = text
    await pilot.press("enter")


def texts(app: OpencodeApp) -> list[str]:
    return [w.text for w in app.query(AssistantText)]


def sessions_in(d: DaemonProcess, directory: Path) -> list:
    with Client(d.unix_url) as c:
        return [s for s in c.sessions.list() if s.directory == str(directory)]


def test_streamed_reply_with_markdown_then_abort_with_escape(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    async def scenario() -> None:
        app = OpencodeApp(daemon.unix_url, directory=str(workdir))
        async with app.run_test(size=SIZE) as pilot:
            fake.push(text=["Here is", " **code**:\n\n", "```python\nprint(1)\n```\n"], delay=0.05)
            await say(pilot, "Show me code\nplease")
            await until(pilot, lambda: not app.busy and texts(app), "the reply")
            assert texts(app) == ["Here is **code**:\n\n```python\nprint(1)\n```\n"]
            assert [w.text for w in app.query(UserMessage)] == ["Show me code\nplease"]
            assert app.query("MarkdownFence")  # the code block is rendered as code
            [session] = sessions_in(daemon, workdir)
            assert session.title == "Show me code"
            assert app.session_id == session.id
            assert app.has_diff  # the daemon serves GET /sessions/:id/diff (issue 13)

            # Streaming: the first delta shows while the turn is still running.
            fake.push(text=["partial answer", " never"], hang=True)
            await say(pilot, "a long one")
            await until(pilot, lambda: "partial answer" in texts(app)[-1], "the first delta")
            assert app.busy
            await pilot.press("escape")
            await until(pilot, lambda: not app.busy, "the abort")
            assert [n.text for n in app.query(Notice)] == ["turn aborted"]

            fake.push(text=["again partial", " never"], hang=True)  # Ctrl+C aborts too
            await say(pilot, "another long one")
            await until(pilot, lambda: "again partial" in texts(app)[-1], "the second delta")
            await pilot.press("ctrl+c")
            await until(pilot, lambda: not app.busy, "the second abort")
            assert [n.text for n in app.query(Notice)] == ["turn aborted"] * 2
        with Client(daemon.unix_url) as c:
            assert c.sessions.get(session.id).status == "idle"

    run(scenario)


def test_tool_call_shown_and_permission_answered_from_the_dialog(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    async def scenario() -> None:
        app = OpencodeApp(daemon.unix_url, directory=str(workdir))
        async with app.run_test(size=SIZE) as pilot:
            fake.push(text=[], tool_calls=[{"id": "l1", "name": "list", "input": {}}])
            fake.push(
                text=[],
                tool_calls=[
                    {"id": "w1", "name": "write", "input": {"path": "t.txt", "content": "tui\n"}}
                ],
            )
            fake.push(text=["file written"])
            await say(pilot, "write a file")
            dialog = await until(
                pilot, lambda: isinstance(app.screen, PermissionScreen) and app.screen, "dialog"
            )
            assert dialog.tool == "write"
            await pilot.press("y")
            await until(pilot, lambda: not app.busy and "file written" in texts(app), "the end")
            listed, written = list(app.query(ToolBlock))
            assert (listed.title, listed.error) == ("✓ list .", False)
            assert written.title == "✓ write t.txt"
            assert written.collapsed
            await pilot.click(written.query_one("CollapsibleTitle"))
            await until(pilot, lambda: not written.collapsed, "the block to open")
        assert (workdir / "t.txt").read_text() == "tui\n"

    run(scenario)


def test_opening_a_session_that_waits_shows_its_permission(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    fake.push(text=[], tool_calls=[{"id": "w2", "name": "write", "input": {"path": "no.txt"}}])
    fake.push(text=["refused then"])
    with Client(daemon.unix_url) as c:
        sid = c.sessions.create(directory=str(workdir)).id
        c.sessions.submit(sid, "write it")  # nobody follows this turn
        deadline = time.monotonic() + 15
        while not c.permissions.list(sid):
            assert time.monotonic() < deadline, "no permission request"
            time.sleep(0.05)

    async def scenario() -> None:
        app = OpencodeApp(daemon.unix_url, session_id=sid, directory=str(workdir))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(app.screen, PermissionScreen), "the dialog")
            await pilot.click("#reject")
            await until(pilot, lambda: "refused then" in texts(app), "the turn to go on")
            [block] = app.query(ToolBlock)
            assert block.error

    run(scenario)
    assert not (workdir / "no.txt").exists()


def test_a_permission_answered_elsewhere_closes_the_dialog(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    call = {"id": "w3", "name": "write", "input": {"path": "yes.txt", "content": "y\n"}}
    fake.push(text=[], tool_calls=[call])
    fake.push(text=["written by the shell's answer"])

    async def scenario() -> None:
        app = OpencodeApp(daemon.unix_url, directory=str(workdir))
        async with app.run_test(size=SIZE) as pilot:
            await say(pilot, "write yes.txt")
            dialog = await until(
                pilot, lambda: isinstance(app.screen, PermissionScreen) and app.screen, "dialog"
            )
            answer = asyncio.get_running_loop().run_in_executor(
                None,
                lambda: run_cli("permissions", "answer", dialog.permission_id, "once",
                                env=daemon.env()),
            )  # fmt: skip
            assert (await answer).returncode == 0
            await until(pilot, lambda: "written by the shell's answer" in texts(app), "the end")
            await until(pilot, lambda: not isinstance(app.screen, PermissionScreen), "closed")

    run(scenario)
    assert (workdir / "yes.txt").read_text() == "y\n"


def test_session_list_switch_new_delete_and_all_projects(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    other = short_tmp("ocv")
    with Client(daemon.unix_url) as c:
        made = {}
        for name in ("alpha", "beta"):
            made[name] = c.sessions.create(directory=str(workdir), title=name).id
            fake.push(text=[f"answer {name}"])
            list(c.sessions.message(made[name], text=f"question {name}"))
        elsewhere = c.sessions.create(directory=str(other), title="elsewhere").id

    async def scenario() -> None:
        app = OpencodeApp(daemon.unix_url, directory=str(workdir))
        async with app.run_test(size=SIZE) as pilot:
            view = app.query_one("#sessions", ListView)

            def labels() -> list[str]:
                return [item.label for item in view.query(SessionItem)]

            await until(pilot, lambda: labels() == ["beta", "alpha"], "this directory's list")
            for name, index in (("alpha", 1), ("beta", 0)):
                view.focus()
                view.index = index
                await pilot.press("enter")
                await until(pilot, lambda n=name: texts(app) == [f"answer {n}"], f"{name}")
                assert app.session_id == made[name]
                assert [w.text for w in app.query(UserMessage)] == [f"question {name}"]

            await pilot.press("ctrl+t")
            await until(pilot, lambda: any("elsewhere" in lb for lb in labels()), "all projects")
            await pilot.press("ctrl+t")
            await until(pilot, lambda: len(labels()) == 2, "this directory again")
            assert not any("elsewhere" in label for label in labels())

            await pilot.press("ctrl+n")
            await until(pilot, lambda: app.session_id is None and not texts(app), "a new one")

            with Client(daemon.unix_url) as c:  # made by another client: the list follows
                made["gamma"] = c.sessions.create(directory=str(workdir), title="gamma").id
            await until(pilot, lambda: labels() == ["gamma", "beta", "alpha"], "gamma listed")

            view.focus()
            view.index = labels().index("alpha")
            await pilot.press("delete")
            await until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen", "ask")
            await pilot.press("y")
            await until(pilot, lambda: labels() == ["gamma", "beta"], "alpha gone from the list")
        with Client(daemon.unix_url) as c:
            ids = {s.id for s in c.sessions.list()}
        assert made["alpha"] not in ids and made["beta"] in ids and elsewhere in ids

    try:
        run(scenario)
    finally:
        rmtree(other)


def test_model_picker_sets_the_model_of_the_new_session(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    with Client(daemon.unix_url) as c:
        refs = [f"{m.provider}/{m.id}" for m in c.models()]
    target = next(ref for ref in refs if ref.startswith("anthropic/") and "haiku" in ref)

    async def scenario() -> None:
        app = OpencodeApp(daemon.unix_url, directory=str(workdir))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("ctrl+o")
            picker = await until(
                pilot, lambda: isinstance(app.screen, ModelPicker) and app.screen, "the picker"
            )
            options = picker.query_one("#models")
            options.highlighted = refs.index(target)
            await pilot.press("enter")
            await until(pilot, lambda: app.model == target, "the model to be picked")
            fake.push(text=["from haiku"])
            await say(pilot, "hello")
            await until(pilot, lambda: "from haiku" in texts(app), "the reply")
        [session] = sessions_in(daemon, workdir)
        assert f"{session.provider}/{session.model}" == target
        assert fake.requests()[-1]["body"]["model"] == target.split("/", 1)[1]

    run(scenario)


def test_over_tcp_with_opencode_url(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCODE_URL", daemon.tcp_url)
    monkeypatch.setenv("OPENCODE_TOKEN", daemon.token)

    async def scenario() -> None:
        app = OpencodeApp(directory=str(workdir))  # no url: $OPENCODE_URL
        async with app.run_test(size=SIZE) as pilot:
            assert app.client is not None and app.client.endpoint.uds is None
            fake.push(text=["over", " tcp"])
            await say(pilot, "hello over tcp")
            await until(pilot, lambda: texts(app) == ["over tcp"] and not app.busy, "reply")

    run(scenario)


def test_another_clients_turn_streams_into_the_open_session(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    with Client(daemon.unix_url) as c:
        sid = c.sessions.create(directory=str(workdir), title="shared").id

    async def scenario() -> None:
        app = OpencodeApp(daemon.unix_url, session_id=sid, directory=str(workdir))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.session_id == sid and app.connected, "the session")
            fake.push(text=["seen", " by both"])
            loop = asyncio.get_running_loop()
            sent = loop.run_in_executor(
                None, lambda: run_cli("send", "-s", sid, "from a shell", env=daemon.env())
            )
            await until(pilot, lambda: texts(app) == ["seen by both"], "the other turn")
            assert (await sent).stdout == "seen by both\n"

    run(scenario)


def status_line(app: OpencodeApp) -> str:
    return str(app.query_one("#status", Static).content)


def test_compactions_and_retries_show_as_system_lines(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    with Client(daemon.unix_url) as c:
        sid = c.sessions.create(directory=str(workdir), title="long one").id
        for n in range(2):
            fake.push(text=[f"answer {n} " * 50])
            assert list(c.sessions.message(sid, text=f"question {n}"))[-1].type == "complete"

    async def scenario() -> None:
        app = OpencodeApp(daemon.unix_url, session_id=sid, directory=str(workdir))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.session_id == sid and app.connected, "the session")
            fake.push(text=["the summary"])
            loop = asyncio.get_running_loop()
            done = await loop.run_in_executor(
                None, lambda: run_cli("compact", sid, env=daemon.env(), cwd=workdir)
            )
            assert done.returncode == 0, done.stderr

            def notices() -> list[str]:
                return [n.text for n in app.query(Notice)]

            [line] = await until(pilot, notices, "the compaction line")
            assert re.fullmatch(r"context compacted \(summarised\): [\d,]+ → [\d,]+ tokens", line)

            # The provider is overloaded once, then stalls: the retry stays in the status
            # line until the next event (here the abort's).
            fake.push(status=529)
            fake.push(stall=True)
            sent = len(fake.requests())
            await say(pilot, "and now?")
            await until(pilot, lambda: "retrying in" in status_line(app), "the retry")
            retry = f"(HTTP 529 overloaded: {fake.url}) — attempt 2/4"
            assert retry in status_line(app)
            assert retry in notices()[-1] and notices()[-1].startswith("retrying in")
            # Abort once the retry reached the stalling reply (none is left to the next test).
            await until(pilot, lambda: len(fake.requests()) == sent + 2, "the second try")
            assert retry in status_line(app)
            await pilot.press("escape")
            await until(pilot, lambda: not app.busy, "the abort")
            assert "retrying" not in status_line(app)

    run(scenario)


def test_reconnects_after_the_daemon_restarts(fake: FakeLLMProcess, workdir: Path) -> None:
    d = start_daemon(fake.url)
    try:
        with Client(d.unix_url) as c:
            sid = c.sessions.create(directory=str(workdir), title="survivor").id

        async def scenario() -> None:
            nonlocal d
            app = OpencodeApp(d.unix_url, session_id=sid, directory=str(workdir))
            async with app.run_test(size=SIZE) as pilot:
                fake.push(text=["before"])
                await say(pilot, "one")
                await until(pilot, lambda: texts(app) == ["before"] and not app.busy, "turn 1")
                d.stop()
                await until(pilot, lambda: not app.connected, "the link to drop")
                d = start_daemon(fake.url, tmp=d.tmp)  # same socket and database
                await until(pilot, lambda: app.connected, "the reconnect", timeout=30)
                fake.push(text=["after"])
                await say(pilot, "two")
                await until(pilot, lambda: texts(app) == ["before", "after"], "turn 2")

        run(scenario)
    finally:
        d.stop()
        rmtree(d.tmp)


def _tmux(sock: Path, *args: str, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(
        ["tmux", "-S", str(sock), *args], capture_output=True, text=True, env=env, timeout=15
    )
    return res.stdout if res.returncode == 0 else ""


def test_tui_in_a_real_terminal_under_tmux(
    daemon: DaemonProcess, fake: FakeLLMProcess, workdir: Path
) -> None:
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is needed for this test (.ci/run installs it)")
        pytest.skip("tmux is not installed")
    sock = workdir / "tmux.sock"
    env = daemon.env(TERM="xterm-256color")
    command = f"{OPENCODE} tui"
    subprocess.run(
        ["tmux", "-S", str(sock), "new-session", "-d", "-s", "oc", "-x", "120", "-y", "36",
         "-c", str(workdir), command],
        env=env, check=True, timeout=15,
    )  # fmt: skip

    def screen_has(text: str) -> Callable[[], bool]:
        return lambda: text in _tmux(sock, "capture-pane", "-p", "-t", "oc")

    try:
        wait(screen_has("Sessions · this directory"), "the app to draw")
        fake.push(text=["Hello from **tmux**"])
        _tmux(sock, "send-keys", "-t", "oc", "hi there", "Enter")
        wait(screen_has("Hello from tmux"), "the reply on screen")
        wait(screen_has("hi there"), "the title in the session list")

        # A second TUI on the same session (-c: this directory's latest) sees the same stream.
        _tmux(sock, "new-session", "-d", "-s", "oc2", "-x", "120", "-y", "36",
              "-c", str(workdir), f"{command} -c", env=env)  # fmt: skip
        second = screen_has_in(sock, "oc2")
        wait(second("Hello from tmux"), "the history in the second TUI")
        fake.push(text=["Seen twice"], delay=0.05)
        _tmux(sock, "send-keys", "-t", "oc", "again", "Enter")
        wait(screen_has("Seen twice"), "the reply in the first TUI")
        wait(second("Seen twice"), "the reply in the second TUI")

        for name in ("oc", "oc2"):
            _tmux(sock, "send-keys", "-t", name, "C-q")
        wait(lambda: not _tmux(sock, "list-sessions"), "both apps to quit")
    finally:
        _tmux(sock, "kill-server")
    [session] = sessions_in(daemon, workdir)
    assert session.title == "hi there"


def screen_has_in(sock: Path, name: str) -> Callable[[str], Callable[[], bool]]:
    return lambda text: lambda: text in _tmux(sock, "capture-pane", "-p", "-t", name)


def wait(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_diff_of_this_directorys_session(daemon: DaemonProcess, workdir: Path) -> None:
    none = run_cli("diff", env=daemon.env(), cwd=workdir)
    assert none.returncode == 1 and "no session in this directory" in none.stderr
    with Client(daemon.unix_url) as c:
        c.sessions.create(directory=str(workdir))
    res = run_cli("diff", env=daemon.env(), cwd=workdir)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""  # nothing changed yet (tests/test_cli_history.py has a real diff)


def test_other_commands_do_not_import_textual(daemon: DaemonProcess, workdir: Path) -> None:
    for args in (["--help"], ["status"], ["send", "hi"], ["sessions"]):
        script = (
            "import sys\nfrom opencode_cli.cli import main\n"
            f"sys.argv = ['opencode', *{args!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "sys.stderr.write('TEXTUAL=%s' % ('textual' in sys.modules))\n"
        )
        res = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True,
            env=daemon.env(), cwd=workdir, timeout=30,
        )  # fmt: skip
        assert "TEXTUAL=False" in res.stderr, (args, res.stderr)


def test_a_refused_first_message_says_why_and_leaves_no_session(workdir: Path) -> None:
    d = start_daemon(config={"provider": {}, "model": None})
    try:

        async def scenario() -> None:
            app = OpencodeApp(d.unix_url, directory=str(workdir))
            async with app.run_test(size=SIZE) as pilot:
                await say(pilot, "hello")
                [notice] = await until(pilot, lambda: list(app.query(Notice)), "the error")
                assert "no model provider is configured" in notice.text
                assert "opencode daemon restart" in notice.text
                assert app.session_id is None
                assert app.query_one("#prompt", Input).value == "hello"

        run(scenario)
        assert sessions_in(d, workdir) == []
    finally:
        d.stop()
        rmtree(d.tmp)
