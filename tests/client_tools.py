"""Shared by the tests of the non-Python clients: the tools they run, and a daemon to run them on.

A missing tool skips the test with the reason, except under CI (``$CI`` set), where it fails:
CI installs the tools (``.ci/run``), so a skip there would hide a broken install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.cli_support import (
    DaemonProcess,
    FakeLLMProcess,
    rmtree,
    short_tmp,
    start_daemon,
    start_fake_llm,
)

REPO = Path(__file__).resolve().parent.parent
SDK = REPO / "sdk" / "typescript"
NVIM_PLUGIN = REPO / "editors" / "nvim"


def need_tool(name: str, why: str) -> str:
    """The tool's path; skip (or fail under CI) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({why}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def node_major(node: str) -> int:
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    match = re.match(r"v(\d+)", version)
    return int(match.group(1)) if match else 0


def need_node() -> str:
    node = need_tool("node", "the TypeScript SDK tests run under Node")
    major = node_major(node)
    if major < 20:
        message = f"Node {major} is too old: the SDK needs Node 20 or later"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return node


@attrs.define
class Rig:
    """A daemon whose provider is the fake LLM, and a work directory for its sessions."""

    fake: FakeLLMProcess
    daemon: DaemonProcess
    workdir: Path

    def env(self, **extra: str) -> dict[str, str]:
        """What the Node and Neovim test suites read (see sdk/typescript/test/support.js)."""
        return self.daemon.env(
            OPENCODE_TEST_URL=self.daemon.tcp_url,
            OPENCODE_TEST_TOKEN=self.daemon.token,
            OPENCODE_TEST_SOCKET=str(self.daemon.socket),
            OPENCODE_TEST_LLM=self.fake.url,
            OPENCODE_TEST_DIR=str(self.workdir),
            **extra,
        )


def open_rig() -> Iterator[Rig]:
    fake = start_fake_llm()
    daemon = start_daemon(fake.url)
    workdir = short_tmp("ocw").resolve()
    (workdir / "pkg").mkdir()
    (workdir / "pkg" / "mod.py").write_text("x = 1\n")
    try:
        yield Rig(fake, daemon, workdir)
    finally:
        daemon.stop()
        fake.stop()
        rmtree(daemon.tmp)
        rmtree(workdir)


def run_checked(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> str:
    """Run a test suite; its whole output is the assertion message when it fails."""
    try:
        done = subprocess.run(
            cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        raise AssertionError(f"{cmd[0]} timed out after {timeout}s:\n{out}") from None
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{output}"
    return output
