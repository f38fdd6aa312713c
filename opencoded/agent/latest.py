"""The latest event of a type in a session's log, remembered per daemon.

A turn's start, `GET /sessions/:id` and the undo routes need the latest `complete`,
`compaction`, `revert` and `unrevert` events. `Store.last_event` walks the session's log
backwards, which for a type the session never had means reading its whole log. One daemon
owns a data dir, and the code that appends these types tells this cache (`remember`), so
after one read per session and type the answer comes from memory. (Recovery appends
`complete` events at start-up, before anything is cached.)
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from ..daemon import Daemon
from ..records import Event

KEPT = 8192  # (session, type) pairs

_MISSING = object()
_CACHES: WeakKeyDictionary[Daemon, dict[tuple[str, str], Event | None]] = WeakKeyDictionary()


def _cache(daemon: Daemon) -> dict[tuple[str, str], Event | None]:
    cache = _CACHES.get(daemon)
    if cache is None:
        cache = _CACHES[daemon] = {}
    return cache


async def latest(daemon: Daemon, session_id: str, type: str) -> Event | None:
    cache = _cache(daemon)
    key = (session_id, type)
    found = cache.get(key, _MISSING)
    if found is _MISSING:
        found = await daemon.store.last_event(session_id, type)
        newer = cache.get(key, _MISSING)  # appended while we read: that one is newer
        if newer is not _MISSING:
            return newer  # type: ignore[return-value]
        _put(cache, key, found)  # type: ignore[arg-type]
    return found  # type: ignore[return-value]


def remember(daemon: Daemon, event: Event) -> None:
    """Call after appending an event of a cached type."""
    _put(_cache(daemon), (event.session_id, event.type), event)


def _put(
    cache: dict[tuple[str, str], Event | None], key: tuple[str, str], event: Event | None
) -> None:
    cache.pop(key, None)
    cache[key] = event
    while len(cache) > KEPT:
        cache.pop(next(iter(cache)))
