"""Issue 10, commands: process trees that must die with their turn and with the daemon, and
real escape attempts from the OS sandbox, through the bash tool of real turns."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from opencoded.config import load_config
from opencoded.server import run_daemon
from opencoded.tools import ToolContext, run_tool
from opencoded.tools.sandbox import Jail, probe

from .conftest import RunningDaemon, short_tmp, start_daemon
from .daemon_process import DaemonProcess
from .fakes.llm import FakeLLM, FakeToolCall, Reply, open_fake_llm
from .proc_support import await_marked, new_marker

CAN_SANDBOX = probe().available


def need_sandbox() -> None:
    """Skip without bubblewrap, except in CI (.ci/run installs it), where that is a failure."""
    if not CAN_SANDBOX:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to sandbox: {probe().reason}")
        pytest.skip(f"no sandbox on this machine: {probe().reason}")


@pytest.fixture(params=["unconfined", "sandboxed"])
def jail(request: pytest.FixtureRequest) -> Jail | None:
    if request.param == "sandboxed":
        need_sandbox()
        return Jail(mode="workspace-write", network=False)
    return None


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = (tmp_path / "session").resolve()
    path.mkdir()
    return path


def escapers(marker: str) -> str:
    """Three ways out of a process group: setsid in the background, setsid -f (fork and
    detach), and a double fork (the subshell exits, its child is orphaned). Each touches
    .upN in the session directory, then becomes `sleep <marker>`."""

    def run(n: int) -> str:
        return f"sh -c 'touch .up{n}; exec sleep {marker}'"

    return f"setsid {run(1)} & setsid -f {run(2)}; ({run(3)} &); "


# ---- process trees, tool level --------------------------------------------------------------


async def test_escaped_children_die_when_the_command_ends(root: Path, jail: Jail | None) -> None:
    marker = new_marker()
    # wait (busy: a sleep of its own would be marked too) until the three have started
    command = escapers(marker) + "until [ -e .up1 ] && [ -e .up2 ] && [ -e .up3 ]; do :; done"
    with trio.fail_after(20):
        out = await run_tool("bash", {"command": command}, ToolContext(root=root, jail=jail))
    assert not out.error and "exit code: 0" in out.output, out
    await await_marked(marker, 0, 5)
    if jail is None:
        assert "background processes it left running were killed" in out.output


async def test_escaped_children_die_on_timeout(root: Path, jail: Jail | None) -> None:
    marker = new_marker()
    command = escapers(marker) + f"sleep {marker}"
    with trio.fail_after(20):
        out = await run_tool(
            "bash", {"command": command, "timeout": 1}, ToolContext(root=root, jail=jail)
        )
    assert out.error and "timed out after 1 s" in out.output
    assert "with every process it started" in out.output
    await await_marked(marker, 0, 5)


async def test_escaped_children_die_on_abort(root: Path, jail: Jail | None) -> None:
    marker = new_marker()
    command = escapers(marker) + f"sleep {marker}"
    ctx = ToolContext(root=root, jail=jail)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_tool, "bash", {"command": command}, ctx)
        await await_marked(marker, 4, 10)
        nursery.cancel_scope.cancel()
    await await_marked(marker, 0, 5)


# ---- process trees, a SIGKILLed daemon ----------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with open_fake_llm() as server:
        yield server


def agent_config(fake: FakeLLM, **extra: Any) -> dict[str, Any]:
    return {
        "model": "anthropic/claude-sonnet-5-5",
        "provider": {"anthropic": {"options": {"apiKey": "sk-ant-test", "baseURL": fake.url}}},
        "permission": {"bash": "allow"},
        **extra,
    }


@pytest.mark.parametrize("mode", ["off", "workspace-write"])
async def test_escaped_children_die_with_a_sigkilled_daemon(
    nursery: trio.Nursery, fake: FakeLLM, tmpdir_short: Path, mode: str
) -> None:
    if mode != "off":
        need_sandbox()
    project = tmpdir_short / "proj"
    project.mkdir()
    (tmpdir_short / "none.json").write_text(json.dumps(agent_config(fake, sandbox={"mode": mode})))
    marker = new_marker()
    command = escapers(marker) + f"sleep {marker}"
    fake.push(Reply(tool_calls=[FakeToolCall("t1", "bash", {"command": command})]))
    proc = DaemonProcess(tmpdir_short)
    await proc.start(nursery)
    transport = httpx.AsyncHTTPTransport(uds=str(proc.socket))
    async with httpx.AsyncClient(base_url="http://x", transport=transport, timeout=10) as c:
        r = await c.post("/sessions", json={"directory": str(project)})
        sid = r.json()["id"]
        body = {"parts": [{"type": "text", "text": "go"}]}
        r = await c.post(f"/sessions/{sid}/messages", json={**body, "async": True})
        assert r.status_code in (200, 202), r.text
        await await_marked(marker, 4, 15)
    assert proc.proc is not None
    proc.proc.kill()
    await proc.wait()
    await await_marked(marker, 0, 10)


# ---- escapes from the sandbox, through real turns -----------------------------------------------


async def bash_turn(running: RunningDaemon, fake: FakeLLM, directory: Path, command: str) -> dict:
    """Run one bash command as the model's tool call in a real turn; its tool-result."""
    fake.push(Reply(tool_calls=[FakeToolCall("t1", "bash", {"command": command})]))
    async with running.unix() as c:
        r = await c.post("/sessions", json={"directory": str(directory)})
        sid = r.json()["id"]
        body = {"parts": [{"type": "text", "text": "run it"}]}
        with trio.fail_after(30):
            async with c.stream("POST", f"/sessions/{sid}/messages", json=body) as r:
                lines = [json.loads(line) async for line in r.aiter_lines() if line]
    return next(e["data"] for e in lines if e["type"] == "tool-result")


async def sandboxed_daemon(
    nursery: trio.Nursery, fake: FakeLLM, **sandbox: Any
) -> tuple[RunningDaemon, Path]:
    tmp = short_tmp()
    project = tmp / "proj"
    project.mkdir()
    running = await start_daemon(nursery, tmp, agent_config(fake, sandbox=sandbox))
    return running, project


@pytest.fixture
def visible(tmp_path: Path) -> AsyncIterator[Path]:
    """A scratch directory outside /tmp (the sandbox has a fresh /tmp of its own, which
    would hide anything under /tmp and make these tests pass for the wrong reason)."""
    path = Path(tempfile.mkdtemp(prefix=".opencode-test-", dir=Path.home()))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_sandbox_confines_writes_to_the_session_directory(
    nursery: trio.Nursery, fake: FakeLLM, visible: Path
) -> None:
    need_sandbox()
    running, project = await sandboxed_daemon(nursery, fake)
    (visible / "seen.txt").write_text("visible-control\n")
    command = (
        f"cat {visible}/seen.txt; echo pwned > {visible}/a.txt; echo pwned > {visible}/seen.txt;"
        " touch /etc/pwned; echo fine > inside.txt; echo tmp > /tmp/t && cat /tmp/t"
    )
    result = await bash_turn(running, fake, project, command)
    out = result["output"]
    assert "visible-control" in out  # the system is readable...
    assert out.count("Read-only file system") == 3  # ...but not writable outside
    assert not (visible / "a.txt").exists() and not Path("/etc/pwned").exists()
    assert (visible / "seen.txt").read_text() == "visible-control\n"
    assert (project / "inside.txt").read_text() == "fine\n"
    assert "tmp" in out  # a private /tmp is writable
    await running.shutdown()


async def test_sandbox_read_only_mode(nursery: trio.Nursery, fake: FakeLLM) -> None:
    need_sandbox()
    running, project = await sandboxed_daemon(nursery, fake, mode="read-only")
    (project / "README.md").write_text("readable\n")
    result = await bash_turn(running, fake, project, "cat README.md; echo x > new.txt")
    assert "readable" in result["output"] and "Read-only file system" in result["output"]
    assert not (project / "new.txt").exists()
    await running.shutdown()


async def test_sandbox_hides_the_token_the_database_and_configured_paths(
    nursery: trio.Nursery, fake: FakeLLM, visible: Path
) -> None:
    need_sandbox()
    hidden = visible / "hidden"
    hidden.mkdir()
    (hidden / "key.txt").write_text("hidden-key-material\n")
    (visible / "lone.txt").write_text("lone-secret-material\n")
    (visible / "control.txt").write_text("control-material\n")
    tmp = short_tmp()
    project = tmp / "proj"
    project.mkdir()
    data = visible / "data"
    hide = [str(hidden), str(visible / "lone.txt")]
    config = agent_config(fake, sandbox={"hide": hide})
    config_file = visible / "opencode.json"  # the file the daemon loaded: provider keys
    config_file.write_text(json.dumps(config))
    cfg = load_config(
        config_file,
        env={},
        overrides={"server": {"port": 0, "socket": str(visible / "d.sock")}, "dataDir": str(data)},
    )
    stop, finished = trio.Event(), trio.Event()

    async def serve(task_status: trio.TaskStatus[Any]) -> None:
        try:
            await run_daemon(cfg, stop=stop, task_status=task_status)
        finally:
            finished.set()

    daemon = await nursery.start(serve)
    running = RunningDaemon(
        daemon,
        stop,
        finished,
        tmp,
        visible / "d.sock",
        data,
        daemon.endpoints.tcp or "",
        daemon.token,
    )
    token = (data / "token").read_text().strip()
    command = (
        f"cat {data}/token; ls -A {data}; cat {hidden}/key.txt; cat {visible}/lone.txt; "
        f"cat {config_file}; cat {visible}/control.txt; "
        # the socket trusts whoever connects (no token): a filesystem socket is reachable
        # from any network namespace, so only hiding it keeps commands from driving the daemon
        f"python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('{visible}/d.sock'); "
        "print('SOCKET-CONNECTED')\""
    )
    result = await bash_turn(running, fake, project, command)
    out = result["output"]
    assert "control-material" in out  # the same directory, not hidden: readable
    assert token not in out and "opencode.db" not in out
    assert "hidden-key-material" not in out and "lone-secret-material" not in out
    assert "sk-ant-test" not in out and "SOCKET-CONNECTED" not in out
    await running.shutdown()


@pytest.mark.parametrize("hide_credentials", [True, False])
async def test_sandbox_hides_credentials_and_runtime_sockets(
    nursery: trio.Nursery,
    fake: FakeLLM,
    visible: Path,
    monkeypatch: pytest.MonkeyPatch,
    hide_credentials: bool,
) -> None:
    need_sandbox()
    if not os.access("/run", os.W_OK) and not os.environ.get("CI"):
        pytest.skip("needs to create a socket under /run (root, as in CI)")
    monkeypatch.setenv("HOME", str(visible))  # the daemon's (and the command's) home
    (visible / ".ssh").mkdir()
    (visible / ".ssh" / "id_test").write_text("PRIVATE-KEY-MATERIAL\n")
    (visible / ".netrc").write_text("machine x password NETRC-MATERIAL\n")
    (visible / "notes.txt").write_text("notes-control\n")
    run_dir = Path(tempfile.mkdtemp(prefix="ocd-test-", dir="/run"))
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(run_dir / "s.sock"))
        sock.listen(1)
        config = {"hideCredentials": hide_credentials}
        running, project = await sandboxed_daemon(nursery, fake, **config)
        command = (
            "cat ~/.ssh/id_test ~/.netrc ~/notes.txt; "
            'python3 -c "import socket; '
            f"socket.socket(socket.AF_UNIX).connect('{run_dir}/s.sock'); "
            "print('RUN-SOCKET-CONNECTED')\""
        )
        out = (await bash_turn(running, fake, project, command))["output"]
        await running.shutdown()
    finally:
        sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    assert "notes-control" in out and "RUN-SOCKET-CONNECTED" not in out
    leaked = "PRIVATE-KEY-MATERIAL" in out and "NETRC-MATERIAL" in out
    assert leaked is not hide_credentials


async def listener() -> tuple[trio.SocketListener, int]:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    return trio.SocketListener(sock), sock.getsockname()[1]


@pytest.mark.parametrize("network", [False, True])
async def test_sandbox_network_follows_config(
    nursery: trio.Nursery, fake: FakeLLM, network: bool
) -> None:
    need_sandbox()
    listen, port = await listener()
    accepted = trio.Event()

    async def accept() -> None:
        stream = await listen.accept()
        accepted.set()
        await stream.aclose()

    running, project = await sandboxed_daemon(nursery, fake, network=network)
    command = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED"
    async with trio.open_nursery() as accepting:
        accepting.start_soon(accept)
        result = await bash_turn(running, fake, project, command)
        if network:
            assert "CONNECTED" in result["output"]
            with trio.fail_after(5):
                await accepted.wait()
        else:
            assert "CONNECTED" not in result["output"] and result["error"] is True
            assert not accepted.is_set()
        accepting.cancel_scope.cancel()
    await running.shutdown()
    await listen.aclose()


async def test_health_reports_the_sandbox(daemon: RunningDaemon) -> None:
    async with daemon.unix() as c:
        sandbox = (await c.get("/health")).json()["sandbox"]
    assert sandbox["mode"] == "workspace-write" and sandbox["network"] is False
    assert sandbox["available"] is CAN_SANDBOX
    if CAN_SANDBOX:
        assert sandbox["backend"] == "bubblewrap"
    else:
        assert sandbox["reason"] and sandbox["commands"] == "refused"


# ---- a machine that cannot sandbox -------------------------------------------------------------


def bin_without_bwrap(tmp: Path) -> str:
    """A PATH with the tools the commands below use, and no bwrap."""
    bindir = tmp / "bin"
    bindir.mkdir()
    for tool in ("bash", "cat", "touch", "echo"):
        found = next(Path(d) / tool for d in [*os.defpath.split(":"), "/usr/bin", "/bin"]
                     if (Path(d) / tool).exists())  # fmt: skip
        (bindir / tool).symlink_to(found)
    return str(bindir)


@pytest.mark.parametrize("fallback", ["refuse", "unconfined"])
async def test_without_a_sandbox_config_decides(
    nursery: trio.Nursery, fake: FakeLLM, tmpdir_short: Path, fallback: str
) -> None:
    project = tmpdir_short / "proj"
    project.mkdir()
    outside = tmpdir_short / "outside.txt"
    config = agent_config(fake, sandbox={"fallback": fallback})
    (tmpdir_short / "none.json").write_text(json.dumps(config))
    command = f"touch {outside}; echo RAN"
    fake.push(Reply(tool_calls=[FakeToolCall("t1", "bash", {"command": command})]))
    env = {"PATH": bin_without_bwrap(tmpdir_short)}
    proc = DaemonProcess(tmpdir_short, env=env)
    await proc.start(nursery)
    transport = httpx.AsyncHTTPTransport(uds=str(proc.socket))
    async with httpx.AsyncClient(base_url="http://x", transport=transport, timeout=10) as c:
        sandbox = (await c.get("/health")).json()["sandbox"]
        assert sandbox["available"] is False and "not installed" in sandbox["reason"]
        assert sandbox["commands"] == ("refused" if fallback == "refuse" else "unconfined")
        sid = (await c.post("/sessions", json={"directory": str(project)})).json()["id"]
        body = {"parts": [{"type": "text", "text": "go"}]}
        with trio.fail_after(30):
            async with c.stream("POST", f"/sessions/{sid}/messages", json=body) as r:
                events = [json.loads(line) async for line in r.aiter_lines() if line]
    result = next(e["data"] for e in events if e["type"] == "tool-result")
    if fallback == "refuse":
        assert result["error"] is True and "commands are refused" in result["output"]
        assert "RAN" not in result["output"] and not outside.exists()
    else:
        assert "RAN" in result["output"] and outside.exists()
    log = proc.stderr.decode()
    assert log.count("sandbox unavailable") == 1
    assert proc.proc is not None
    proc.proc.terminate()
    await proc.wait()
