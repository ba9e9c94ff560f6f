"""What only the SQLite store promises: one writer a process, group commit, WAL, and
processes of one host sharing the file (the lock, the watch, the checks at open)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from cascade_notify.errors import LeaseLost, StoreError
from cascade_notify.stores import Watchable, open_store
from cascade_notify.stores.base import Transition
from cascade_notify.stores.sqlite import SQLiteStore
from cascade_notify.stores.sqlite import lock as lock_module
from cascade_notify.stores.sqlite import watch as watch_module
from cascade_notify.stores.sqlite import writer as writer_module
from cascade_notify.stores.sqlite.lock import FileLock, network_filesystem

from .conftest import LEASE, NOW, delivery, receipt


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
        ("sqlite:cascade.db", "three slashes"),
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


async def test_two_stores_on_one_file_share_it_with_fenced_leases(tmp_path: Path) -> None:
    """Two store objects (as two processes would) open one file: a send of one is claimed
    by the other, and the first's stale lease is fenced out."""
    first, second = SQLiteStore(tmp_path / "c.db"), SQLiteStore(tmp_path / "c.db")
    await first.open()
    await second.open()
    try:
        made, _ = await first.create(delivery("k"))
        [stale] = await first.claim(NOW, limit=5, lease=LEASE)
        [taken] = await second.claim(NOW + LEASE, limit=5, lease=LEASE)
        assert taken.delivery.id == made.id and taken.token > stale.token
        with pytest.raises(LeaseLost):
            await first.commit(stale, Transition(step=1, wake_ts=NOW))
        await second.commit(taken, Transition(step=1, wake_ts=NOW + 60))
        again, created = await second.create(delivery("k"))
        assert not created and again.id == made.id
        got = await first.get(made.id)
        assert got is not None and got.step == 1 and got.wake_ts == NOW + 60
    finally:
        await first.close()
        await second.close()


async def test_a_busy_lock_queues_calls_without_blocking_the_loop(tmp_path: Path) -> None:
    """While another process holds the write lock, calls wait for it in a thread (the
    event loop runs on) and go through together once it is let go."""
    store = SQLiteStore(tmp_path / "l.db")
    await store.open()
    other = FileLock(store.path)
    other.open()
    try:
        assert other.try_acquire()
        sends = [asyncio.ensure_future(store.create(delivery())) for _ in range(20)]
        ticks = 0
        for _ in range(10):  # the loop is free while they wait
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 10 and not any(s.done() for s in sends)
        other.release()
        results = await asyncio.wait_for(asyncio.gather(*sends), 5)
        assert all(created for _, created in results)
    finally:
        other.close()
        await store.close()


async def test_a_lock_held_too_long_fails_calls_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that keeps the write lock (stopped, say) makes calls fail with a
    StoreError that says so, not hang; they work again once it lets go."""
    monkeypatch.setattr(writer_module, "LOCK_TIMEOUT", 0.2)
    store = SQLiteStore(tmp_path / "m.db")
    await store.open()
    other = FileLock(store.path)
    other.open()
    try:
        assert other.try_acquire()
        with pytest.raises(StoreError, match="held its write lock"):
            await store.create(delivery())
        other.release()
        _, created = await asyncio.wait_for(store.create(delivery()), 5)
        assert created
    finally:
        other.close()
        await store.close()


@pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "polling"])
async def test_watchers_hear_of_other_processes_sends_and_receipts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inotify: bool
) -> None:
    """A watching store is woken by another store's send and receipt on the file, within
    milliseconds (by inotify, or by polling the lock file where it is missing)."""
    if not inotify:
        monkeypatch.setattr(watch_module, "_inotify", lambda path: None)
    watcher, sender = SQLiteStore(tmp_path / "w.db"), SQLiteStore(tmp_path / "w.db")
    await watcher.open()
    await sender.open()
    heard = asyncio.Event()
    try:
        await watcher.watch(heard.set)
        assert heard.is_set()  # once at the start: whatever became due before
        assert isinstance(watcher, Watchable)
        assert watcher._watch is not None and watcher._watch.inotify is inotify
        for _ in range(2):
            heard.clear()
            await asyncio.sleep(0.06)
            assert not heard.is_set()  # nothing happened, nothing heard
            await sender.create(delivery())
            await asyncio.wait_for(heard.wait(), 1)
        heard.clear()
        await sender.record_receipts([receipt("unknown-message")], NOW)
        await asyncio.wait_for(heard.wait(), 1)
    finally:
        await watcher.close()
        await sender.close()


async def test_a_schema_changed_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    """A store whose file another process migrated to a version this code does not know
    refuses every call, saying so, instead of reading the new tables with old queries."""
    running, newer = SQLiteStore(tmp_path / "s.db"), SQLiteStore(tmp_path / "s.db")
    await running.open()
    await newer.open()
    try:
        await running.create(delivery())

        def migrate(conn: sqlite3.Connection) -> None:
            conn.execute("ALTER TABLE deliveries ADD COLUMN later TEXT")
            conn.execute("UPDATE schema_version SET version = version + 1")

        await newer._call(migrate)
        with pytest.raises(StoreError, match="another process changed its schema to version"):
            await running.create(delivery())
    finally:
        await running.close()
        await newer.close()


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
server:/export /mnt/shared nfs4 rw,vers=4.2 0 0
//nas/share /mnt/my\\040files cifs rw 0 0
/dev/vdb /mnt/shared/local ext4 rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("/srv/app/cascade.db", None),
        ("/mnt/shared/app/cascade.db", ("nfs4", "/mnt/shared")),
        ("/mnt/my files/cascade.db", ("cifs", "/mnt/my files")),
        ("/mnt/shared/local/cascade.db", None),  # a local disk mounted inside the share
        ("/mnt/sharedness/cascade.db", None),
    ],
)
def test_network_filesystems_are_found_from_the_mount_table(
    path: str, found: tuple[str, str] | None
) -> None:
    """The mount a database lies on is the longest mount point above it."""
    assert network_filesystem(path, MOUNTS) == found


async def test_a_store_on_a_network_filesystem_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening a file on NFS/CIFS fails with a StoreError that says why, before any write."""
    monkeypatch.setattr(lock_module, "network_filesystem", lambda path: ("nfs4", "/mnt/x"))
    store = SQLiteStore(tmp_path / "n.db")
    with pytest.raises(StoreError, match=r"network filesystem \(nfs4 mounted at /mnt/x\)"):
        await store.open()
    assert not (tmp_path / "n.db").exists()


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
