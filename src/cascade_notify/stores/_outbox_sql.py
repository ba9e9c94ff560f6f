"""The outbox's SQL, shared by the SQLite and PostgreSQL stores (`?` placeholders; the
PostgreSQL store spells them its own way): outcome webhooks written with their change,
leased to senders one delivery's earliest unsent event at a time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cascade_notify.events import OutboxEvent
from cascade_notify.stores.base import OutboxItem

#: Add one event; its seq follows the delivery's last (whose row the writer has locked).
INSERT = (
    "INSERT INTO outbox (id, delivery_id, seq, kind, ts, data, next_ts) VALUES "
    "(?, ?, (SELECT coalesce(max(seq), 0) + 1 FROM outbox WHERE delivery_id = ?), ?, ?, ?, ?)"
)
#: The unsent events that are due and free, each its delivery's earliest unsent one.
DUE = (
    "SELECT o.id FROM outbox o WHERE o.sent_ts IS NULL AND o.next_ts <= ? "
    "AND o.lease_until <= ? AND o.seq = (SELECT min(p.seq) FROM outbox p "
    "WHERE p.delivery_id = o.delivery_id AND p.sent_ts IS NULL) "
    "ORDER BY o.next_ts LIMIT ?"
)
LEASE = (
    "UPDATE outbox SET token = token + 1, lease_until = ? WHERE id = ? "
    "RETURNING id, kind, delivery_id, ts, data, seq, tries, token"
)
SENT = (
    "UPDATE outbox SET sent_ts = ?, lease_until = 0 WHERE id = ? AND token = ? AND sent_ts IS NULL"
)
RETRY = (
    "UPDATE outbox SET next_ts = ?, tries = tries + 1, lease_until = 0 "
    "WHERE id = ? AND token = ? AND sent_ts IS NULL"
)
#: When the earliest unsent head is due (or its lease ends).
NEXT = (
    "SELECT min(max(o.next_ts, o.lease_until)) FROM outbox o WHERE o.sent_ts IS NULL "
    "AND o.seq = (SELECT min(p.seq) FROM outbox p "
    "WHERE p.delivery_id = o.delivery_id AND p.sent_ts IS NULL)"
)
#: A purge keeps a delivery whose events are not all posted.
UNSENT = "SELECT delivery_id FROM outbox WHERE sent_ts IS NULL"


def values(event: OutboxEvent) -> tuple[Any, ...]:
    """INSERT's parameters for `event`."""
    data = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
    return (event.id, event.delivery_id, event.delivery_id, event.kind, event.ts, data, event.ts)


def item(row: Sequence[Any]) -> OutboxItem:
    """An OutboxItem from a LEASE row."""
    data = row[4] if isinstance(row[4], dict) else json.loads(row[4])
    event = OutboxEvent(row[0], row[1], row[2], float(row[3]), data)
    return OutboxItem(event, int(row[5]), int(row[6]), int(row[7]))


def pg(statement: str) -> str:
    """`statement` with PostgreSQL's placeholders."""
    return statement.replace("?", "%s")


#: PostgreSQL's claim: the due heads, skipping those another sender is leasing now.
PG_CLAIM = """
    WITH due AS (
        SELECT o.id FROM outbox o
        WHERE o.sent_ts IS NULL AND o.next_ts <= %(now)s AND o.lease_until <= %(now)s
            AND o.seq = (SELECT min(p.seq) FROM outbox p
                         WHERE p.delivery_id = o.delivery_id AND p.sent_ts IS NULL)
        ORDER BY o.next_ts LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox o SET token = o.token + 1, lease_until = %(until)s FROM due
    WHERE o.id = due.id
    RETURNING o.id, o.kind, o.delivery_id, o.ts, o.data, o.seq, o.tries, o.token"""
PG_NEXT = NEXT.replace("max(o.next_ts, o.lease_until)", "greatest(o.next_ts, o.lease_until)")


#: A transition's events as `cn_commit` reads them (item 11 of its JSON).
def pg_events(events: Sequence[OutboxEvent]) -> list[list[Any]]:
    return [[e.id, e.kind, e.ts, e.data] for e in events]
