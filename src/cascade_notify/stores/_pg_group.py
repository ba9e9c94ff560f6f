"""Group commit: the writes of concurrent `commit` calls in one process share one
transaction (one round trip, one WAL flush) instead of taking one each.

No write waits for company: the first goes at once; those that arrive while
`flushers` groups are in flight wait for the next, which takes up to `limit`
of them. A group either commits whole or fails whole (every caller gets its
StoreError); a write whose lease was lost is skipped alone (LeaseLost for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from cascade_notify.errors import LeaseLost
from cascade_notify.stores.base import Claim, Transition

Write = tuple[Claim, Transition]
Flush = Callable[[Sequence[Write]], Awaitable[list[bool]]]


class CommitGroup:
    """Queues writes and flushes them in groups through `flush`."""

    def __init__(self, flush: Flush, *, limit: int = 100, flushers: int = 2) -> None:
        self._flush = flush
        self._limit = limit
        self._flushers = flushers
        self._active = 0
        self._queue: list[tuple[Write, asyncio.Future[bool]]] = []
        self._tasks: set[asyncio.Future[None]] = set()

    async def commit(self, claim: Claim, transition: Transition) -> None:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append(((claim, transition), future))
        if self._active < self._flushers:
            self._active += 1
            task = asyncio.ensure_future(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # shielded: the group goes on for the others even if this caller gives up
        if not await asyncio.shield(future):
            raise LeaseLost(f"delivery {claim.delivery.id} is leased by another worker now")

    async def _drain(self) -> None:
        try:
            while self._queue:
                group, self._queue = self._queue[: self._limit], self._queue[self._limit :]
                try:
                    done = await self._flush([write for write, _ in group])
                except BaseException as exc:  # every caller hears of it
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), written in zip(group, done, strict=True):
                    if not future.done():
                        future.set_result(written)
        finally:
            self._active -= 1
