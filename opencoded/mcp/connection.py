"""One MCP server: connect, list its tools, serve calls, reconnect with backoff.

Each enabled server is one task (`McpServer.run`) in the daemon's MCP nursery, looping:
connect (spawn the command, or open the streamable-HTTP session), list the tools, stay
connected until the connection is lost or a restart is asked for, then wait out a backoff
and go again. Everything is bounded: the connection and listing by the server's `timeout`,
each call by its `toolTimeout`. A failure is recorded (`status`, `error`) and never
raised: the daemon and the turns go on without the server's tools.

A call runs as a task in the connection's own nursery, not in the turn's: an abort stops
the turn's wait at once, while the SDK finishes its shielded courtesy cancel (up to 5 s
when a server stops reading) in the background. A stdio server's stderr is kept (its last
lines) to say why it failed; stdio.py stops a stdio server with its whole process group.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Literal

import trio

from ..config import McpServerConfig
from ..tools.base import ToolOutput
from .convert import McpTool, convert_result, tools_from_listing

log = logging.getLogger(__name__)

Status = Literal["disabled", "starting", "connected", "failed"]
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # seconds between attempts, then 30 s each
STABLE_AFTER = 60.0  # connected this long: the next loss starts the backoff afresh
STDERR_KEEP = 4096
STDERR_DRAIN = 0.5  # seconds to read a dead server's last words
MAX_PAGES = 100  # of tools/list
CONNECTION_CLOSED = -32000  # mcp_types.CONNECTION_CLOSED

_sdk_lock = trio.Lock()


async def load_sdk() -> Any:
    """The `mcp` package, imported in a worker thread (a second of CPU) the first time."""
    async with _sdk_lock:
        if "mcp" in sys.modules:
            return sys.modules["mcp"]
        return await trio.to_thread.run_sync(importlib.import_module, "mcp")


class StderrTail:
    """The last bytes a stdio server wrote to stderr, for the error report."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = trio.Event()  # EOF (or nothing to read: a remote server)

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        del self.data[:-STDERR_KEEP]

    def text(self) -> str:
        lines = self.data.decode(errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in lines[-5:] if line.strip())[-600:]


async def _read_stderr(fd: int, tail: StderrTail, name: str) -> None:
    async with trio.lowlevel.FdStream(fd) as stream:
        while chunk := await stream.receive_some(4096):
            tail.add(chunk)
            log.debug("mcp %s stderr: %s", name, chunk.decode(errors="replace").rstrip())
    tail.closed.set()


def create_http_client(headers: dict[str, str] | None) -> Any:
    """The SDK's own HTTP client library (httpx2), with the SDK's recommended timeouts:
    a response stream may stay open for minutes."""
    import httpx2

    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))


def streamable_http_client(url: str, http_client: Any) -> Any:
    from mcp.client.streamable_http import streamable_http_client as client

    return client(url, http_client=http_client)


def _version() -> str:
    from .. import __version__

    return __version__


class _LossSignallingStream:
    """A transport's read stream that sets `lost` when it ends (the server went away)."""

    def __init__(self, inner: Any, lost: trio.Event) -> None:
        self._inner = inner
        self._lost = lost

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except Exception:
            self._lost.set()
            raise

    def __aiter__(self) -> _LossSignallingStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.__anext__()
        except (StopAsyncIteration, Exception):
            self._lost.set()
            raise

    async def aclose(self) -> None:
        self._lost.set()
        await self._inner.aclose()

    async def __aenter__(self) -> _LossSignallingStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        self._lost.set()
        return await self._inner.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:  # `last_context` and the like
        return getattr(self._inner, name)


@asynccontextmanager
async def _watched(transport: Any, lost: trio.Event) -> AsyncIterator[tuple[Any, Any]]:
    async with transport as (read, write):
        yield _LossSignallingStream(read, lost), write


class BadListing(Exception):
    """A tools/list answer the SDK refused (a tool's input schema is not an object...)."""

    def __init__(self, error: Any) -> None:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        super().__init__(f"invalid tools/list answer: {where}: {first['msg']}")


async def _either(first: trio.Event, second: trio.Event) -> None:
    """Return once either event is set."""
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(wait, first)
        nursery.start_soon(wait, second)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """One line on why a connection or a call failed."""
    exc = _leaf(exc)
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    message = str(exc) or type(exc).__name__
    code = getattr(getattr(exc, "error", None), "code", None)
    if code == CONNECTION_CLOSED:
        return "the server closed the connection"
    if code is not None:
        return f"{message} (MCP error {code})"
    if type(exc).__module__.startswith(("httpx", "httpcore")):
        return f"{type(exc).__name__}: {message}"
    if isinstance(exc, BadListing) or type(exc) is Exception:
        return message
    return f"{type(exc).__name__}: {message}"


class McpServer:
    """One configured server and its connection; `run` is its task."""

    def __init__(self, name: str, config: McpServerConfig) -> None:
        self.name = name
        self.config = config
        self.status: Status = "starting" if config.enabled else "disabled"
        self.error: str | None = None  # why it is not connected
        self.last_error: str | None = None  # the latest failure, kept after a reconnect
        self.tools: list[McpTool] = []
        self.skipped: list[str] = []  # tools left out, with the reason
        self.restarts = 0
        self.connected_since: float | None = None
        self.retry_at: float | None = None
        self.first_attempt = trio.Event()  # set once connected or failed for the first time
        self._client: Any = None
        self._calls: trio.Nursery | None = None
        self._lost = trio.Event()
        self._relist = trio.Event()  # the server said its tool list changed
        self._wake = trio.Event()
        self._restart_asked = False
        self._attempt = 0
        self._changed = trio.Event()

    # ---- state -------------------------------------------------------------------------

    def _set(self, status: Status, error: str | None = None) -> None:
        self.status, self.error = status, error
        if status in ("connected", "failed"):
            self.first_attempt.set()
        if error is not None:
            self.last_error = error
            log.warning("mcp server %s: %s", self.name, error)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.config.type,
            "status": self.status,
            "error": self.error,
            "last_error": self.last_error,
            "restarts": self.restarts,
            "connected_since": self.connected_since,
            "retry_at": self.retry_at if self.status == "failed" else None,
            "tools": [
                {"name": t.name, "tool": t.remote, "description": t.description} for t in self.tools
            ],
            "skipped": list(self.skipped),
        }

    # ---- the task ----------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        while True:
            self._attempt += 1
            self._lost, self._wake, self._relist = trio.Event(), trio.Event(), trio.Event()
            self.retry_at = None
            self._set("starting")
            try:
                await self._connect_and_serve()
            except Exception as exc:  # never out of this task: the daemon goes on
                log.exception("mcp server %s: unexpected failure", self.name)
                self._set("failed", describe(exc))
            stable = (time.time() - (self.connected_since or math.inf)) >= STABLE_AFTER
            self._client, self._calls, self.tools = None, None, []
            self.connected_since = None
            if not self._restart_asked:
                failures = 0 if stable else failures
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                failures += 1
                self.retry_at = time.time() + delay
                self._notify()
                with trio.move_on_after(delay):
                    await self._wake.wait()
            if self._restart_asked:
                failures = 0
            self._restart_asked = False
            self.restarts += 1

    async def _connect_and_serve(self) -> None:
        """One attempt: returns when it failed or the connection ended; status tells which."""
        sdk = await load_sdk()
        tail = StderrTail()
        failure: Exception | None = None
        async with trio.open_nursery() as readers:
            with trio.CancelScope() as connecting:
                connecting.deadline = trio.current_time() + self.config.timeout / 1000
                try:
                    async with AsyncExitStack() as resources:
                        transport = await self._transport(resources, readers, tail)
                        await self._serve(sdk, transport, connecting)
                except Exception as exc:
                    failure = exc
            # A dead server's last stderr lines say why: read them (EOF once it is gone).
            with trio.move_on_after(STDERR_DRAIN):
                await tail.closed.wait()
            readers.cancel_scope.cancel()
        was_connected = self.connected_since is not None
        if was_connected and self._restart_asked:
            return
        if connecting.cancelled_caught:
            reason = f"no answer within {self.config.timeout / 1000:g} s"
        elif was_connected:
            reason = "connection lost"
        else:
            reason = describe(failure) if failure else "the server closed the connection"
        said = tail.text()
        self._set("failed", f"{reason}; stderr: {said}" if said else reason)

    async def _serve(self, sdk: Any, transport: Any, connecting: trio.CancelScope) -> None:
        info = sdk.types.Implementation(name="opencode", version=_version())
        client_cm = sdk.Client(
            _watched(transport, self._lost), client_info=info, message_handler=self._on_message
        )
        async with client_cm as client:
            listed = await self._list_tools(client)
            connecting.deadline = math.inf
            self.tools, self.skipped = tools_from_listing(self.name, listed)
            async with trio.open_nursery() as calls:
                self._client, self._calls = client, calls
                self.connected_since = time.time()
                self._set("connected")
                while not self._lost.is_set():
                    await _either(self._lost, self._relist)
                    if not self._lost.is_set():
                        await self._refresh_tools(client)
                self._client, self._calls = None, None
                calls.cancel_scope.cancel()

    async def _on_message(self, message: Any) -> None:
        """Notifications from the server: a changed tool list is read again."""
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            self._relist.set()

    async def _refresh_tools(self, client: Any) -> None:
        self._relist = trio.Event()
        try:
            with trio.fail_after(self.config.timeout / 1000):
                listed = await self._list_tools(client)
        except Exception as exc:  # keep the tools we have; a lost connection is seen anyway
            self.last_error = f"listing the changed tools failed: {describe(exc)}"
            log.warning("mcp server %s: %s", self.name, self.last_error)
            return
        self.tools, self.skipped = tools_from_listing(self.name, listed)
        self._notify()

    async def _transport(
        self, resources: AsyncExitStack, readers: trio.Nursery, tail: StderrTail
    ) -> Any:
        """The transport (an async context manager) for this server."""
        if self.config.type == "remote":
            tail.closed.set()
            http = create_http_client(headers=dict(self.config.headers) or None)
            await resources.enter_async_context(http)
            return streamable_http_client(self.config.url, http_client=http)
        from mcp.client.stdio import get_default_environment

        from .stdio import stdio_transport  # anyio: only with a stdio server

        read_fd, write_fd = os.pipe()
        readers.start_soon(_read_stderr, read_fd, tail, self.name)
        stderr = os.fdopen(write_fd, "wb")
        resources.callback(stderr.close)  # if the transport never ran (closing twice is fine)
        env = get_default_environment() | dict(self.config.environment)
        return stdio_transport(self.config.command, env, stderr=stderr)

    async def _list_tools(self, client: Any) -> list[Any]:
        from pydantic import ValidationError

        tools: list[Any] = []
        cursor = None
        for _ in range(MAX_PAGES):
            try:
                page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            except ValidationError as exc:  # the SDK refuses the whole listing
                raise BadListing(exc) from None
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    # ---- calls and restarts (from other tasks) -----------------------------------------

    async def call(self, tool: McpTool, args: dict[str, Any]) -> ToolOutput:
        """Call one tool; failures come back as an error output. Cancellable at once."""
        client, calls = self._client, self._calls
        if client is None or calls is None:
            reason = self.error or self.status
            return ToolOutput(
                f"The MCP server {self.name!r} is not connected ({reason}); "
                "its tools cannot be used right now.",
                error=True,
            )
        outcome: list[ToolOutput] = []
        done = trio.Event()
        scope = trio.CancelScope()

        async def runner() -> None:
            with scope:
                try:
                    outcome.append(await self._call(client, tool, args))
                finally:
                    done.set()

        calls.start_soon(runner)
        try:
            await done.wait()
        finally:
            scope.cancel()  # an abort: the runner winds down in the background
        if not outcome:
            return ToolOutput(f"The MCP server {self.name!r} went away during the call.", True)
        return outcome[0]

    async def _call(self, client: Any, tool: McpTool, args: dict[str, Any]) -> ToolOutput:
        limit = self.config.tool_timeout / 1000
        try:
            with trio.fail_after(limit):
                result = await client.call_tool(tool.remote, args)
        except trio.TooSlowError:
            message = f"The MCP server {self.name!r} gave no result within {limit:g} s."
            return ToolOutput(message, error=True)
        except Exception as exc:
            if getattr(getattr(_leaf(exc), "error", None), "code", None) == CONNECTION_CLOSED:
                self._lost.set()
            log.info("mcp %s: %s failed", self.name, tool.remote, exc_info=True)
            message = f"MCP server {self.name!r}, tool {tool.remote!r}: {describe(exc)}"
            return ToolOutput(message, error=True)
        text, is_error, images = convert_result(result)
        return ToolOutput(text, is_error, images)

    async def restart(self, wait: float) -> None:
        """Drop the connection and connect again now; returns once that attempt settled
        (connected or failed) or after `wait` seconds."""
        attempt = self._attempt
        self._restart_asked = True
        self._lost.set()
        self._wake.set()
        with trio.move_on_after(wait):
            while self._attempt == attempt or self.status == "starting":
                await self._changed.wait()
