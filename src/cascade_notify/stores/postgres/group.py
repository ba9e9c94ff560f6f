"""Group commit: concurrent calls of one process share one transaction (one round trip,
one WAL flush) instead of taking one each. The PostgreSQL store groups `commit` writes
and the `create` of new deliveries this way.

No call waits for company: the first goes at once; those that arrive while `flushers`
groups are in flight wait for the next, which takes up to `limit` of them. A group
commits whole or fails whole. What one caller alone can get wrong is found before its
item joins where the client can tell (a value JSON cannot hold); where only the server
can (a text or a size it refuses), the error says so (`alone(exc)`), and the group's
items are flushed again one by one, so the item at fault fails alone and the others
are written. Any other failure (an outage, a timeout) reaches every caller of the group.
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
        alone: Callable[[BaseException], bool] = lambda exc: False,
    ) -> None:
        self._flush = flush
        self._alone = alone
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
                except BaseException as exc:
                    if len(group) > 1 and self._alone(exc):
                        await self._one_by_one(group)
                        continue
                    _fail(group, exc)  # every caller hears of it
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), answer in zip(group, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._active -= 1

    async def _one_by_one(self, group: Sequence[tuple[T, asyncio.Future[R]]]) -> None:
        """Flush each item of a group the server refused alone (nothing of it was written)."""
        for index, (item, future) in enumerate(group):
            try:
                [answer] = await self._flush([item])
            except BaseException as exc:
                if self._alone(exc):
                    _fail([(item, future)], exc)
                    continue
                _fail(group[index:], exc)  # an outage meanwhile: the rest hear of it
                if not isinstance(exc, Exception):
                    raise
                return
            if not future.done():
                future.set_result(answer)


def _fail(group: Sequence[tuple[object, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, future in group:
        if not future.done():
            future.set_exception(exc)
