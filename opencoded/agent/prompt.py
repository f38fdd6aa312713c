"""The system prompt: where the agent works, what it may use, and the project's own rules.

Built once per turn (the date can change between turns) and kept byte-identical across the
steps of a turn, so the provider's prompt cache keeps hitting. What does not change between
turns is cached: the tool list and platform once, each AGENTS.md by its stat, so a
turn costs an open and fstat per file instead of a read (in a worker thread).
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import stat
from pathlib import Path

from ..tools import tool_specs

AGENTS_FILE = "AGENTS.md"
AGENTS_MAX_CHARS = 64 * 1024

INTRO = """\
You are opencode, a coding agent working on the user's machine through tools.
Work in small, verifiable steps: read before you edit, keep edits minimal, and run the
project's own commands (tests, linters) with bash to check your work when that makes sense.
Paths are relative to the working directory (absolute paths must stay inside it).
When you are done, answer briefly with what you changed and anything left to do."""


@functools.cache
def _platform() -> str:
    return f"{platform.system()} {platform.release()} ({platform.machine()})"


@functools.cache
def _tool_list() -> str:
    return "\n".join(f"- {name}: {desc.splitlines()[0]}" for name, desc, _ in tool_specs())


# path -> ((mtime, ctime, size, inode), text): AGENTS.md as last read
_agents_cache: dict[Path, tuple[tuple[int, ...], str | None]] = {}
_AGENTS_CACHE_MAX = 256


def read_agents_file(root: Path) -> str | None:
    """The project's AGENTS.md, capped; None when there is none or it cannot be read.

    Blocking (run it in a worker thread). Only a regular file is read, opened without
    following a symlink and without blocking (a FIFO named AGENTS.md must not hang the
    turn); it is read again only when its stat changed since the last read.
    """
    path = root / AGENTS_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        _agents_cache.pop(path, None)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        key = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        cached = _agents_cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        text = _read_agents_file(fd)
    finally:
        os.close(fd)
    if len(_agents_cache) >= _AGENTS_CACHE_MAX:
        _agents_cache.clear()
    _agents_cache[path] = (key, text)
    return text


def _read_agents_file(fd: int) -> str | None:
    chunks, left = [], AGENTS_MAX_CHARS * 4 + 1  # enough bytes for the character cap
    try:
        while left > 0 and (chunk := os.read(fd, min(left, 65536))):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError:
        return None
    text = b"".join(chunks).decode(errors="replace")
    if len(text) > AGENTS_MAX_CHARS:
        text = text[:AGENTS_MAX_CHARS] + f"\n[{AGENTS_FILE} cut at {AGENTS_MAX_CHARS} characters]"
    return text.strip() or None


def system_prompt(directory: Path, project_root: Path, today: datetime.date | None = None) -> str:
    today = today or datetime.date.today()
    tools = _tool_list()
    parts = [
        INTRO,
        "<env>\n"
        f"Working directory: {directory}\n"
        f"Platform: {_platform()}\n"
        f"Date: {today.isoformat()}\n"
        "</env>",
        f"Tools you can call:\n{tools}",
    ]
    for root in dict.fromkeys([project_root, directory]):
        agents = read_agents_file(root)
        if agents:
            parts.append(
                f"Instructions from {root / AGENTS_FILE} (the project's rules; follow them):\n"
                f"{agents}"
            )
    return "\n\n".join(parts)
