"""Finding a test's processes from the host, by a unique marker in their command line.

Commands in the sandbox have their own pid namespace, so a pid they print (`$!`) is not a
host pid; a marker (`sleep 600.4711`) finds them from outside whatever the namespace.
"""

from __future__ import annotations

import os
import secrets

import trio


def new_marker() -> str:
    """A sleep duration unique to one test: `sleep <marker>` is findable in /proc."""
    return f"600.{secrets.randbelow(10**6):06d}1"


def marked(marker: str) -> list[int]:
    """Host pids of live (not zombie) processes whose argv contains `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in argv and state not in ("Z", "X"):
            found.append(int(name))
    return found


async def await_marked(marker: str, count: int, timeout: float = 10.0) -> list[int]:
    """Poll until exactly `count` marked processes are alive (0: all gone); fail after."""
    with trio.move_on_after(timeout):
        while len(pids := marked(marker)) != count:
            await trio.sleep(0.02)
        return pids
    raise AssertionError(f"expected {count} processes marked {marker}, found {marked(marker)}")
