"""Schema versions: a fresh database is created, an old one is migrated on request only,
a newer one is refused; for SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from cascade_notify.errors import StoreError
from cascade_notify.models import Delivery, Signal, SignalKind
from cascade_notify.stores import AddressBook, Migratable, Store
from cascade_notify.stores._codec import DELIVERY_COLUMNS, delivery_values
from cascade_notify.stores.postgres import schema as _postgres_schema
from cascade_notify.stores.sqlite import schema as _sqlite_schema

from .conftest import LEASE, NOW, delivery

Execute = Callable[..., None]
#: The last schema version without the address book and `deliveries.unusable`.
BEFORE_ADDRESS_BOOK = {"sqlite": 1, "postgres": 2}


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Makes a store of `kind` on one database."""
    if kind == "sqlite":
        from cascade_notify.stores.sqlite import SQLiteStore

        return lambda: SQLiteStore(tmp_path / "m.db")
    from cascade_notify.stores.postgres import PostgresStore

    dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
    return lambda: PostgresStore(dsn, schema=schema)


@pytest.fixture
def execute(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Execute:
    """Runs raw SQL on the database (while no store has it open)."""
    if kind == "sqlite":

        def run_sqlite(statement: str, params: Sequence[Any] = ()) -> None:
            with sqlite3.connect(tmp_path / "m.db") as conn:
                conn.execute(statement, params)

        return run_sqlite
    import psycopg

    dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")

    def run_pg(statement: str, params: Sequence[Any] = ()) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute(statement, params)  # type: ignore[arg-type]

    return run_pg


def _module(kind: str) -> Any:
    return _sqlite_schema if kind == "sqlite" else _postgres_schema


def insert_old(execute: Execute, kind: str, d: Delivery) -> None:
    """Write `d` as code before `Delivery.unusable` did (due at once, as create makes it)."""
    later = ("unusable", "fingerprint")  # columns added by later migrations
    every = dict(zip(DELIVERY_COLUMNS, delivery_values(d), strict=True))
    columns = [c for c in DELIVERY_COLUMNS if c not in later]
    values = [every[c] for c in columns]
    if kind == "sqlite":
        marks, poked = ", ".join("?" * len(columns)), "1"
    else:
        json = ("recipient", "message", "steps", "skipped")
        marks = ", ".join("%s::jsonb" if c in json else "%s" for c in columns)
        poked = "true"
    execute(
        f"INSERT INTO deliveries ({', '.join(columns)}, poked) VALUES ({marks}, {poked})",  # noqa: S608
        values,
    )


@pytest.fixture
def version_next(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """This code's schema is one version past the real one (one more index)."""
    module = _module(kind)
    monkeypatch.setattr(
        module,
        "MIGRATIONS",
        [
            *module.MIGRATIONS,
            (
                module.current_version() + 1,
                ("CREATE INDEX deliveries_policy ON deliveries (policy)",),
            ),
        ],
    )


async def test_empty_database_gets_the_schema_at_open(make: Callable[[], Store], kind: str) -> None:
    """Opening an empty database creates the current schema; nothing to migrate after."""
    store = make()
    await store.open()
    try:
        await store.create(delivery())
        assert isinstance(store, Migratable)
        now = _module(kind).current_version()
        assert await store.migrate() == (now, now)
    finally:
        await store.close()


async def test_older_schema_is_refused_until_migrated(
    make: Callable[[], Store], request: pytest.FixtureRequest, kind: str
) -> None:
    """A database one version behind the code: open says to run `store migrate`;
    after `migrate()` it opens, with its deliveries intact."""
    store = make()
    await store.open()
    created, _ = await store.create(delivery())
    await store.close()
    was = _module(kind).current_version()
    request.getfixturevalue("version_next")
    old = make()
    with pytest.raises(StoreError, match=rf"version {was}, older .* `cascade-notify store migrate"):
        await old.open()
    migrating = make()
    assert isinstance(migrating, Migratable)
    assert await migrating.migrate() == (was, was + 1)
    await migrating.close()
    reopened = make()
    await reopened.open()
    try:
        assert await reopened.get(created.id) is not None
    finally:
        await reopened.close()


async def test_newer_schema_is_refused(make: Callable[[], Store], execute: Execute) -> None:
    """A database written by newer code is neither opened nor migrated down."""
    store = make()
    await store.open()
    await store.close()
    execute("UPDATE schema_version SET version = 99")
    newer = make()
    with pytest.raises(StoreError, match="version 99, newer"):
        await newer.open()
    assert isinstance(newer, Migratable)
    with pytest.raises(StoreError, match="newer"):
        await newer.migrate()
    await newer.close()


async def test_foreign_database_is_not_touched(make: Callable[[], Store], execute: Execute) -> None:
    """Tables that are not ours: open and migrate refuse rather than add to them."""
    execute("CREATE TABLE invoices (id integer)")
    store = make()
    with pytest.raises(StoreError, match="not a cascade_notify store"):
        await store.open()
    assert isinstance(store, Migratable)
    with pytest.raises(StoreError, match="not a cascade_notify store"):
        await store.migrate()
    await store.close()


async def test_workers_starting_together_create_the_schema_once(
    make: Callable[[], Store], kind: str
) -> None:
    """Several processes opening an empty database at once all succeed."""
    stores = [make() for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await stores[0].create(delivery())
        assert len(await stores[1].claim(NOW, limit=5, lease=5)) == 1
    finally:
        for store in stores:
            await store.close()


async def test_postgres_version_1_deliveries_are_due_as_before_after_migrating(
    make: Callable[[], Store], kind: str, execute: Execute, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 2 replaced three partial indexes with one generated `due_ts`: deliveries
    written under version 1 (poked, leased, on a timer) are claimed as they were due."""
    if kind == "sqlite":
        pytest.skip("a PostgreSQL migration")
    with monkeypatch.context() as patched:
        patched.setattr(_postgres_schema, "MIGRATIONS", _postgres_schema.MIGRATIONS[:1])
        store = make()
        await store.open()
        await store.close()
    made = [delivery() for _ in range(4)]
    for d in made:  # as version 1 code wrote them
        insert_old(execute, kind, d)
    poked, later, leased, past = [d.id for d in made]
    for column, value, delivery_id in (
        ("wake_ts", NOW + 100, later),
        ("lease_until", NOW + 30, leased),
        ("wake_ts", NOW - 1, past),
    ):  # ids are our own hex, times our own floats
        execute(
            f"UPDATE deliveries SET poked = false, {column} = {value} "  # noqa: S608
            f"WHERE id = '{delivery_id}'"
        )
    store = make()
    assert isinstance(store, Migratable)
    assert await store.migrate() == (1, _postgres_schema.current_version())
    try:
        assert {c.delivery.id for c in await store.claim(NOW, limit=10, lease=1000)} == {
            poked,
            past,
        }
        assert await store.next_wake() == NOW + 30
        assert [c.delivery.id for c in await store.claim(NOW + 50, limit=10, lease=1000)] == [
            leased
        ]
        assert [c.delivery.id for c in await store.claim(NOW + 150, limit=10, lease=1000)] == [
            later
        ]
    finally:
        await store.close()


async def test_a_database_from_before_the_address_book_migrates_and_keeps_its_rows(
    make: Callable[[], Store], kind: str, execute: Execute, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database of the last version without the address book and `Delivery.unusable`
    is refused until migrated; then its deliveries read back as they were (nothing
    unusable), and the new column and table work, also after a reopen."""
    module = _module(kind)
    was = BEFORE_ADDRESS_BOOK[kind]
    with monkeypatch.context() as patched:
        patched.setattr(module, "MIGRATIONS", [m for m in module.MIGRATIONS if m[0] <= was])
        store = make()
        await store.open()
        await store.close()
    old = delivery("old-key")
    insert_old(execute, kind, old)
    refused = make()
    with pytest.raises(StoreError, match=rf"version {was}, older"):
        await refused.open()
    migrating = make()
    assert isinstance(migrating, Migratable) and isinstance(migrating, AddressBook)
    assert await migrating.migrate() == (was, module.current_version())
    gone = Signal(
        kind=SignalKind.GONE,
        channel="max",
        address="anna-max",
        provider="max",
        reason="bot_stopped",
        ts=NOW,
        recipient_id="anna",
    )
    try:
        read = await migrating.get(old.id)
        assert read is not None and (read.id, read.recipient, read.unusable) == (
            old.id,
            old.recipient,
            {},
        )
        again, created = await migrating.create(delivery("old-key"))
        assert not created and again.id == old.id
        [claim] = await migrating.claim(NOW, limit=10, lease=LEASE)
        assert claim.delivery.id == old.id and claim.delivery.unusable == {}
        new, _ = await migrating.create(delivery(unusable={"max": "bot_stopped"}))
        await migrating.record_signals([gone])
    finally:
        await migrating.close()
    reopened = make()
    await reopened.open()
    try:
        assert isinstance(reopened, AddressBook)
        read = await reopened.get(new.id)
        assert read is not None and read.unusable == {"max": "bot_stopped"}
        assert await reopened.unusable([("max", "anna-max")]) == {("max", "anna-max"): gone}
        assert await reopened.forget("anna") == 1
    finally:
        await reopened.close()
