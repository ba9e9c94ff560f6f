"""What the guards of all workers on one PostgreSQL database share (`SharedState`):
numbers (rate-limit slots, brake counts) and versioned texts (breaker states)."""

from __future__ import annotations

from cascade_notify.stores.postgres.rows import Conn

_BUMP = """
    INSERT INTO shared_numbers (key, value, expires_ts)
    VALUES (%(key)s, %(floor)s + %(add)s, %(expires)s)
    ON CONFLICT (key) DO UPDATE SET
        value = greatest(
            CASE WHEN shared_numbers.expires_ts > %(now)s THEN shared_numbers.value
                 ELSE %(floor)s END,
            %(floor)s) + %(add)s,
        expires_ts = %(expires)s
    RETURNING value
"""
# an expired text reads as absent, so any writer may take it over (the version goes on)
_CREATE_TEXT = """
    INSERT INTO shared_texts (key, version, text, expires_ts)
    VALUES (%(key)s, 1, %(text)s, %(expires)s)
    ON CONFLICT (key) DO UPDATE SET
        version = shared_texts.version + 1, text = excluded.text, expires_ts = excluded.expires_ts
    WHERE shared_texts.expires_ts <= %(now)s
    RETURNING version
"""
_REPLACE_TEXT = """
    UPDATE shared_texts SET version = version + 1, text = %(text)s, expires_ts = %(expires)s
    WHERE key = %(key)s AND (version = %(version)s OR expires_ts <= %(now)s)
    RETURNING version
"""
SWEEP = "DELETE FROM shared_numbers WHERE expires_ts <= %(now)s"


async def sweep(conn: Conn, now: float) -> None:
    """Forget the numbers whose time is up."""
    await conn.execute(SWEEP, {"now": now})


async def bump(conn: Conn, key: str, add: float, floor: float, now: float, ttl: float) -> float:
    params = {"key": key, "add": add, "floor": floor, "now": now, "expires": now + ttl}
    row = await (await conn.execute(_BUMP, params)).fetchone()
    assert row is not None
    return float(row[0])


async def get(conn: Conn, prefix: str, now: float) -> dict[str, tuple[int, str]]:
    cur = await conn.execute(
        "SELECT key, version, text FROM shared_texts "
        "WHERE starts_with(key, %s) AND expires_ts > %s",
        (prefix, now),
    )
    return {row[0]: (int(row[1]), row[2]) for row in await cur.fetchall()}


async def put(conn: Conn, key: str, value: str, version: int, now: float, ttl: float) -> int | None:
    params = {"key": key, "text": value, "version": version, "now": now, "expires": now + ttl}
    query = _CREATE_TEXT if version == 0 else _REPLACE_TEXT
    row = await (await conn.execute(query, params)).fetchone()
    return None if row is None else int(row[0])
