"""One thread that owns the one SQLite connection, and commits in groups.

Every store call becomes a job: a function of the connection. The thread
takes whatever jobs are queued (waiting up to `window` seconds for more once
the first arrives), runs them in one `BEGIN IMMEDIATE` transaction, each in a
savepoint of its own so one job's error undoes only its own writes, commits
once, and only then answers every job's caller. So a call that returned is
committed (and, with `synchronous=FULL`, on disk), and N writes arriving
together cost one fsync instead of N. Jobs that arrive while a commit is
syncing simply wait for the next group: under load the groups grow by
themselves, with no delay added when there is no load.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cascade_notify.errors import StoreError

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]

#: The most jobs one transaction takes: bounds how long the first caller waits.
MAX_GROUP = 512


@dataclass(slots=True)
class _Job:
    work: Work | None  # None: close the connection and stop
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class Writer:
    """The writer thread. `await writer.run(fn)` runs `fn(connection)` in the next group."""

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], *, window: float = 0.0, name: str = ""
    ) -> None:
        self._connect = connect
        self._window = window
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._main, name=f"cascade-sqlite {name}", daemon=True
        )
        self._closed = False
        self.in_flight = 0
        #: Transactions committed and jobs they carried, for measuring the grouping.
        self.commits = 0
        self.jobs = 0

    def start(self) -> None:
        self._thread.start()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in the writer thread inside the next transaction; return its result
        once that transaction committed (raise its error, or StoreError if the commit failed)."""
        if self._closed:
            raise StoreError("the SQLite store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.in_flight += 1
        try:
            self._queue.put(_Job(work, loop, future))
            return await future
        finally:
            self.in_flight -= 1

    async def stop(self) -> None:
        """Finish the queued jobs, close the connection and end the thread."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._closed = True
        self._queue.put(_Job(None, loop, future))
        await future
        await asyncio.to_thread(self._thread.join)

    # in the thread

    def _main(self) -> None:
        try:
            conn = self._connect()
        except (sqlite3.Error, OSError) as exc:
            self._fail_all(StoreError(f"cannot open the SQLite database: {exc}"))
            return
        stop: _Job | None = None
        try:
            while stop is None:
                group = self._take()
                if group[-1].work is None:
                    stop = group.pop()
                if group:
                    self._run_group(conn, group)
        finally:
            conn.close()
            self._closed = True
            self._fail_all(StoreError("the SQLite store is closed"), block=False)
            if stop is not None:
                _answer(stop, True, None)

    def _take(self) -> list[_Job]:
        group = [self._queue.get()]
        deadline = time.monotonic() + self._window
        while len(group) < MAX_GROUP and group[-1].work is not None:
            try:
                remaining = deadline - time.monotonic()
                job = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            group.append(job)
        return group

    def _run_group(self, conn: sqlite3.Connection, group: list[_Job]) -> None:
        try:
            outcomes = self._transaction(conn, group)
        except Exception as exc:  # the connection itself failed: answer, never hang a caller
            if conn.in_transaction:
                conn.rollback()
            error = StoreError(f"SQLite failed: {exc}; nothing of this write was kept")
            outcomes = [(False, error)] * len(group)
        self.commits += 1
        self.jobs += len(group)
        # one wake-up of each waiting event loop for the whole group, not one per job
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, (ok, value) in zip(group, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, answers in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(_settle_all, answers)

    @staticmethod
    def _transaction(conn: sqlite3.Connection, group: list[_Job]) -> list[tuple[bool, Any]]:
        conn.execute("BEGIN IMMEDIATE")
        outcomes: list[tuple[bool, Any]] = []
        for job in group:
            assert job.work is not None
            conn.execute("SAVEPOINT job")
            try:
                value = job.work(conn)
            except Exception as exc:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                if isinstance(exc, sqlite3.Error):
                    exc = StoreError(f"SQLite error: {exc}")
                outcomes.append((False, exc))
            else:
                conn.execute("RELEASE job")
                outcomes.append((True, value))
        conn.execute("COMMIT")
        return outcomes

    def _fail_all(self, error: StoreError, *, block: bool = True) -> None:
        """Answer every queued job with `error` (the stop job with success)."""
        while True:
            try:
                job = self._queue.get() if block else self._queue.get_nowait()
            except queue.Empty:
                return
            _answer(job, job.work is None, error)
            if job.work is None and block:
                return


def _answer(job: _Job, ok: bool, value: Any) -> None:
    # a closed event loop raises RuntimeError: nobody is waiting any more
    with contextlib.suppress(RuntimeError):
        job.loop.call_soon_threadsafe(_settle, job.future, ok, value)


def _settle_all(answers: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in answers:
        _settle(future, ok, value)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
