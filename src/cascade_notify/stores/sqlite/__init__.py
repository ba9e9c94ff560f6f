"""`store: sqlite:///path`: the embedded default store (`store.py`), the work of each
call (`calls.py`), its numbered migrations (`schema.py`), the writer that groups commits
(`writer.py`), the lock the processes on one file take turns on (`lock.py`), the watch
that tells workers of other processes' sends (`watch.py`) and the address book
(`addresses.py`)."""

from cascade_notify.stores.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
