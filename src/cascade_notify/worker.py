"""The claim loop: lease due deliveries from the store and advance each in a task.

A worker advances no more deliveries at once than it has slots (`concurrency`), and
every claim it starts is advanced at once, so it finishes, waits or is left to the next
claim well inside its lease. A slot is a delivery with provider calls left to make: it
is freed when the last one returned, before that delivery's outcome is committed, so
the next claim and that outcome share a commit instead of waiting on each other's (on
SQLite, an fsync each).

A worker also keeps up to `concurrency` claims ready beside the ones in hand, so a freed
slot starts the next delivery at once instead of waiting for a claim's round trip (on
SQLite a commit each): claiming runs ahead of the slots, not in their way.

- A ready claim is leased like one in hand; one whose lease has run too low by the time
  a slot frees is left alone (its lease runs out and the next claim takes it again).
- Ready claims start highest priority first. A send of a higher priority than some
  ready claim (a one-time code during a bulk mailing) makes the next freed slot wait
  for one claim, so that send is among the ready ones and starts in that slot instead
  of behind them.
- `stop()` hands the ready claims back to the store, due at once, rather than starting
  them during shutdown or leaving them leased until their leases run out.

It sleeps until the store's next due time, or until poked: by a send or a receipt in
this process, or by a store that is `Watchable` (other processes' news). A store shared
between processes (`Store.shared`) is also looked at every `POLL_INTERVAL`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Final

from cascade_notify import _logmask
from cascade_notify.clock import Clock, wait_for
from cascade_notify.engine import LEASE_MARGIN, Engine, LeaseRanOut
from cascade_notify.errors import CascadeError, LeaseLost
from cascade_notify.models import Delivery, DeliveryStatus, Priority
from cascade_notify.stores import Watchable
from cascade_notify.stores.base import Claim, Store, Transition

log = _logmask.logger("cascade_notify.worker")

#: How often an idle worker looks at a shared store for work other processes did.
POLL_INTERVAL: Final = 1.0


class Worker:
    """Advances the cascades of one store; `start()`, `poke()`, `stop()`."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        clock: Clock,
        *,
        concurrency: int,
        batch: int,
        lease: float,
        on_final: Callable[[Delivery], None],
    ) -> None:
        self.store = store
        self.engine = engine
        self.clock = clock
        self.concurrency = concurrency
        self.batch = batch
        self.lease = lease
        self._on_final = on_final
        self._poke = asyncio.Event()
        self._free = asyncio.Event()
        self._busy = 0
        self._ready: deque[Claim] = deque()  # claimed ahead, waiting for a free slot
        self._news = False  # a send outranks a ready claim: claim before filling a slot
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def poke(self, priority: Priority | None = None) -> None:
        """Look for due work now (a send or a receipt made some due); `priority`: that of
        the sends made due, when known."""
        if priority is not None and any(
            claim.delivery.priority.rank > priority.rank for claim in self._ready
        ):
            self._news = True  # claim it before the next slot takes a ready claim
        self._poke.set()

    async def start(self) -> None:
        if isinstance(self.store, Watchable):
            # sends and receipts of other processes wake the worker at once
            await self.store.watch(self._poke.set)
        self._loop_task = asyncio.get_running_loop().create_task(
            self._run(), name="cascade-notify-worker"
        )

    async def stop(self) -> None:
        """Claim nothing more; let the transitions in hand finish."""
        self._stopping = True
        self._poke.set()
        self._free.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        await self._hand_back()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _hand_back(self) -> None:
        """Release the ready claims, due now: another worker takes them at once."""
        while self._ready:
            claim = self._ready.popleft()
            try:
                await self.store.commit(claim, Transition(wake_ts=self.clock.now()))
            except LeaseLost:
                pass  # taken over or cancelled meanwhile: no longer ours to hand back
            except CascadeError:
                log.warning(
                    "handing back delivery %s failed; it is taken again when its lease expires",
                    claim.delivery.id,
                    exc_info=True,
                )

    async def _run(self) -> None:
        while not self._stopping:
            room = 2 * self.concurrency - self._busy - len(self._ready)
            if room <= 0:
                self._free.clear()
                await self._free.wait()
                continue
            self._poke.clear()
            try:
                claims = await self.store.claim(
                    self.clock.now(), limit=min(self.batch, room), lease=self.lease
                )
            except CascadeError:
                log.exception("claiming due deliveries failed; retrying")
                await self._park(POLL_INTERVAL)
                continue
            if claims and log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "claimed %d due deliveries: %s", len(claims),
                    ", ".join(c.delivery.id for c in claims),
                )  # fmt: skip
            self._news = False
            if claims:
                self._ready.extend(claims)
                if any(c.delivery.priority is not Priority.NORMAL for c in self._ready):
                    # highest first; equal ones in the order claimed
                    ordered = sorted(self._ready, key=lambda c: c.delivery.priority.rank)
                    self._ready = deque(ordered)
            self._fill()
            if claims:
                await asyncio.sleep(0)
                continue
            try:
                wake = await self.store.next_wake()
            except CascadeError:
                # a store outage must not end the worker: back off and look again
                log.exception("reading the next due time failed; retrying")
                await self._park(POLL_INTERVAL)
                continue
            delay = None if wake is None else wake - self.clock.now()
            if delay is not None and delay <= 0:
                await asyncio.sleep(0)
                continue
            await self._park(delay)

    async def _park(self, delay: float | None) -> None:
        if self.store.shared:
            # other processes (send-only notifiers, webhook receivers, workers) change a
            # shared store: a Watchable one pokes us when they do, and in any case we look
            # again within POLL_INTERVAL whatever our own next timer says
            delay = POLL_INTERVAL if delay is None else min(delay, POLL_INTERVAL)
        await wait_for(self._poke, self.clock, delay)

    async def _advance(self, claim: Claim) -> None:
        slot = True  # this delivery counts against `concurrency` until its calls are done

        def calls_done() -> None:
            nonlocal slot
            if slot:
                slot = False
                self._release_slot()

        try:
            delivery = await self.engine.advance(claim, calls_done=calls_done)
            if delivery.final:
                self._on_final(delivery)
        except LeaseRanOut as lost:
            log.warning(
                "%s; it is left for the next claim", lost,
                extra={"delivery_id": claim.delivery.id},
            )  # fmt: skip
        except LeaseLost:
            await self._stepped_back(claim.delivery.id)
        except Exception:
            log.exception(
                "advancing delivery %s failed; it will be retried when its lease expires",
                claim.delivery.id,
                extra={"delivery_id": claim.delivery.id, "step": claim.delivery.step},
            )
        finally:
            calls_done()
            # the store may have re-queued it (a receipt came in while we held the lease)
            self._poke.set()

    def _fill(self) -> None:
        """Start ready claims in the free slots."""
        while self._ready and self._busy < self.concurrency:
            claim = self._ready.popleft()
            if self.clock.now() >= claim.lease_until - 2 * LEASE_MARGIN:
                # too little lease left to write an intent and call: the engine would only
                # write a short wait; the lease runs out and the next claim takes it again
                continue
            self._start(claim)

    def _start(self, claim: Claim) -> None:
        self._busy += 1
        task = asyncio.get_running_loop().create_task(self._advance(claim))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release_slot(self) -> None:
        self._busy -= 1
        if not self._news:
            self._fill()
        self._free.set()
        self._poke.set()

    async def _stepped_back(self, delivery_id: str) -> None:
        """Say why a write was refused: the delivery was cancelled while this worker held
        it (`cancel` fences the lease too; nothing went wrong), or another worker has it."""
        try:
            now = await self.store.get(delivery_id)
        except CascadeError:
            now = None
        if now is not None and now.status is DeliveryStatus.CANCELLED:
            log.info(
                "delivery %s was cancelled while in hand; stepping back", now.id,
                extra={"delivery_id": now.id},
            )  # fmt: skip
        else:
            log.warning(
                "lease on delivery %s was taken over; stepping back", delivery_id,
                extra={"delivery_id": delivery_id},
            )  # fmt: skip


__all__ = ["POLL_INTERVAL", "Worker"]
