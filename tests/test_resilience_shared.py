"""Several workers on one store share their breakers: what one learns, all know."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cascade_notify import Notifier
from cascade_notify.resilience import SharedState
from cascade_notify.stores import MemoryStore, Store
from cascade_notify.stores.sqlite import SQLiteStore
from cascade_notify.testing import FakeClock, run_until_final
from test_resilience import ANNA, OUTAGE, PARCEL, fake, state

PG_DSN = os.environ.get("CASCADE_NOTIFY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two store objects on one backing database, as two worker processes hold them."""
    if request.param == "memory":
        shared = MemoryStore()
        yield shared, shared
        return
    if request.param == "sqlite":
        path = str(tmp_path / "shared.db")
        yield SQLiteStore(path), SQLiteStore(path)
        return
    psycopg = pytest.importorskip("psycopg")
    from cascade_notify.stores.postgres import PostgresStore

    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except Exception as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_DSN}: {exc}")
    schema = f"cn_test_{uuid.uuid4().hex[:12]}"
    pair = PostgresStore(PG_DSN, schema=schema), PostgresStore(PG_DSN, schema=schema)
    if not isinstance(pair[0], SharedState):
        pytest.skip("the PostgreSQL store does not implement SharedState yet")
    yield pair
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_outage_seen_by_one_worker_stops_the_other(
    stores: tuple[Store, Store], fake_clock: FakeClock
) -> None:
    """A breaker one worker (or an operator) opened keeps every worker off the provider."""
    first = Notifier.from_yaml(OUTAGE, clock=fake_clock, store=stores[0])
    second = Notifier.from_yaml(OUTAGE, clock=fake_clock, store=stores[1])
    async with first:
        sent = [await first.send(ANNA, PARCEL) for _ in range(20)]
        await run_until_final(first, fake_clock, [d.id for d in sent])
    assert await state(first, "wa") == "open"
    async with second:
        sent = [await second.send(ANNA, PARCEL) for _ in range(20)]
        done = await run_until_final(second, fake_clock, [d.id for d in sent])
        assert fake(second, "wa").calls == []
        assert all(d.channel == "telegram" for d in done)

        await second.breakers.close("wa")
        async with first:
            await fake_clock.advance(2)  # past each worker's next read of the shared state
            assert await state(first, "wa") == "closed"
            await first.breakers.open("tg", "1h", reason="maintenance")
            await fake_clock.advance(2)
            assert await state(second, "tg") == "open"
