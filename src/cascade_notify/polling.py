"""Receipts by asking: the poller, for providers whose API has a status call.

The engine decides when an attempt is due for a poll (its provider's
`poll_interval`, on the delivery's own timer in the store, so it survives restarts)
and hands it here; the delivery's lease is released at once. The poller gathers the
due ids per provider and asks about up to `poll_batch` of them in one call (SMS.ru,
SMSC and the CRMs take lists), and the receipts go through the notifier's one receipt
door, exactly as a webhook's do. A failing status call backs off (doubling from the
provider's interval, up to `MAX_BACKOFF` intervals) and is tried again; ids asked for
meanwhile wait in the queue, each once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

from cascade_notify import _logmask
from cascade_notify.clock import Clock
from cascade_notify.models import Attempt, Receipt
from cascade_notify.providers.base import Provider

log = _logmask.logger("cascade_notify.polling")

#: The longest back-off after failed status calls, in poll intervals.
MAX_BACKOFF: Final = 16
#: At most this many ids wait per provider; more are dropped (their deliveries ask again).
MAX_QUEUED: Final = 1_000_000

ReceiptDoor = Callable[[Sequence[Receipt]], Awaitable[object]]


class Poller:
    """Asks providers about due attempts in batches; hands the receipts to `door`."""

    def __init__(self, providers: Mapping[str, Provider], clock: Clock, door: ReceiptDoor) -> None:
        self._providers = providers
        self._clock = clock
        self._door = door
        self._queues: dict[str, dict[str, None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failures: dict[str, int] = {}
        self._closed = False

    def request(self, attempt: Attempt) -> None:
        """Ask `attempt`'s provider about it soon (once, however often requested)."""
        message_id = attempt.provider_message_id
        if self._closed or message_id is None or attempt.provider not in self._providers:
            return
        queue = self._queues.setdefault(attempt.provider, {})
        if len(queue) >= MAX_QUEUED:
            return
        queue[message_id] = None
        wake = self._wake.get(attempt.provider)
        if wake is None:
            wake = self._wake[attempt.provider] = asyncio.Event()
            self._tasks[attempt.provider] = asyncio.get_running_loop().create_task(
                self._run(attempt.provider), name=f"cascade-notify-poll-{attempt.provider}"
            )
        wake.set()

    def pending(self, provider: str) -> int:
        """How many ids wait for `provider`'s next status call."""
        return len(self._queues.get(provider, ()))

    async def _run(self, name: str) -> None:
        provider = self._providers[name]
        queue, wake = self._queues[name], self._wake[name]
        while not self._closed:
            if not queue:
                wake.clear()
                await wake.wait()
                continue
            ids = list(queue)[: max(1, provider.poll_batch)]
            try:
                receipts = await provider.poll(ids)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures = self._failures[name] = self._failures.get(name, 0) + 1
                interval = provider.poll_interval or 60.0
                delay = interval * min(2 ** (failures - 1), MAX_BACKOFF)
                log.warning(
                    "polling %s for %d receipts failed (%d in a row); again in %.0f s",
                    name,
                    len(ids),
                    failures,
                    delay,
                    exc_info=True,
                )
                await self._clock.sleep(delay)
                continue
            self._failures.pop(name, None)
            for message_id in ids:
                queue.pop(message_id, None)
            if receipts:
                try:
                    await self._door(receipts)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the store is down: the delivery's timer asks again
                    log.warning(
                        "receipts polled from %s could not be recorded", name, exc_info=True
                    )

    async def aclose(self) -> None:
        """Stop polling; ids still queued are asked about again by their deliveries."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._wake.clear()
        self._queues.clear()


__all__ = ["MAX_BACKOFF", "Poller"]
