"""The PostgreSQL store's address book (`AddressBook`). The rules are
`stores._addresses`; each call is one transaction on one pooled connection.

Recording takes, sorted, an advisory lock per address a signal names and, for a link,
per (recipient, channel), before it reads: two processes recording news of one address
or one recipient take turns, so neither decides on what the other is changing. The
transaction takes no other lock, so it cannot be part of a deadlock with the rest of
the store.
"""

from __future__ import annotations

from collections.abc import Sequence

from cascade_notify.models import Signal, SignalKind
from cascade_notify.stores._addresses import Entry, outcome, spent_key
from cascade_notify.stores.base import SignalOutcome
from cascade_notify.stores.postgres.rows import Conn

_LOCK = (
    "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(k, 0) h "
    "FROM unnest(%s::text[]) k ORDER BY 1) s"
)
# the signal's own address, and (for a link) its recipient's links on the channel
_READ = (
    "SELECT address, state, reason, provider, ts, recipient_id FROM addresses "
    "WHERE channel = %(channel)s AND address = %(address)s UNION ALL "
    "SELECT address, state, reason, provider, ts, recipient_id FROM addresses "
    "WHERE recipient_id = %(recipient)s AND channel = %(channel)s AND state = 'linked' "
    "AND address <> %(address)s"
)
_SPEND = "INSERT INTO link_tokens (key, ts) VALUES (%s, %s) ON CONFLICT DO NOTHING"
_END = "DELETE FROM addresses WHERE channel = %s AND address = ANY (%s)"
_WRITE = (
    "INSERT INTO addresses (channel, address, state, reason, provider, ts, recipient_id) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (channel, address) DO UPDATE SET "
    "state = excluded.state, reason = excluded.reason, provider = excluded.provider, "
    "ts = excluded.ts, recipient_id = excluded.recipient_id"
)
_UNUSABLE_ONE = (
    "SELECT channel, address, reason, provider, ts, recipient_id FROM addresses "
    "WHERE channel = %s AND address = %s AND state = 'gone'"
)
# a join on the key list, not `IN (SELECT … unnest)`: no aggregate to plan, and the
# primary key probed once per pair
_UNUSABLE = (
    "SELECT a.channel, a.address, a.reason, a.provider, a.ts, a.recipient_id "
    "FROM unnest(%s::text[], %s::text[]) AS k(channel, address) "
    "JOIN addresses a ON a.channel = k.channel AND a.address = k.address "
    "WHERE a.state = 'gone'"
)


def _keys(signals: Sequence[Signal]) -> list[str]:
    keys: list[str] = []
    for signal in signals:
        keys.append(f"cascade_notify address {signal.channel}\x1f{signal.address}")
        if signal.kind is SignalKind.LINKED:
            keys.append(f"cascade_notify recipient {signal.channel}\x1f{signal.recipient_id}")
    return keys


async def record(conn: Conn, signals: Sequence[Signal]) -> list[SignalOutcome]:
    """Record `signals` (from `_addresses.checked`), in order, in one transaction."""
    done: list[SignalOutcome] = []
    async with conn.transaction():
        await conn.execute(_LOCK, (_keys(signals),))
        for signal in signals:
            if signal.token is not None:
                # the primary key decides between two replays at once: one inserts
                cur = await conn.execute(_SPEND, (spent_key(signal.token), signal.ts))
                if cur.rowcount == 0:
                    done.append(SignalOutcome.REPLAYED)
                    continue
            linked = signal.recipient_id if signal.kind is SignalKind.LINKED else None
            own = signal.address
            cur = await conn.execute(
                _READ, {"channel": signal.channel, "address": signal.address, "recipient": linked}
            )
            stored: Entry | None = None
            links: list[tuple[str, float]] = []
            for address, state, reason, provider, ts, recipient_id in await cur.fetchall():
                if address == own:
                    stored = Entry(SignalKind(state), reason, provider, float(ts), recipient_id)
                else:
                    links.append((address, float(ts)))
            decided = outcome(signal, stored, links)
            if decided is None:
                done.append(SignalOutcome.UNCHANGED)
                continue
            entry, ended = decided
            if ended:
                await conn.execute(_END, (signal.channel, ended))
            await conn.execute(
                _WRITE,
                (
                    signal.channel,
                    signal.address,
                    entry.state.value,
                    entry.reason,
                    entry.provider,
                    entry.ts,
                    entry.recipient_id,
                ),
            )
            done.append(SignalOutcome.RECORDED)
    return done


async def unusable(
    conn: Conn, addresses: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Signal]:
    """The gone ones among `addresses` (from `_addresses.wanted`), in one query."""
    if not addresses:
        return {}
    if len(addresses) == 1:  # the usual send: one primary-key probe, no arrays to bind
        cur = await conn.execute(_UNUSABLE_ONE, addresses[0])
    else:
        cur = await conn.execute(
            _UNUSABLE,
            ([channel for channel, _ in addresses], [address for _, address in addresses]),
        )
    found: dict[tuple[str, str], Signal] = {}
    for channel, address, reason, provider, ts, recipient_id in await cur.fetchall():
        entry = Entry(SignalKind.GONE, reason, provider, float(ts), recipient_id)
        found[(channel, address)] = entry.signal(channel, address)
    return found


async def linked(conn: Conn, recipient_id: str) -> dict[str, str]:
    cur = await conn.execute(
        "SELECT channel, address FROM addresses WHERE recipient_id = %s AND state = 'linked' "
        "ORDER BY ts",
        (recipient_id,),
    )
    return dict(await cur.fetchall())


async def known(conn: Conn, recipient_id: str) -> dict[str, Signal]:
    cur = await conn.execute(
        "SELECT channel, address, state, reason, provider, ts FROM addresses "
        "WHERE recipient_id = %s ORDER BY ts",
        (recipient_id,),
    )
    return {
        channel: Entry(SignalKind(state), reason, provider, float(ts), recipient_id).signal(
            channel, address
        )
        for channel, address, state, reason, provider, ts in await cur.fetchall()
    }


async def forget(conn: Conn, recipient_id: str) -> int:
    async with conn.transaction():
        cur = await conn.execute("DELETE FROM addresses WHERE recipient_id = %s", (recipient_id,))
        gone = cur.rowcount
        cur = await conn.execute(
            "DELETE FROM channel_history WHERE recipient_id = %s", (recipient_id,)
        )
        return gone + cur.rowcount


async def purge_spent(conn: Conn, before: float) -> int:
    """Forget the link tokens that linked before `before` (they have expired since)."""
    cur = await conn.execute("DELETE FROM link_tokens WHERE ts < %s", (before,))
    return cur.rowcount
