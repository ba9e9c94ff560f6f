"""The simulation's clock: a `FakeClock` driven timer by timer with the least settling."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

from cascade_notify.testing import FakeClock

_SPINS = 10_000


class SimClock(FakeClock):
    """`FakeClock` with `drive()`: fire each due time's timers, then let the event loop
    run until nothing is ready (one quiet round: a simulation's work is all on the loop,
    with no threads or sockets to wait for), instead of `advance()`'s rounds around
    every step. Falls back to `settle()` on a loop that does not show its ready queue."""

    async def _quiet(self) -> None:
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)
        if ready is None:
            await self.settle()
            return
        checks = self._idle_checks
        for _ in range(_SPINS):
            await asyncio.sleep(0)
            if not ready and all(check() for check in checks):
                return
        await self.settle()

    async def drive(self, until: float, done: Callable[[], bool]) -> None:
        """Advance timer by timer until `done()` or no timer is due by `until`."""
        timers = self._timers
        await self._quiet()
        while not done():
            while timers and timers[0][2].done():
                heapq.heappop(timers)
            if not timers or timers[0][0] > until:
                return
            self._now = max(self._now, timers[0][0])
            while timers and timers[0][0] <= self._now:
                future = heapq.heappop(timers)[2]
                if not future.done():
                    future.set_result(None)
            await self._quiet()
