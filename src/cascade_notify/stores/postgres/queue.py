"""The PostgreSQL store's call queue (`CallQueue`): each call one transaction on one
pooled connection. The rules are `stores._calls`; a row is locked (`FOR UPDATE`) while
they decide, and the next open call is taken with `SKIP LOCKED`, so two operators
claiming at once get two different calls."""

from __future__ import annotations

from cascade_notify.models import CallStatus, QueuedCall
from cascade_notify.stores import _calls
from cascade_notify.stores.postgres.rows import Conn

_C = ", ".join(_calls.COLUMNS)
_SELECT = f"SELECT {_C} FROM calls"  # noqa: S608  (column names are ours)
_MARKS = ", ".join("%s::jsonb" if c == "task" else "%s" for c in _calls.COLUMNS)
_PUT = f"INSERT INTO calls ({_C}) VALUES ({_MARKS}) ON CONFLICT (task_id) DO NOTHING"  # noqa: S608
_WRITE = (
    "UPDATE calls SET status = %s, operator = %s, claimed_ts = %s, finished_ts = %s, note = %s "
    "WHERE task_id = %s"
)
_ORDER = "ORDER BY due_by, created_ts, task_id"


async def put(conn: Conn, call: QueuedCall) -> bool:
    cur = await conn.execute(_PUT, _calls.values(call))
    return cur.rowcount == 1


async def listed(conn: Conn, states: list[str] | None, limit: int) -> list[QueuedCall]:
    if states is None:
        cur = await conn.execute(f"{_SELECT} {_ORDER} LIMIT %s", (limit,))
    else:
        cur = await conn.execute(
            f"{_SELECT} WHERE status = ANY (%s) {_ORDER} LIMIT %s", (states, limit)
        )
    return [_calls.from_row(row) for row in await cur.fetchall()]


async def one(conn: Conn, task_id: str) -> QueuedCall | None:
    cur = await conn.execute(f"{_SELECT} WHERE task_id = %s", (task_id,))
    row = await cur.fetchone()
    return None if row is None else _calls.from_row(row)


async def _write(conn: Conn, call: QueuedCall) -> None:
    await conn.execute(
        _WRITE,
        (call.status.value, call.operator, call.claimed_ts, call.finished_ts, call.note,
         call.task_id),
    )  # fmt: skip


async def claim(conn: Conn, operator: str, now: float, task_id: str | None) -> QueuedCall | None:
    async with conn.transaction():
        if task_id is not None:
            cur = await conn.execute(f"{_SELECT} WHERE task_id = %s FOR UPDATE", (task_id,))
        else:
            cur = await conn.execute(
                f"{_SELECT} WHERE status = 'open' AND not_before <= %s {_ORDER} "
                "LIMIT 1 FOR UPDATE SKIP LOCKED",
                (now,),
            )
        row = await cur.fetchone()
        if row is None:
            return None
        taken = _calls.claimed(_calls.from_row(row), operator, now, named=task_id is not None)
        if taken is not None:
            await _write(conn, taken)
        return taken


async def close(
    conn: Conn, task_id: str, status: CallStatus, now: float, note: str | None
) -> tuple[QueuedCall | None, bool]:
    async with conn.transaction():
        cur = await conn.execute(f"{_SELECT} WHERE task_id = %s FOR UPDATE", (task_id,))
        row = await cur.fetchone()
        if row is None:
            return None, False
        call = _calls.from_row(row)
        after = _calls.closed(call, status, now, note)
        if after is None:
            return call, False
        await _write(conn, after)
        return after, True
