"""The Neovim plugin (editors/nvim): its headless test script against a real daemon, over the
Unix socket only, with the fake LLM as the provider."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.client_tools import NVIM_PLUGIN, Rig, need_tool, open_rig, run_checked


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    yield from open_rig()


def nvim_version(nvim: str) -> tuple[int, int]:
    head = subprocess.run([nvim, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"NVIM v(\d+)\.(\d+)", head)
    assert match, head
    return int(match.group(1)), int(match.group(2))


@pytest.mark.timeout(180)
def test_headless_suite_passes(rig: Rig) -> None:
    nvim = need_tool("nvim", "the plugin's tests run in headless Neovim (Debian package neovim)")
    assert nvim_version(nvim) >= (0, 7), "the plugin targets Neovim 0.7 and later"
    env = rig.env()
    # Only the socket: a URL or token in the environment must not be what makes it work.
    for name in ("OPENCODE_URL", "OPENCODE_TOKEN", "OPENCODE_TEST_URL", "OPENCODE_TEST_TOKEN"):
        env.pop(name, None)
    cmd = [
        nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n",
        "--cmd", f"set rtp+={NVIM_PLUGIN}",
        "-c", "runtime! plugin/opencode.lua",
        "-c", f"luafile {NVIM_PLUGIN / 'test' / 'opencode_test.lua'}",
    ]  # fmt: skip
    output = run_checked(cmd, env=env, cwd=rig.workdir, timeout=150)
    assert re.search(r"# [1-9]\d* passed, 0 failed", output), output
    assert "not ok" not in output, output
