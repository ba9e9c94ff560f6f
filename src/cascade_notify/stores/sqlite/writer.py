"""The one SQLite connection, and group commit with the fsync off the event loop.

Every store call is a job: a function of the connection. Jobs queue until the
loop has run the callers that were ready (or `window` seconds after the first);
then they run back to back in the event loop's own thread, in one transaction
(`BEGIN IMMEDIATE`), each in a savepoint of its own so that its error undoes
only its own writes, and the group's `COMMIT`, which is where the fsync happens,
runs in a thread of its own; only when it returns does every job's caller get
its answer. So a call that returned is committed (on disk with
`synchronous=FULL`), N writes arriving together cost one fsync, and jobs
arriving while a commit syncs wait for the next group: under load the groups
grow by themselves, with no delay added when there is no load.

Many processes share the file: every transaction holds the cross-process write lock
(`lock.py`) from `BEGIN IMMEDIATE` to the end of its `COMMIT`, and so does closing the
connection. The lock is taken at once when it is free (one system call); when another
process holds it, the jobs queue while a thread waits for it, so the event loop never
blocks on another process and the queued jobs go into one group when it comes. Since
a group's jobs run together just before its commit, the lock is held for their
statements and the fsync only.

Why not a thread that runs the jobs too: the `sqlite3` module lets go of the
GIL for every statement and has to win it back from the busy event loop
each time (up to the 5 ms switch interval). With twenty statements per
delivery that hand-over, not SQLite, was most of the store's cost. A job's
statements take microseconds; only the fsync is worth a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from cascade_notify.errors import StoreError
from cascade_notify.stores.sqlite.lock import FileLock

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]

#: The most jobs one transaction takes: bounds how long the first caller waits.
MAX_GROUP = 512
#: How long a call waits for the write lock another process holds before it fails.
LOCK_TIMEOUT = 10.0


@dataclass(slots=True, eq=False)
class _Job:
    work: Work
    future: asyncio.Future[Any]
    light: bool  # runs without a savepoint, see `Writer._run_light`
    notify: bool  # once committed, other processes' workers are told (`FileLock.bump`)
    ok: bool = True
    value: Any = None


class Writer:
    """The connection's owner. `await writer.run(fn)` runs `fn(connection)` in the open
    transaction and returns its result once that transaction committed."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        window: float = 0.0,
        name: str = "",
        lock: FileLock | None = None,
        on_begin: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self._connect = connect
        self._window = window
        self._name = name
        self._lock = lock
        self._on_begin = on_begin  # checks made at the start of every transaction
        self._locking: asyncio.Task[None] | None = None  # waiting for another process
        self._conn: sqlite3.Connection | None = None
        self._syncer: ThreadPoolExecutor | None = None
        self._group: list[_Job] | None = None  # jobs done in the open transaction
        self._guarded = False  # a job of the open group was replayed: savepoints for all
        self._drain: asyncio.Handle | None = None  # runs the queued jobs and commits them
        self._committing: asyncio.Task[None] | None = None
        self._queued: deque[_Job] = deque()
        self._closed = False
        self.in_flight = 0
        #: Transactions committed and jobs they carried, for measuring the grouping.
        self.commits = 0
        self.jobs = 0

    async def start(self) -> None:
        """Open the connection, holding the write lock (raise StoreError if it cannot be)."""
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix=f"cascade-sqlite {self._name}")
        try:
            await self._hold_lock()
            try:
                self._conn = self._connect()
            finally:
                self._release()
        except (sqlite3.Error, OSError) as exc:
            self._syncer.shutdown(wait=False)
            raise StoreError(f"cannot open the SQLite database: {exc}") from exc
        except BaseException:
            self._syncer.shutdown(wait=False)
            raise

    async def run(
        self, work: Callable[[sqlite3.Connection], T], *, light: bool = False, notify: bool = False
    ) -> T:
        """Run `work` in the next transaction; return its result once that committed (raise
        its error, or StoreError if the commit failed).

        `light`: `work` only reads and writes rows (no schema change) and gives the same
        result when done again from the same state; it then runs without a savepoint.
        `notify`: it makes deliveries due, so the commit bumps the lock file for watchers.
        """
        if self._closed or self._conn is None:
            raise StoreError("the SQLite store is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        job = _Job(work, future, light, notify)
        self.in_flight += 1
        try:
            self._queued.append(job)
            self._schedule()
            return await future
        finally:
            self.in_flight -= 1

    async def stop(self) -> None:
        """Commit what was done, answer every caller, and close the connection."""
        if self._closed:
            return
        self._closed = True
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        while self._busy() or self._queued:
            if self._committing is None and self._locking is None:
                self._run_queued()
                self._commit_now()
            for task in (self._committing, self._locking):
                if task is not None:
                    await asyncio.shield(task)
        if self._conn is not None:
            # the last connection to close checkpoints: under the lock, as any writer (if
            # another process holds it past the timeout, ours is not the last connection)
            with contextlib.suppress(StoreError):
                await self._hold_lock()
            try:
                self._conn.close()
            finally:
                self._release()
            self._conn = None
        if self._syncer is not None:
            self._syncer.shutdown(wait=False)
            self._syncer = None

    def _busy(self) -> bool:
        return self._committing is not None or self._locking is not None or self._group is not None

    # the cross-process write lock

    async def _hold_lock(self) -> None:
        """Take the write lock, waiting in the syncer thread if another process holds it."""
        lock = self._lock
        if lock is None or lock.held or lock.try_acquire():
            return
        assert self._syncer is not None
        waiting = asyncio.get_running_loop().run_in_executor(self._syncer, lock.acquire)
        done, _ = await asyncio.wait({waiting}, timeout=LOCK_TIMEOUT)
        if not done:
            # the thread goes on waiting; whoever comes next waits behind it
            waiting.add_done_callback(lambda _: self._release() if not self._busy() else None)
            raise StoreError(self._stuck())
        waiting.result()

    def _stuck(self) -> str:
        path = self._lock.path if self._lock is not None else self._name
        return (
            f"the SQLite store {self._name}: another process has held its write lock "
            f"({path}) for more than {LOCK_TIMEOUT:g} s; is one stopped (SIGSTOP, a debugger)?"
        )

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    async def _wait_for_lock(self) -> None:
        """The lock was busy: wait for it while jobs queue, then run them in one group."""
        try:
            await self._hold_lock()
        except (StoreError, OSError) as exc:
            error = exc if isinstance(exc, StoreError) else StoreError(f"SQLite lock: {exc}")
            while self._queued:
                _settle(self._queued.popleft().future, False, error)
            return
        finally:
            self._locking = None
        self._run_queued()
        self._commit_now()
        if self._group is None and self._committing is None:  # every caller gave up meanwhile
            self._release()

    # in the event loop's thread

    def _schedule(self) -> None:
        """Run what is queued soon: once the callers ready in this turn of the loop have
        queued theirs too (or `window` seconds after the first), all of it in one group."""
        if self._drain is not None or self._committing is not None or self._locking is not None:
            return
        loop = asyncio.get_running_loop()
        self._drain = (
            loop.call_later(self._window, self._run_group)
            if self._window > 0
            else loop.call_soon(self._run_group)
        )

    def _run_group(self) -> None:
        # The jobs run back to back and the commit starts at once, so the write lock is held
        # for their statements and the fsync only, not for a turn of a busy event loop.
        self._drain = None
        self._run_queued()
        self._commit_now()

    def _execute(self, job: _Job) -> None:
        conn = self._conn
        assert conn is not None
        if self._group is None:
            lock = self._lock
            if lock is not None and not lock.held and not lock.try_acquire():
                self._queued.appendleft(job)
                self._locking = asyncio.get_running_loop().create_task(self._wait_for_lock())
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
                if self._on_begin is not None:
                    self._on_begin(conn)
            except (sqlite3.Error, StoreError) as exc:
                if conn.in_transaction:
                    conn.rollback()
                self._release()
                error = (
                    exc
                    if isinstance(exc, StoreError)
                    else StoreError(f"SQLite cannot begin a transaction: {exc}")
                )
                _settle(job.future, False, error)
                return
            self._group = []
            self._guarded = False
        if job.light and not self._guarded:
            self._run_light(conn, job)
        else:
            self._run_guarded(conn, job)
        if self._group is not None and len(self._group) >= MAX_GROUP:
            self._commit_now()

    def _run_light(self, conn: sqlite3.Connection, job: _Job) -> None:
        """Run `job` without a savepoint (two statements fewer): if it fails having written
        nothing, there is nothing to undo; if it wrote, the transaction is undone and the
        group done again, each job in a savepoint."""
        assert self._group is not None
        before = conn.total_changes
        try:
            job.value = job.work(conn)
        except Exception as exc:
            if conn.total_changes != before:
                self._replay(conn, job)
                return
            job.ok, job.value = False, _as_store_error(exc)
        self._group.append(job)

    def _run_guarded(self, conn: sqlite3.Connection, job: _Job) -> None:
        """Run `job` in a savepoint of its own, so its error undoes only its own writes."""
        assert self._group is not None
        try:
            conn.execute("SAVEPOINT job")
        except sqlite3.Error as exc:
            self._abandon(StoreError(f"SQLite failed: {exc}; nothing of this write was kept"))
            _settle(job.future, False, StoreError(f"SQLite failed: {exc}"))
            return
        try:
            job.value = job.work(conn)
        except Exception as exc:
            try:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
            except sqlite3.Error as undo:
                self._abandon(StoreError(f"SQLite failed: {undo}; nothing of this write was kept"))
                _settle(job.future, False, StoreError(f"SQLite failed: {undo}"))
                return
            job.ok, job.value = False, _as_store_error(exc)
        else:
            conn.execute("RELEASE job")
        self._group.append(job)

    def _replay(self, conn: sqlite3.Connection, failed: _Job) -> None:
        """A job without a savepoint failed after writing: undo the transaction, then do the
        group's jobs again (those that had failed keep their error) and this one last, each
        in a savepoint. The jobs are functions of the database alone, so doing one again
        gives what it gave."""
        done, self._group = self._group or [], []
        try:
            conn.rollback()
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._group = done
            self._abandon(StoreError(f"SQLite failed: {exc}; nothing of this write was kept"))
            _settle(failed.future, False, StoreError(f"SQLite failed: {exc}"))
            return
        self._guarded = True
        for index, job in enumerate(done):
            if job.ok:
                self._run_guarded(conn, job)
            else:
                self._group.append(job)
            if self._group is None:  # the connection failed: those done again were answered
                for rest in (*done[index + 1 :], failed):
                    _settle(rest.future, False, StoreError("SQLite failed; nothing was kept"))
                return
        self._run_guarded(conn, failed)

    def _commit_now(self) -> None:
        if self._group is None or self._committing is not None:
            return
        group, self._group = self._group, None
        self._committing = asyncio.get_running_loop().create_task(self._commit(group))

    async def _commit(self, group: list[_Job]) -> None:
        conn, syncer = self._conn, self._syncer
        assert conn is not None and syncer is not None
        bump = self._lock is not None and any(job.notify and job.ok for job in group)
        try:
            await asyncio.get_running_loop().run_in_executor(
                syncer, _commit, conn, self._lock, bump
            )
        except Exception as exc:  # the disk or the connection failed: the group is lost
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.rollback()
            self._release()
            error = StoreError(f"SQLite failed to commit: {exc}; nothing of this write was kept")
            for job in group:
                job.ok, job.value = False, error
        self.commits += 1
        self.jobs += len(group)
        self._committing = None
        for job in group:
            _settle(job.future, job.ok, job.value)
        if self._queued:
            self._schedule()

    def _run_queued(self) -> None:
        while self._queued and self._committing is None and self._locking is None:
            job = self._queued.popleft()
            if not job.future.done():  # a caller that gave up waiting does not get its write
                self._execute(job)

    def _abandon(self, error: StoreError) -> None:
        """The connection failed mid-transaction: undo it and fail every job in it."""
        conn = self._conn
        if conn is not None and conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
        self._release()
        group, self._group = self._group or [], None
        for job in group:
            _settle(job.future, False, error)


def _as_store_error(exc: Exception) -> Exception:
    return StoreError(f"SQLite error: {exc}") if isinstance(exc, sqlite3.Error) else exc


def _commit(conn: sqlite3.Connection, lock: FileLock | None, bump: bool) -> None:
    # in the syncer thread: the fsync, and any automatic checkpoint, happen here
    conn.execute("COMMIT")
    if lock is not None:
        lock.release()
        if bump:
            with contextlib.suppress(OSError):  # a missed bump costs a worker's poll, no more
                lock.bump()


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
