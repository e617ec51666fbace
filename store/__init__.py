"""Persistence behind one small interface: SQLite (embedded default); Azure Tables in Azure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from store.base import AddResult, InventoryItem, LedgerEntry, StorageRefused, Store, StoreError
from store.sqlite import SqliteStore

if TYPE_CHECKING:
    from store.tables import TableStore

__all__ = ["AddResult", "InventoryItem", "LedgerEntry", "SqliteStore", "StorageRefused", "Store",
           "StoreError", "TableStore"]


def __getattr__(name: str) -> Any:
    # The Azure SDK takes ~150 ms to import; the command line never needs it.
    if name == "TableStore":
        from store.tables import TableStore

        return TableStore
    raise AttributeError(f"module 'store' has no attribute {name!r}")
