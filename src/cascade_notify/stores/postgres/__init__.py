"""`store: postgresql://…`: many workers on many hosts (`store.py`), with its numbered
migrations (`schema.py`), the SQL of each call (`calls.py`), row decoding and upserts
(`rows.py`) and the grouping of concurrent calls into shared transactions (`group.py`)."""

from cascade_notify.stores.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
