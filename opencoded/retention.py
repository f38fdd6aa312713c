"""Retention: sessions not updated for `retention.days` are removed, and the file shrinks.

A session's `updated` moves with every message, so "not updated for N days" means nobody
used it for N days. A session with a running turn is never removed, whatever its age.
Deleting rows only puts pages on SQLite's free list; `store.vacuum()` (incremental, the
database is created with auto_vacuum=INCREMENTAL) gives them back to the file system,
so disk use really goes down.
"""

from __future__ import annotations

import logging
import math

import trio

from .daemon import Daemon
from .records import now

log = logging.getLogger(__name__)

DAY = 86400


async def prune(daemon: Daemon, older_than_days: float) -> list[str]:
    """Remove idle sessions not updated for `older_than_days`; return their ids."""
    cutoff = now() - math.floor(older_than_days * DAY)
    stale = await daemon.store.stale_sessions(cutoff)
    # Each session is deleted under its lock, so none can start a turn meanwhile; one
    # running a turn is kept.
    deleted = await daemon.sessions.prune(stale, cutoff)
    if deleted:
        await daemon.store.vacuum()
        log.info(
            "retention: removed %d session(s) not updated for %g day(s)",
            len(deleted),
            older_than_days,
        )
    return deleted


async def run(daemon: Daemon) -> None:
    """The background task: prune every `retention.intervalHours` while `days` is set."""
    retention = daemon.config.retention
    if retention.days is None:
        return
    interval = retention.interval_hours * 3600
    # Several instances on one database: one pass per interval for the whole cluster.
    claim = getattr(daemon.store.backend, "claim_periodic", None)
    while True:
        try:
            if claim is None or await claim("retention", interval * 0.9):
                await prune(daemon, retention.days)
        except Exception:
            # A failed pass (disk full, locked file) must not take the daemon down;
            # the next pass tries again.
            log.exception("retention: pruning failed")
        await trio.sleep(interval)
