"""Storage: the daemon's durable state behind one small interface.

`Store` (storage.store) is what the daemon uses: group commit, backpressure and event
publication, over a `Backend` (storage.base) that only reads and applies writes.
"""

from .base import Backend, StoreConflict, StoreError
from .sqlite import SQLiteBackend, SQLiteStore
from .store import Store, open_store

__all__ = [
    "Backend",
    "SQLiteBackend",
    "SQLiteStore",
    "Store",
    "StoreConflict",
    "StoreError",
    "open_store",
]
