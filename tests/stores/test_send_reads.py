"""What `send()` reads of its recipient (linked addresses, gone ones, channel history)
comes in the create's own store call on SQLite and PostgreSQL (`ReadingCreate`): no
lookup of its own; the error contract and idempotency stay as they were."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest

from cascade_notify import Message, Notifier, Recipient, RecipientError
from cascade_notify.errors import IdempotencyConflict
from cascade_notify.models import Delivery, Signal, SignalKind
from cascade_notify.policy import load_config
from cascade_notify.stores import MemoryStore, Store
from cascade_notify.stores.base import ReadingCreate
from cascade_notify.stores.sqlite import SQLiteStore
from cascade_notify.testing import FakeClock, FakeProvider

from .conftest import NOW, StoreFactory

POLICY = """
providers:
  tg: {type: fake, channel: telegram}
  sms: {type: fake, channel: sms}
policies:
  learned:
    order: learned
    steps:
      - {channel: sms, providers: [sms], wait_for: accepted}
      - {channel: telegram, providers: [tg], wait_for: accepted}
  bot:
    steps:
      - {channel: telegram, providers: [tg], wait_for: accepted}
default_policy: learned
"""
TEXT = Message(text="Your parcel has arrived.")


class _Reporting(FakeProvider):
    """Reports address signals, so every send asks the address book."""

    signals: ClassVar[bool] = True


def _signal(kind: SignalKind, who: str, address: str) -> Signal:
    return Signal(
        kind=kind,
        channel="telegram",
        address=address,
        provider="tg",
        reason="blocked" if kind is SignalKind.GONE else "start",
        ts=NOW - 60,
        recipient_id=who,
    )


async def _notifier(store: Store) -> Notifier:
    config = load_config(POLICY)
    clock = FakeClock(NOW)
    tg = _Reporting("tg", config.providers["tg"].settings, clock=clock)
    notifier = Notifier(config, store=store, clock=clock, worker=False, providers={"tg": tg})
    await notifier.start()
    await notifier.record_signals(
        [
            _signal(SignalKind.LINKED, "anna", "100"),
            _signal(SignalKind.GONE, "olga", "200"),
        ]
    )
    return notifier


async def test_sql_stores_read_in_the_create(store_factory: StoreFactory) -> None:
    """SQLite and PostgreSQL take the reads with the create (the memory store may not)."""
    store = store_factory()
    assert isinstance(store, ReadingCreate) is not isinstance(store, MemoryStore)


async def test_a_linked_address_and_the_history_come_in_the_create(
    store_factory: StoreFactory,
) -> None:
    """A recipient known by id gets its linked chat filled in, a given gone address is
    skipped with its reason, and the learned order is recorded, on every store."""
    notifier = await _notifier(store_factory())
    try:
        anna = await notifier.send(Recipient(id="anna", sms="+79161234567"), TEXT)
        assert anna.recipient.telegram == "100"
        assert anna.order is not None and anna.order.channels == ("sms", "telegram")
        olga = await notifier.send(Recipient(id="olga", sms="+79161234567", telegram="200"), TEXT)
        assert olga.unusable["telegram"].startswith("the address is gone: blocked (tg, ")
        for made in (anna, olga):
            assert await notifier.get(made.id) == made
    finally:
        await notifier.stop()


async def test_an_unreachable_send_fails_alone_among_concurrent_ones(
    store_factory: StoreFactory,
) -> None:
    """Sends made together (one group on PostgreSQL, one transaction on SQLite): the one
    whose only address is gone is a RecipientError and stores nothing; the others are
    stored."""
    notifier = await _notifier(store_factory())
    try:
        results = await asyncio.gather(
            notifier.send(Recipient(id="anna"), TEXT, policy="bot"),
            notifier.send(Recipient(id="olga", telegram="200"), TEXT, policy="bot"),
            notifier.send(Recipient(id="ivan", telegram="300"), TEXT, policy="bot"),
            return_exceptions=True,
        )
        assert isinstance(results[1], RecipientError)
        assert "telegram: the address is gone: blocked" in str(results[1])
        stored = [r for r in results if isinstance(r, Delivery)]
        assert [d.recipient.telegram for d in stored] == ["100", "300"]
        page = await notifier.deliveries()
        assert sorted(d.recipient_id for d in page.items) == ["anna", "ivan"]
    finally:
        await notifier.stop()


async def test_a_key_sent_again_returns_its_delivery_and_another_send_conflicts(
    store_factory: StoreFactory,
) -> None:
    """Idempotency holds on the reading path: the same send with its key is the first
    delivery again; the key with another message is an IdempotencyConflict."""
    notifier = await _notifier(store_factory())
    try:
        anna = Recipient(id="anna")
        first = await notifier.send(anna, TEXT, policy="bot", idempotency_key="k1")
        again = await notifier.send(anna, TEXT, policy="bot", idempotency_key="k1")
        assert again.id == first.id
        with pytest.raises(IdempotencyConflict):
            await notifier.send(anna, Message(text="other"), policy="bot", idempotency_key="k1")
    finally:
        await notifier.stop()


async def test_sqlite_reads_inside_the_write_transaction(tmp_path: Any) -> None:
    """On SQLite a send's reads run on the writer's connection inside the transaction
    of its insert (between BEGIN IMMEDIATE and COMMIT); no read connection is opened."""
    store = SQLiteStore(tmp_path / "cascade.db")
    notifier = await _notifier(store)
    try:
        conn: sqlite3.Connection = store._writer._conn  # type: ignore[union-attr]
        traced: list[str] = []
        conn.set_trace_callback(traced.append)
        await notifier.send(Recipient(id="anna", sms="+79161234567"), TEXT)
        conn.set_trace_callback(None)
        flat = [" ".join(s.split()) for s in traced]
        begin = next(i for i, s in enumerate(flat) if s.startswith("BEGIN IMMEDIATE"))
        commit = next(i for i, s in enumerate(flat) if s.startswith("COMMIT"))
        inside = flat[begin + 1 : commit]
        assert any("FROM addresses WHERE recipient_id" in s for s in inside)
        assert any("FROM channel_history" in s for s in inside)
        assert any(s.startswith("INSERT INTO deliveries") for s in inside)
        assert store._reader is None
    finally:
        await notifier.stop()


async def test_postgres_send_is_one_connection_and_two_statements(
    pg_dsn: str, pg_schema: str
) -> None:
    """On PostgreSQL a send that reads takes one pooled connection for two statements:
    one read of the addresses and history together, one insert (before: a connection
    and a statement for each read, then the insert's)."""
    from cascade_notify.stores.postgres import PostgresStore

    store = PostgresStore(pg_dsn, schema=pg_schema)
    notifier = await _notifier(store)
    runs: list[int] = []
    run = store._run

    async def counting(work: Callable[[Any], Awaitable[Any]]) -> Any:
        count = [0]

        async def counted(conn: Any) -> Any:
            execute = conn.execute

            async def counted_execute(*args: Any, **kwargs: Any) -> Any:
                count[0] += 1
                return await execute(*args, **kwargs)

            conn.execute = counted_execute
            try:
                return await work(conn)
            finally:
                del conn.execute

        try:
            return await run(counted)
        finally:
            runs.append(count[0])

    store._run = counting  # type: ignore[method-assign]
    try:
        made = await notifier.send(Recipient(id="anna", sms="+79161234567"), TEXT)
        assert made.recipient.telegram == "100" and made.order is not None
        assert runs == [2]
    finally:
        del store._run
        await notifier.stop()
