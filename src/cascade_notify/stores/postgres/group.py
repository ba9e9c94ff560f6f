"""Group commit: concurrent calls of one process share one transaction (one round trip,
one WAL flush) instead of taking one each. The PostgreSQL store groups `commit` writes
and the `create` of new deliveries this way.

No call waits for company: the first goes at once; those that arrive while `flushers`
groups are in flight wait for the next, which takes up to `limit` of them. A group
either commits whole or fails whole (every caller gets its StoreError), so what one
caller alone can get wrong (a value JSON cannot hold) is found before its item joins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Group(Generic[T, R]):
    """Queues items and hands them to `flush` in groups; `flush` answers each, in order."""

    def __init__(
        self,
        flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        limit: int = 100,
        flushers: int = 2,
    ) -> None:
        self._flush = flush
        self._limit = limit
        self._flushers = flushers
        self._active = 0
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Future[None]] = set()

    async def submit(self, item: T) -> R:
        """`item`'s answer, once the group it joined is flushed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._active < self._flushers:
            self._active += 1
            task = asyncio.ensure_future(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # shielded: the group goes on for the others even if this caller gives up
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._queue:
                group, self._queue = self._queue[: self._limit], self._queue[self._limit :]
                try:
                    answers = await self._flush([item for item, _ in group])
                except BaseException as exc:  # every caller hears of it
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), answer in zip(group, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._active -= 1
