"""The `store` fixture: every conformance test runs on memory, SQLite and PostgreSQL.

PostgreSQL tests use `CASCADE_NOTIFY_TEST_PG_DSN` (default: the local server,
database `test`, user `postgres`), each in a fresh schema dropped afterwards.
Without a reachable server they are skipped, unless `CI` is set: then they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from cascade_notify.models import (
    Attempt,
    AttemptStatus,
    Delivery,
    Message,
    Receipt,
    ReceiptStatus,
    Recipient,
    Step,
    WaitFor,
)
from cascade_notify.stores import MemoryStore, Store
from cascade_notify.stores.sqlite import SQLiteStore

PG_DSN = os.environ.get("CASCADE_NOTIFY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
LEASE = 30.0

StoreFactory = Callable[[], Store]


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The PostgreSQL DSN, once known reachable (skip, or fail under CI, if not)."""
    try:
        import psycopg

        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except Exception as exc:
        message = (
            f"PostgreSQL is not reachable at {PG_DSN} ({type(exc).__name__}: {exc}). "
            "Start it (pg_ctlcluster --skip-systemctl-redirect <version> main start) or point "
            "CASCADE_NOTIFY_TEST_PG_DSN at a server; with CI set this is a failure, not a skip."
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return PG_DSN


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema name, dropped with everything in it after the test."""
    import psycopg

    name = f"cn_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes (unopened) stores on one backing database: the one a test works on."""
    kind = request.param
    if kind == "memory":
        shared = MemoryStore()
        return lambda: shared
    if kind == "sqlite":
        return lambda: SQLiteStore(tmp_path / "cascade.db")
    from cascade_notify.stores.postgres import PostgresStore

    dsn = request.getfixturevalue("pg_dsn")
    schema = request.getfixturevalue("pg_schema")
    return lambda: PostgresStore(dsn, schema=schema)


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    """An open store of each kind."""
    opened = store_factory()
    await opened.open()
    yield opened
    await opened.close()


def durable(store: Store) -> None:
    """Skip the test on the memory store (it has nothing to reopen)."""
    if isinstance(store, MemoryStore):
        pytest.skip("the memory store does not outlive its object")


STEPS = (
    Step(channel="whatsapp", providers=("wa",), timeout=120.0, quiet_hours=(1320, 540)),
    Step(
        channel="sms",
        providers=("gw1", "gw2"),
        wait_for=WaitFor.ACCEPTED,
        categories=frozenset({"transactional"}),
    ),
)


def delivery(
    key: str | None = None, *, now: float = NOW, steps: tuple[Step, ...] = STEPS, **kwargs: object
) -> Delivery:
    """A new pending delivery, due at `now`."""
    from cascade_notify.models import new_id

    return Delivery(
        id=new_id(),
        policy="service",
        recipient=Recipient(
            id="anna",
            whatsapp="+79161234567",
            sms="+79161234567",
            addresses={"max": "anna-max"},
            opted_out={"viber"},
            timezone="Europe/Moscow",
        ),
        message=Message(
            text="Your parcel has arrived.",
            subject="Parcel",
            overrides={"whatsapp": {"template": "parcel", "parameters": ["A-1"]}},
            metadata={"order": 42, "tags": ["x"]},
        ),
        steps=steps,
        created_ts=now,
        expires_ts=now + 86400,
        wake_ts=now,
        idempotency_key=key,
        **kwargs,  # type: ignore[arg-type]
    )


def attempt(
    d: Delivery,
    *,
    now: float = NOW,
    provider: str = "wa",
    status: AttemptStatus = AttemptStatus.SENDING,
    message_id: str | None = None,
    step: int = 0,
) -> Attempt:
    """An attempt of `d` on `provider`."""
    from cascade_notify.models import new_id

    return Attempt(
        id=new_id(),
        delivery_id=d.id,
        step=step,
        channel=d.steps[step].channel,
        provider=provider,
        status=status,
        started_ts=now,
        provider_message_id=message_id,
        deadline_ts=None if message_id is None else now + 120,
    )


def receipt(
    message_id: str,
    status: ReceiptStatus = ReceiptStatus.DELIVERED,
    *,
    now: float = NOW,
    provider: str = "wa",
    **kwargs: object,
) -> Receipt:
    return Receipt(
        provider=provider, provider_message_id=message_id, status=status, ts=now, **kwargs
    )  # type: ignore[arg-type]
