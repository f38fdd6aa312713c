"""Running `opencoded` as a real subprocess, for start-up, signal and crash tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import trio

from . import conftest

READY = re.compile(r"opencoded ready: (http://\S+) unix:(\S+)")


class DaemonProcess:
    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.socket = tmp / "d.sock"
        self.data_dir = tmp / "data"
        self.args = [
            sys.executable, "-m", "opencoded", "--port", "0",
            "--socket", str(self.socket), "--data-dir", str(self.data_dir), *args,
        ]  # fmt: skip
        if conftest.DATABASE is not None and "--database" not in args:
            self.args += ["--database", conftest.DATABASE]  # a both_stores test on PostgreSQL
        self.env = {**os.environ, "OPENCODE_CONFIG": str(tmp / "none.json"), **(env or {})}
        self.proc: trio.Process | None = None
        self.url = ""
        self.stderr = b""

    async def start(self, nursery: trio.Nursery, timeout: float = 15) -> str:
        """Start and wait for the ready line; return it."""
        self.proc = await nursery.start(
            lambda task_status=trio.TASK_STATUS_IGNORED: trio.run_process(
                self.args, stderr=subprocess.PIPE, env=self.env, check=False,
                task_status=task_status,
            )
        )  # fmt: skip
        assert self.proc.stderr is not None
        with trio.fail_after(timeout):
            while not (match := READY.search(self.stderr.decode(errors="replace"))):
                chunk = await self.proc.stderr.receive_some()
                if not chunk:
                    raise AssertionError(f"daemon exited: {self.stderr.decode()}")
                self.stderr += chunk
        self.url = match.group(1)
        nursery.start_soon(self._drain)
        return match.group(0)

    async def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for chunk in self.proc.stderr:
            self.stderr += chunk

    async def wait(self, timeout: float = 10) -> int:
        assert self.proc is not None
        with trio.fail_after(timeout):
            return await self.proc.wait()

    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()


def run_to_exit(args: list[str], env: dict[str, str] | None = None, timeout: float = 20):
    """Run opencoded expecting it to exit by itself (a start-up refusal)."""
    return subprocess.run(
        [sys.executable, "-m", "opencoded", *args],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
