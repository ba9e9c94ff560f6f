"""What only the PostgreSQL store promises: workers in many processes share the work."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from cascade_notify.errors import StoreError
from cascade_notify.models import AttemptStatus, Message
from cascade_notify.stores import open_store
from cascade_notify.stores.base import Transition
from cascade_notify.stores.postgres import PostgresStore

from .conftest import LEASE, NOW, attempt, delivery


@pytest.fixture
async def two(pg_dsn: str, pg_schema: str):  # type: ignore[no-untyped-def]
    """Two store objects on one schema: two worker processes, as far as the database sees."""
    stores = [PostgresStore(pg_dsn, schema=pg_schema) for _ in range(2)]
    for store in stores:
        await store.open()
    yield stores
    for store in stores:
        await store.close()


async def test_concurrent_claims_never_share_a_delivery(two: list[PostgresStore]) -> None:
    """Two workers claiming at once split the due deliveries: each one leased exactly once."""
    first, _second = two
    created = {(await first.create(delivery()))[0].id for _ in range(60)}
    rounds = await asyncio.gather(
        *(s.claim(NOW, limit=7, lease=LEASE) for _ in range(6) for s in two)
    )
    claimed = [c.delivery.id for batch in rounds for c in batch]
    assert len(claimed) == len(set(claimed)) == 60
    assert set(claimed) == created


async def test_a_dead_workers_lease_is_taken_over(two: list[PostgresStore]) -> None:
    """What one worker leased and never finished, another takes once the lease expires."""
    first, second = two
    await first.create(delivery())
    [held] = await first.claim(NOW, limit=5, lease=LEASE)
    assert await second.claim(NOW + LEASE - 0.5, limit=5, lease=LEASE) == []
    [taken] = await second.claim(NOW + LEASE, limit=5, lease=LEASE)
    assert taken.delivery.id == held.delivery.id and taken.token > held.token


@pytest.fixture
async def pg(pg_dsn: str, pg_schema: str):  # type: ignore[no-untyped-def]
    store = PostgresStore(pg_dsn, schema=pg_schema)
    await store.open()
    yield store
    await store.close()


def unvalidated(text: str):  # type: ignore[no-untyped-def]
    """A new delivery whose message text skipped validation (as a buggy caller's might)."""
    bad = delivery()
    bad.message = Message.restore({**bad.message.to_dict(), "text": text})
    return bad


@pytest.mark.parametrize("text", ["NUL \x00 here", "lone \udc80 surrogate"])
async def test_a_create_the_server_refuses_fails_alone(pg: PostgresStore, text: str) -> None:
    """Twenty sends grouped with one whose data PostgreSQL refuses: the twenty are written,
    the one fails with a StoreError that quotes none of its data (no phone number)."""
    good = [delivery() for _ in range(20)]
    bad = unvalidated(text)
    results = await asyncio.gather(
        *(pg.create(d) for d in [*good[:10], bad, *good[10:]]), return_exceptions=True
    )
    refused = results.pop(10)
    assert isinstance(refused, StoreError), refused
    assert "+7916" not in str(refused) and "anna" not in str(refused)
    assert all(isinstance(r, tuple) and r[1] for r in results), results
    for d in good:
        assert await pg.get(d.id) is not None
    assert await pg.get(bad.id) is None


@pytest.mark.parametrize("error", ["NUL \x00 here", "lone \udc80 surrogate"])
async def test_a_commit_the_server_refuses_fails_alone(pg: PostgresStore, error: str) -> None:
    """Of twenty-one commits grouped in one transaction, the one whose attempt PostgreSQL
    cannot store fails alone; the other twenty are written."""
    made = [(await pg.create(delivery()))[0] for _ in range(21)]
    claims = {c.delivery.id: c for c in await pg.claim(NOW, limit=50, lease=LEASE)}
    writes = []
    for d in made:
        a = attempt(d, status=AttemptStatus.FAILED)
        a.finished_ts = NOW
        a.error = error if d is made[7] else "refused"
        writes.append((claims[d.id], Transition(attempts=[a], step=0, wake_ts=NOW + 1)))
    results = await asyncio.gather(*(pg.commit(c, t) for c, t in writes), return_exceptions=True)
    assert isinstance(results.pop(7), StoreError)
    assert results == [None] * 20
    for d in made:
        stored = await pg.get(d.id)
        assert stored is not None
        assert [a.error for a in stored.attempts] == ([] if d is made[7] else ["refused"])


async def test_an_over_long_idempotency_key_is_refused_not_a_lost_connection(
    pg: PostgresStore,
) -> None:
    """A key the server's index cannot hold is "refused", never "connection failed" (which
    would tell the caller to retry with the same key, for ever)."""
    key = os.urandom(4000).hex()  # incompressible: over the index's row size
    with pytest.raises(StoreError, match="refused") as caught:
        await pg.create(delivery(key))
    assert "connection" not in str(caught.value) and key[:16] not in str(caught.value)


def test_url_options_are_ours_and_the_rest_goes_to_libpq() -> None:
    """`schema`, `pool_max`, `timeout` configure the store; other options reach libpq."""
    store = open_store("postgres://u:secret@db.example/app?schema=notify&timeout=3&sslmode=require")
    assert isinstance(store, PostgresStore)
    assert (store.schema, store.timeout) == ("notify", 3.0)
    assert store.dsn == "postgresql://u:secret@db.example/app?sslmode=require"
    assert "secret" not in repr(store)


def test_schema_must_be_a_plain_name() -> None:
    """The schema name goes into SQL, so only a plain identifier is taken."""
    with pytest.raises(StoreError, match="plain SQL name"):
        open_store("postgresql://localhost/db?schema=x;drop")


async def test_unreachable_server_fails_fast_and_clearly() -> None:
    """No server at the address: open raises StoreError within the timeout, no hang."""
    store = PostgresStore("postgresql://postgres@127.0.0.1:9/test", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        await store.open()
    assert time.monotonic() - started < 5


@pytest.mark.slow
async def test_store_outage_fails_fast_and_work_resumes(pg_dsn: str, pg_schema: str) -> None:
    """PostgreSQL behind a proxy that goes half-open, resets, black-holes, then passes: send
    raises StoreError within seconds instead of hanging or accepting what it cannot store;
    once the database is back the worker resumes, and every delivery accepted ends."""
    from urllib.parse import urlsplit

    from cascade_notify import DeliveryStatus, Message, Notifier, Recipient
    from cascade_notify.errors import StoreError as Refused

    from .tcp_proxy import Proxy

    target = urlsplit(pg_dsn)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    url = pg_dsn.replace(target.netloc, f"{target.username}@127.0.0.1:{proxy.port}")
    policy = f"""
store: {url}?schema={pg_schema}&timeout=2
worker: {{lease: 1s}}
providers:
  sms: {{type: fake, channel: sms}}
policies:
  p: {{steps: [{{channel: sms, providers: [sms], timeout: 2s}}]}}
"""
    people = iter(Recipient(id=f"r{i}", sms=f"+7916{2_000_000 + i}") for i in range(20))
    notifier = Notifier.from_yaml(policy)
    await notifier.start()
    accepted = []
    try:
        for _ in range(3):
            accepted.append(await notifier.send(next(people), Message(text="before")))
        for delivery in accepted:
            done = await notifier.wait(delivery.id, timeout=10)
            assert done.status is DeliveryStatus.DELIVERED
        for _ in range(2):  # in flight when the connection drops
            accepted.append(await notifier.send(next(people), Message(text="in flight")))
        for mode in ("blackhole", "reset", "blackhole"):  # half-open first, then no server
            proxy.set(mode)
            started = time.monotonic()
            with pytest.raises(Refused):
                await notifier.send(next(people), Message(text=mode))
            assert time.monotonic() - started < 8, f"{mode}: send took too long to fail"
        proxy.set("pass")
        deadline = time.monotonic() + 20
        while True:  # real time: the pool reconnects
            try:
                accepted.append(await notifier.send(next(people), Message(text="after")))
                break
            except Refused:
                assert time.monotonic() < deadline, "the store never came back"
                await asyncio.sleep(0.2)
        for delivery in accepted:
            done = await notifier.wait(delivery.id, timeout=20)
            assert done.final, done
        assert (await notifier.get(accepted[-1].id)).status is DeliveryStatus.DELIVERED
    finally:
        proxy.set("pass")
        try:
            await notifier.stop()
        finally:
            await proxy.close()


async def test_a_session_stopped_inside_a_transaction_is_ended(pg_dsn: str, pg_schema: str) -> None:
    """A worker stopped (SIGSTOP) inside a transaction cannot hold its row locks for ever:
    the server ends its session after the store's timeout."""
    store = PostgresStore(pg_dsn, schema=pg_schema, timeout=3)
    await store.open()
    try:

        async def show(conn):  # type: ignore[no-untyped-def]
            cur = await conn.execute("SHOW idle_in_transaction_session_timeout")
            return (await cur.fetchone())[0]

        assert await store._run(show) == "3s"
    finally:
        await store.close()


@pytest.mark.slow
async def test_the_worker_is_back_soon_after_refused_connections(
    pg_dsn: str, pg_schema: str
) -> None:
    """After ten seconds of refused connections, the worker takes and ends a delivery
    within 2 s of PostgreSQL answering again (as it does after a black hole)."""
    from urllib.parse import urlsplit

    from cascade_notify import DeliveryStatus, Message, Notifier, Recipient

    from .tcp_proxy import Proxy

    target = urlsplit(pg_dsn)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    url = pg_dsn.replace(target.netloc, f"{target.username}@127.0.0.1:{proxy.port}")
    policy = """
store: {url}?schema={schema}&timeout=2
worker: {{lease: 5s}}
providers:
  sms: {{type: fake, channel: sms}}
policies:
  p: {{steps: [{{channel: sms, providers: [sms], timeout: 2s}}]}}
"""
    worker = Notifier.from_yaml(policy.format(url=url, schema=pg_schema))
    sender = Notifier.from_yaml(policy.format(url=pg_dsn, schema=pg_schema), worker=False)
    anna = Recipient(id="anna", sms="+79161234567")
    await worker.start()
    try:
        async with sender:
            first = await sender.send(anna, Message(text="before"))
            assert (await worker.wait(first.id, timeout=10)).status is DeliveryStatus.DELIVERED
            proxy.set("reset")  # every connection refused: the pool retries, and backs off
            await asyncio.sleep(10)
            proxy.set("pass")
            back = time.monotonic()
            after = await sender.send(anna, Message(text="after"))
            while not (await sender.get(after.id)).final:
                assert time.monotonic() - back < 10, "the worker never came back"
                await asyncio.sleep(0.05)
            took = time.monotonic() - back
            assert took < 2, f"the worker took {took:.1f} s to come back"
    finally:
        proxy.set("pass")
        try:
            await worker.stop()
        finally:
            await proxy.close()
