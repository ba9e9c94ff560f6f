"""The PostgreSQL store's read-only views (`deliveries`, `stats`)."""

from __future__ import annotations

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
from cascade_notify.stores.postgres.rows import Conn


async def list_deliveries(
    conn: Conn, query: DeliveryQuery, after: tuple[float, str] | None, limit: int
) -> DeliveryPage:
    sql, params = q.list_sql(query, after, limit, q.POSTGRES)
    cur = await conn.execute(sql, params)
    return q.page_from_rows(await cur.fetchall(), limit)


async def unfinished(conn: Conn) -> dict[str, int]:
    cur = await conn.execute(q.UNFINISHED_SQL)
    return q.unfinished_from_rows(await cur.fetchall())


async def stats(conn: Conn, since: float, until: float, by: Sequence[Dimension]) -> Stats:
    window = (since, until)
    rows = Rows()
    # one snapshot for the four queries, read-only
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # compiling these plans (JIT) takes longer than running them
        await conn.execute("SET LOCAL jit = off")
        cur = await conn.execute(q.attempts_sql(by, q.POSTGRES), window)
        q.add_attempts(rows, by, await cur.fetchall())
        skipped = q.skipped_sql(by, q.POSTGRES)
        if skipped is not None:
            cur = await conn.execute(skipped, window)
            q.add_skipped(rows, by, await cur.fetchall())
        cur = await conn.execute(q.won_sql(by, q.POSTGRES), window)
        q.add_won(rows, by, await cur.fetchall(), q.POSTGRES)
        cur = await conn.execute(q.outcomes_sql(q.POSTGRES), window)
        outcomes = {str(s): int(n) for s, n in await cur.fetchall()}
    return Stats(
        since=since,
        until=until,
        by=tuple(by),
        deliveries=sum(outcomes.values()),
        outcomes=outcomes,
        rows=rows.build(),
    )


async def failures(conn: Conn, since: float, until: float) -> list[FailureRow]:
    cur = await conn.execute(q.failures_sql(q.POSTGRES), (since, until))
    return q.failures_from_rows(await cur.fetchall())
