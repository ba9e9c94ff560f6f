"""`Notifier`: the one object an application holds.

It wires the policy, the providers and the store together, takes `send()`
calls, runs the worker that advances cascades, and takes receipts in.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any, Self

from cascade_notify import webhooks
from cascade_notify.clock import Clock, SystemClock
from cascade_notify.engine import Engine
from cascade_notify.errors import CascadeError, DeliveryNotFound, LeaseLost, WaitTimeout
from cascade_notify.events import Event, Listener, emit
from cascade_notify.models import (
    Delivery,
    Message,
    Receipt,
    Recipient,
    check_idempotency_key,
    new_id,
)
from cascade_notify.policy import Config, Policy, load_config
from cascade_notify.providers.base import Provider, WebhookResponse
from cascade_notify.resilience import Breakers, Protection
from cascade_notify.stores import Watchable, open_store
from cascade_notify.stores.base import Claim, ReceiptResult, Store
from cascade_notify.stores.memory import MemoryStore

log = logging.getLogger("cascade_notify")

#: How often a waiting `wait()` or an idle worker looks at the store for work
#: other processes did (shared stores); local work wakes them at once.
POLL_INTERVAL = 1.0


class Notifier:
    """Sends messages by cascade. Use as `async with Notifier.from_yaml(...) as notifier:`.

    With `worker=False` the notifier only sends and takes receipts: separate
    `cascade-notify worker` processes on the same store advance the cascades.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        store: Store | str | None = None,
        worker: bool = True,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._store_spec = store if store is not None else config.store
        self._store: Store | None = None
        self._run_worker = worker
        built: dict[str, Provider] = {}
        for name, spec in config.providers.items():
            given = (providers or {}).get(name)
            built[name] = (
                given if given is not None else spec.cls(name, spec.settings, clock=self.clock)
            )
        self._providers = built
        self.providers: Mapping[str, Provider] = MappingProxyType(built)
        self._guard = Protection(config, self.clock)
        #: List, open and close circuit breakers by hand.
        self.breakers: Breakers = self._guard.breakers
        self._listeners: list[Listener] = []
        self._waiters: dict[str, list[asyncio.Future[Delivery]]] = {}
        self._engine: Engine | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy = 0
        self._parked = False
        self._stopping = False
        self._poke: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._remove_idle_check = _noop

    @classmethod
    def from_yaml(
        cls,
        source: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        store: Store | str | None = None,
        worker: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> Self:
        """A notifier for the policy file at `source` (a path, or the YAML text itself)."""
        return cls(load_config(source, env=env), clock=clock, store=store, worker=worker)

    @property
    def store(self) -> Store:
        if self._store is None:
            raise CascadeError("the notifier is not running; use `async with notifier:`")
        return self._store

    @property
    def running(self) -> bool:
        return self._engine is not None

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(event)` for everything that happens to any delivery."""
        self._listeners.append(listener)
        self._relay_brakes()

    def _relay_brakes(self) -> None:
        # brake skips are repeated as `brake` events only for someone listening: with no
        # listener the engine builds no events at all, which keeps its hot path lean
        if self._listeners and self._guard.relay not in self._listeners:
            self._listeners.append(self._guard.relay)

    def _emit(self, event: Event) -> None:
        emit(self._listeners, event)

    # lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._engine is not None:
            return
        store = (
            open_store(self._store_spec) if isinstance(self._store_spec, str) else self._store_spec
        )
        await store.open()
        self._store = store
        self._poke = asyncio.Event()
        self._slots = asyncio.Semaphore(self.config.worker.concurrency)
        self._stopping = False
        for provider in self._providers.values():
            provider.attach(self._ingest)
        self._guard.attach(store, self._emit)
        self._relay_brakes()
        self._engine = Engine(
            store, self._providers, self.clock, listeners=self._listeners, guard=self._guard
        )
        self._remove_idle_check = self.clock.add_idle_check(self._idle)
        if self._run_worker:
            if isinstance(store, Watchable):
                # sends and receipts of other processes wake the worker at once
                await store.watch(self._poke.set)
            self._worker_task = asyncio.get_running_loop().create_task(
                self._work(), name="cascade-notify-worker"
            )

    async def stop(self) -> None:
        """Stop taking work, let the transitions in hand finish, and close everything."""
        if self._engine is None:
            return
        self._stopping = True
        assert self._poke is not None
        self._poke.set()
        if self._worker_task is not None:
            await self._worker_task
            self._worker_task = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._remove_idle_check()
        for provider in self._providers.values():
            await provider.aclose()
        await self._guard.flush(self.clock.now())
        await self.store.close()
        self._guard.detach()
        if self._guard.relay in self._listeners:
            self._listeners.remove(self._guard.relay)
        self._engine = None
        self._store = None
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.cancel()
        self._waiters.clear()

    def _idle(self) -> bool:
        # work in this loop is seen by the fake clock itself; a store doing work in a
        # thread says whether it has any in hand
        idle = getattr(self._store, "idle", None)
        return idle is None or bool(idle())

    # the verbs

    def policy(self, name: str | None = None) -> Policy:
        """The named policy, or the default one."""
        key = name or self.config.default_policy
        found = self.config.policies.get(key)
        if found is None:
            known = ", ".join(sorted(self.config.policies))
            raise CascadeError(f"unknown policy {key!r}; this notifier has: {known}")
        return found

    async def send(
        self,
        recipient: Recipient,
        message: Message,
        *,
        policy: str | None = None,
        idempotency_key: str | None = None,
    ) -> Delivery:
        """Persist a cascade and start it; return at once with its `Delivery`.

        The same `idempotency_key` returns the delivery it first made, and sends nothing;
        a key is a non-empty string of at most 256 characters (else MessageError).
        """
        if not isinstance(recipient, Recipient):
            raise TypeError(f"recipient must be a Recipient, not {type(recipient).__name__}")
        if not isinstance(message, Message):
            raise TypeError(f"message must be a Message, not {type(message).__name__}")
        check_idempotency_key(idempotency_key)
        chosen = self.policy(policy)
        store = self.store
        now = self.clock.now()
        delivery = Delivery(
            id=new_id(),
            policy=chosen.name,
            recipient=recipient,
            message=message,
            steps=chosen.steps,
            created_ts=now,
            expires_ts=now + chosen.ttl,
            wake_ts=now,
            idempotency_key=idempotency_key,
        )
        stored, created = await store.create(delivery)
        if created:
            if self._listeners:
                self._emit(Event("created", stored.id, now, detail=chosen.name))
            assert self._poke is not None
            self._poke.set()
        return stored

    async def get(self, delivery_id: str) -> Delivery:
        """The delivery as it stands now."""
        found = await self.store.get(delivery_id)
        if found is None:
            raise DeliveryNotFound(delivery_id)
        return found

    async def wait(self, delivery_id: str, timeout: float | None = None) -> Delivery:
        """Return the delivery once it is final; raise WaitTimeout after `timeout` seconds."""
        delivery = await self.get(delivery_id)
        if delivery.final:
            return delivery
        deadline = None if timeout is None else self.clock.now() + timeout
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(delivery_id, []).append(future)
        try:
            while True:
                step = POLL_INTERVAL
                if deadline is not None:
                    step = min(step, deadline - self.clock.now())
                    if step <= 0:
                        raise WaitTimeout(
                            f"delivery {delivery_id} is still pending after {timeout} s"
                        )
                sleeper = asyncio.ensure_future(self.clock.sleep(step))
                either: set[asyncio.Future[Any]] = {future, sleeper}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                sleeper.cancel()
                if future.done():
                    return future.result()
                delivery = await self.get(delivery_id)
                if delivery.final:
                    return delivery
        finally:
            waiting = self._waiters.get(delivery_id, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(delivery_id, None)

    async def cancel(self, delivery_id: str) -> Delivery:
        """End a pending cascade; nothing more is sent for it. A final one is returned as is."""
        delivery = await self.store.cancel(delivery_id, self.clock.now())
        if delivery is None:
            raise DeliveryNotFound(delivery_id)
        self._resolve(delivery)
        if self._listeners:
            self._emit(
                Event("finished", delivery.id, self.clock.now(), status=delivery.status.value)
            )
        return delivery

    async def record_receipts(self, receipts: Sequence[Receipt]) -> list[ReceiptResult]:
        """Take receipts in (from a webhook, a poll, a fake) and wake their deliveries."""
        results = await self.store.record_receipts(receipts, self.clock.now())
        woke = False
        for result in results:
            if not result.duplicate:
                self._guard.heard(result.receipt)
            if result.delivery_id is None:
                log.info(
                    "receipt %s from %s for a message not known (yet): kept a while",
                    result.receipt.status.value,
                    result.receipt.provider,
                )
            elif not result.duplicate:
                woke = True
                if self._listeners:
                    self._emit(
                        Event(
                            "receipt",
                            result.delivery_id,
                            self.clock.now(),
                            provider=result.receipt.provider,
                            status=result.receipt.status.value,
                            detail=result.receipt.error,
                        )
                    )
        if woke and self._poke is not None:
            self._poke.set()
        return results

    async def handle_webhook(
        self,
        provider_name: str,
        *,
        method: str,
        url: str,
        headers: webhooks.Headers,
        body: bytes,
        max_body: int = webhooks.MAX_BODY,
    ) -> WebhookResponse:
        """Verify, parse and record one webhook request for `provider_name`; return the
        answer to give (framework-free: any web framework can call this)."""
        return await webhooks.handle_webhook(
            self,
            provider_name,
            method=method,
            url=url,
            headers=headers,
            body=body,
            max_body=max_body,
        )

    def asgi_app(
        self,
        *,
        prefix: str = "/receipts",
        max_body: int = webhooks.MAX_BODY,
        public_url: str | None = None,
        read_timeout: float = 10.0,
    ) -> webhooks.ReceiptsApp:
        """An ASGI app routing `GET|POST {prefix}/{provider_name}` to `handle_webhook`."""
        return webhooks.asgi_app(
            self,
            prefix=prefix,
            max_body=max_body,
            public_url=public_url,
            read_timeout=read_timeout,
        )

    async def _ingest(self, receipts: Sequence[Receipt]) -> None:
        await self.record_receipts(receipts)

    # the worker

    async def _work(self) -> None:
        assert self._poke is not None and self._slots is not None
        store, poke, slots = self.store, self._poke, self._slots
        worker = self.config.worker
        loop = asyncio.get_running_loop()
        while not self._stopping:
            poke.clear()
            try:
                claims = await store.claim(self.clock.now(), limit=worker.batch, lease=worker.lease)
            except CascadeError:
                log.exception("claiming due deliveries failed; retrying")
                await self._park(POLL_INTERVAL)
                continue
            for claim in claims:
                await slots.acquire()
                self._busy += 1
                task = loop.create_task(self._advance(claim))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if claims:
                await asyncio.sleep(0)
                continue
            try:
                wake = await store.next_wake()
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
        assert self._poke is not None
        if not isinstance(self.store, MemoryStore):
            # other processes (send-only notifiers, webhook receivers, workers) change a
            # shared store: a Watchable one pokes us when they do, and in any case we look
            # again within POLL_INTERVAL whatever our own next timer says
            delay = POLL_INTERVAL if delay is None else min(delay, POLL_INTERVAL)
        waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._poke.wait())}
        if delay is not None:
            waits.add(asyncio.ensure_future(self.clock.sleep(delay)))
        self._parked = True
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._parked = False
            for waiting in waits:
                waiting.cancel()

    async def _advance(self, claim: Claim) -> None:
        assert self._engine is not None and self._slots is not None
        try:
            delivery = await self._engine.advance(claim)
            if delivery.final:
                self._resolve(delivery)
        except LeaseLost:
            log.warning("lease on delivery %s was taken over; stepping back", claim.delivery.id)
        except Exception:
            log.exception(
                "advancing delivery %s failed; it will be retried when its lease expires",
                claim.delivery.id,
            )
        finally:
            self._busy -= 1
            self._slots.release()
            # the store may have re-queued it (a receipt came in while we held the lease)
            if self._poke is not None:
                self._poke.set()

    def _resolve(self, delivery: Delivery) -> None:
        for future in self._waiters.pop(delivery.id, []):
            if not future.done():
                future.set_result(delivery.copy())


def _noop() -> None:
    return None
