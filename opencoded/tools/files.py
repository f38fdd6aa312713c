"""The file tools: read, write, edit, list.

Each does all of its disk work, path resolution included, in one worker-thread call, so the
Trio thread never waits on the filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from opencoded.tools.base import ToolContext, ToolError, ToolOutput
from opencoded.tools.output import MAX_CHARS
from opencoded.tools.paths import relative_to_root, resolve_inside

DEFAULT_READ_LIMIT = 2_000
MAX_LINE_CHARS = 2_000
MAX_LIST_ENTRIES = 1_000
BINARY_SNIFF_BYTES = 8_192


def _existing_file(root: Path, path: str) -> Path:
    target = resolve_inside(root, path)
    if not target.exists():
        raise ToolError(f"file not found: {path}")
    if target.is_dir():
        raise ToolError(f"{path} is a directory (use the list tool)")
    if not target.is_file():
        raise ToolError(f"{path} is not a regular file")
    return target


def _looks_binary(target: Path) -> bool:
    with target.open("rb") as f:
        return b"\x00" in f.read(BINARY_SNIFF_BYTES)


def _write_text(target: Path, content: str) -> None:
    """Write without following a final symlink planted after `resolve_inside` checked it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    mode = target.stat().st_mode & 0o7777 if target.exists() else 0o666
    fd = os.open(target, flags, mode)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(content)


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
        target = _existing_file(root, path)
        if _looks_binary(target):
            raise ToolError(f"{path} looks like a binary file; not shown")
        out: list[str] = []
        total = size = 0
        budget = MAX_CHARS - 200  # stop early on wide lines, and say where to resume
        with target.open(encoding="utf-8", errors="replace", newline=None) as f:
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
        target = resolve_inside(root, path)
        if target.is_dir():
            raise ToolError(f"{path} is a directory")
        existed = target.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_text(target, content)
        verb = "Overwrote" if existed else "Created"
        size = len(content.encode("utf-8"))
        return f"{verb} {relative_to_root(root, target)} ({size:,} bytes)"


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
        target = _existing_file(root, path)
        with target.open(encoding="utf-8", newline="") as f:
            try:
                text = f.read()
            except UnicodeDecodeError as exc:
                raise ToolError(f"{path} is not UTF-8 text; cannot edit") from exc
        count = text.count(old)
        if count == 0:
            raise ToolError(f"old_string not found in {path} (it must match exactly)")
        if count > 1 and not replace_all:
            raise ToolError(
                f"old_string occurs {count} times in {path}; add surrounding context to make "
                "it unique, or set replace_all to true"
            )
        _write_text(target, text.replace(old, new))
        noun = "occurrence" if count == 1 else "occurrences"
        return f"Edited {relative_to_root(root, target)}: replaced {count} {noun}"


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
        target = resolve_inside(root, path)
        if not target.exists():
            raise ToolError(f"directory not found: {path}")
        if not target.is_dir():
            raise ToolError(f"{path} is not a directory (use the read tool)")
        names = []
        with os.scandir(target) as it:
            for entry in it:
                if entry.name == ".git":
                    continue
                names.append(entry.name + "/" if entry.is_dir() else entry.name)
        names.sort()
        header = f"{relative_to_root(root, target)}/"
        if not names:
            return f"{header}\n(empty directory)"
        shown = names[:MAX_LIST_ENTRIES]
        lines = [header, *(f"  {n}" for n in shown)]
        if len(names) > len(shown):
            lines.append(f"({len(names) - len(shown):,} more entries not shown)")
        return "\n".join(lines)
