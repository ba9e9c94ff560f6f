"""The PostgreSQL store's work on one connection: reading whole deliveries, and the
transactions of `commit`, receipts and `cancel`, each in as few round trips as it can."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from cascade_notify.errors import LeaseLost
from cascade_notify.events import OutboxEvent, cancelled_event, receipt_event
from cascade_notify.models import (
    Attempt,
    AttemptStatus,
    Delivery,
    Receipt,
    status_after,
)
from cascade_notify.stores import _history
from cascade_notify.stores import _outbox_sql as outbox
from cascade_notify.stores._codec import (
    ATTEMPT_COLUMNS,
    DELIVERY_COLUMNS,
    RECEIPT_COLUMNS,
    attempt_from_row,
    attempt_values,
    delivery_from_row,
    dumps,
    receipt_from_row,
    receipt_values,
    skipped_to_dict,
)
from cascade_notify.stores._common import cancel_transition, written
from cascade_notify.stores.base import Claim, ReceiptResult, Transition, apply_transition
from cascade_notify.stores.memory import ORPHAN_LIMIT, ORPHAN_TTL
from cascade_notify.stores.postgres import history

Conn = AsyncConnection[Any]

_SELECT_DELIVERIES = f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM deliveries WHERE id = ANY(%s)"  # noqa: S608
_SELECT_ATTEMPTS = (
    f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM attempts "  # noqa: S608
    "WHERE delivery_id = ANY(%s) ORDER BY seq"
)
_SELECT_RECEIPTS = (
    f"SELECT r.attempt_id, {', '.join('r.' + c for c in RECEIPT_COLUMNS)} "  # noqa: S608
    "FROM attempts a JOIN receipts r ON r.attempt_id = a.id "
    "WHERE a.delivery_id = ANY(%s) ORDER BY r.seq"
)
# a message id learned from a receipt (by attempt id) outlives a writer's copy without one
_SET = {
    "provider_message_id": "provider_message_id = "
    "coalesce(excluded.provider_message_id, attempts.provider_message_id)"
}
_UPSERT_ATTEMPT = (
    f"INSERT INTO attempts ({', '.join(ATTEMPT_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join(['%s'] * len(ATTEMPT_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(_SET.get(c, f"{c} = excluded.{c}") for c in ATTEMPT_COLUMNS[1:])
)
_INSERT_RECEIPT = (
    f"INSERT INTO receipts (attempt_id, {', '.join(RECEIPT_COLUMNS)}) "  # noqa: S608
    f"VALUES (%s, {', '.join(['%s'] * len(RECEIPT_COLUMNS))}) "
    "ON CONFLICT (attempt_id, receipt_id) DO NOTHING"
)


async def load(conn: AsyncConnection[Any], ids: Sequence[str]) -> dict[str, Delivery]:
    """The deliveries with these ids (those that exist), each with attempts and receipts."""
    args = (list(ids),)
    if conn.info.transaction_status is TransactionStatus.IDLE:
        # outside a transaction: one round trip for three queries
        async with conn.pipeline():
            deliveries = await conn.execute(_SELECT_DELIVERIES, args)
            attempts = await conn.execute(_SELECT_ATTEMPTS, args)
            receipts = await conn.execute(_SELECT_RECEIPTS, args)
    else:
        # inside one (holding row locks), never a pipeline: a process stopped between a
        # pipeline's queries and its sync would hold its locks beyond the server's
        # idle-in-transaction timeout, which only starts counting at a sync
        deliveries = await conn.execute(_SELECT_DELIVERIES, args)
        attempts = await conn.execute(_SELECT_ATTEMPTS, args)
        receipts = await conn.execute(_SELECT_RECEIPTS, args)
    heard: dict[str, list[Receipt]] = {}
    for row in await receipts.fetchall():
        heard.setdefault(row[0], []).append(receipt_from_row(row[1:]))
    made: dict[str, list[Attempt]] = {}
    for row in await attempts.fetchall():
        made.setdefault(row[1], []).append(attempt_from_row(row, heard.get(row[0], [])))
    return {
        row[0]: delivery_from_row(row, made.get(row[0], [])) for row in await deliveries.fetchall()
    }


async def upsert_attempts(conn: AsyncConnection[Any], attempts: Sequence[Attempt]) -> None:
    """Write `attempts` (insert, or update by id) and add their receipts not yet stored, in
    one statement (not `executemany`, which pipelines: see `load`)."""
    if attempts:
        receipts = [(a.id, r) for a in attempts for r in a.receipts]
        await conn.execute(*writes(attempts, receipts, "SELECT 1", ()))


def writes(
    attempts: Sequence[Attempt],
    receipts: Sequence[tuple[str, Receipt]],
    update: str,
    params: Sequence[Any],
) -> tuple[str, list[Any]]:
    """One statement that upserts `attempts`, adds `receipts` (attempt id, receipt) and
    runs `update`: a round trip, where separate statements would take three."""
    ctes: list[str] = []
    values: list[Any] = []
    if attempts:
        row = f"({', '.join(['%s'] * len(ATTEMPT_COLUMNS))})"
        ctes.append(f"a AS ({_UPSERT_ATTEMPT.replace(row, ', '.join([row] * len(attempts)), 1)})")
        values.extend(v for attempt in attempts for v in attempt_values(attempt))
    if receipts:
        row = f"(%s, {', '.join(['%s'] * len(RECEIPT_COLUMNS))})"
        ctes.append(f"r AS ({_INSERT_RECEIPT.replace(row, ', '.join([row] * len(receipts)), 1)})")
        values.extend(v for attempt_id, r in receipts for v in (attempt_id, *receipt_values(r)))
    head = f"WITH {', '.join(ctes)} " if ctes else ""
    return head + update, [*values, *params]


_R = ", ".join(RECEIPT_COLUMNS)
_COMMIT = """
    UPDATE deliveries SET
        step = coalesce(%s, step),
        status = CASE WHEN %s THEN %s ELSE status END,
        channel = CASE WHEN %s THEN %s ELSE channel END,
        finished_ts = CASE WHEN %s THEN %s ELSE finished_ts END,
        wake_ts = %s,
        skipped = skipped || %s::jsonb,
        lease_until = CASE WHEN %s THEN 0 ELSE lease_until END,
        poked = poked OR %s
    WHERE id = %s AND token = %s
"""
# in the order of the keys' hashes, as the session functions of `_pg_calls` take them
_LOCK_MESSAGES = (
    "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(k, 0) h "
    "FROM unnest(%s::text[]) k ORDER BY 1) s"
)
_FENCE = f"""
    SELECT r.attempt_id, {", ".join("r." + c for c in RECEIPT_COLUMNS)}
    FROM deliveries d LEFT JOIN receipts r ON r.attempt_id = ANY(%s)
    WHERE d.id = %s AND d.token = %s
    ORDER BY r.seq
    FOR UPDATE OF d
"""  # noqa: S608 - constant columns
_TAKE_ORPHANS = f"""
    DELETE FROM orphan_receipts
    WHERE (provider, provider_message_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
    RETURNING seq, {", ".join(RECEIPT_COLUMNS)}
"""  # noqa: S608
_FIND_AND_LOCK = """
    SELECT a.id, a.delivery_id FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
    WHERE a.provider = %s AND a.provider_message_id = %s
    ORDER BY a.seq LIMIT 1
    FOR UPDATE OF d
"""
_ADOPT_AND_LOCK = """
    SELECT a.id, a.delivery_id, a.provider_message_id
    FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
    WHERE a.id = %s AND a.provider = %s
    FOR UPDATE OF d
"""
_ADD_RECEIPT = f"""
    WITH added AS (
        INSERT INTO receipts (attempt_id, {", ".join(RECEIPT_COLUMNS)})
        VALUES (%s, {", ".join(["%s"] * len(RECEIPT_COLUMNS))})
        ON CONFLICT (attempt_id, receipt_id) DO NOTHING RETURNING 1
    )
    SELECT status, EXISTS (SELECT FROM added) FROM attempts WHERE id = %s
"""  # noqa: S608
_AFTER_RECEIPT = """
    WITH attempt AS (UPDATE attempts SET status = %s WHERE id = %s)
    UPDATE deliveries SET poked = true WHERE id = %s AND status = 'pending' AND NOT poked
"""


# a receipt's delivery, if it teaches (its policy's order is learned): recipient, channel
_LEARNER = """
    SELECT d.recipient->>'id', a.channel FROM deliveries d JOIN attempts a ON a.id = %s
    WHERE d.id = %s AND d.unusable ? '@order'
"""


def _lock_key(provider: str, message_id: str) -> str:
    return f"cascade_notify message {provider}\x1f{message_id}"


async def commit(conn: Conn, claim: Claim, transition: Transition) -> None:
    keys = sorted(
        {
            (a.provider, a.provider_message_id)
            for a in transition.attempts
            if a.provider_message_id is not None
        }
    )
    ids = list(dict.fromkeys(a.id for a in transition.attempts))
    # four statements: locks, fence with the receipts already stored, orphans, all writes
    async with conn.transaction():
        if keys:
            await conn.execute(_LOCK_MESSAGES, ([_lock_key(*k) for k in keys],))
        cur = await conn.execute(_FENCE, (ids, claim.delivery.id, claim.token))
        rows = await cur.fetchall()
        if not rows:
            raise LeaseLost(f"delivery {claim.delivery.id} is leased by another worker now")
        stored: dict[str, list[Receipt]] = {}
        for row in rows:
            if row[0] is not None:
                stored.setdefault(row[0], []).append(receipt_from_row(row[1:]))
        orphans: dict[tuple[str, str], list[Receipt]] = {}
        if keys:
            cur = await conn.execute(_TAKE_ORPHANS, ([k[0] for k in keys], [k[1] for k in keys]))
            for row in sorted(await cur.fetchall()):
                orphans.setdefault((row[1], row[2]), []).append(receipt_from_row(row[1:]))
        merged: dict[str, Attempt] = {}
        attached = False
        for attempt in transition.attempts:  # as `apply_transition` merges, without loading all
            new = attempt.copy()
            for receipt in stored.get(attempt.id, []):
                new.absorb(receipt)
            if attempt.id in merged:
                for receipt in merged[attempt.id].receipts:
                    new.absorb(receipt)
            if new.provider_message_id is not None:
                for receipt in orphans.pop((new.provider, new.provider_message_id), []):
                    attached = new.absorb(receipt) or attached
            merged[attempt.id] = new
        fresh = [
            (attempt.id, receipt)
            for attempt in merged.values()
            for receipt in attempt.receipts
            if all(r.receipt_id != receipt.receipt_id for r in stored.get(attempt.id, []))
        ]
        status = transition.status
        update = (
            transition.step,
            status is not None,
            None if status is None else status.value,
            status is not None,
            transition.channel,
            status is not None,
            transition.finished_ts,
            transition.wake_ts,
            dumps([skipped_to_dict(s) for s in transition.skipped]),
            transition.release,
            attached,
            claim.delivery.id,
            claim.token,
        )
        await conn.execute(*writes(list(merged.values()), fresh, _COMMIT, update))
        await keep_events(conn, transition.events)
        if claim.delivery.order is not None:
            for statement in history.teach_statements(
                _history.from_transition(claim.delivery, transition)
            ):
                await conn.execute(*statement)


async def keep_events(conn: Conn, events: Sequence[OutboxEvent]) -> None:
    """Add `events` to the outbox, in this transaction (the change's)."""
    if events:
        async with conn.cursor() as cur:
            await cur.executemany(_INSERT_EVENT, [_event_values(e) for e in events])


_INSERT_EVENT = outbox.pg(outbox.INSERT)


def _event_values(event: OutboxEvent) -> tuple[Any, ...]:
    values = list(outbox.values(event))
    values[5] = Jsonb(event.data)
    return tuple(values)


async def record(
    conn: Conn, *, receipt: Receipt, now: float, events: bool = False
) -> ReceiptResult:
    key = (receipt.provider, receipt.provider_message_id)
    async with conn.transaction():
        # finding the attempt locks its delivery: receipts and commits of one delivery
        # take turns, so an attempt's status always counts every receipt stored for it
        found = await (await conn.execute(_FIND_AND_LOCK, key)).fetchone()
        if found is None:
            # not known (yet): serialise with the commit that may be making it known now
            await conn.execute(_LOCK_MESSAGES, ([_lock_key(*key)],))
            found = await (await conn.execute(_FIND_AND_LOCK, key)).fetchone()
            if found is None and receipt.attempt_id is not None:
                found = await adopt(conn, receipt)
            if found is None:
                return ReceiptResult(receipt, None, await keep_orphan(conn, receipt, now))
        attempt_id, delivery_id = found
        cur = await conn.execute(_ADD_RECEIPT, (attempt_id, *receipt_values(receipt), attempt_id))
        row = await cur.fetchone()
        if row is None or not row[1]:
            return ReceiptResult(receipt, delivery_id, True)
        after = status_after(AttemptStatus(row[0]), receipt.status)
        await conn.execute(_AFTER_RECEIPT, (after.value, attempt_id, delivery_id))
        if events:
            await keep_events(conn, [receipt_event(receipt, delivery_id, attempt_id)])
        learner = await (await conn.execute(_LEARNER, (attempt_id, delivery_id))).fetchone()
        if learner is not None:
            lesson = _history.from_receipt(
                learner[0], learner[1], receipt.status, after, receipt.ts
            )
            for statement in history.teach_statements([] if lesson is None else [lesson]):
                await conn.execute(*statement)
        return ReceiptResult(receipt, delivery_id, False)


async def adopt(conn: Conn, receipt: Receipt) -> tuple[str, str] | None:
    """The attempt a receipt names by our own attempt id (the provider echoed it), its
    delivery locked; an attempt that did not know its message id learns it here."""
    cur = await conn.execute(_ADOPT_AND_LOCK, (receipt.attempt_id, receipt.provider))
    row = await cur.fetchone()
    if row is None:
        return None
    if row[2] is None:
        await conn.execute(
            "UPDATE attempts SET provider_message_id = %s WHERE id = %s",
            (receipt.provider_message_id, row[0]),
        )
    return row[0], row[1]


async def keep_orphan(conn: Conn, receipt: Receipt, now: float) -> bool:
    """Keep a receipt for a message not (yet) known; True if it was kept before."""
    await conn.execute("DELETE FROM orphan_receipts WHERE kept_ts <= %s", (now - ORPHAN_TTL,))
    cur = await conn.execute(
        f"INSERT INTO orphan_receipts ({_R}, kept_ts) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(RECEIPT_COLUMNS))}, %s) "
        "ON CONFLICT (provider, provider_message_id, receipt_id) DO NOTHING RETURNING seq",
        (*receipt_values(receipt), now),
    )
    if await cur.fetchone() is None:
        return True
    row = await (await conn.execute("SELECT count(*) FROM orphan_receipts")).fetchone()
    if row is not None and row[0] > ORPHAN_LIMIT:
        await conn.execute(
            "DELETE FROM orphan_receipts WHERE seq IN (SELECT seq FROM "
            "orphan_receipts ORDER BY seq LIMIT %s)",
            (row[0] - ORPHAN_LIMIT,),
        )
    return False


async def cancel(conn: Conn, delivery_id: str, now: float, events: bool = False) -> Delivery | None:
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT 1 FROM deliveries WHERE id = %s FOR UPDATE", (delivery_id,)
        )
        if await cur.fetchone() is None:
            return None
        delivery = (await load(conn, [delivery_id]))[delivery_id]
        if delivery.final:
            return delivery
        transition = cancel_transition(delivery, now)
        apply_transition(delivery, transition)
        await upsert_attempts(conn, written(delivery, transition))
        await conn.execute(
            "UPDATE deliveries SET status = %s, channel = %s, finished_ts = %s, wake_ts = %s, "
            "token = token + 1, lease_until = 0 WHERE id = %s",
            (
                delivery.status.value,
                delivery.channel,
                delivery.finished_ts,
                delivery.wake_ts,
                delivery_id,
            ),
        )
        if events:
            await keep_events(conn, [cancelled_event(delivery)])
        return delivery
