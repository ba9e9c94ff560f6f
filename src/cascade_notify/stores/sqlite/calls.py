"""The SQLite store's work: its statements, and one function of the connection per store
call, run by the writer inside the open transaction (`writer.py`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from cascade_notify.errors import CascadeError, LeaseLost, StoreError
from cascade_notify.events import OutboxEvent, cancelled_event, receipt_event
from cascade_notify.learned import HISTORY_LIMIT, Lesson, Seen
from cascade_notify.models import (
    Attempt,
    AttemptStatus,
    Delivery,
    Receipt,
    ReceiptStatus,
    status_after,
)
from cascade_notify.stores import _failpoints as failpoints
from cascade_notify.stores import _history
from cascade_notify.stores import _outbox_sql as outbox
from cascade_notify.stores._codec import (
    ATTEMPT_COLUMNS,
    DELIVERY_COLUMNS,
    RECEIPT_COLUMNS,
    Unchanging,
    attempt_from_row,
    attempt_values,
    decode_skipped,
    delivery_from_row,
    delivery_values,
    encode_skipped,
    receipt_from_row,
    receipt_values,
)
from cascade_notify.stores._common import PURGE_CHUNK, cancel_transition, written
from cascade_notify.stores.base import (
    Claim,
    OutboxItem,
    ReceiptResult,
    SendFacts,
    SendReads,
    Transition,
    apply_transition,
)
from cascade_notify.stores.memory import ORPHAN_LIMIT, ORPHAN_TTL
from cascade_notify.stores.sqlite import addresses as book

_D = ", ".join(DELIVERY_COLUMNS)
_A = ", ".join(ATTEMPT_COLUMNS)
_R = ", ".join(RECEIPT_COLUMNS)
_SELECT_DELIVERY = f"SELECT {_D} FROM deliveries WHERE id = ?"  # noqa: S608 - constant columns
# `{marks}`: as many `?` as delivery ids
_SELECT_ATTEMPTS = f"SELECT {_A} FROM attempts WHERE delivery_id IN ({{marks}}) ORDER BY seq"  # noqa: S608
_SELECT_RECEIPTS = (
    f"SELECT r.attempt_id, {', '.join('r.' + c for c in RECEIPT_COLUMNS)} "  # noqa: S608
    "FROM attempts a JOIN receipts r ON r.attempt_id = a.id WHERE a.delivery_id IN ({marks}) "
    "ORDER BY r.seq"
)
_SELECT_STORED = (
    f"SELECT a.provider_message_id, {', '.join('r.' + c for c in RECEIPT_COLUMNS)} "  # noqa: S608
    "FROM attempts a LEFT JOIN receipts r ON r.attempt_id = a.id WHERE a.id = ? ORDER BY r.seq"
)
_CLAIM = (
    "UPDATE deliveries SET token = token + 1, lease_until = ?, poked = 0, status = 'pending' "  # noqa: S608
    f"WHERE id IN ({{marks}}) RETURNING token, {_D}"
)
# poked (due at once) unless scheduled: `?3` is the status
_INSERT_DELIVERY = (
    f"INSERT INTO deliveries ({_D}, poked) VALUES ({', '.join('?' * len(DELIVERY_COLUMNS))}, "  # noqa: S608
    "?3 = 'pending')"
)
# a message id learned from a receipt (by attempt id) outlives a writer's copy without one
_SET = {
    "provider_message_id": "provider_message_id = "
    "coalesce(excluded.provider_message_id, attempts.provider_message_id)"
}
_UPSERT_ATTEMPT = (
    f"INSERT INTO attempts ({_A}) VALUES ({', '.join('?' * len(ATTEMPT_COLUMNS))}) "  # noqa: S608
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(_SET.get(c, f"{c} = excluded.{c}") for c in ATTEMPT_COLUMNS[1:])
)
_INSERT_NEW_ATTEMPT = (
    f"INSERT INTO attempts ({_A}) VALUES ({', '.join('?' * len(ATTEMPT_COLUMNS))}) "  # noqa: S608
    "ON CONFLICT (id) DO NOTHING"
)
_INSERT_RECEIPT = (
    f"INSERT INTO receipts (attempt_id, {_R}) VALUES (?, {', '.join('?' * len(RECEIPT_COLUMNS))}) "  # noqa: S608
    "ON CONFLICT (attempt_id, receipt_id) DO NOTHING"
)
_INSERT_ORPHAN = (
    f"INSERT INTO orphan_receipts ({_R}, kept_ts) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(RECEIPT_COLUMNS))}, ?) "
    "ON CONFLICT (provider, provider_message_id, receipt_id) DO NOTHING"
)
# The three ways a delivery is due, each query served by its own partial index: a lease
# that ran out (any priority: a worker died), then per priority, highest first, poked
# (by a send or a receipt) and timer passed (a scheduled one's start among them).
_LAPSED = (
    "SELECT id FROM deliveries WHERE status = 'pending' AND lease_until > 0 "
    "AND lease_until <= ?1 ORDER BY lease_until LIMIT ?2"
)
_DUE = (
    "SELECT id FROM deliveries WHERE status = 'pending' AND poked = 1 AND priority = ?3 "
    "AND lease_until <= ?1 LIMIT ?2",
    "SELECT id FROM deliveries WHERE status IN ('pending', 'scheduled') AND priority = ?3 "
    "AND wake_ts <= ?1 AND lease_until <= ?1 ORDER BY wake_ts LIMIT ?2",
)
_RANKS = (0, 1, 2)
_COMMIT_DELIVERY = (
    "UPDATE deliveries SET step = coalesce(?, step), status = coalesce(?, status), "
    "channel = CASE WHEN ? THEN ? ELSE channel END, "
    "finished_ts = CASE WHEN ? THEN ? ELSE finished_ts END, wake_ts = ?, "
    "skipped = coalesce(?, skipped), lease_until = CASE WHEN ? THEN 0 ELSE lease_until END "
    "WHERE id = ? AND token = ?"
)
_UPDATE_DELIVERY = (
    "UPDATE deliveries SET step = ?, status = ?, channel = ?, finished_ts = ?, wake_ts = ?, "
    "skipped = ?, lease_until = CASE WHEN ? THEN 0 ELSE lease_until END, "
    "poked = poked OR ?, token = token + ? WHERE id = ?"
)


# SQLite's max() of a NULL is NULL: the later of two times, either of them NULL
_LATER = "coalesce(max({c}, excluded.{c}), {c}, excluded.{c})"
_TEACH = (
    "INSERT INTO channel_history (recipient_id, channel, rank, reached_ts, failed_ts) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (recipient_id, channel) DO UPDATE SET "
    + ", ".join(f"{c} = {_LATER.format(c=c)}" for c in ("rank", "reached_ts", "failed_ts"))
)
# past HISTORY_LIMIT channels, a recipient's oldest go
_TRIM = (
    "DELETE FROM channel_history WHERE recipient_id = ?1 AND channel NOT IN ("
    "SELECT channel FROM channel_history WHERE recipient_id = ?1 ORDER BY "
    "max(coalesce(reached_ts, 0), coalesce(failed_ts, 0)) DESC, channel DESC LIMIT ?2)"
)
# a receipt's delivery, if it teaches (its policy's order is learned): its recipient's id
_LEARNER = (
    "SELECT json_extract(recipient, '$.id') FROM deliveries "
    "WHERE id = ? AND json_type(unusable, '$.\"@order\"') IS NOT NULL"
)


def teach(conn: sqlite3.Connection, lessons: Sequence[Lesson]) -> None:
    """Merge `lessons` into the recipients' history, in the open transaction."""
    rows = _history.as_rows(lessons)
    conn.executemany(_TEACH, rows)
    for recipient_id in {row[0] for row in rows}:
        conn.execute(_TRIM, (recipient_id, HISTORY_LIMIT))


def history(conn: sqlite3.Connection, *, recipient_id: str) -> dict[str, Seen]:
    return _history.seen_from_rows(
        conn.execute(
            "SELECT channel, rank, reached_ts, failed_ts FROM channel_history "
            "WHERE recipient_id = ?",
            (recipient_id,),
        )
    )


def load(
    conn: sqlite3.Connection, *, delivery_id: str, unchanging: Unchanging | None = None
) -> Delivery | None:
    row = conn.execute(_SELECT_DELIVERY, (delivery_id,)).fetchone()
    if row is None:
        return None
    return _with_attempts(conn, [row], unchanging)[0]


def _with_attempts(
    conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], unchanging: Unchanging | None = None
) -> list[Delivery]:
    """Deliveries from rows of `DELIVERY_COLUMNS`, with their attempts and receipts read
    in two queries for all of them."""
    ids = [row[0] for row in rows]
    marks = ", ".join("?" * len(ids))
    receipts: dict[str, list[Receipt]] = {}
    for r in conn.execute(_SELECT_RECEIPTS.format(marks=marks), ids):
        receipts.setdefault(r[0], []).append(receipt_from_row(r[1:]))
    attempts: dict[str, list[Attempt]] = {delivery_id: [] for delivery_id in ids}
    for a in conn.execute(_SELECT_ATTEMPTS.format(marks=marks), ids):
        attempts[a[1]].append(attempt_from_row(a, receipts.get(a[0], [])))
    return [delivery_from_row(row, attempts[row[0]], unchanging) for row in rows]


def _write_attempts(conn: sqlite3.Connection, attempts: Sequence[Attempt]) -> bool:
    """Upsert `attempts` with their receipts; attach orphan receipts to any that has a
    provider message id. True if an orphan was attached."""
    attached = False
    for attempt in attempts:
        if attempt.provider_message_id is not None:
            key = (attempt.provider, attempt.provider_message_id)
            orphans = conn.execute(
                f"SELECT {_R} FROM orphan_receipts WHERE provider = ? "  # noqa: S608
                "AND provider_message_id = ? ORDER BY seq",
                key,
            ).fetchall()
            if orphans:
                conn.execute(
                    "DELETE FROM orphan_receipts WHERE provider = ? AND provider_message_id = ?",
                    key,
                )
                attempt = attempt.copy()  # the caller's copy stays as it was
                for orphan in orphans:
                    attached = attempt.absorb(receipt_from_row(orphan)) or attached
        conn.execute(_UPSERT_ATTEMPT, attempt_values(attempt))
        if attempt.receipts:
            conn.executemany(
                _INSERT_RECEIPT, [(attempt.id, *receipt_values(r)) for r in attempt.receipts]
            )
    return attached


def create(
    conn: sqlite3.Connection, *, delivery: Delivery, unchanging: Unchanging
) -> tuple[Delivery, bool]:
    key = delivery.idempotency_key
    if key is not None:
        row = conn.execute("SELECT id FROM deliveries WHERE idempotency_key = ?", (key,)).fetchone()
        if row is not None:
            existing = load(conn, delivery_id=row[0], unchanging=unchanging)
            assert existing is not None
            return existing, False
    conn.execute(_INSERT_DELIVERY, delivery_values(delivery))
    _write_attempts(conn, delivery.attempts)
    unchanging.remember(delivery)
    return delivery.copy(), True


def create_read(
    conn: sqlite3.Connection,
    *,
    reads: SendReads,
    build: Callable[[SendFacts], Delivery],
    unchanging: Unchanging,
) -> tuple[Delivery, bool]:
    """`create` of the delivery `build` makes from what `reads` finds, in the open write
    transaction: the reads see the rows as the insert will (one connection, its cache
    warm), and cost no call, thread hop or transaction of their own. `reads` is from
    `_addresses.asked`. Nothing is written before `build` returns."""
    facts = SendFacts(
        known=book.known(conn, recipient_id=reads.recipient_id) if reads.known else {},
        unusable=book.unusable(conn, addresses=reads.addresses) if reads.addresses else {},
        history=history(conn, recipient_id=reads.recipient_id) if reads.history else {},
    )
    return create(conn, delivery=build(facts), unchanging=unchanging)


def claim(
    conn: sqlite3.Connection, *, now: float, limit: int, lease: float, unchanging: Unchanging
) -> list[Claim]:
    ids: dict[str, None] = dict.fromkeys(row[0] for row in conn.execute(_LAPSED, (now, limit)))
    for rank in _RANKS:
        for query in _DUE:
            if len(ids) >= limit:
                break
            for (delivery_id,) in conn.execute(query, (now, limit - len(ids), rank)):
                ids[delivery_id] = None
    if not ids:
        return []
    chosen = list(ids)[:limit]
    until = now + lease
    returned = conn.execute(
        _CLAIM.format(marks=", ".join("?" * len(chosen))), (until, *chosen)
    ).fetchall()
    order = {delivery_id: index for index, delivery_id in enumerate(chosen)}
    rows = sorted(returned, key=lambda row: order[row[1]])  # in the order chosen: highest first
    deliveries = _with_attempts(conn, [row[1:] for row in rows], unchanging)
    claims = [Claim(d, int(row[0]), until) for d, row in zip(deliveries, rows, strict=True)]
    failpoints.hit("claim.before")  # leased in a transaction that never commits
    return claims


def commit(conn: sqlite3.Connection, *, claim: Claim, transition: Transition) -> None:
    # The lease holder alone moves the delivery row on, so the transition says everything
    # to write; only the attempts it touches are read back, for receipts that came meanwhile.
    delivery_id = claim.delivery.id
    if transition.release or transition.status is not None or transition.skipped:
        _move(conn, claim, transition)
    else:
        # mid-transition, the lease kept (the intent before a provider call): the timer
        # does not count while the lease holds (a lapsed lease makes the delivery due
        # whatever it says), so unless the step moved only the fence is checked
        row = conn.execute(
            "SELECT token, step FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
        if row is None or int(row[0]) != claim.token:
            raise LeaseLost(f"delivery {delivery_id} is leased by another worker now")
        if transition.step is not None and transition.step != row[1]:
            conn.execute(
                "UPDATE deliveries SET step = ? WHERE id = ?", (transition.step, delivery_id)
            )
    if claim.delivery.order is not None:  # fenced above: the lease holds
        teach(conn, _history.from_transition(claim.delivery, transition))
    touched: list[Attempt] = []
    for attempt in transition.attempts:
        if (
            attempt.provider_message_id is None
            and not attempt.receipts
            and conn.execute(_INSERT_NEW_ATTEMPT, attempt_values(attempt)).rowcount
        ):
            continue  # a new attempt: nothing stored to merge with, nothing to attach
        touched.append(_merge_stored(conn, attempt))
    if _write_attempts(conn, touched):
        conn.execute("UPDATE deliveries SET poked = 1 WHERE id = ?", (delivery_id,))
    if transition.events:
        keep_events(conn, transition.events)


def keep_events(conn: sqlite3.Connection, events: Sequence[OutboxEvent]) -> None:
    """Add `events` to the outbox, in this transaction (the change's)."""
    conn.executemany(outbox.INSERT, [outbox.values(e) for e in events])


def _move(conn: sqlite3.Connection, claim: Claim, transition: Transition) -> None:
    """Write the delivery row's part of `transition`, fenced by the claim's token."""
    skipped = None
    if transition.skipped:
        (stored,) = conn.execute(
            "SELECT skipped FROM deliveries WHERE id = ?", (claim.delivery.id,)
        ).fetchone() or ("[]",)
        skipped = encode_skipped([*decode_skipped(stored), *transition.skipped])
    status = transition.status
    final = int(status is not None)  # ints, not bools: see `store._same`
    fenced = conn.execute(
        _COMMIT_DELIVERY,
        (
            transition.step,
            None if status is None else status.value,
            final,
            transition.channel,
            final,
            transition.finished_ts,
            transition.wake_ts,
            skipped,
            int(transition.release),
            claim.delivery.id,
            claim.token,
        ),
    ).rowcount
    if not fenced:
        raise LeaseLost(f"delivery {claim.delivery.id} is leased by another worker now")


def _merge_stored(conn: sqlite3.Connection, attempt: Attempt) -> Attempt:
    """The writer's copy of `attempt` with what the store learned of it meanwhile: a message
    id from a receipt that named the attempt, and receipts (which move its status on)."""
    stored = conn.execute(_SELECT_STORED, (attempt.id,)).fetchall()
    if not stored:
        return attempt
    merged = attempt.copy()
    if merged.provider_message_id is None:
        merged.provider_message_id = stored[0][0]
    for row in stored:
        if row[1] is not None:
            merged.absorb(receipt_from_row(row[1:]))
    return merged


def _update(
    conn: sqlite3.Connection, delivery: Delivery, *, release: bool, poke: bool, bump: bool
) -> None:
    conn.execute(
        _UPDATE_DELIVERY,
        (
            delivery.step,
            delivery.status.value,
            delivery.channel,
            delivery.finished_ts,
            delivery.wake_ts,
            encode_skipped(delivery.skipped),
            int(release),
            int(poke),
            int(bump),
            delivery.id,
        ),
    )


def record(
    conn: sqlite3.Connection, *, receipts: list[Receipt], now: float, events: bool = False
) -> list[ReceiptResult]:
    results: list[ReceiptResult] = []
    for receipt in receipts:
        found = conn.execute(
            "SELECT id, delivery_id, status, channel FROM attempts WHERE provider = ? "
            "AND provider_message_id = ? ORDER BY seq LIMIT 1",
            (receipt.provider, receipt.provider_message_id),
        ).fetchone()
        if found is None and receipt.attempt_id is not None:
            found = _adopt(conn, receipt)
        if found is None:
            results.append(ReceiptResult(receipt, None, _keep_orphan(conn, receipt, now)))
            continue
        attempt_id, delivery_id, status, channel = found
        fresh = conn.execute(_INSERT_RECEIPT, (attempt_id, *receipt_values(receipt))).rowcount
        if fresh:
            after = status_after(AttemptStatus(status), receipt.status)
            if after.value != status:
                conn.execute(
                    "UPDATE attempts SET status = ? WHERE id = ?", (after.value, attempt_id)
                )
            if receipt.status is not ReceiptStatus.SENT:
                _teach_receipt(conn, delivery_id, channel, receipt, after)
            conn.execute(
                "UPDATE deliveries SET poked = 1 WHERE id = ? AND status = 'pending' AND poked = 0",
                (delivery_id,),
            )
            if events:
                keep_events(conn, [receipt_event(receipt, delivery_id, attempt_id)])
        results.append(ReceiptResult(receipt, delivery_id, not fresh))
    return results


def _teach_receipt(
    conn: sqlite3.Connection, delivery_id: str, channel: str, receipt: Receipt, after: AttemptStatus
) -> None:
    learner = conn.execute(_LEARNER, (delivery_id,)).fetchone()
    if learner is not None:
        lesson = _history.from_receipt(learner[0], channel, receipt.status, after, receipt.ts)
        if lesson is not None:
            teach(conn, [lesson])


def _adopt(conn: sqlite3.Connection, receipt: Receipt) -> tuple[str, str, str, str] | None:
    """The attempt a receipt names by our own attempt id (the provider echoed it); one that
    did not know its message id learns it here."""
    row = conn.execute(
        "SELECT id, delivery_id, status, provider_message_id, channel FROM attempts "
        "WHERE id = ? AND provider = ?",
        (receipt.attempt_id, receipt.provider),
    ).fetchone()
    if row is None:
        return None
    if row[3] is None:
        conn.execute(
            "UPDATE attempts SET provider_message_id = ? WHERE id = ?",
            (receipt.provider_message_id, row[0]),
        )
    return row[0], row[1], row[2], row[4]


def _keep_orphan(conn: sqlite3.Connection, receipt: Receipt, now: float) -> bool:
    """Keep a receipt for a message not (yet) known; True if it was kept before."""
    conn.execute("DELETE FROM orphan_receipts WHERE kept_ts <= ?", (now - ORPHAN_TTL,))
    if not conn.execute(_INSERT_ORPHAN, (*receipt_values(receipt), now)).rowcount:
        return True
    (count,) = conn.execute("SELECT count(*) FROM orphan_receipts").fetchone()
    if count > ORPHAN_LIMIT:
        conn.execute(
            "DELETE FROM orphan_receipts WHERE seq IN "
            "(SELECT seq FROM orphan_receipts ORDER BY seq LIMIT ?)",
            (count - ORPHAN_LIMIT,),
        )
    return False


def cancel(
    conn: sqlite3.Connection, *, delivery_id: str, now: float, events: bool = False
) -> Delivery | None:
    delivery = load(conn, delivery_id=delivery_id)
    if delivery is None or delivery.final:
        return delivery
    transition = cancel_transition(delivery, now)
    apply_transition(delivery, transition)
    _write_attempts(conn, written(delivery, transition))
    _update(conn, delivery, release=True, poke=False, bump=True)
    if events:
        keep_events(conn, [cancelled_event(delivery)])
    return delivery


def next_wake(conn: sqlite3.Connection) -> float | None:
    if conn.execute(
        "SELECT 1 FROM deliveries WHERE status = 'pending' AND poked = 1 "
        "AND lease_until <= 0 LIMIT 1"
    ).fetchone():
        return 0.0
    times: list[Any] = [
        *(
            conn.execute(
                "SELECT wake_ts FROM deliveries WHERE status IN ('pending', 'scheduled') "
                "AND priority = ? AND wake_ts IS NOT NULL AND lease_until = 0 "
                "ORDER BY wake_ts LIMIT 1",
                (rank,),
            ).fetchone()
            for rank in _RANKS
        ),
        conn.execute(
            "SELECT min(lease_until) FROM deliveries WHERE status = 'pending' AND lease_until > 0"
        ).fetchone(),
    ]
    found = [float(t[0]) for t in times if t is not None and t[0] is not None]
    return min(found, default=None)


# (a delivery whose outcome webhooks are not all posted yet is kept)
_PURGE = (
    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries "  # noqa: S608 - constant
    f"WHERE status <> 'pending' AND finished_ts <= ? AND id NOT IN ({outbox.UNSENT}) LIMIT ?)"
)


def purge(conn: sqlite3.Connection, *, cutoff: float, now: float) -> int:
    conn.execute("DELETE FROM orphan_receipts WHERE kept_ts <= ?", (now - ORPHAN_TTL,))
    return conn.execute(_PURGE, (cutoff, PURGE_CHUNK)).rowcount


def create_many(
    conn: sqlite3.Connection, *, deliveries: Sequence[Delivery], unchanging: Unchanging
) -> list[tuple[Delivery, bool] | Exception]:
    """`create` for each delivery, in order, in the open transaction; each in a savepoint of
    its own, so one the database refuses is answered with its error and writes nothing,
    and the others are written."""
    answers: list[tuple[Delivery, bool] | Exception] = []
    for delivery in deliveries:
        conn.execute("SAVEPOINT item")
        try:
            answers.append(create(conn, delivery=delivery, unchanging=unchanging))
        except (sqlite3.Error, CascadeError) as exc:
            conn.execute("ROLLBACK TO item")
            answers.append(
                StoreError(f"SQLite refused it: {exc}") if isinstance(exc, sqlite3.Error) else exc
            )
        conn.execute("RELEASE item")
    return answers


def reschedule(conn: sqlite3.Connection, *, delivery_id: str, start: float) -> Delivery | None:
    """Move a scheduled delivery's start (and its expiry with it); any other is left as
    it is. The delivery as it stands, or None."""
    conn.execute(
        "UPDATE deliveries SET expires_ts = expires_ts + (?1 - wake_ts), wake_ts = ?1 "
        "WHERE id = ?2 AND status = 'scheduled'",
        (start, delivery_id),
    )
    return load(conn, delivery_id=delivery_id)


def outbox_claim(
    conn: sqlite3.Connection, *, now: float, limit: int, lease: float
) -> list[OutboxItem]:
    ids = [row[0] for row in conn.execute(outbox.DUE, (now, now, limit)).fetchall()]
    return [outbox.item(conn.execute(outbox.LEASE, (now + lease, i)).fetchone()) for i in ids]


def outbox_sent(conn: sqlite3.Connection, *, items: Sequence[OutboxItem], now: float) -> list[bool]:
    return [bool(conn.execute(outbox.SENT, (now, i.event.id, i.token)).rowcount) for i in items]


def outbox_retry(conn: sqlite3.Connection, *, item: OutboxItem, at: float) -> bool:
    return bool(conn.execute(outbox.RETRY, (at, item.event.id, item.token)).rowcount)


def outbox_next(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(outbox.NEXT).fetchone()
    return None if row is None or row[0] is None else float(row[0])
