"""The SQLite store's read-only views (`deliveries`, `stats`), on a connection of their
own: they read a snapshot (WAL) and never hold the write lock."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from cascade_notify.observe.compute import Rows
from cascade_notify.observe.types import (
    DeliveryPage,
    DeliveryQuery,
    Dimension,
    FailureRow,
    Stats,
)
from cascade_notify.stores import _observe as q


def list_deliveries(
    conn: sqlite3.Connection,
    query: DeliveryQuery,
    after: tuple[float, str] | None,
    limit: int,
) -> DeliveryPage:
    sql, params = q.list_sql(query, after, limit, q.SQLITE)
    return q.page_from_rows(conn.execute(sql, params).fetchall(), limit)


def unfinished(conn: sqlite3.Connection) -> dict[str, int]:
    return q.unfinished_from_rows(conn.execute(q.UNFINISHED_SQL).fetchall())


def stats(conn: sqlite3.Connection, since: float, until: float, by: Sequence[Dimension]) -> Stats:
    window = (since, until)
    rows = Rows()
    q.add_attempts(rows, by, conn.execute(q.attempts_sql(by, q.SQLITE), window))
    skipped = q.skipped_sql(by, q.SQLITE)
    if skipped is not None:
        q.add_skipped(rows, by, conn.execute(skipped, window))
    q.add_won(rows, by, conn.execute(q.won_sql(by, q.SQLITE), window), q.SQLITE)
    outcomes = {str(s): int(n) for s, n in conn.execute(q.outcomes_sql(q.SQLITE), window)}
    return Stats(
        since=since,
        until=until,
        by=tuple(by),
        deliveries=sum(outcomes.values()),
        outcomes=outcomes,
        rows=rows.build(),
    )


def failures(conn: sqlite3.Connection, since: float, until: float) -> list[FailureRow]:
    return q.failures_from_rows(conn.execute(q.failures_sql(q.SQLITE), (since, until)))
