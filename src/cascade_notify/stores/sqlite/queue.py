"""The SQLite store's call queue (`CallQueue`): functions of the connection, run by the
writer inside its transaction. The rules are `stores._calls`."""

from __future__ import annotations

import sqlite3

from cascade_notify.models import CallStatus, QueuedCall
from cascade_notify.stores import _calls

_C = ", ".join(_calls.COLUMNS)
_SELECT = f"SELECT {_C} FROM calls"  # noqa: S608  (column names are ours)
_PUT = (
    f"INSERT INTO calls ({_C}) VALUES ({', '.join('?' * len(_calls.COLUMNS))}) "  # noqa: S608
    "ON CONFLICT (task_id) DO NOTHING"
)
_WRITE = (
    "UPDATE calls SET status = ?, operator = ?, claimed_ts = ?, finished_ts = ?, note = ? "
    "WHERE task_id = ?"
)


def put(conn: sqlite3.Connection, *, call: QueuedCall) -> bool:
    return conn.execute(_PUT, _calls.values(call)).rowcount == 1


def listed(conn: sqlite3.Connection, *, states: list[str] | None, limit: int) -> list[QueuedCall]:
    if states is None:
        rows = conn.execute(f"{_SELECT} ORDER BY due_by, created_ts, task_id LIMIT ?", (limit,))
    else:
        marks = ", ".join("?" * len(states))
        rows = conn.execute(
            f"{_SELECT} WHERE status IN ({marks}) ORDER BY due_by, created_ts, task_id LIMIT ?",
            (*states, limit),
        )
    return [_calls.from_row(row) for row in rows]


def one(conn: sqlite3.Connection, *, task_id: str) -> QueuedCall | None:
    row = conn.execute(f"{_SELECT} WHERE task_id = ?", (task_id,)).fetchone()
    return None if row is None else _calls.from_row(row)


def _write(conn: sqlite3.Connection, call: QueuedCall) -> None:
    conn.execute(
        _WRITE,
        (call.status.value, call.operator, call.claimed_ts, call.finished_ts, call.note,
         call.task_id),
    )  # fmt: skip


def claim(
    conn: sqlite3.Connection, *, operator: str, now: float, task_id: str | None
) -> QueuedCall | None:
    if task_id is not None:
        row = conn.execute(f"{_SELECT} WHERE task_id = ?", (task_id,)).fetchone()
    else:
        row = conn.execute(
            f"{_SELECT} WHERE status = 'open' AND not_before <= ? "
            "ORDER BY due_by, created_ts, task_id LIMIT 1",
            (now,),
        ).fetchone()
    if row is None:
        return None
    taken = _calls.claimed(_calls.from_row(row), operator, now, named=task_id is not None)
    if taken is not None:
        _write(conn, taken)
    return taken


def close(
    conn: sqlite3.Connection, *, task_id: str, status: CallStatus, now: float, note: str | None
) -> tuple[QueuedCall | None, bool]:
    row = conn.execute(f"{_SELECT} WHERE task_id = ?", (task_id,)).fetchone()
    if row is None:
        return None, False
    call = _calls.from_row(row)
    after = _calls.closed(call, status, now, note)
    if after is None:
        return call, False
    _write(conn, after)
    return after, True
