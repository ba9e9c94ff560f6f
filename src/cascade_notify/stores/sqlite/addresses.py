"""The SQLite store's address book (`AddressBook`): functions of the connection, run by
the writer like the rest of the store's work. The rules are `stores._addresses`."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from cascade_notify.models import Signal, SignalKind
from cascade_notify.stores._addresses import Entry, outcome, spent_key
from cascade_notify.stores._codec import dumps
from cascade_notify.stores.base import SignalOutcome

# the signal's own address, and (for a link) its recipient's links on the channel
# (two halves, each by its own index: as one OR, or with a bare `channel = ?1` in the
# second, the planner walks the primary key through the whole channel)
_READ = (
    "SELECT address, state, reason, provider, ts, recipient_id FROM addresses "
    "WHERE channel = ?1 AND address = ?2 UNION ALL "
    "SELECT address, state, reason, provider, ts, recipient_id FROM addresses "
    "WHERE recipient_id = ?3 AND +channel = ?1 AND state = 'linked' AND address <> ?2"
)
_WRITE = (
    "INSERT INTO addresses (channel, address, state, reason, provider, ts, recipient_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (channel, address) DO UPDATE SET "
    "state = excluded.state, reason = excluded.reason, provider = excluded.provider, "
    "ts = excluded.ts, recipient_id = excluded.recipient_id"
)
# the pairs asked about as one JSON array, looked up by the primary key in one statement
# (no limit on how many, as there would be on `?` parameters)
_UNUSABLE_ONE = (
    "SELECT channel, address, reason, provider, ts, recipient_id FROM addresses "
    "WHERE channel = ? AND address = ? AND state = 'gone'"
)
_FEW = 4
_UNUSABLE = (
    "SELECT a.channel, a.address, a.reason, a.provider, a.ts, a.recipient_id "
    "FROM json_each(?) j CROSS JOIN addresses a "
    "WHERE a.channel = json_extract(j.value, '$[0]') "
    "AND a.address = json_extract(j.value, '$[1]') AND a.state = 'gone'"
)


def record(conn: sqlite3.Connection, *, signals: Sequence[Signal]) -> list[SignalOutcome]:
    """Record `signals` (from `_addresses.checked`), in order."""
    return [_record(conn, signal) for signal in signals]


def _record(conn: sqlite3.Connection, signal: Signal) -> SignalOutcome:
    if signal.token is not None:
        spent = conn.execute(
            "INSERT INTO link_tokens (key, ts) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (spent_key(signal.token), signal.ts),
        )
        if spent.rowcount == 0:
            return SignalOutcome.REPLAYED
    stored: Entry | None = None
    links: list[tuple[str, float]] = []
    linked = signal.recipient_id if signal.kind is SignalKind.LINKED else None
    own = signal.address
    for address, state, reason, provider, ts, recipient_id in conn.execute(
        _READ, (signal.channel, signal.address, linked)
    ):
        if address == own:
            stored = Entry(SignalKind(state), reason, provider, float(ts), recipient_id)
        else:
            links.append((address, float(ts)))
    decided = outcome(signal, stored, links)
    if decided is None:
        return SignalOutcome.UNCHANGED
    entry, ended = decided
    if ended:
        conn.executemany(
            "DELETE FROM addresses WHERE channel = ? AND address = ?",
            [(signal.channel, address) for address in ended],
        )
    conn.execute(
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
    return SignalOutcome.RECORDED


def unusable(
    conn: sqlite3.Connection, *, addresses: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Signal]:
    """The gone ones among `addresses` (from `_addresses.wanted`)."""
    if not addresses:
        return {}
    found: dict[tuple[str, str], Signal] = {}
    if len(addresses) <= _FEW:  # a send's few channels: a primary-key probe each
        rows = [row for pair in addresses for row in conn.execute(_UNUSABLE_ONE, pair).fetchall()]
    else:
        rows = conn.execute(_UNUSABLE, (dumps([list(pair) for pair in addresses]),)).fetchall()
    for channel, address, reason, provider, ts, recipient_id in rows:
        entry = Entry(SignalKind.GONE, reason, provider, float(ts), recipient_id)
        found[(channel, address)] = entry.signal(channel, address)
    return found


def linked(conn: sqlite3.Connection, *, recipient_id: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT channel, address FROM addresses WHERE recipient_id = ? AND state = 'linked' "
        "ORDER BY ts",
        (recipient_id,),
    )
    return dict(rows.fetchall())


def known(conn: sqlite3.Connection, *, recipient_id: str) -> dict[str, Signal]:
    rows = conn.execute(
        "SELECT channel, address, state, reason, provider, ts FROM addresses "
        "WHERE recipient_id = ? ORDER BY ts",
        (recipient_id,),
    )
    return {
        channel: Entry(SignalKind(state), reason, provider, float(ts), recipient_id).signal(
            channel, address
        )
        for channel, address, state, reason, provider, ts in rows
    }


def forget(conn: sqlite3.Connection, *, recipient_id: str) -> int:
    gone = conn.execute("DELETE FROM addresses WHERE recipient_id = ?", (recipient_id,)).rowcount
    history = "DELETE FROM channel_history WHERE recipient_id = ?"
    return gone + conn.execute(history, (recipient_id,)).rowcount


def purge_spent(conn: sqlite3.Connection, *, before: float) -> int:
    """Forget the link tokens that linked before `before` (they have expired since)."""
    return conn.execute("DELETE FROM link_tokens WHERE ts < ?", (before,)).rowcount
