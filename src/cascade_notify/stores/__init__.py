"""Stores: where cascades live. `open_store(url)` picks one by URL scheme."""

from __future__ import annotations

from cascade_notify.errors import StoreError
from cascade_notify.stores.base import Claim, ReceiptResult, Store, Transition
from cascade_notify.stores.memory import MemoryStore

SCHEMES = ("memory://",)


def open_store(url: str) -> Store:
    """The store a `store:` URL names (not yet opened)."""
    if url in ("memory://", "memory"):
        return MemoryStore()
    raise StoreError(f"unsupported store URL {url!r}; supported: {', '.join(SCHEMES)}")


__all__ = ["Claim", "MemoryStore", "ReceiptResult", "Store", "Transition", "open_store"]
