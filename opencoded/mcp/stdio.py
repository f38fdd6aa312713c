"""The stdio transport: a local MCP server as a child process, JSON-RPC lines on its pipes.

Ours rather than the SDK's `stdio_client` for one reason: we must know the process to
stop its whole tree. The server runs in its own session and process group; stopping it
closes its stdin, waits `STDIN_GRACE` for it to exit (the MCP spec's order), then sends
SIGTERM and, after `TERM_GRACE`, SIGKILL to the group, which also ends anything it
started and left behind (a server that exits on EOF may leave children running). The
message framing and types are the SDK's (`SessionMessage`, `jsonrpc_message_adapter`), so
the SDK's Client drives this transport like its own.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, BinaryIO

import anyio
import trio

log = logging.getLogger(__name__)

STDIN_GRACE = 1.0  # seconds for the server to exit once its stdin is closed
TERM_GRACE = 1.0  # seconds from SIGTERM to SIGKILL
MAX_LINE = 32 * 1024 * 1024  # a longer message line is a broken server


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal the group; False once it is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal; the others got it
        pass
    return True


async def stop_process_tree(process: trio.Process) -> None:
    """Close stdin, wait, then SIGTERM and SIGKILL the process group. Bounded (~2 s)."""
    pgid = process.pid
    if process.stdin is not None:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await process.stdin.aclose()
    with trio.move_on_after(STDIN_GRACE):
        await process.wait()
    if _signal_group(pgid, signal.SIGTERM):
        with trio.move_on_after(TERM_GRACE):
            while process.poll() is None or _signal_group(pgid, 0):
                await trio.sleep(0.02)
        _signal_group(pgid, signal.SIGKILL)
    with trio.move_on_after(1.0):
        await process.wait()


async def _pump_out(process: trio.Process, sink: Any, sdk_types: Any, message_cls: Any) -> None:
    """Server stdout -> the client: one JSON-RPC message a line."""
    assert process.stdout is not None
    buffer = b""
    async with sink:
        try:
            while chunk := await process.stdout.receive_some(65536):
                lines = (buffer + chunk).split(b"\n")
                buffer = lines.pop()
                if len(buffer) > MAX_LINE:
                    log.warning("mcp server %d: a message over %d bytes", process.pid, MAX_LINE)
                    return
                for line in lines:
                    if line.strip():
                        await sink.send(_parse(line, sdk_types, message_cls))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, trio.ClosedResourceError):
            return


def _parse(line: bytes, sdk_types: Any, message_cls: Any) -> Any:
    try:
        return message_cls(sdk_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:  # the SDK reports it to the pending request
        return exc


async def _pump_in(process: trio.Process, source: Any, reader_sink: Any) -> None:
    """The client -> server stdin. A broken pipe ends the connection (the reader's EOF)."""
    assert process.stdin is not None
    try:
        async with source:
            async for message in source:
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                await process.stdin.send_all(data.encode() + b"\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await reader_sink.aclose()


@asynccontextmanager
async def stdio_transport(
    argv: Sequence[str],
    env: Mapping[str, str],
    stderr: BinaryIO,
    cwd: str | None = None,
) -> AsyncIterator[tuple[Any, Any]]:
    """Spawn the server; yield (read, write) streams for the SDK's Client; stop its tree.

    Closes `stderr` (a pipe's write end) once the server runs, so that the pipe's reader
    sees EOF when the server and all that inherited it are gone.
    """
    import mcp_types
    from mcp.shared.message import SessionMessage

    try:
        process = await trio.lowlevel.open_process(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        stderr.close()
    to_client, read = anyio.create_memory_object_stream[Any](0)
    write, from_client = anyio.create_memory_object_stream[Any](0)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump_out, process, to_client, mcp_types, SessionMessage)
            nursery.start_soon(_pump_in, process, from_client, to_client)
            try:
                yield read, write
            finally:
                with trio.CancelScope(shield=True):
                    await stop_process_tree(process)
                nursery.cancel_scope.cancel()
    finally:
        for stream in (read, write, to_client, from_client):
            stream.close()
