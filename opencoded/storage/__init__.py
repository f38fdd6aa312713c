"""Storage: the daemon's durable state behind one small interface (`Store`)."""

from .base import Store, StoreError
from .sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store", "StoreError"]
