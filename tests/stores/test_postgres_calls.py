"""The PostgreSQL store's one-round-trip calls: the server-side receipt rule matches the
Python one, concurrent commits share a transaction yet stay fenced one by one, and a
batch of receipts is recorded in one go."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from cascade_notify import Message
from cascade_notify.errors import LeaseLost, StoreError
from cascade_notify.models import AttemptStatus, ReceiptStatus, status_after
from cascade_notify.stores.base import Transition
from cascade_notify.stores.postgres import PostgresStore

from .conftest import LEASE, NOW, attempt, delivery, receipt


@pytest.fixture
async def pg(pg_dsn: str, pg_schema: str):  # type: ignore[no-untyped-def]
    store = PostgresStore(pg_dsn, schema=pg_schema)
    await store.open()
    yield store
    await store.close()


async def test_status_after_in_sql_matches_python(pg: PostgresStore) -> None:
    """`cn_status_after` is `models.status_after`, for every status and receipt."""
    pairs = list(itertools.product(AttemptStatus, ReceiptStatus))
    assert pg._pool is not None
    async with pg._pool.connection() as conn:
        for status, heard in pairs:
            cur = await conn.execute(
                "SELECT pg_temp.cn_status_after(%s, %s)", (status.value, heard.value)
            )
            row = await cur.fetchone()
            assert row is not None
            assert row[0] == status_after(status, heard).value, (status, heard)


async def test_grouped_commits_are_fenced_one_by_one(pg: PostgresStore) -> None:
    """Many commits at once: each lands, except the one whose lease was taken over."""
    for _ in range(20):
        await pg.create(delivery())
    claims = await pg.claim(NOW, limit=20, lease=LEASE)
    [retaken] = await pg.claim(NOW + LEASE, limit=1, lease=LEASE)
    stale = next(c for c in claims if c.delivery.id == retaken.delivery.id)
    written = [attempt(c.delivery, status=AttemptStatus.SENDING) for c in claims]
    results = await asyncio.gather(
        *(
            pg.commit(c, Transition(attempts=[a], wake_ts=NOW, release=False))
            for c, a in zip(claims, written, strict=True)
        ),
        return_exceptions=True,
    )
    for claim, result in zip(claims, results, strict=True):
        stored = await pg.get(claim.delivery.id)
        assert stored is not None
        if claim is stale:
            assert isinstance(result, LeaseLost)
            assert stored.attempts == []
        else:
            assert result is None
            assert [a.status for a in stored.attempts] == [AttemptStatus.SENDING]


async def test_a_batch_of_receipts_in_one_call(pg: PostgresStore) -> None:
    """Known, duplicate, adopted (echoed attempt id) and unknown receipts in one batch;
    the orphan is taken in when the commit that makes its message known comes."""
    d, _ = await pg.create(delivery())
    [claim] = await pg.claim(NOW, limit=1, lease=LEASE)
    known = attempt(d, status=AttemptStatus.ACCEPTED, message_id="m1")
    quiet = attempt(d, status=AttemptStatus.SENDING, provider="wa")
    await pg.commit(claim, Transition(attempts=[known, quiet], wake_ts=NOW + 60, release=False))
    batch = [
        receipt("m1", receipt_id="r1"),
        receipt("m1", receipt_id="r1"),
        receipt("m2", receipt_id="r2", attempt_id=quiet.id),
        receipt("m3", receipt_id="r3"),
    ]
    results = await pg.record_receipts(batch, NOW + 1)
    assert [(r.delivery_id, r.duplicate) for r in results] == [
        (d.id, False),
        (d.id, True),
        (d.id, False),
        (None, False),
    ]
    stored = await pg.get(d.id)
    assert stored is not None
    assert [a.status for a in stored.attempts] == [AttemptStatus.DELIVERED] * 2
    assert stored.attempts[1].provider_message_id == "m2"
    late = attempt(d, status=AttemptStatus.ACCEPTED, message_id="m3")
    await pg.commit(claim, Transition(attempts=[late], wake_ts=NOW + 60))
    stored = await pg.get(d.id)
    assert stored is not None
    assert stored.attempts[2].status is AttemptStatus.DELIVERED
    assert [r.receipt_id for r in stored.attempts[2].receipts] == ["r3"]
    assert [c.delivery.id for c in await pg.claim(NOW + 2, limit=5, lease=LEASE)] == [d.id]


async def test_session_functions_are_not_needed_with_prepared_off(
    pg_dsn: str, pg_schema: str
) -> None:
    """`prepared=false` (PgBouncer in transaction mode) keeps the statement-by-statement path."""
    store = PostgresStore(pg_dsn, schema=pg_schema, prepared=False)
    await store.open()
    try:
        d, _ = await store.create(delivery())
        [claim] = await store.claim(NOW, limit=1, lease=LEASE)
        sent = attempt(d, status=AttemptStatus.ACCEPTED, message_id="m1")
        await store.commit(claim, Transition(attempts=[sent], wake_ts=NOW + 60))
        [result] = await store.record_receipts([receipt("m1", receipt_id="r1")], NOW + 1)
        assert (result.delivery_id, result.duplicate) == (d.id, False)
        stored = await store.get(d.id)
        assert stored is not None and stored.attempts[0].status is AttemptStatus.DELIVERED
    finally:
        await store.close()


async def test_claims_take_the_longest_due_first_and_read_no_more_than_their_limit(
    pg: PostgresStore,
) -> None:
    """Timers come due oldest first; a claim reads the head of one index (`due_ts`), so
    its plan stops at the limit however long the backlog is."""
    made = [(await pg.create(delivery()))[0] for _ in range(5)]
    for claim in await pg.claim(NOW, limit=5, lease=LEASE):
        # timers set in reverse order of creation: the last made is due first
        index = next(i for i, d in enumerate(made) if d.id == claim.delivery.id)
        await pg.commit(claim, Transition(wake_ts=NOW + 100 - index))
    taken = [c.delivery.id for c in await pg.claim(NOW + 200, limit=2, lease=LEASE)]
    assert taken == [made[4].id, made[3].id]
    assert pg._pool is not None
    async with pg._pool.connection() as conn:
        cur = await conn.execute(
            "EXPLAIN SELECT id FROM deliveries WHERE status IN ('pending', 'scheduled') "
            "AND priority = 1 AND due_ts <= 1 ORDER BY due_ts LIMIT 2 FOR UPDATE SKIP LOCKED"
        )
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "deliveries_due_by_priority" in plan and "Sort" not in plan, plan


async def test_watchers_hear_of_sends_and_receipts_from_other_processes(
    pg_dsn: str, pg_schema: str
) -> None:
    """A store that `watch`es is told when another store instance (another process) creates
    a delivery or records a receipt for one: LISTEN/NOTIFY on the schema's channel."""
    watcher = PostgresStore(pg_dsn, schema=pg_schema)
    other = PostgresStore(pg_dsn, schema=pg_schema)
    await watcher.open()
    await other.open()
    heard = asyncio.Event()
    try:
        await watcher.watch(heard.set)
        await asyncio.wait_for(heard.wait(), 5)  # told once when it starts listening
        heard.clear()
        made, _ = await other.create(delivery())
        await asyncio.wait_for(heard.wait(), 5)
        (claim,) = await other.claim(NOW, limit=1, lease=LEASE)
        sent = attempt(made, status=AttemptStatus.ACCEPTED, message_id="m-1")
        await other.commit(claim, Transition(attempts=[sent], wake_ts=NOW + 600))
        heard.clear()
        await other.record_receipts([receipt("m-1", ReceiptStatus.DELIVERED)], NOW + 1)
        await asyncio.wait_for(heard.wait(), 5)
    finally:
        await other.close()
        await watcher.close()


async def test_a_send_that_cannot_be_stored_fails_alone_in_its_group(pg: PostgresStore) -> None:
    """Sends share one INSERT; one whose message JSON cannot hold (NaN in its metadata)
    gets its StoreError, and the sends grouped with it are stored all the same."""
    good = [delivery() for _ in range(5)]
    bad = delivery()
    # (restored: Message itself refuses NaN when built; a store must still cope)
    bad.message = Message.restore({"text": "x", "metadata": {"ratio": float("nan")}})
    results = await asyncio.gather(
        *(pg.create(d) for d in [*good[:2], bad, *good[2:]]), return_exceptions=True
    )
    assert isinstance(results[2], StoreError) and "plain JSON" in str(results[2])
    assert all(isinstance(r, tuple) and r[1] for i, r in enumerate(results) if i != 2)
    for made in good:
        assert await pg.get(made.id) is not None
    assert await pg.get(bad.id) is None
