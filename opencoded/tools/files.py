"""The file tools: read, write, edit, list.

Each does all of its disk work, path resolution included, in one worker-thread call, so the
Trio thread never waits on the filesystem.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import trio

from opencoded.tools.base import ToolContext, ToolError, ToolOutput
from opencoded.tools.output import MAX_CHARS
from opencoded.tools.paths import (
    IsADirectory,
    NotADirectory,
    NotFoundError,
    check_regular,
    make_parents,
    open_dir,
    open_inside,
    open_regular,
    open_root,
    relative_parts,
    shown_path,
)

DEFAULT_READ_LIMIT = 2_000
MAX_LINE_CHARS = 2_000
MAX_LIST_ENTRIES = 1_000
BINARY_SNIFF_BYTES = 8_192


def _read_all(fd: int) -> bytes:
    with os.fdopen(os.dup(fd), "rb") as f:
        return f.read()


def _rewrite(fd: int, data: bytes) -> None:
    """Replace the content of the file open on `fd` (checked regular, one link)."""
    os.ftruncate(fd, 0)
    view = memoryview(data)
    offset = 0
    while offset < len(data):
        offset += os.pwrite(fd, view[offset:], offset)


class ReadTool:
    name = "read"
    description = (
        "Read a text file. Returns its lines numbered like `cat -n`. `offset` is the 1-based "
        f"line to start at; `limit` is how many lines to return (default {DEFAULT_READ_LIMIT}). "
        f"Lines longer than {MAX_LINE_CHARS} characters are cut."
    )
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path, relative to the session"},
            "offset": {"type": "integer", "minimum": 1, "description": "First line (1-based)"},
            "limit": {"type": "integer", "minimum": 1, "description": "Number of lines"},
        },
        "required": ["path"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        offset = args.get("offset", 1)
        limit = args.get("limit", DEFAULT_READ_LIMIT)
        text = await trio.to_thread.run_sync(self._read, ctx.root, args["path"], offset, limit)
        return ToolOutput(text)

    @staticmethod
    def _read(root: Path, path: str, offset: int, limit: int) -> str:
        parts = relative_parts(root, path)
        shown = shown_path(parts)
        with open_root(root) as root_fd:
            try:
                fd = open_regular(root_fd, parts, shown)
            except IsADirectory:
                raise ToolError(f"{path} is a directory (use the list tool)") from None
            except NotFoundError:
                raise ToolError(f"file not found: {path}") from None
        out: list[str] = []
        total = size = 0
        budget = MAX_CHARS - 200  # stop early on wide lines, and say where to resume
        with os.fdopen(fd, "rb") as raw:
            if b"\x00" in raw.peek(BINARY_SNIFF_BYTES)[:BINARY_SNIFF_BYTES]:
                raise ToolError(f"{path} looks like a binary file; not shown")
            f = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=None)
            for number, line in enumerate(f, start=1):
                total = number
                if offset <= number < offset + limit and size < budget:
                    line = line.rstrip("\n")
                    if len(line) > MAX_LINE_CHARS:
                        line = line[:MAX_LINE_CHARS] + " [line cut]"
                    entry = f"{number:6}\t{line}"
                    size += len(entry) + 1
                    if size <= budget or not out:
                        out.append(entry)
        if total == 0:
            return "(empty file)"
        if offset > total:
            raise ToolError(f"offset {offset} is past the end of {path} ({total} lines)")
        last = offset + len(out) - 1
        if last < total:
            out.append(f"\n(showing lines {offset}-{last} of {total}; use offset={last + 1})")
        return "\n".join(out)


class WriteTool:
    name = "write"
    description = (
        "Create or overwrite a file with `content`. Parent directories are created as needed."
    )
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path, relative to the session"},
            "content": {"type": "string", "description": "The whole new file content"},
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        msg = await trio.to_thread.run_sync(self._write, ctx.root, args["path"], args["content"])
        return ToolOutput(msg)

    @staticmethod
    def _write(root: Path, path: str, content: str) -> str:
        parts = relative_parts(root, path)
        shown = shown_path(parts)
        if not parts:
            raise ToolError(f"{path} is a directory")
        data = content.encode("utf-8")  # before creating anything: it can fail
        with open_root(root) as root_fd:
            parent = make_parents(root_fd, parts, shown)
            try:
                existed, fd = _create_or_open(parent, parts[-1], shown)
            finally:
                os.close(parent)
        try:
            if existed:
                check_regular(fd, shown)
            _rewrite(fd, data)
        except IsADirectory:
            raise ToolError(f"{path} is a directory") from None
        finally:
            os.close(fd)
        verb = "Overwrote" if existed else "Created"
        return f"{verb} {shown} ({len(data):,} bytes)"


def _create_or_open(parent: int, name: str, shown: str) -> tuple[bool, int]:
    """(existed, fd): create `name` with O_EXCL, or open the existing one; never a link."""
    create = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(10):  # another process creating and removing it at once: give up
        try:
            return False, os.open(name, create, 0o666, dir_fd=parent)
        except FileExistsError:
            pass
        try:
            return True, open_inside(parent, [name], os.O_WRONLY | os.O_NONBLOCK, shown)
        except NotFoundError:
            continue  # removed between the two opens: create it
        except ToolError as exc:
            if isinstance(exc.__cause__, IsADirectoryError):
                raise ToolError(f"{shown} is a directory") from None
            raise
    raise ToolError(f"cannot create {shown}: it keeps appearing and disappearing")


class EditTool:
    name = "edit"
    description = (
        "Replace the exact text `old_string` with `new_string` in a file. `old_string` must "
        "occur exactly once (include surrounding lines to make it unique) unless "
        "`replace_all` is true, which replaces every occurrence."
    )
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path, relative to the session"},
            "old_string": {"type": "string", "description": "Exact text to replace"},
            "new_string": {"type": "string", "description": "Replacement text"},
            "replace_all": {"type": "boolean", "description": "Replace every occurrence"},
        },
        "required": ["path", "old_string", "new_string"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        msg = await trio.to_thread.run_sync(
            self._edit,
            ctx.root,
            args["path"],
            args["old_string"],
            args["new_string"],
            args.get("replace_all", False),
        )
        return ToolOutput(msg)

    @staticmethod
    def _edit(root: Path, path: str, old: str, new: str, replace_all: bool) -> str:
        if old == "":
            raise ToolError("old_string is empty; use the write tool to create a file")
        if old == new:
            raise ToolError("old_string and new_string are identical; nothing to change")
        parts = relative_parts(root, path)
        shown = shown_path(parts)
        with open_root(root) as root_fd:
            try:
                fd = open_regular(root_fd, parts, shown, os.O_RDWR)
            except NotFoundError:
                raise ToolError(f"file not found: {path}") from None
        with contextlib.closing(_Fd(fd)):
            try:
                text = _read_all(fd).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ToolError(f"{path} is not UTF-8 text; cannot edit") from exc
            count = text.count(old)
            if count == 0:
                raise ToolError(f"old_string not found in {path} (it must match exactly)")
            if count > 1 and not replace_all:
                raise ToolError(
                    f"old_string occurs {count} times in {path}; add surrounding context to "
                    "make it unique, or set replace_all to true"
                )
            _rewrite(fd, text.replace(old, new).encode("utf-8"))
        noun = "occurrence" if count == 1 else "occurrences"
        return f"Edited {shown}: replaced {count} {noun}"


class ListTool:
    name = "list"
    description = (
        "List a directory (default: the session directory). Directories end with '/'. "
        "Entries are sorted by name; .git is skipped."
    )
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Directory, relative to the session"},
        },
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        text = await trio.to_thread.run_sync(self._list, ctx.root, args.get("path", "."))
        return ToolOutput(text)

    @staticmethod
    def _list(root: Path, path: str) -> str:
        parts = relative_parts(root, path)
        shown = shown_path(parts)
        names = []
        with open_root(root) as root_fd:
            try:
                fd = open_dir(root_fd, parts, shown)
            except NotFoundError:
                raise ToolError(f"directory not found: {path}") from None
            except NotADirectory:
                raise ToolError(f"{path} is not a directory (use the read tool)") from None
            try:
                with os.scandir(fd) as it:
                    for entry in it:
                        if entry.name != ".git":
                            names.append(entry.name + _suffix(entry))
            finally:
                os.close(fd)
        names.sort()
        header = f"{shown}/"
        if not names:
            return f"{header}\n(empty directory)"
        shown = names[:MAX_LIST_ENTRIES]
        lines = [header, *(f"  {n}" for n in shown)]
        if len(names) > len(shown):
            lines.append(f"({len(names) - len(shown):,} more entries not shown)")
        return "\n".join(lines)


def _suffix(entry: os.DirEntry[str]) -> str:
    """'/' for a directory, '@' for a symlink (not followed), as `ls -F` marks them."""
    try:
        if entry.is_symlink():
            return "@"
        return "/" if entry.is_dir(follow_symlinks=False) else ""
    except OSError:
        return ""


class _Fd:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        os.close(self.fd)
