"""A clock that moves only when told to."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

_SETTLE_ROUNDS = 3
_SETTLE_LIMIT = 200_000


def _has_ready(loop: asyncio.AbstractEventLoop) -> bool:
    # asyncio offers no "all tasks blocked" query; the ready queue is the honest answer.
    # On a loop without one (uvloop) the quiet rounds alone decide.
    ready = getattr(loop, "_ready", None)
    return bool(ready)


class FakeClock:
    """Controllable time for tests.

    `await clock.advance(600)` moves time forward in order through every timer
    due in those 600 seconds, and after each lets the work it started run to
    rest (until every registered idle check passes), so a test of a ten-minute
    timeout takes milliseconds. Sleeping coroutines wake at exactly their due
    time as this clock reads it.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = float(start)
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._idle_checks: list[Callable[[], bool]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self._now + seconds, next(self._seq), future))
        await future

    def add_idle_check(self, check: Callable[[], bool]) -> Callable[[], None]:
        self._idle_checks.append(check)

        def remove() -> None:
            if check in self._idle_checks:
                self._idle_checks.remove(check)

        return remove

    @property
    def pending_timers(self) -> int:
        """How many sleepers are waiting on this clock."""
        return sum(1 for _, _, f in self._timers if not f.done())

    def next_timer(self) -> float | None:
        """When the earliest sleeper wakes, or None."""
        self._drop_cancelled()
        return self._timers[0][0] if self._timers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing due timers in order."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        target = self._now + seconds
        await self.settle()
        while True:
            self._drop_cancelled()
            if not self._timers or self._timers[0][0] > target:
                break
            due = self._timers[0][0]
            self._now = max(self._now, due)
            while self._timers and self._timers[0][0] <= self._now:
                _, _, future = heapq.heappop(self._timers)
                if not future.done():
                    future.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()

    async def run_until(self, predicate: Callable[[], bool], *, limit: float = 86_400.0) -> bool:
        """Advance timer by timer until `predicate()` holds or `limit` seconds pass."""
        end = self._now + limit
        await self.settle()
        while not predicate():
            nxt = self.next_timer()
            if nxt is None or nxt > end:
                return predicate()
            await self.advance(max(0.0, nxt - self._now))
        return True

    async def settle(self) -> None:
        """Let runnable work finish: return once nothing is ready to run on the event loop
        for a few rounds and every idle check passes. Work sleeping on this clock is at
        rest; work in threads is covered by the idle checks (a SQLite store registers one)."""
        loop = asyncio.get_running_loop()
        quiet = 0
        for spin in range(_SETTLE_LIMIT):
            await asyncio.sleep(0)
            if not _has_ready(loop) and all(check() for check in self._idle_checks):
                quiet += 1
                if quiet >= _SETTLE_ROUNDS:
                    return
            else:
                quiet = 0
                if spin > 1000:
                    # give threads and sockets real time to answer
                    await asyncio.sleep(0.0005)
        raise RuntimeError("FakeClock.settle: work did not come to rest")

    def _drop_cancelled(self) -> None:
        while self._timers and self._timers[0][2].done():
            heapq.heappop(self._timers)
