"""The search tools: glob (find files by name) and grep (find lines by regex).

Both walk the tree without following symlinked directories and skip `.git`, so a link that
points outside the session directory is never searched through. `grep` uses ripgrep when it
is on PATH (fast, honours .gitignore) and a pure-Python walk otherwise; both print
`path:line: text` with paths relative to the session directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from opencoded.tools.base import ToolContext, ToolError, ToolOutput
from opencoded.tools.paths import relative_to_root, resolve_inside

MAX_GLOB_RESULTS = 1_000
MAX_GREP_MATCHES = 500
MATCH_CEILING = 5_000  # stop collecting here; enough to sort and to say "at least"
GREP_LINE_CHARS = 500
GREP_TIMEOUT = 60.0
BINARY_SNIFF_BYTES = 8_192


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


def walk_files(root: Path, base: Path) -> Iterator[tuple[Path, str]]:
    """Yield (file, path relative to base) under `base`, in sorted order.

    Symlinked directories are not entered; a symlinked file is yielded only when its
    target is inside `root`.
    """
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(real_root) or not target.is_file():
                    continue
            yield path, path.relative_to(base).as_posix()


def _search_base(root: Path, path: str) -> Path:
    base = resolve_inside(root, path)
    if not base.exists():
        raise ToolError(f"path not found: {path}")
    return base


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
        base = _search_base(root, path)
        if not base.is_dir():
            raise ToolError(f"{path} is not a directory")
        found: list[tuple[float, str]] = []
        for file, rel in walk_files(root, base):
            if matcher.matches(rel):
                try:
                    mtime = file.stat().st_mtime
                except OSError:
                    continue
                found.append((-mtime, relative_to_root(root, file.resolve())))
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
    root: Path, base: Path, regex: re.Pattern[str], include: str | None, deadline: float
) -> list[Match]:
    """The grep engine when ripgrep is absent. Gives up at `deadline` (time.monotonic),
    because a cancelled caller abandons this thread and it must not walk on for long."""
    matcher = GlobMatcher(include) if include else None
    if base.is_file():
        files: Iterator[tuple[Path, str]] = iter([(base, base.name)])
    else:
        files = walk_files(root, base)
    matches: list[Match] = []
    for file, rel in files:
        if time.monotonic() > deadline:
            raise ToolError(f"grep timed out after {GREP_TIMEOUT:.0f} s; narrow the search")
        if matcher and not matcher.matches(rel):
            continue
        try:
            with file.open("rb") as fb:
                if b"\x00" in fb.read(BINARY_SNIFF_BYTES):
                    continue
            with file.open(encoding="utf-8", errors="replace") as f:
                shown = relative_to_root(root, file.resolve())
                for number, line in enumerate(f, start=1):
                    if regex.search(line):
                        matches.append((shown, number, line.rstrip("\r\n")))
                        if len(matches) >= MATCH_CEILING:
                            return matches
        except OSError:
            continue  # unreadable file: skip it, as rg does
    return matches


async def _rg_grep(
    rg: str, root: Path, base: Path, pattern: str, include: str | None
) -> list[Match]:
    cmd = [rg, "--no-config", "--null", "--line-number", "--no-heading", "--with-filename"]
    cmd += ["--color", "never", "--hidden", "--glob", "!.git", "--no-messages"]
    cmd += ["--max-columns", str(GREP_LINE_CHARS), "--max-columns-preview"]
    if include:
        cmd += ["--glob", include]
    cmd += ["--regexp", pattern]
    rel = relative_to_root(root, base)
    if rel != ".":
        cmd += ["--", rel]
    proc = await trio.run_process(
        cmd, cwd=root, capture_stdout=True, capture_stderr=True, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode == 2 and not proc.stdout:
        err = proc.stderr.decode(errors="replace").strip()
        if "regex parse error" in err:
            raise ToolError(f"invalid regular expression {pattern!r}: {err}")
        raise ToolError(f"grep failed: {err}")
    matches: list[Match] = []
    for raw in proc.stdout.decode("utf-8", errors="replace").splitlines():
        path, _, rest = raw.partition("\x00")
        number, _, text = rest.partition(":")
        if number.isdigit():
            matches.append((path, int(number), text))
    return matches


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
        base = await trio.to_thread.run_sync(_search_base, ctx.root, args.get("path", "."))
        if include:
            GlobMatcher(include)  # same validation whichever engine runs
        rg = shutil.which("rg")
        with trio.move_on_after(GREP_TIMEOUT) as scope:
            if rg:
                matches = await _rg_grep(rg, ctx.root, base, pattern, include)
            else:
                try:
                    regex = re.compile(pattern)
                except re.error as exc:
                    raise ToolError(f"invalid regular expression {pattern!r}: {exc}") from exc
                matches = await trio.to_thread.run_sync(
                    _python_grep,
                    ctx.root,
                    base,
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
