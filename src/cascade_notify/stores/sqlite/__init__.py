"""`store: sqlite:///path`: the embedded default store (`store.py`), its numbered
migrations (`schema.py`) and the writer that groups commits (`writer.py`)."""

from cascade_notify.stores.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
