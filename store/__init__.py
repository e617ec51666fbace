"""Persistence behind one small interface: SQLite (embedded default); Azure Tables in Azure."""

from store.base import AddResult, InventoryItem, LedgerEntry, Store, StoreError
from store.sqlite import SqliteStore

__all__ = ["AddResult", "InventoryItem", "LedgerEntry", "SqliteStore", "Store", "StoreError"]
