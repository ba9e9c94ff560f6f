"""`send()`'s reads and its create on one connection (`ReadingCreate`): what a send
needs of its recipient (linked addresses, gone ones, channel history) is one statement
for every send of a group, and their deliveries one `INSERT`, on the connection the
group holds: two round trips per group, where a lookup of its own per read cost a
connection taken from the pool, a task and a round trip each, per send.

A send whose `build` fails (a recipient no step can reach) or whose delivery JSON
cannot hold gets its error alone; the others of the group are written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cascade_notify.errors import StoreError
from cascade_notify.learned import Seen
from cascade_notify.models import Delivery, Signal, SignalKind
from cascade_notify.stores._addresses import Entry
from cascade_notify.stores._codec import dumps
from cascade_notify.stores.base import SendFacts, SendReads
from cascade_notify.stores.postgres import calls
from cascade_notify.stores.postgres.rows import Conn

#: One item of the group: the reads (from `_addresses.asked`) and how to make its delivery.
Item = tuple[SendReads, Callable[[SendFacts], Delivery]]
Answer = tuple[Delivery, bool] | Exception

# every read of the group's sends in one statement: k 0, a recipient's addresses
# (`known`, oldest first, so the latest per channel wins); 1, the gone ones among the
# given addresses (a primary-key probe each); 2, a recipient's channel history.
# The keys come as jsonb and each lookup is a lateral probe that cannot be flattened
# (OFFSET 0): the plan is the same whatever the keys, so a prepared statement keeps its
# generic plan (arrays would make the server plan every execution anew: over half
# of the statement's cost)
READ = """
    SELECT 0 AS k, a.recipient_id, a.channel, a.address, a.state, a.reason, a.provider,
        a.ts, NULL::float8 AS rank, NULL::float8 AS reached_ts, NULL::float8 AS failed_ts
    FROM jsonb_array_elements_text(%(known)s::jsonb) AS q(id) CROSS JOIN LATERAL (
        SELECT * FROM addresses WHERE recipient_id = q.id OFFSET 0) a
    UNION ALL
    SELECT 1, a.recipient_id, a.channel, a.address, a.state, a.reason, a.provider, a.ts,
        NULL, NULL, NULL
    FROM jsonb_array_elements(%(pairs)s::jsonb) AS q(p) CROSS JOIN LATERAL (
        SELECT * FROM addresses
        WHERE channel = q.p->>0 AND address = q.p->>1 AND state = 'gone' OFFSET 0) a
    UNION ALL
    SELECT 2, h.recipient_id, h.channel, NULL, NULL, NULL, NULL, NULL, h.rank,
        h.reached_ts, h.failed_ts
    FROM jsonb_array_elements_text(%(history)s::jsonb) AS q(id) CROSS JOIN LATERAL (
        SELECT * FROM channel_history WHERE recipient_id = q.id OFFSET 0) h
    ORDER BY 1, 8
"""


async def facts(conn: Conn, reads: Sequence[SendReads]) -> list[SendFacts]:
    """What the store holds for each of `reads`, in one statement (none if none asks)."""
    known = sorted({r.recipient_id for r in reads if r.known})
    pairs = sorted({pair for r in reads for pair in r.addresses})
    history = sorted({r.recipient_id for r in reads if r.history})
    if not (known or pairs or history):
        return [SendFacts() for _ in reads]
    cur = await conn.execute(
        READ,
        {
            "known": dumps(known),
            "pairs": dumps([list(p) for p in pairs]),
            "history": dumps(history),
        },
    )
    linked: dict[str, dict[str, Signal]] = {}
    gone: dict[tuple[str, str], Signal] = {}
    seen: dict[str, dict[str, Seen]] = {}
    for row in await cur.fetchall():
        kind, recipient_id, channel = row[0], row[1], row[2]
        if kind == 2:
            seen.setdefault(recipient_id, {})[channel] = Seen(
                _float(row[8]), _float(row[9]), _float(row[10])
            )
            continue
        entry = Entry(SignalKind(row[4]), row[5], row[6], float(row[7]), recipient_id)
        if kind == 0:
            linked.setdefault(recipient_id, {})[channel] = entry.signal(channel, row[3])
        else:
            gone[(channel, row[3])] = entry.signal(channel, row[3])
    return [
        SendFacts(
            known=linked.get(r.recipient_id, {}) if r.known else {},
            unusable={pair: gone[pair] for pair in r.addresses if pair in gone},
            history=seen.get(r.recipient_id, {}) if r.history else {},
        )
        for r in reads
    ]


async def create(conn: Conn, items: Sequence[Item]) -> list[Answer]:
    """Read every item's facts, make each delivery, and insert those made in one
    statement (`calls.create`): each item's answer as `create` gives it, or its error."""
    found = await facts(conn, [reads for reads, _ in items])
    answers: list[Answer | None] = []
    news: list[tuple[Delivery, str]] = []
    for (_, build), known in zip(items, found, strict=True):
        try:
            delivery = build(known)
            news.append((delivery, calls.delivery_json(delivery)))
            answers.append(None)
        except Exception as exc:  # this send's own error, for its caller alone
            answers.append(exc)
    made = iter(await calls.create(conn, news) if news else [])
    return [next(made) if answer is None else answer for answer in answers]


def answer(result: Any) -> tuple[Delivery, bool]:
    """An item's answer, its error raised."""
    if isinstance(result, Exception):
        raise result
    if not isinstance(result, tuple):  # pragma: no cover - a flush answers every item
        raise StoreError("the PostgreSQL store lost a send's answer; send it again")
    return result


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
