"""What the guards of every process on one SQLite file share (`SharedState`): numbers
(rate-limit slots, brake counts) and versioned texts (breaker states).

Each function runs inside the writer's transaction, which holds the file's write lock
across processes (`lock.py`), so a read and the write after it are one atomic step on
the key; no `RETURNING` is needed, which keeps SQLite 3.24 enough."""

from __future__ import annotations

import sqlite3


def sweep(conn: sqlite3.Connection, now: float) -> None:
    """Forget the numbers whose time is up. Texts stay (one per provider): their version
    goes on counting when one expired is written again."""
    conn.execute("DELETE FROM shared_numbers WHERE expires_ts <= ?", (now,))


def bump(
    conn: sqlite3.Connection, key: str, add: float, floor: float, now: float, ttl: float
) -> float:
    row = conn.execute(
        "SELECT value FROM shared_numbers WHERE key = ? AND expires_ts > ?", (key, now)
    ).fetchone()
    value = max(float(row[0]) if row is not None else floor, floor) + add
    conn.execute(
        "INSERT INTO shared_numbers (key, value, expires_ts) VALUES (?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_ts = excluded.expires_ts",
        (key, value, now + ttl),
    )
    return value


def get(conn: sqlite3.Connection, prefix: str, now: float) -> dict[str, tuple[int, str]]:
    rows = conn.execute(
        "SELECT key, version, text FROM shared_texts "
        "WHERE substr(key, 1, length(?)) = ? AND expires_ts > ?",
        (prefix, prefix, now),
    ).fetchall()
    return {key: (int(version), text) for key, version, text in rows}


def put(
    conn: sqlite3.Connection, key: str, value: str, version: int, now: float, ttl: float
) -> int | None:
    row = conn.execute(
        "SELECT version, expires_ts FROM shared_texts WHERE key = ?", (key,)
    ).fetchone()
    current = int(row[0]) if row is not None else 0
    # an expired text reads as absent, so any writer may take it over (the version goes on)
    if current != version and not (row is not None and row[1] <= now):
        return None
    conn.execute(
        "INSERT INTO shared_texts (key, version, text, expires_ts) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET version = excluded.version, text = excluded.text, "
        "expires_ts = excluded.expires_ts",
        (key, current + 1, value, now + ttl),
    )
    return current + 1
