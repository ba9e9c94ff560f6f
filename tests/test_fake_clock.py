"""FakeClock: timers fire in order at their exact times, and only when time is moved."""

from __future__ import annotations

import asyncio

import pytest

from cascade_notify.testing import FakeClock


async def test_advance_fires_timers_in_order_at_their_time():
    """Sleepers wake in due order, each seeing the clock at its own due time."""
    clock = FakeClock(start=1000.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    tasks = [asyncio.ensure_future(sleeper(n, s)) for n, s in (("b", 20), ("a", 10), ("c", 99))]
    await clock.advance(50)
    assert woke == [("a", 1010.0), ("b", 1020.0)]
    assert clock.now() == 1050.0
    await clock.advance(49)
    assert woke[-1] == ("c", 1099.0)
    await asyncio.gather(*tasks)


async def test_work_started_by_a_timer_runs_before_the_next():
    """A timer set by work that a timer woke fires within the same advance."""
    clock = FakeClock(start=0.0)
    seen: list[float] = []

    async def chain() -> None:
        for _ in range(3):
            await clock.sleep(5)
            seen.append(clock.now())

    task = asyncio.ensure_future(chain())
    await clock.advance(15)
    assert seen == [5.0, 10.0, 15.0]
    await task


async def test_time_does_not_go_backwards():
    """advance() refuses a negative step."""
    with pytest.raises(ValueError, match="backwards"):
        await FakeClock().advance(-1)
