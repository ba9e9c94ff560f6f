"""What only the SQLite store promises: one writer, group commit, WAL, one process."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from cascade_notify.errors import LeaseLost, StoreError
from cascade_notify.stores import open_store
from cascade_notify.stores.base import Transition
from cascade_notify.stores.sqlite import SQLiteStore

from .conftest import LEASE, NOW, delivery


async def pragma(store: SQLiteStore, name: str) -> object:
    return await store._call(lambda conn: conn.execute(f"PRAGMA {name}").fetchone()[0])


async def test_wal_and_full_sync_by_default(tmp_path: Path) -> None:
    """A file database is in WAL mode with synchronous=FULL unless told otherwise."""
    store = SQLiteStore(tmp_path / "a.db")
    await store.open()
    try:
        assert await pragma(store, "journal_mode") == "wal"
        assert await pragma(store, "synchronous") == 2  # FULL
        assert await pragma(store, "foreign_keys") == 1
    finally:
        await store.close()


async def test_url_options_reach_the_connection(tmp_path: Path) -> None:
    """`?synchronous=NORMAL` in the URL is what the connection runs with."""
    store = open_store(f"sqlite:///{tmp_path}/b.db?synchronous=normal&commit_window_ms=2")
    assert isinstance(store, SQLiteStore) and store.commit_window == 0.002
    await store.open()
    try:
        assert await pragma(store, "synchronous") == 1  # NORMAL
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///cascade.db", "cascade.db"),
        ("sqlite:////var/lib/cascade.db", "/var/lib/cascade.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_url_forms(url: str, path: str) -> None:
    """Three slashes and a relative path, four and an absolute one, or :memory:."""
    store = open_store(url)
    assert isinstance(store, SQLiteStore) and store.path == path


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://cascade.db", "three slashes"),
        ("sqlite:///a.db?sync=full", "unknown option 'sync'"),
        ("sqlite:///a.db?synchronous=sometimes", "synchronous='sometimes'"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    """A mistyped URL is refused with what to write instead."""
    with pytest.raises(StoreError, match=message):
        open_store(url)


async def test_in_memory_database_is_a_whole_store() -> None:
    """`sqlite:///:memory:` (for tests) creates its schema and works."""
    store = open_store("sqlite:///:memory:")
    await store.open()
    try:
        created, _ = await store.create(delivery())
        [claim] = await store.claim(NOW, limit=5, lease=LEASE)
        assert claim.delivery.id == created.id
    finally:
        await store.close()


async def test_second_opener_of_one_file_is_refused(tmp_path: Path) -> None:
    """Only one process (one store object) may hold a SQLite file; the next one is told why."""
    first = SQLiteStore(tmp_path / "c.db")
    await first.open()
    second = SQLiteStore(tmp_path / "c.db")
    try:
        with pytest.raises(StoreError, match="open in another process"):
            await second.open()
    finally:
        await first.close()
    await second.open()
    await second.close()


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    """Writes queued together go in one transaction: 200 sends, a handful of commits."""
    store = SQLiteStore(tmp_path / "d.db", commit_window=0.02)
    await store.open()
    try:
        writer = store._writer
        assert writer is not None
        before = writer.commits
        results = await asyncio.gather(*(store.create(delivery()) for _ in range(200)))
        assert all(created for _, created in results)
        assert writer.commits - before <= 5
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "d.db") as conn:  # and every one of them is on disk
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 200


async def test_a_failing_call_does_not_undo_its_neighbours(tmp_path: Path) -> None:
    """In one group, a refused commit (LeaseLost) leaves the other writes committed."""
    store = SQLiteStore(tmp_path / "e.db", commit_window=0.02)
    await store.open()
    try:
        first, _ = await store.create(delivery())
        stale = (await store.claim(NOW, limit=1, lease=LEASE))[0]
        await store.claim(NOW + LEASE, limit=1, lease=LEASE)  # taken over
        results = await asyncio.gather(
            store.create(delivery("a")),
            store.commit(stale, Transition(step=1, wake_ts=NOW)),
            store.create(delivery("b")),
            return_exceptions=True,
        )
        assert isinstance(results[1], LeaseLost)
        for key in ("a", "b"):
            _again, created = await store.create(delivery(key))
            assert not created
        got = await store.get(first.id)
        assert got is not None and got.step == 0
    finally:
        await store.close()


async def test_calls_on_a_closed_store_fail_clearly(tmp_path: Path) -> None:
    """After close, a call raises StoreError instead of hanging."""
    store = SQLiteStore(tmp_path / "f.db")
    await store.open()
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.get("x")


async def test_unwritable_location_fails_at_open(tmp_path: Path) -> None:
    """A database that cannot be created is a StoreError at open, not a hang later."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = SQLiteStore(blocker / "sub" / "g.db")
    with pytest.raises(StoreError):
        await store.open()


async def test_a_call_that_fails_after_writing_undoes_only_itself(tmp_path: Path) -> None:
    """Store calls run without a savepoint of their own; one that fails after writing
    makes the group be done again job by job, and its neighbours' writes still land."""
    store = SQLiteStore(tmp_path / "h.db", commit_window=0.02)
    await store.open()

    async def insert(key: str, fail: bool) -> str:
        def work(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT INTO orphan_receipts (provider, provider_message_id, status, ts, "
                "receipt_id, kept_ts) VALUES ('p', ?, 'delivered', 0, ?, 0)",
                (key, key),
            )
            if fail:
                raise ValueError(f"{key} failed after writing")
            return key

        return await store._call(work, light=True)

    try:
        results = await asyncio.gather(
            insert("a", False),
            insert("b", True),
            store.create(delivery("c")),
            insert("d", False),
            return_exceptions=True,
        )
        assert results[0] == "a" and results[3] == "d"
        assert isinstance(results[1], ValueError)
        assert store._writer is not None and store._writer.commits >= 1
        _same, created = await store.create(delivery("c"))
        assert not created
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "h.db") as conn:
        kept = {r[0] for r in conn.execute("SELECT provider_message_id FROM orphan_receipts")}
    assert kept == {"a", "d"}
