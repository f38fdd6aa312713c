"""The Daemon object: everything a request handler may reach, built once at start-up."""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .config import Config
from .mcp import McpManager
from .metrics import Metrics
from .sessions import SessionManager
from .storage import Store

if TYPE_CHECKING:
    from .providers.registry import ProviderRegistry

TOKEN_PREFIX = "sk-opencode-"


@attrs.define
class Endpoints:
    tcp: str | None = None  # "http://127.0.0.1:3000"
    unix: str | None = None  # "/run/user/1000/opencode/opencoded.sock"

    def ready_line(self) -> str:
        parts = [p for p in (self.tcp, f"unix:{self.unix}" if self.unix else None) if p]
        return "opencoded ready: " + " ".join(parts)


@attrs.define(eq=False)
class Daemon:
    config: Config
    store: Store
    sessions: SessionManager
    providers: ProviderRegistry
    token: str
    nursery: trio.Nursery
    endpoints: Endpoints = attrs.Factory(Endpoints)
    started: float = attrs.Factory(time.monotonic)
    stopping: trio.Event = attrs.Factory(trio.Event)
    workdir: Path = attrs.Factory(Path.cwd)
    app: Any = None  # the ASGI app serving this daemon, set once it is built
    metrics: Metrics = attrs.Factory(Metrics)  # what GET /metrics reports (with the store's)
    # MCP servers as tool sources; run by server._run_background until shutdown.
    mcp: McpManager = attrs.field(
        default=attrs.Factory(lambda self: McpManager(self.config.mcp), takes_self=True)
    )

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started


class DataDirBusy(Exception):
    """Another daemon uses the data dir."""


def lock_data_dir(data_dir: Path) -> int:
    """Take the data dir for this process (an flock held until the fd is closed).

    Two daemons on one data dir would both run crash recovery and write into each
    other's event logs. The lock file holds the owner's pid, for the error message.
    Returns the fd; DataDirBusy (naming the other pid) if another process holds it.
    """
    fd = os.open(data_dir / "opencoded.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirBusy(f"another opencoded (pid {other}) is using data dir {data_dir}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def ensure_token(data_dir: Path) -> str:
    """Read the API token, creating it (mode 0600) on first start."""
    path = data_dir / "token"
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token
