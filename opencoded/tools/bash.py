"""The bash tool: run a shell command in the session directory, and never lose track of it.

Each command runs under a small supervisor (reaper.py: a child subreaper with
PR_SET_PDEATHSIG) and, where the sandbox is on, inside bubblewrap (sandbox.py). Every way a
command ends takes its whole process tree down, including children that called `setsid` or
double-forked out of its process group:

- the command exits: the supervisor SIGKILLs whatever it left behind (orphans are
  re-parented to the supervisor, so it finds them all) and reports how many;
- timeout, abort, shutdown (Trio cancellation): the daemon sends the supervisor SIGTERM, and
  it does the same; the kill and reap are shielded, so cancellation goes on only after;
- the daemon dies, even by SIGKILL: PDEATHSIG sends the supervisor SIGTERM.

Under bubblewrap the command is also in its own pid namespace: when its init dies the kernel
kills everything in it. The result states only what was observed.

The supervisor is spawned with no preexec_fn (running Python between fork and exec of a
multi-threaded process is unsafe). PDEATHSIG fires when the *thread* that forked the child
exits, and Trio's `open_process` forks in worker threads that are retired when idle, so the
fork happens in the Trio thread itself (fork+exec is quick).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from opencoded.tools.base import ToolContext, ToolError, ToolOutput
from opencoded.tools.output import MAX_CHARS, MAX_LINES, cap_middle

MAX_TIMEOUT = 600.0
HEAD_BYTES = 64 * 1024
TAIL_BYTES = 64 * 1024
OUTPUT_GRACE = 1.0  # how long to wait for pipe EOF once the tree is dead
REAP_GRACE = 10.0
HIDDEN_ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "OPENCODE_TOKEN")
REAPER = str(Path(__file__).with_name("reaper.py"))


def child_env() -> dict[str, str]:
    """The daemon's environment minus what belongs to the daemon alone (socket activation,
    systemd notification, the API token)."""
    return {k: v for k, v in os.environ.items() if k not in HIDDEN_ENV}


class _Output:
    """Drains the command's output pipe, keeping its head and tail within fixed memory."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.eof = trio.Event()

    async def drain(self, stream: trio.lowlevel.FdStream) -> None:
        while chunk := await stream.receive_some(65536):
            self.total += len(chunk)
            room = HEAD_BYTES - len(self.head)
            self.head += chunk[:room]
            self.tail += chunk[room:] if room > 0 else chunk
            del self.tail[:-TAIL_BYTES]
        self.eof.set()

    def text(self) -> str:
        omitted = self.total - len(self.head) - len(self.tail)
        gap = f"\n[... {omitted:,} bytes omitted ...]\n" if omitted > 0 else ""
        raw = self.head.decode(errors="replace") + gap + self.tail.decode(errors="replace")
        return cap_middle(raw, MAX_CHARS - 200, MAX_LINES - 5)


class _Supervised:
    """The spawned supervisor, with a pidfd to await its exit without reaping it."""

    def __init__(self, argv: list[str], cwd: str, write_fd: int, report_fd: int) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-I", "-S", REAPER, str(os.getpid()), str(report_fd), "--", *argv],
            cwd=cwd,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            pass_fds=(report_fd,),
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self.pidfd = os.pidfd_open(self.pid)

    async def exited(self) -> None:
        """Return once the supervisor has exited; it stays a zombie until reaped."""
        await trio.lowlevel.wait_readable(self.pidfd)

    def signal(self, sig: int) -> None:
        if self.popen.returncode is None:  # unreaped, so the pid is still ours
            os.kill(self.pid, sig)

    async def stop(self) -> bool:
        """Ask the supervisor to kill the tree; True if it exited on its own within grace."""
        self.signal(signal.SIGTERM)
        with trio.move_on_after(REAP_GRACE):
            await self.exited()
            self.popen.wait()
            return True
        self.signal(signal.SIGKILL)  # stuck: its pid is unreaped, so this is safe
        self.popen.wait()
        return False

    def close(self) -> None:
        os.close(self.pidfd)


def _report(read_fd: int) -> tuple[int | None, int] | None:
    """(exit code or -signal, or None if killed first; processes killed), from the
    supervisor's report; None when it wrote none (it was killed)."""
    try:
        words = os.read(read_fd, 100).decode().split()
    except (BlockingIOError, UnicodeDecodeError):
        return None
    if len(words) != 2:
        return None
    code = None if words[0] == "none" else int(words[0])
    return code, int(words[1])


class BashTool:
    name = "bash"
    description = (
        "Run a shell command with bash in the session directory. stdout and stderr are "
        "merged; stdin is empty. `timeout` is in seconds (default 120, at most 600); on "
        "timeout the command and everything it started are killed. Background processes "
        "do not outlive the command. It may run in a sandbox (the daemon's config): then it "
        "can write only in the session directory and /tmp, and may have no network. "
        "`description` is a few words saying what it does."
    )
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The command to run"},
            "timeout": {"type": "number", "description": "Timeout in seconds (max 600)"},
            "description": {"type": "string", "description": "What the command does"},
        },
        "required": ["command"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        timeout = float(args.get("timeout", ctx.bash_timeout))
        if timeout <= 0:
            raise ToolError("invalid argument 'timeout': must be a positive number of seconds")
        return await run_command(args["command"], ctx, min(timeout, MAX_TIMEOUT))


async def run_command(command: str, ctx: ToolContext, timeout: float) -> ToolOutput:
    """Run `command` to completion, timeout or cancellation; see the module docstring."""
    argv, confined = ["bash", "-c", command], False
    if ctx.jail is not None:
        argv, confined = ctx.jail.wrap(ctx.root, argv)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        proc = _Supervised(argv, str(ctx.root), write_fd, report_w)
    except OSError as exc:
        os.close(read_fd)
        os.close(report_r)
        raise ToolError(f"cannot start bash: {exc}") from exc
    finally:
        os.close(write_fd)
        os.close(report_w)
    stream = trio.lowlevel.FdStream(read_fd)
    output = _Output()
    clean = True
    try:
        if ctx.on_spawn:
            ctx.on_spawn(proc.pid)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(output.drain, stream)
            with trio.move_on_after(timeout) as deadline:
                await proc.exited()
            clean = await proc.stop()
            with trio.move_on_after(OUTPUT_GRACE):  # a writer may hold the pipe a moment
                await output.eof.wait()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if proc.popen.returncode is None:
                await proc.stop()
        proc.close()
        stream.close()
        if ctx.on_exit:
            ctx.on_exit(proc.pid)
    report = _report(report_r) if clean else None
    os.close(report_r)
    text = output.text().rstrip("\n") or "(no output)"
    return _result(text, report, confined, timeout if deadline.cancelled_caught else None)


def _result(
    text: str, report: tuple[int | None, int] | None, confined: bool, timed_out: float | None
) -> ToolOutput:
    """The tool result, saying only what the supervisor observed."""
    if report is None:
        note = "The command's supervisor was killed; processes it started may still be running."
        return ToolOutput(f"{text}\n\n{note}", error=True)
    code, killed = report
    where = " (sandboxed)" if confined else ""
    if timed_out is not None:
        footer = f"Command timed out after {timed_out:g} s and was killed{where}"
        footer += ", with every process it started." if confined or killed else "."
        return ToolOutput(f"{text}\n\n{footer}", error=True)
    footer = f"exit code: {code}" if code is None or code >= 0 else f"killed by signal {-code}"
    if killed and not confined:
        noun = "process" if killed == 1 else "processes"
        footer += f"\n({killed} background {noun} it left running were killed)"
    return ToolOutput(f"{text}\n\n{footer}", error=code != 0)
