"""The search tools: glob (find files by name) and grep (find lines by regex).

Both walk the tree with directory fds (`os.fwalk`), never following a symlink, and skip
`.git`; they look only at regular files with one hard link (see paths.py for why), so a
symlink, a hard link to an outside file, a FIFO or a symlink loop is skipped, never searched
through or blocked on. grep prints `path:line: text` with paths relative to the session
directory.

grep does not use ripgrep: rg opens files by path while it walks (so a directory swapped for
a symlink mid-walk leads it outside) and reads hard-linked files; neither can be turned off.
"""

from __future__ import annotations

import io
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from opencoded.tools.base import ToolContext, ToolError, ToolOutput
from opencoded.tools.paths import (
    LinkRefused,
    NotFoundError,
    open_dir,
    open_inside,
    open_regular,
    open_root,
    relative_parts,
    shown_path,
)

MAX_GLOB_RESULTS = 1_000
MAX_GREP_MATCHES = 500
MATCH_CEILING = 5_000  # stop collecting here; enough to sort and to say "at least"
GREP_LINE_CHARS = 500
GREP_TIMEOUT = 60.0
BINARY_SNIFF_BYTES = 8_192
MAX_READ_LINE = 64 * 1024


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glob into a regex: `*`, `?`, `[...]`, `{a,b}`, and `**` across dirs."""
    out: list[str] = []
    i, depth = 0, 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
            continue
        if c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append({"*": "[^/]*", "?": "[^/]"}.get(c) or re.escape(c))
        i += 1
    if depth:
        raise ToolError(f"unbalanced '{{' in pattern {pattern!r}")
    try:
        return re.compile("".join(out) + r"\Z", re.DOTALL)
    except re.error as exc:
        raise ToolError(f"invalid glob pattern {pattern!r}: {exc}") from exc


class GlobMatcher:
    """Matches like ripgrep's --glob: without '/', the file name at any depth; with '/',
    the path relative to the search directory."""

    def __init__(self, pattern: str) -> None:
        pattern = pattern.strip()
        while pattern.startswith("./"):
            pattern = pattern[2:]
        if not pattern:
            raise ToolError("pattern is empty")
        if pattern.startswith("/") or ".." in pattern.split("/"):
            raise ToolError("pattern must be relative; put the directory in `path`")
        self.on_name = "/" not in pattern
        self.regex = glob_regex(pattern)

    def matches(self, rel: str) -> bool:
        subject = rel.rsplit("/", 1)[-1] if self.on_name else rel
        return self.regex.match(subject) is not None


def walk_files(root_fd: int, parts: list[str]) -> Iterator[tuple[int, str, str]]:
    """Yield (dir fd, name, path relative to the search base) of the files under `parts`.

    Only entries that are not directories are yielded (symlinks and special files too: the
    caller opens them with `open_regular`, which refuses them); the dir fd is only valid
    until the next item. Symlinked directories are never entered, so loops cannot happen.
    """
    base_fd = open_dir(root_fd, parts, shown_path(parts))
    try:
        for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=base_fd):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            prefix = "" if dirpath == "." else dirpath[2:] + "/"
            for name in sorted(filenames):
                yield dir_fd, name, prefix + name
    finally:
        os.close(base_fd)


def _regular_mtime(dir_fd: int, name: str) -> float | None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        return None
    return info.st_mtime


def _search_base(root: Path, path: str) -> tuple[list[str], bool]:
    """(parts, is_dir) of the directory or file to search, or a ToolError."""
    parts = relative_parts(root, path)
    with open_root(root) as root_fd:
        try:
            fd = open_inside(root_fd, parts, os.O_PATH, shown_path(parts))
        except NotFoundError:
            raise ToolError(f"path not found: {path}") from None
        try:
            mode = os.fstat(fd).st_mode
        finally:
            os.close(fd)
    if stat.S_ISLNK(mode):  # O_PATH|O_NOFOLLOW opens the link itself
        raise LinkRefused(f"{path} is a symbolic link, which is not followed")
    return parts, stat.S_ISDIR(mode)


class GlobTool:
    name = "glob"
    description = (
        "Find files by glob pattern (`*`, `?`, `[abc]`, `{a,b}`, `**` for any depth). A "
        "pattern without '/' matches file names at any depth (`*.py`); one with '/' matches "
        "the path under `path` (`src/**/*.ts`). Returns paths relative to the session "
        f"directory, newest first, at most {MAX_GLOB_RESULTS}."
    )
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "description": "Glob pattern"},
            "path": {"type": "string", "description": "Directory to search (default: all)"},
        },
        "required": ["pattern"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        text = await trio.to_thread.run_sync(
            self._glob, ctx.root, args["pattern"], args.get("path", ".")
        )
        return ToolOutput(text)

    @staticmethod
    def _glob(root: Path, pattern: str, path: str) -> str:
        matcher = GlobMatcher(pattern)
        parts, is_dir = _search_base(root, path)
        if not is_dir:
            raise ToolError(f"{path} is not a directory")
        prefix = "" if not parts else shown_path(parts) + "/"
        found: list[tuple[float, str]] = []
        with open_root(root) as root_fd:
            for dir_fd, name, rel in walk_files(root_fd, parts):
                if matcher.matches(rel) and (mtime := _regular_mtime(dir_fd, name)) is not None:
                    found.append((-mtime, prefix + rel))
        if not found:
            return "No files found."
        found.sort()
        lines = [rel for _, rel in found[:MAX_GLOB_RESULTS]]
        if len(found) > MAX_GLOB_RESULTS:
            lines.append(
                f"({len(found) - MAX_GLOB_RESULTS:,} more files not shown; narrow the pattern)"
            )
        return "\n".join(lines)


Match = tuple[str, int, str]


def _python_grep(
    root: Path, parts: list[str], is_dir: bool, regex: re.Pattern[str], include: str | None,
    deadline: float,
) -> list[Match]:  # fmt: skip
    """Gives up at `deadline` (time.monotonic), because a cancelled caller abandons this
    thread and it must not walk on for long."""
    matcher = GlobMatcher(include) if include else None
    matches: list[Match] = []
    with open_root(root) as root_fd:
        if not is_dir:
            fd = open_regular(root_fd, parts, shown_path(parts))
            _grep_fd(fd, shown_path(parts), regex, matches)
            return matches
        prefix = "" if not parts else shown_path(parts) + "/"
        for dir_fd, name, rel in walk_files(root_fd, parts):
            if time.monotonic() > deadline:
                raise ToolError(f"grep timed out after {GREP_TIMEOUT:.0f} s; narrow the search")
            if matcher and not matcher.matches(rel):
                continue
            try:
                fd = open_regular(dir_fd, [name], rel)
            except ToolError:
                continue  # a symlink, special or hard-linked file, or unreadable: skipped
            if not _grep_fd(fd, prefix + rel, regex, matches):
                break
    return matches


def _grep_fd(fd: int, shown: str, regex: re.Pattern[str], matches: list[Match]) -> bool:
    """Add the matches of one open file (closed here); False once MATCH_CEILING is hit.
    Lines are read at most MAX_READ_LINE characters at a time, so memory stays bounded."""
    with os.fdopen(fd, "rb") as raw:
        if b"\x00" in raw.peek(BINARY_SNIFF_BYTES)[:BINARY_SNIFF_BYTES]:
            return True
        f = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
        number = 1
        while chunk := f.readline(MAX_READ_LINE):
            if regex.search(chunk):
                matches.append((shown, number, chunk.rstrip("\r\n")))
                if len(matches) >= MATCH_CEILING:
                    return False
            if chunk.endswith("\n"):
                number += 1
    return True


class GrepTool:
    name = "grep"
    description = (
        "Search file contents with a regular expression. `path` is a directory or file "
        "(default: all); `include` is a glob on file names (`*.py`, `*.{ts,tsx}`). Prints "
        f"`path:line: text`, sorted by path, at most {MAX_GREP_MATCHES} matches."
    )
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "description": "Regular expression"},
            "path": {"type": "string", "description": "Directory or file to search"},
            "include": {"type": "string", "description": "Glob on file names"},
        },
        "required": ["pattern"],
        "additionalProperties": False,
    }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        pattern: str = args["pattern"]
        include: str | None = args.get("include")
        parts, is_dir = await trio.to_thread.run_sync(_search_base, ctx.root, args.get("path", "."))
        if include:
            GlobMatcher(include)
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"invalid regular expression {pattern!r}: {exc}") from exc
        with trio.move_on_after(GREP_TIMEOUT) as scope:
            matches = await trio.to_thread.run_sync(
                _python_grep,
                ctx.root,
                parts,
                is_dir,
                regex,
                include,
                time.monotonic() + GREP_TIMEOUT,
                abandon_on_cancel=True,
            )
        if scope.cancelled_caught:
            raise ToolError(f"grep timed out after {GREP_TIMEOUT:.0f} s; narrow the search")
        return ToolOutput(format_matches(matches))


def format_matches(matches: list[Match]) -> str:
    if not matches:
        return "No matches found."
    matches.sort(key=lambda m: (m[0], m[1]))
    lines = []
    for path, number, text in matches[:MAX_GREP_MATCHES]:
        if len(text) > GREP_LINE_CHARS:
            text = text[:GREP_LINE_CHARS] + " [line cut]"
        lines.append(f"{path}:{number}: {text}")
    total = len(matches)
    if total > MAX_GREP_MATCHES:
        more = "at least " if total >= MATCH_CEILING else ""
        lines.append(f"(showing {MAX_GREP_MATCHES} of {more}{total:,} matches; narrow the search)")
    return "\n".join(lines)
