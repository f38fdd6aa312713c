"""`opencode mcp` and the task list in `opencode send`, as a user's shell runs them."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_support import (
    DaemonProcess,
    FakeLLMProcess,
    rmtree,
    run_cli,
    short_tmp,
    start_daemon,
    start_fake_llm,
)
from tests.test_cli import FORBIDDEN, _modules_after

FLAKY = str(Path(__file__).parent / "mcp_servers" / "flaky.py")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLMProcess]:
    llm = start_fake_llm()
    yield llm
    llm.stop()


@pytest.fixture(scope="module")
def daemon(fake: FakeLLMProcess) -> Iterator[DaemonProcess]:
    mcp = {
        "flaky": {"type": "local", "command": [sys.executable, FLAKY]},
        "off": {"type": "local", "command": ["/nonexistent"], "enabled": False},
    }
    d = start_daemon(fake.url, config={"mcp": mcp})
    yield d
    assert d.stop() == 0
    rmtree(d.tmp)


def _listing(d: DaemonProcess) -> dict[str, dict]:
    """`opencode mcp --json`, once flaky is no longer starting."""
    deadline = time.monotonic() + 30
    while True:
        res = run_cli("mcp", "--json", env=d.env())
        assert res.returncode == 0, res.stderr
        servers = {s["name"]: s for s in json.loads(res.stdout)}
        if servers["flaky"]["status"] != "starting" or time.monotonic() > deadline:
            return servers
        time.sleep(0.1)


def test_mcp_lists_servers(daemon: DaemonProcess) -> None:
    servers = _listing(daemon)
    assert servers["flaky"]["status"] == "connected"
    assert servers["off"]["status"] == "disabled"
    res = run_cli("mcp", "--tools", env=daemon.env())
    assert res.returncode == 0, res.stderr
    rows = [line.split("\t") for line in res.stdout.splitlines() if "\t" in line]
    assert ["flaky", "local", "connected", "6", ""] in rows
    assert ["off", "local", "disabled", "0", ""] in rows
    assert "  flaky_echo  Echo the text back" in res.stdout.splitlines()


def test_mcp_restart(daemon: DaemonProcess) -> None:
    _listing(daemon)
    res = run_cli("mcp", "restart", "flaky", env=daemon.env())
    assert res.returncode == 0, res.stderr
    assert res.stdout == "flaky: connected\n"
    missing = run_cli("mcp", "restart", "nope", env=daemon.env())
    assert missing.returncode == 1
    assert "MCP server not found: nope (NOT_FOUND)" in missing.stderr


def test_mcp_imports_no_daemon_or_async_stack(daemon: DaemonProcess) -> None:
    loaded = _modules_after(["mcp", "--json"], daemon.env())
    assert not loaded & {*FORBIDDEN, "mcp"}, loaded & {*FORBIDDEN, "mcp"}


def test_send_shows_the_task_list(daemon: DaemonProcess, fake: FakeLLMProcess) -> None:
    todos = [
        {"content": "Write the test", "status": "completed"},
        {"content": "Fix the bug", "status": "in_progress"},
    ]
    fake.push(tool_calls=[{"id": "t1", "name": "todowrite", "input": {"todos": todos}}])
    fake.push(text=["Planned."])
    workdir = short_tmp("ocw")
    try:
        res = run_cli("send", "plan it", env=daemon.env(), cwd=workdir)
    finally:
        rmtree(workdir)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "Planned.\n"
    assert "  [x] Write the test\n  [~] Fix the bug\n" in res.stderr
