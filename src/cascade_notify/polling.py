"""Receipts by asking: the poller, for providers whose API has a status call.

The engine decides when an attempt is first due for a poll (its provider's
`poll_interval` after the send or the last receipt) and hands it here; the delivery's
lease is released at once. From then on the poller owns the attempt's schedule: it asks
again every interval, in memory, until a poll reports it delivered, read or failed, or
its step's deadline passes. So an attempt waiting on a polled gateway costs one status
call's share per interval, not a store claim and write as well: 100,000 SMS awaiting a
status are asked about in batches without waking 100,000 deliveries.

The delivery's own timer in the store stays the safety net: it comes due every
`engine.REARM_INTERVALS` intervals (and at the deadline), and the engine hands the attempt over
again; the poller, already watching it, ignores that. After a restart, or when the
worker that watched an attempt dies, another worker picks it up there.

The poller gathers the due ids per provider and asks about up to `poll_batch` of them
in one call (SMS.ru, SMSC and the CRMs take lists), and the receipts go through the
notifier's one receipt door, exactly as a webhook's do. A failing status call backs off
(doubling from the provider's interval, up to `MAX_BACKOFF` intervals) and is tried
again; ids asked for meanwhile wait in the queue, each once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

from cascade_notify import _logmask
from cascade_notify.clock import Clock, wait_for
from cascade_notify.models import Attempt, Receipt, ReceiptStatus
from cascade_notify.providers.base import Provider

log = _logmask.logger("cascade_notify.polling")

#: The longest back-off after failed status calls, in poll intervals.
MAX_BACKOFF: Final = 16
#: At most this many ids are watched per provider; more are left to their deliveries'
#: timers, which hand them over again.
MAX_QUEUED: Final = 1_000_000
#: A polled receipt that ends the polling of its message: nothing more to ask about.
_SETTLED: Final = frozenset({ReceiptStatus.DELIVERED, ReceiptStatus.READ, ReceiptStatus.FAILED})

ReceiptDoor = Callable[[Sequence[Receipt]], Awaitable[object]]


class Poller:
    """Asks providers about due attempts in batches; hands the receipts to `door`."""

    def __init__(self, providers: Mapping[str, Provider], clock: Clock, door: ReceiptDoor) -> None:
        self._providers = providers
        self._clock = clock
        self._door = door
        self._queues: dict[str, dict[str, None]] = {}  # due now, in the order asked
        #: message id -> the deadline after which it is not asked about (None: none)
        self._watched: dict[str, dict[str, float | None]] = {}
        #: (due time, message id), in the order they come due (one interval per provider)
        self._later: dict[str, deque[tuple[float, str]]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failures: dict[str, int] = {}
        self._closed = False

    def request(self, attempt: Attempt) -> None:
        """Ask `attempt`'s provider about it now, then every interval until it settles
        (once, however often requested)."""
        message_id = attempt.provider_message_id
        if self._closed or message_id is None or attempt.provider not in self._providers:
            return
        watched = self._watched.setdefault(attempt.provider, {})
        if message_id in watched or len(watched) >= MAX_QUEUED:
            return
        watched[message_id] = attempt.deadline_ts
        self._queues.setdefault(attempt.provider, {})[message_id] = None
        wake = self._wake.get(attempt.provider)
        if wake is None:
            wake = self._wake[attempt.provider] = asyncio.Event()
            self._later[attempt.provider] = deque()
            self._tasks[attempt.provider] = asyncio.get_running_loop().create_task(
                self._run(attempt.provider), name=f"cascade-notify-poll-{attempt.provider}"
            )
        wake.set()

    def pending(self, provider: str) -> int:
        """How many ids wait for `provider`'s next status call (due now)."""
        return len(self._queues.get(provider, ()))

    def watched(self, provider: str) -> int:
        """How many ids the poller asks `provider` about, now or later."""
        return len(self._watched.get(provider, ()))

    async def _run(self, name: str) -> None:
        provider = self._providers[name]
        queue, wake, later = self._queues[name], self._wake[name], self._later[name]
        watched = self._watched[name]
        while not self._closed:
            self._bring_due(queue, later, watched)
            if not queue:
                wake.clear()
                await wait_for(
                    wake, self._clock, later[0][0] - self._clock.now() if later else None
                )
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
            settled = {r.provider_message_id for r in receipts if r.status in _SETTLED}
            again = self._clock.now() + (provider.poll_interval or 60.0)
            for message_id in ids:
                queue.pop(message_id, None)
                if message_id in settled:
                    watched.pop(message_id, None)
                else:
                    later.append((again, message_id))
            if receipts:
                try:
                    await self._door(receipts)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the store is down: the delivery's timer asks again
                    log.warning(
                        "receipts polled from %s could not be recorded", name, exc_info=True
                    )

    def _bring_due(
        self,
        queue: dict[str, None],
        later: deque[tuple[float, str]],
        watched: dict[str, float | None],
    ) -> None:
        """Move the ids whose next poll is due into the queue; forget those whose
        deadline has passed (their delivery's timer has moved the cascade on)."""
        now = self._clock.now()
        while later and later[0][0] <= now:
            _, message_id = later.popleft()
            deadline = watched.get(message_id, 0.0)
            if deadline is not None and deadline <= now:
                watched.pop(message_id, None)
            else:
                queue[message_id] = None

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
        self._watched.clear()
        self._later.clear()


__all__ = ["MAX_BACKOFF", "Poller"]
