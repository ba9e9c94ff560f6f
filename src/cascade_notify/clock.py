"""Time, injected everywhere: the engine, the stores' SQL and the fakes read it here.

`SystemClock` is wall time. Tests use `cascade_notify.testing.FakeClock`,
whose `advance()` runs every timer it passes, so a ten-minute receipt deadline
takes milliseconds to test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What the library asks of a clock."""

    def now(self) -> float:
        """Seconds since the epoch (wall time: deadlines outlive the process)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after `seconds` of this clock's time."""
        ...

    def add_idle_check(self, check: Callable[[], bool]) -> Callable[[], None]:
        """Register a 'nothing left to run' probe; return a function removing it.

        A fake clock settles on these before and after moving time; the
        system clock ignores them.
        """
        ...


class SystemClock:
    """Wall-clock time and real sleeping."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def add_idle_check(self, check: Callable[[], bool]) -> Callable[[], None]:
        return _nothing


def _nothing() -> None:
    return None


async def wait_for(event: asyncio.Event, clock: Clock, delay: float | None) -> None:
    """Until `event` is set, or `delay` seconds pass on `clock` (None: no time limit):
    how the worker, the poller and the outbox sender sleep between rounds."""
    waits: set[asyncio.Future[object]] = {asyncio.ensure_future(event.wait())}
    if delay is not None:
        waits.add(asyncio.ensure_future(clock.sleep(max(0.0, delay))))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
