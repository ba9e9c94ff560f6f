"""The SQLite store, the embedded default: `store: sqlite:///cascade.db`.

In each process one connection does all the reading and writing (`writer.py`):
calls run in the event loop's thread inside `BEGIN IMMEDIATE` transactions,
committed in groups with the fsync in a thread of its own; a call returns only
after its group committed. The database is in WAL mode with `synchronous=FULL`
unless the URL says otherwise (`?synchronous=NORMAL` trades the last moments
before a power cut for speed; a process crash loses nothing either way).

Any number of processes on one host share the file (web processes that send, workers,
`serve`): their transactions take turns on an OS lock (`lock.py`), which also keeps
the WAL-reset race of the SQLite Python 3.11 links away, and a worker hears of another
process's sends through the lock file (`watch.py`). Leases and their fencing tokens
are rows, so they work across processes as they do within one.

Nothing about a delivery is cached in Python: every call reads the rows it
needs, so memory does not grow with the number of deliveries pending.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import ClassVar, TypeVar
from urllib.parse import urlsplit

from cascade_notify.errors import StoreError
from cascade_notify.learned import Seen
from cascade_notify.models import CallStatus, Delivery, QueuedCall, Receipt, Signal
from cascade_notify.observe.compute import check_limit
from cascade_notify.observe.types import (
    DeliveryPage,
    DeliveryQuery,
    Dimension,
    FailureRow,
    Stats,
    check_by,
    check_window,
    decode_cursor,
)
from cascade_notify.stores import _addresses, _calls
from cascade_notify.stores import _failpoints as failpoints
from cascade_notify.stores._codec import Unchanging
from cascade_notify.stores._common import PURGE_CHUNK, url_options
from cascade_notify.stores.base import (
    Claim,
    OutboxItem,
    ReceiptResult,
    SendFacts,
    SendReads,
    SignalOutcome,
    Transition,
)
from cascade_notify.stores.sqlite import addresses as book
from cascade_notify.stores.sqlite import calls, queue, schema, shared
from cascade_notify.stores.sqlite import observe as views
from cascade_notify.stores.sqlite.lock import FileLock, refuse_network_filesystem
from cascade_notify.stores.sqlite.watch import Watch
from cascade_notify.stores.sqlite.writer import Writer

_T = TypeVar("_T")


def _same(value: None) -> None:
    return value


# The sqlite3 module looks for an adapter for every parameter that is not exactly an int,
# float, str or bytearray (so for each None and bool), and each failed lookup formats an
# AttributeError: 0.45 us a NULL, about fifteen NULLs a delivery. An identity adapter for
# None is found at once and changes nothing else; bools are passed as ints.
if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
    sqlite3.register_adapter(type(None), _same)
_OPTIONS = {
    "synchronous": "FULL (default), NORMAL or OFF",
    "commit_window_ms": "how long a group waits for more writes; default 0",
}
_SYNCHRONOUS = ("FULL", "NORMAL", "OFF", "EXTRA")


class SQLiteStore:
    """`store: sqlite:///path.db` (or `sqlite:///:memory:` for tests)."""

    #: Whether other processes may change what this store holds (a file other processes may open).
    shared: ClassVar[bool] = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        commit_window: float = 0.0,
    ) -> None:
        self.path = str(path)
        self.synchronous = synchronous.upper()
        if self.synchronous not in _SYNCHRONOUS:
            raise StoreError(f"synchronous={synchronous!r}: use one of {', '.join(_SYNCHRONOUS)}")
        self.commit_window = commit_window
        self._writer: Writer | None = None
        self._lock: FileLock | None = None
        self._watch: Watch | None = None
        self._reader: sqlite3.Connection | None = None  # address lookups (`_read`)
        self._shared_sweep_ts = 0.0  # when `shared_bump` next forgets expired keys
        self._cookie: int | None = None  # SQLite's schema cookie when our version was checked
        self._unchanging = Unchanging()
        self._outbox_kinds: frozenset[str] = frozenset()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """`sqlite:///relative.db`, `sqlite:////absolute.db`, `sqlite:///:memory:`,
        with options `?synchronous=NORMAL&commit_window_ms=2`."""
        parts = urlsplit(url)
        if (
            parts.scheme != "sqlite"
            or parts.netloc
            or not parts.path.startswith("/")
            or len(parts.path) < 2
        ):
            raise StoreError(f"store URL {url!r}: write sqlite:///file.db (three slashes)")
        options = url_options(parts.query, _OPTIONS, url)
        try:
            window = float(options.get("commit_window_ms", "0")) / 1000
        except ValueError:
            raise StoreError(f"store URL {url!r}: commit_window_ms must be a number") from None
        return cls(
            parts.path[1:], synchronous=options.get("synchronous", "FULL"), commit_window=window
        )

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path}>"

    def idle(self) -> bool:
        """No call is in flight (the notifier's idle check, which a fake clock reads)."""
        return self._writer is None or self._writer.in_flight == 0

    # lifecycle

    async def open(self) -> None:
        """Open the database; create the schema if it is empty, refuse an old or new one."""
        await self._start()
        try:
            await self._call(self._check_or_create)
        except BaseException:
            await self.close()
            raise

    async def migrate(self) -> tuple[int, int]:
        """Bring the schema to this code's version; return (version before, version now).
        Opens the store if it is not open; it stays open."""
        await self._start()
        self._cookie = None
        found = await self._call(partial(schema.migrate, where=self.path))
        await self._call(self._check_or_create)
        return found

    async def watch(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever another process made deliveries due on this file (a send, a
        receipt), and once now; until `close`. (`Watchable`)"""
        if self._watch is None and self._lock is not None:
            self._watch = Watch(self._lock.path, wake)
            self._watch.start()

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()
        if self._watch is not None:
            watch, self._watch = self._watch, None
            await watch.close()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.stop()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def _start(self) -> None:
        if self._writer is not None:
            return
        lock = None
        if self.path != ":memory:":
            refuse_network_filesystem(self.path)
            lock = FileLock(self.path)
            lock.open()
        writer = Writer(
            self._connect,
            window=self.commit_window,
            name=self.path,
            lock=lock,
            on_begin=self._same_schema,
        )
        try:
            await writer.start()
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        self._writer, self._lock = writer, lock

    def _check_or_create(self, conn: sqlite3.Connection) -> None:
        schema.check_or_create(conn, where=self.path)
        self._cookie = _cookie(conn)

    def _same_schema(self, conn: sqlite3.Connection) -> None:
        """At the start of each transaction: the schema is still the one this code checked
        (another process may have migrated it since; SQLite's cookie says so cheaply)."""
        if self._cookie is None or _cookie(conn) == self._cookie:
            return
        found = schema.found_version(conn)
        if found != schema.current_version():
            raise StoreError(
                f"the SQLite store {self.path}: another process changed its schema to version "
                f"{found} while this one ran with version {schema.current_version()}; restart "
                "this process with the cascade_notify that matches"
            )
        self._cookie = _cookie(conn)

    def _connect(self) -> sqlite3.Connection:
        # used by the event loop's thread, and by the syncer thread for COMMIT (never both
        # at once: the writer queues calls while a commit is in flight)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=1024
        )
        conn.execute("PRAGMA busy_timeout = 5000")
        if self.path != ":memory:":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    # the Store protocol

    async def create(self, delivery: Delivery) -> tuple[Delivery, bool]:
        failpoints.hit("send.before")
        result = await self._call(
            partial(calls.create, delivery=delivery, unchanging=self._unchanging),
            light=True,
            notify=True,
        )
        failpoints.hit("send.after")
        return result

    async def create_read(
        self, reads: SendReads, build: Callable[[SendFacts], Delivery]
    ) -> tuple[Delivery, bool]:
        """`create`, the reads in its job: no read of their own (`ReadingCreate`)."""
        failpoints.hit("send.before")
        result = await self._call(
            partial(
                calls.create_read,
                reads=_addresses.asked(reads),
                build=build,
                unchanging=self._unchanging,
            ),
            light=True,
            notify=True,
        )
        failpoints.hit("send.after")
        return result

    async def create_many(
        self, deliveries: Sequence[Delivery]
    ) -> list[tuple[Delivery, bool] | Exception]:
        """`create` for each, in one transaction; an item refused alone gets its error.
        (`Batching`)"""
        if not deliveries:
            return []
        failpoints.hit("send.before")
        result = await self._call(
            partial(calls.create_many, deliveries=deliveries, unchanging=self._unchanging),
            light=True,
            notify=True,
        )
        failpoints.hit("send.after")
        return result

    async def reschedule(self, delivery_id: str, start: float) -> Delivery | None:
        """Move a scheduled delivery's start to `start`, its expiry by as much; a delivery
        that started is left as it is. Return it as it stands, or None. (`Rescheduling`)"""
        return await self._call(
            partial(calls.reschedule, delivery_id=delivery_id, start=start), light=True, notify=True
        )

    async def get(self, delivery_id: str) -> Delivery | None:
        return await self._call(
            partial(calls.load, delivery_id=delivery_id, unchanging=self._unchanging), light=True
        )

    async def claim(self, now: float, *, limit: int, lease: float) -> list[Claim]:
        claims = await self._call(
            partial(calls.claim, now=now, limit=limit, lease=lease, unchanging=self._unchanging),
            light=True,
        )
        if claims:
            failpoints.hit("claim.after")
        return claims

    async def commit(self, claim: Claim, transition: Transition) -> None:
        path = failpoints.path_of(transition)
        failpoints.hit(f"{path}.before")
        await self._call(partial(calls.commit, claim=claim, transition=transition), light=True)
        failpoints.hit(f"{path}.after")

    async def record_receipts(self, receipts: Sequence[Receipt], now: float) -> list[ReceiptResult]:
        failpoints.hit("receipt.before")
        results = await self._call(
            partial(
                calls.record,
                receipts=list(receipts),
                now=now,
                events="receipt" in self._outbox_kinds,
            ),
            light=True,
            notify=True,
        )
        failpoints.hit("receipt.after")
        return results

    async def cancel(self, delivery_id: str, now: float) -> Delivery | None:
        events = "finished" in self._outbox_kinds
        return await self._call(
            partial(calls.cancel, delivery_id=delivery_id, now=now, events=events), light=True
        )

    async def next_wake(self) -> float | None:
        return await self._call(calls.next_wake, light=True)

    # Outbox: outcome webhooks to post (`stores.base.Outbox`)

    def outbox_kinds(self, kinds: frozenset[str]) -> None:
        self._outbox_kinds = kinds

    async def outbox_claim(self, now: float, *, limit: int, lease: float) -> list[OutboxItem]:
        return await self._call(
            partial(calls.outbox_claim, now=now, limit=limit, lease=lease), light=True
        )

    async def outbox_sent(self, items: Sequence[OutboxItem], now: float) -> list[bool]:
        if not items:
            return []
        return await self._call(partial(calls.outbox_sent, items=items, now=now), light=True)

    async def outbox_retry(self, item: OutboxItem, at: float) -> bool:
        return await self._call(partial(calls.outbox_retry, item=item, at=at), light=True)

    async def outbox_next(self) -> float | None:
        return await self._call(calls.outbox_next, light=True)

    async def purge(self, older_than: float, now: float) -> int:
        """Delete deliveries final for at least `older_than` seconds, with everything of
        theirs, and orphan receipts past their time; return how many deliveries went."""
        total = 0
        await self._call(partial(book.purge_spent, before=now - _addresses.SPENT_TTL))
        await self._call(partial(shared.sweep, now=now))
        while True:  # in chunks, so other writers get the lock in between
            count = await self._call(partial(calls.purge, cutoff=now - older_than, now=now))
            total += count
            if count < PURGE_CHUNK:
                return total

    # SharedState: what the guards of every process on this file share (`sqlite.shared`)

    async def shared_bump(
        self, key: str, add: float, *, floor: float, now: float, ttl: float
    ) -> float:
        """Set the number at `key` to max(it, floor) + add (absent: floor + add); return it."""

        def work(conn: sqlite3.Connection) -> float:
            if now >= self._shared_sweep_ts:  # expired keys go once a minute, per process
                self._shared_sweep_ts = now + 60.0
                shared.sweep(conn, now)
            return shared.bump(conn, key, add, floor, now, ttl)

        return await self._call(work)

    async def shared_get(self, prefix: str, now: float) -> dict[str, tuple[int, str]]:
        """Every live text whose key starts with `prefix`: key -> (version, text)."""
        return await self._read(partial(shared.get, prefix=prefix, now=now))

    async def shared_put(
        self, key: str, value: str, *, version: int, now: float, ttl: float
    ) -> int | None:
        """Write `value` if the key's version is still `version` (0: absent); return the new
        version, or None when another writer got there first."""
        return await self._call(
            partial(shared.put, key=key, value=value, version=version, now=now, ttl=ttl)
        )

    # Observable: the read-only views (the work in `sqlite.observe`)

    async def list_deliveries(
        self, query: DeliveryQuery, *, cursor: str | None = None, limit: int = 50
    ) -> DeliveryPage:
        """Deliveries matching `query`, newest first, `limit` a page after `cursor`."""
        check_limit(limit)
        after = decode_cursor(cursor) if cursor is not None else None
        return await self._read_snapshot(
            partial(views.list_deliveries, query=query, after=after, limit=limit)
        )

    async def stats(self, since: float, until: float, by: Sequence[Dimension]) -> Stats:
        """Statistics of the deliveries created in `[since, until)`, grouped `by`."""
        dims = check_by(by)
        check_window(since, until)
        return await self._read_snapshot(partial(views.stats, since=since, until=until, by=dims))

    async def unfinished(self) -> dict[str, int]:
        """How many deliveries are not final, by status."""
        return await self._read_snapshot(views.unfinished)

    async def failures(self, since: float, until: float) -> list[FailureRow]:
        """Failed attempts of the deliveries created in `[since, until)`, by kind."""
        check_window(since, until)
        return await self._read_snapshot(partial(views.failures, since=since, until=until))

    async def _read_snapshot(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a read-only `work` on a connection of its own in a thread (a snapshot of
        the file: no write lock held, the event loop free meanwhile)."""
        if self._writer is None:
            raise StoreError("the SQLite store is not open")
        if self.path == ":memory:":  # one connection sees that database
            return await self._call(work, light=True)
        return await asyncio.to_thread(self._read_now, work)

    def _read_now(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        uri = Path(self.path).resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the SQLite database {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("BEGIN")  # one snapshot for every query of `work`
            return work(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"reading the SQLite database {self.path} failed: {exc}") from exc
        finally:
            conn.close()

    # AddressBook (the work in `sqlite.addresses`)

    async def record_signals(self, signals: Sequence[Signal]) -> list[SignalOutcome]:
        checked = _addresses.checked(signals)
        if not checked:
            return []
        return await self._call(partial(book.record, signals=checked), light=True)

    async def unusable(self, addresses: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Signal]:
        wanted = _addresses.wanted(addresses)
        if not wanted:
            return {}
        return await self._read(partial(book.unusable, addresses=wanted))

    async def linked(self, recipient_id: str) -> dict[str, str]:
        if not _addresses.storable(recipient_id):
            return {}
        return await self._read(partial(book.linked, recipient_id=recipient_id))

    async def known(self, recipient_id: str) -> dict[str, Signal]:
        if not _addresses.storable(recipient_id):
            return {}
        return await self._read(partial(book.known, recipient_id=recipient_id))

    async def _read(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a read of committed rows on a connection of its own, in this thread, outside
        the writer's group commit: a lookup at each `send` costs an indexed query, not a
        transaction and its fsync (WAL lets it read while the writer writes)."""
        if self._writer is None:
            raise StoreError("the SQLite store is not open")
        if self.path == ":memory:":  # one connection is the whole database
            return await self._call(work, light=True)
        if self._reader is None:
            self._reader = self._connect_reader()
        try:
            return work(self._reader)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite could not read {self.path}: {exc}") from None

    def _connect_reader(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, cached_statements=64
            )
            conn.execute("PRAGMA busy_timeout = 1000")
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite could not open {self.path} to read: {exc}") from None
        return conn

    async def forget(self, recipient_id: str) -> int:
        if not _addresses.storable(recipient_id):
            return 0
        return await self._call(partial(book.forget, recipient_id=recipient_id), light=True)

    # Learning: the history is written by `commit` and `record_receipts` (`sqlite.calls`)

    async def history(self, recipient_id: str) -> dict[str, Seen]:
        if not _addresses.storable(recipient_id):
            return {}
        return await self._read(partial(calls.history, recipient_id=recipient_id))

    # CallQueue (the work in `sqlite.queue`)

    async def put_call(self, call: QueuedCall) -> bool:
        return await self._call(partial(queue.put, call=call), light=True)

    async def calls(
        self, status: Sequence[CallStatus] | None = None, *, limit: int = 100
    ) -> list[QueuedCall]:
        states = _calls.wanted(status)
        return await self._call(partial(queue.listed, states=states, limit=limit), light=True)

    async def call(self, task_id: str) -> QueuedCall | None:
        return await self._call(partial(queue.one, task_id=task_id), light=True)

    async def claim_call(
        self, operator: str, now: float, task_id: str | None = None
    ) -> QueuedCall | None:
        work = partial(queue.claim, operator=operator, now=now, task_id=task_id)
        return await self._call(work, light=True)

    async def close_call(
        self, task_id: str, status: CallStatus, now: float, note: str | None = None
    ) -> tuple[QueuedCall | None, bool]:
        work = partial(queue.close, task_id=task_id, status=status, now=now, note=note)
        return await self._call(work, light=True)

    async def _call(
        self,
        work: Callable[[sqlite3.Connection], _T],
        *,
        light: bool = False,
        notify: bool = False,
    ) -> _T:
        if self._writer is None:
            raise StoreError("the SQLite store is not open")
        return await self._writer.run(work, light=light, notify=notify)


def _cookie(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA schema_version").fetchone()[0])
