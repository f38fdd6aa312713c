"""The bash tool: run a shell command in the session directory, and never lose track of it.

Each command runs under a small bash "leader" in a new session (so a new process group whose
id is the leader's pid). Three ways it ends, and all of them take the whole group down:

- normally or on timeout: we SIGKILL the group before reaping the leader (while the leader is
  an unreaped zombie its pid, hence the group id, cannot be reused), so stragglers it left in
  the background die with it;
- on Trio cancellation (abort, shutdown): the same kill and reap, shielded, before the
  cancellation goes on;
- when the daemon itself dies, even by SIGKILL: the leader has PR_SET_PDEATHSIG=SIGTERM and
  traps it with `kill -KILL 0`, killing its group.

PDEATHSIG fires when the *thread* that forked the child exits, not the process. Trio's
`open_process` forks in a worker thread that Trio retires after a few idle seconds, which
would kill the command early, so we fork in the Trio thread itself (fork+exec is quick).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import trio

from opencoded.tools.base import ToolContext, ToolError, ToolOutput
from opencoded.tools.output import MAX_CHARS, MAX_LINES, cap_middle

MAX_TIMEOUT = 600.0
HEAD_BYTES = 64 * 1024
TAIL_BYTES = 64 * 1024
OUTPUT_GRACE = 1.0  # how long to wait for pipe EOF once the group is dead
REAP_GRACE = 5.0
PR_SET_PDEATHSIG = 1
HIDDEN_ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "OPENCODE_TOKEN")

# $1 is the user's command. The command runs in the background so that `wait` (which a
# trap can interrupt) is what the leader blocks in; `kill -KILL 0` kills the whole group.
LEADER_SCRIPT = 'trap "kill -KILL 0" TERM HUP INT; bash -c "$1" & wait $!'

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with(parent_pid: int) -> Callable[[], None]:
    """preexec_fn for the leader: get SIGTERM when the daemon dies, even if it already has."""

    def preexec() -> None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the daemon died between fork and prctl
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


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


class _Leader:
    """The spawned leader, with a pidfd to await its exit without reaping it."""

    def __init__(self, command: str, cwd: str, write_fd: int) -> None:
        self.popen = subprocess.Popen(
            ["bash", "-c", LEADER_SCRIPT, "opencode-bash", command],
            cwd=cwd,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            start_new_session=True,
            preexec_fn=_die_with(os.getpid()),
        )
        self.pgid = self.popen.pid
        self.pidfd = os.pidfd_open(self.pgid)

    async def exited(self) -> None:
        """Return once the leader has exited; it stays a zombie until `reap`."""
        await trio.lowlevel.wait_readable(self.pidfd)

    def kill_group(self) -> None:
        if self.popen.returncode is None:  # unreaped, so the group id is still ours
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)

    async def kill_and_reap(self) -> int | None:
        self.kill_group()
        with trio.move_on_after(REAP_GRACE):
            await self.exited()
        return self.popen.poll()

    def close(self) -> None:
        os.close(self.pidfd)


class BashTool:
    name = "bash"
    description = (
        "Run a shell command with bash in the session directory. stdout and stderr are "
        "merged; stdin is empty. `timeout` is in seconds (default 120, at most 600); on "
        "timeout the command and everything it started are killed. Background processes "
        "do not outlive the command. `description` is a few words saying what it does."
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
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        leader = _Leader(command, str(ctx.root), write_fd)
    except OSError as exc:
        os.close(read_fd)
        raise ToolError(f"cannot start bash: {exc}") from exc
    finally:
        os.close(write_fd)
    stream = trio.lowlevel.FdStream(read_fd)
    output = _Output()
    try:
        if ctx.on_spawn:
            ctx.on_spawn(leader.pgid)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(output.drain, stream)
            with trio.move_on_after(timeout) as deadline:
                await leader.exited()
            code = await leader.kill_and_reap()
            with trio.move_on_after(OUTPUT_GRACE):  # a writer may have escaped the group
                await output.eof.wait()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await leader.kill_and_reap()
        leader.close()
        stream.close()
        if ctx.on_exit:
            ctx.on_exit(leader.pgid)
    text = output.text().rstrip("\n") or "(no output)"
    if deadline.cancelled_caught:
        footer = f"Command timed out after {timeout:g} s; it and its children were killed."
        return ToolOutput(f"{text}\n\n{footer}", error=True)
    return ToolOutput(f"{text}\n\nexit code: {code}", error=code != 0)
