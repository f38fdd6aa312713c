"""The latest event of a type in a session's log, remembered per daemon.

A turn's start, `GET /sessions/:id` and the undo routes need the latest `complete`,
`compaction`, `revert` and `unrevert` events. `Store.last_event` walks the session's log
backwards, which for a type the session never had means reading its whole log. One daemon
owns a data dir, and the code that appends these types tells this cache (`remember`), so
after one read per session and type the answer comes from memory. (Recovery appends
`complete` events at start-up, before anything is cached.) Several instances on one
database: another instance's events make this one `forget` the session.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from ..daemon import Daemon
from ..records import Event

KEPT = 2048  # sessions

_MISSING = object()
_EMPTY = "*"  # a key no event type has: the log had no events when it was put
Cache = dict[str, dict[str, "Event | None"]]  # session id -> type -> its latest event
_CACHES: WeakKeyDictionary[Daemon, Cache] = WeakKeyDictionary()
# How many times `forget` ran: a read that a forget overtook is not cached (it may be
# older than what the other instance appended meanwhile).
_FORGETS: WeakKeyDictionary[Daemon, int] = WeakKeyDictionary()


def _cache(daemon: Daemon) -> Cache:
    cache = _CACHES.get(daemon)
    if cache is None:
        cache = _CACHES[daemon] = {}
    return cache


async def latest(daemon: Daemon, session_id: str, type: str) -> Event | None:
    cache = _cache(daemon)
    types = cache.get(session_id, {})
    found = types.get(type, None if _EMPTY in types else _MISSING)
    if found is _MISSING:
        forgets = _FORGETS.get(daemon, 0)
        found = await daemon.store.last_event(session_id, type)
        newer = cache.get(session_id, {}).get(type, _MISSING)  # appended while we read
        if newer is not _MISSING:
            return newer  # type: ignore[return-value]
        if _FORGETS.get(daemon, 0) == forgets:
            _put(cache, session_id, type, found)  # type: ignore[arg-type]
    return found  # type: ignore[return-value]


def remember(daemon: Daemon, event: Event) -> None:
    """Call after appending an event of a cached type."""
    _put(_cache(daemon), event.session_id, event.type, event)


def empty_log(daemon: Daemon, session_id: str) -> None:
    """The session has no events yet: no type has a latest one until remembered."""
    _put(_cache(daemon), session_id, _EMPTY, None)


def forget(daemon: Daemon, session_id: str | None) -> None:
    """Another instance appended to the session's log (None: to any session's)."""
    _FORGETS[daemon] = _FORGETS.get(daemon, 0) + 1
    cache = _cache(daemon)
    if session_id is None:
        cache.clear()
    else:
        cache.pop(session_id, None)


def _put(cache: Cache, session_id: str, type: str, event: Event | None) -> None:
    types = cache.pop(session_id, None) or {}
    types[type] = event
    cache[session_id] = types  # most recently used last
    while len(cache) > KEPT:
        cache.pop(next(iter(cache)))
