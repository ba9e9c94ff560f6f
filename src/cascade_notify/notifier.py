"""`Notifier`: the one object an application holds.

It wires the policy, the providers and the store together, takes `send()`
calls, runs the worker that advances cascades, and takes receipts in.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from cascade_notify import _logmask, bulk, learned, linking, webhooks
from cascade_notify.bulk import Send, SendManyResult
from cascade_notify.calls import Calls
from cascade_notify.clock import Clock, SystemClock
from cascade_notify.engine import Engine
from cascade_notify.errors import (
    CascadeError,
    DeliveryNotFound,
    IdempotencyConflict,
    MessageError,
    NotRunning,
    RecipientError,
    ScheduleError,
    StoreError,
    UnknownPolicy,
    WaitTimeout,
)
from cascade_notify.events import Event, Listener, emit
from cascade_notify.learned import Seen
from cascade_notify.models import (
    CHANNEL_KINDS,
    EXPLICIT_ROUTE,
    AttemptStatus,
    Delivery,
    DeliveryStatus,
    Message,
    Priority,
    Receipt,
    ReceiptStatus,
    Recipient,
    Signal,
    SignalKind,
    check_idempotency_key,
    new_id,
)
from cascade_notify.observe import api as views
from cascade_notify.observe.types import DeliveryPage, DeliveryQuery, Dimension, Stats
from cascade_notify.outbox import OutboxSender
from cascade_notify.policy import Config, Policy, load_config
from cascade_notify.polling import Poller
from cascade_notify.providers.base import Inbound, Provider, WebhookResponse, WithdrawRequest
from cascade_notify.providers.call.queue import CallQueueProvider
from cascade_notify.resilience import Breakers, Protection
from cascade_notify.routing import Router
from cascade_notify.stores import (
    AddressBook,
    Batching,
    Learning,
    Rescheduling,
    Settling,
    SignalOutcome,
    open_store,
)
from cascade_notify.stores.base import (
    CallQueue,
    Outbox,
    ReadingCreate,
    ReceiptResult,
    SendFacts,
    SendReads,
    Store,
)
from cascade_notify.worker import POLL_INTERVAL, Worker

if TYPE_CHECKING:
    from cascade_notify.providers._http import HttpClient
    from cascade_notify.support import Auth, Role, SupportApp

log = _logmask.logger("cascade_notify")


class Notifier:
    """Sends messages by cascade. Use as `async with Notifier.from_yaml(...) as notifier:`.

    With `worker=False` the notifier only sends and takes receipts: separate
    `cascade-notify worker` processes on the same store advance the cascades. With
    `events:` in the policy, `outbox` says whether this notifier posts the outcome
    webhooks: by default where a worker runs; `False` leaves them to other processes on
    the store, `True` posts them even without a worker (a process that only posts).
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        store: Store | str | None = None,
        worker: bool = True,
        providers: Mapping[str, Provider] | None = None,
        http: HttpClient | None = None,
        outbox: bool | None = None,
    ) -> None:
        """`providers` replaces the named ones with objects of your own; `http` (an
        `httpx.AsyncClient`, or a transport such as `httpx.MockTransport` or an emulator's)
        is handed to every HTTP provider the notifier builds."""
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._store_spec = store if store is not None else config.store
        self._store: Store | None = None
        self._run_worker = worker
        self._run_outbox = worker if outbox is None else outbox
        built: dict[str, Provider] = {}
        for name, spec in config.providers.items():
            given = (providers or {}).get(name)
            if given is not None:
                built[name] = given
            elif http is not None and spec.cls.takes_http:
                http_provider: Any = spec.cls  # an HttpProvider: it takes `http=`
                built[name] = http_provider(name, spec.settings, clock=self.clock, http=http)
            else:
                built[name] = spec.cls(name, spec.settings, clock=self.clock)
        self._providers = built
        self.providers: Mapping[str, Provider] = MappingProxyType(built)
        # policies with a provider that reports signals: only their sends ask the store
        # what it knows of the recipient's addresses
        self._asks_addresses = {
            policy.name: any(built[n].signals for step in policy.steps for n in step.providers)
            for policy in config.policies.values()
        }
        self._router = Router(config.routes, config.default_policy)
        self._guard = Protection(config, self.clock)
        #: List, open and close circuit breakers by hand.
        self.breakers: Breakers = self._guard.breakers
        self._listeners: list[Listener] = []
        self._waiters: dict[str, list[asyncio.Future[Delivery]]] = {}
        self._engine: Engine | None = None
        self._worker: Worker | None = None
        self._poller: Poller | None = None
        self._outbox: OutboxSender | None = None
        self._remove_idle_check = _noop
        self._settling: Settling | None = None
        #: The call queue of `type: call_queue`: list, claim and close calls.
        self.calls = Calls(self)

    @classmethod
    def from_yaml(
        cls,
        source: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        store: Store | str | None = None,
        worker: bool = True,
        env: Mapping[str, str] | None = None,
        http: HttpClient | None = None,
        outbox: bool | None = None,
    ) -> Self:
        """A notifier for the policy file at `source` (a path, or the YAML text itself)."""
        config = load_config(source, env=env)
        return cls(config, clock=clock, store=store, worker=worker, http=http, outbox=outbox)

    @property
    def store(self) -> Store:
        if self._store is None:
            raise NotRunning("the notifier is not running; use `async with notifier:`")
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
        events = self.config.events
        if events is not None:
            if not isinstance(store, Outbox):
                await store.close()
                raise StoreError(
                    f"events: the store {store!r} keeps no outbox, so it cannot post outcome "
                    "webhooks; use memory://, sqlite:// or postgresql://"
                )
            store.outbox_kinds(frozenset(events.kinds))
        started: list[Provider] = []
        try:
            for provider in self._providers.values():
                provider.attach(self.take_in)
                started.append(provider)  # a failed start may have opened a session
                if isinstance(provider, CallQueueProvider):
                    provider.use_queue(store if isinstance(store, CallQueue) else None)
                await provider.start()
        except BaseException:
            for provider in started:
                with contextlib.suppress(Exception):
                    await provider.aclose()
            await store.close()
            raise
        self._store = store
        self._settling = store if isinstance(store, Settling) else None
        self._guard.attach(store, self._emit)
        self._relay_brakes()
        self._poller = Poller(self._providers, self.clock, self.record_receipts)
        self._engine = Engine(
            store,
            self._providers,
            self.clock,
            listeners=self._listeners,
            guard=self._guard,
            poll=self._poller.request,
            signals=self.record_signals,
            events=frozenset(events.kinds) if events is not None else frozenset(),
            wrote_events=self._poke_outbox,
        )
        self._remove_idle_check = self.clock.add_idle_check(self._idle)
        if self._run_worker:
            worker = self.config.worker
            self._worker = Worker(
                store,
                self._engine,
                self.clock,
                concurrency=worker.concurrency,
                batch=worker.batch,
                lease=worker.lease,
                on_final=self._resolve,
            )
            await self._worker.start()
        if events is not None and self._run_outbox:
            assert isinstance(store, Outbox)
            # held past a POST's timeout, so a sender alive is not overtaken
            lease = max(self.config.worker.lease, 2 * events.timeout)
            self._outbox = OutboxSender(store, events, self.clock, shared=store.shared, lease=lease)
            await self._outbox.start()

    def _poke_outbox(self) -> None:
        if self._outbox is not None:
            self._outbox.poke()

    async def stop(self) -> None:
        """Stop taking work, let the transitions in hand finish, and close everything."""
        if self._engine is None:
            return
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None
        if self._outbox is not None:
            await self._outbox.stop()
            self._outbox = None
        if self._poller is not None:
            await self._poller.aclose()
            self._poller = None
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
        return self._settling is None or self._settling.idle()

    def _poke(self, priority: Priority | None = None) -> None:
        if self._worker is not None:
            self._worker.poke(priority)

    # the verbs

    def policy(self, name: str | None = None) -> Policy:
        """The named policy, or the default one."""
        key = name or self.config.default_policy
        found = self.config.policies.get(key)
        if found is None:
            raise UnknownPolicy(key, sorted(self.config.policies))
        return found

    async def send(
        self,
        recipient: Recipient,
        message: Message,
        *,
        policy: str | None = None,
        idempotency_key: str | None = None,
        at: datetime | None = None,
        priority: Priority | str | None = None,
    ) -> Delivery:
        """Persist a cascade and start it; return at once with its `Delivery`.

        The cascade follows `policy`; without it, the first of the file's `routes:` that
        matches the recipient and message, else its `default_policy` (docs/routing.md);
        `Delivery.route` records which and why.

        The same `idempotency_key` returns the delivery it first made, and sends nothing;
        with another recipient, message or policy it is an `IdempotencyConflict` naming
        that delivery. A key is a non-empty string of at most 256 characters (else
        MessageError). A recipient none of the policy's steps can reach (no address for
        any of its channels, or only opted-out or known-gone ones) is a `RecipientError`,
        and nothing is stored. Phone numbers written without a country code are read in
        the policy file's `default_region`.
        With `at` (an aware datetime) the cascade starts then, not now: the delivery is
        `scheduled` until it does (`cancel` and `reschedule` it meanwhile), and its TTL
        counts from its start. `priority` (`high`, `normal`, `bulk`) overrides the
        policy's: workers take due deliveries of a higher priority first.
        """
        item = Send(recipient, message, idempotency_key, policy, at, priority)
        store = self.store
        reads, build = self._plan(item)
        if reads and _can(store, ReadingCreate):
            # the reads come in the create's own call: no round trip of their own
            made: list[Delivery] = []

            def building(facts: SendFacts) -> Delivery:
                made[:] = [build(facts)]
                return made[0]

            stored, created = await cast(ReadingCreate, store).create_read(reads, building)
            delivery = made[0]
        else:
            delivery = build(await _read(store, reads))
            stored, created = await store.create(delivery)
        if created:
            self._created([stored])
        else:
            _check_same(stored, delivery)
        return stored

    async def send_many(
        self,
        items: Iterable[Send | tuple[Recipient, Message]]
        | AsyncIterable[Send | tuple[Recipient, Message]],
        *,
        policy: str | None = None,
        at: datetime | None = None,
        priority: Priority | str | None = None,
        batch: int = bulk.BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> SendManyResult:
        """`send` for each item, written `batch` at a time in one store transaction each:
        much faster than a loop of `send`. An item is a `Send` or a (recipient, message)
        pair; `policy`, `at` and `priority` apply to items that do not say. Each item's
        idempotency key is honoured as in `send` (also within one batch). An item that
        cannot be sent is reported by its index in `failures` and the others are stored;
        a store outage stops the run (`stopped`). `progress(n)`: n items handled so far."""
        defaults = (policy, at, priority)

        async def prepare(item: Send) -> Delivery:
            return await self._prepare(item, defaults)

        store = self.store
        create = store.create_many if isinstance(store, Batching) else _one_by_one(store)

        async def create_many(
            deliveries: Sequence[Delivery],
        ) -> list[tuple[Delivery, bool] | Exception]:
            results = await create(deliveries)
            for index, (given, result) in enumerate(zip(deliveries, results, strict=True)):
                if isinstance(result, tuple) and not result[1]:
                    try:
                        _check_same(result[0], given)
                    except IdempotencyConflict as conflict:
                        results[index] = conflict
            return results

        return await bulk.send_batches(
            items, prepare, create_many, batch=batch, stored=self._created, progress=progress
        )

    def _created(self, deliveries: Sequence[Delivery]) -> None:
        if self._listeners:
            for delivery in deliveries:
                self._emit(Event("created", delivery.id, self.clock.now(), detail=delivery.policy))
        top = min((d.priority for d in deliveries), key=lambda p: p.rank, default=None)
        self._poke(top)

    async def reschedule(self, delivery_id: str, at: datetime) -> Delivery:
        """Move a scheduled delivery's start to `at` (its TTL moves with it); a delivery
        that has started already is a ScheduleError."""
        current = await self.get(delivery_id)
        if current.status is not DeliveryStatus.SCHEDULED:
            raise ScheduleError(
                f"delivery {delivery_id} is {current.status.value}: only a scheduled "
                "delivery can be rescheduled"
            )
        start = bulk.start_ts(at, self.clock.now())
        chosen = self.config.policies.get(current.policy)
        if chosen is not None:
            start = bulk.quiet_start(chosen, current, start)
        store = self.store
        if not isinstance(store, Rescheduling):
            raise CascadeError(f"the store {store!r} cannot reschedule deliveries")
        moved = await store.reschedule(delivery_id, start)
        if moved is None:
            raise DeliveryNotFound(delivery_id)
        if moved.status is not DeliveryStatus.SCHEDULED:
            raise ScheduleError(f"delivery {delivery_id} started before it could be moved")
        self._poke()
        return moved

    async def _prepare(
        self,
        item: Send,
        defaults: tuple[str | None, datetime | None, Priority | str | None] = (None, None, None),
    ) -> Delivery:
        """The new delivery `item` asks for, checked (nothing stored yet)."""
        reads, build = self._plan(item, defaults)
        return build(await _read(self.store, reads))

    def _plan(
        self,
        item: Send,
        defaults: tuple[str | None, datetime | None, Priority | str | None] = (None, None, None),
    ) -> tuple[SendReads, Callable[[SendFacts], Delivery]]:
        """What the store must be asked of `item`'s recipient, and how the new delivery is
        made (checked, nothing stored) from its answer: every check that needs no store
        is made here, before anything is read."""
        recipient, message = item.recipient, item.message
        if not isinstance(recipient, Recipient):
            raise RecipientError(
                "",
                f"send() takes a Recipient, not {type(recipient).__name__}: build one with "
                "Recipient(id=..., sms=...) or Recipient.from_dict(...)",
            )
        if not isinstance(message, Message):
            raise MessageError(
                f"send() takes a Message, not {type(message).__name__}: build one with "
                "Message(text=...)"
            )
        check_idempotency_key(item.idempotency_key)
        named = item.policy or defaults[0]
        if named:
            chosen, route = self.policy(named), EXPLICIT_ROUTE
            self._check_overrides(chosen, message)
            recipient = recipient.localised(self.config.default_region)
        else:  # the routes read the recipient's numbers in E.164
            recipient = recipient.localised(self.config.default_region)
            name, route = self._router.choose(recipient, message)
            chosen = self.policy(name)
            self._check_overrides(chosen, message)
        at = item.at if item.at is not None else defaults[1]
        priority = _priority(item.priority or defaults[2] or chosen.priority)
        fingerprint = (
            _fingerprint(recipient, message, chosen.name) if item.idempotency_key else None
        )
        store = self.store
        missing, given = self._address_reads(store, chosen, recipient)
        learns = chosen.order == "learned" and _can(store, Learning)
        reads = SendReads(recipient.id, known=bool(missing), addresses=given, history=learns)

        def build(facts: SendFacts) -> Delivery:
            now = self.clock.now()
            start = now if at is None else bulk.start_ts(at, now)
            filled, unusable = _addresses_known(recipient, missing, facts)
            _check_reachable(chosen, filled, unusable)
            steps, order = chosen.steps, None
            if learns:
                steps, order = learned.reorder(steps, facts.history)
            delivery = Delivery(
                id=new_id(),
                policy=chosen.name,
                recipient=filled,
                message=message,
                steps=steps,
                created_ts=now,
                expires_ts=now + chosen.ttl,
                wake_ts=now,
                idempotency_key=item.idempotency_key,
                unusable=unusable,
                fingerprint=fingerprint,
                priority=priority,
                route=route,
                order=order,
            )
            if at is not None:
                start = bulk.quiet_start(chosen, delivery, start)
                delivery.status = DeliveryStatus.SCHEDULED
                delivery.wake_ts, delivery.expires_ts = start, start + chosen.ttl
            return delivery

        return reads, build

    def _address_reads(
        self, store: Store, policy: Policy, recipient: Recipient
    ) -> tuple[list[str], tuple[tuple[str, str], ...]]:
        """What `send` asks the address book of `recipient`: the channels whose address
        the store may know (`known`), and the given addresses to check (`unusable`).
        Asked only of a store that keeps addresses, for a policy with a provider that
        reports them."""
        if not self._asks_addresses.get(policy.name) or not _can(store, AddressBook):
            return [], ()
        channels = [step.channel for step in policy.steps]
        missing = [c for c in channels if c in CHANNEL_KINDS and recipient.address(c) is None]
        given = tuple(
            dict.fromkeys((c, a) for c in channels if (a := recipient.address(c)) is not None)
        )
        return missing, given

    def link(
        self,
        channel: str,
        recipient_id: str,
        *,
        provider: str | None = None,
        ttl: float | None = None,
    ) -> str:
        """The deep link that opens the bot on `channel` (its first provider that makes
        links, or `provider`) for `recipient_id`: when the customer opens it, the bot's
        update links their account to `recipient_id` (an `address_linked` event), once.

        The link carries a token signed with the policy's `links.secret`, good for
        `ttl` seconds (default `links.ttl`). `LinkError` when the policy has no `links:`,
        no provider on the channel makes links, or the id does not fit the payload.
        Needs no running notifier: nothing is stored until the customer opens it."""
        settings = self.config.links
        if settings is None:
            raise linking.LinkError(
                "the policy has no `links:` section; add `links: {secret: ${LINK_SECRET}}` "
                "(32 or more characters) to sign deep links"
            )
        chosen = self._linker(channel, provider)
        assert chosen.link_payload is not None
        lifetime = settings.ttl if ttl is None else ttl
        if not lifetime > 0:
            raise linking.LinkError(f"ttl must be a positive number of seconds, got {ttl!r}")
        token = linking.issue(
            settings.keys[0],
            channel=channel,
            recipient_id=recipient_id,
            expires_ts=self.clock.now() + lifetime,
            limit=chosen.link_payload,
        )
        try:
            return chosen.deep_link(token)
        except ValueError as exc:
            raise linking.LinkError(str(exc)) from None

    def _linker(self, channel: str, name: str | None) -> Provider:
        if name is not None:
            found = self._providers.get(name)
            if found is None or found.channel != channel or not found.link_payload:
                raise linking.LinkError(
                    f"provider {name!r} is not a provider on {channel!r} that makes deep links"
                )
            return found
        for found in self._providers.values():
            if found.channel == channel and found.link_payload:
                return found
        raise linking.LinkError(
            f"no provider on channel {channel!r} makes deep links (telegram_bot, viber_bot, "
            "max_bot and vk_community do)"
        )

    def _checked_link(self, signal: Signal, now: float) -> Signal | None:
        """A `linked` signal whose recipient is a deep-link token: with the recipient the
        token names if it verifies, else None (and a `link_refused` event)."""
        assert signal.token is not None
        settings = self.config.links
        try:
            if settings is None:
                raise linking.Refused("forged", "the policy has no links: secret to check with")
            claim = linking.verify(
                settings.keys, channel=signal.channel, payload=signal.token, now=now
            )
        except linking.Refused as refused:
            log.warning(
                "a %s link from %s links nothing: %s", signal.channel, signal.provider, refused
            )
            self._refused(signal, refused.reason, str(refused))
            return None
        return dataclasses.replace(signal, recipient_id=claim.recipient_id)

    def _refused(self, signal: Signal, reason: str, detail: str) -> None:
        if self._listeners:
            self._emit(
                Event(
                    "link_refused",
                    "",
                    signal.ts,
                    channel=signal.channel,
                    provider=signal.provider,
                    status=reason,
                    detail=detail,
                )
            )

    async def addresses(self, recipient_id: str) -> dict[str, str]:
        """The addresses customers linked to `recipient_id` (opening a bot): channel -> address."""
        store = self.store
        return await store.linked(recipient_id) if isinstance(store, AddressBook) else {}

    async def forget(self, recipient_id: str) -> int:
        """Erase what the store remembers of `recipient_id`'s addresses and channel history
        (a deletion request); return how many entries went."""
        store = self.store
        return await store.forget(recipient_id) if isinstance(store, AddressBook) else 0

    def _check_overrides(self, policy: Policy, message: Message) -> None:
        """Each provider's typed `Overrides` for `message.overrides[channel]`, before
        anything is stored or sent: a `MessageError` names the channel and the key."""
        if not message.overrides:
            return
        for step in policy.steps:
            given = message.overrides.get(step.channel)
            if given:
                for name in step.providers:
                    self._providers[name].check_overrides(given, channel=step.channel)

    async def get(self, delivery_id: str) -> Delivery:
        """The delivery as it stands now."""
        found = await self.store.get(delivery_id)
        if found is None:
            raise DeliveryNotFound(delivery_id)
        return found

    async def stats(
        self,
        *,
        since: views.Moment,
        until: views.Moment | None = None,
        by: Dimension | Sequence[Dimension] = "channel",
    ) -> Stats:
        """Statistics of the deliveries created from `since` to `until` (default now),
        grouped `by` one dimension or several: POSIX seconds, aware datetimes, or
        timedeltas before now (see docs/observability.md for each figure)."""
        return await views.stats(self.store, self.clock.now(), since=since, until=until, by=by)

    async def deliveries(
        self, query: DeliveryQuery | None = None, *, cursor: str | None = None, limit: int = 50
    ) -> DeliveryPage:
        """Deliveries matching `query`, newest first: a page of `limit`, and the cursor
        that gives the next one."""
        return await views.deliveries(self.store, query, cursor=cursor, limit=limit)

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
        now = self.clock.now()
        delivery = await self.store.cancel(delivery_id, now)
        if delivery is None:
            raise DeliveryNotFound(delivery_id)
        await self._withdraw_cancelled(delivery, now)
        self._resolve(delivery)
        self._poke_outbox()
        if self._listeners:
            self._emit(
                Event("finished", delivery.id, self.clock.now(), status=delivery.status.value)
            )
        return delivery

    async def _withdraw_cancelled(self, delivery: Delivery, now: float) -> None:
        """The open call tasks this cancel ended are withdrawn too (best effort: the
        delivery is final, so the outcome is logged and told as an event, not stored)."""
        for attempt in delivery.attempts:
            provider = self._providers.get(attempt.provider)
            if (
                provider is None
                or not provider.withdraw_always
                or attempt.status is not AttemptStatus.ABANDONED
                or attempt.finished_ts != now  # ended by this cancel, not before
                or attempt.provider_message_id is None
                or any(r.status is not ReceiptStatus.SENT for r in attempt.receipts)
            ):
                continue
            request = WithdrawRequest(
                attempt_id=attempt.id,
                delivery_id=delivery.id,
                provider_message_id=attempt.provider_message_id or "",
                address=delivery.recipient.address(attempt.channel) or "",
                reason="cancelled",
            )
            try:
                await provider.withdraw(request)
            except Exception:  # the cancel stands; the task may still be in front of someone
                log.warning("could not withdraw a call task of %s", provider.name, exc_info=True)
                continue
            if self._listeners:
                self._emit(
                    Event(
                        "withdrawn", delivery.id, now, channel=attempt.channel,
                        provider=provider.name, detail="cancelled",
                    )
                )  # fmt: skip

    async def record_receipts(self, receipts: Sequence[Receipt]) -> list[ReceiptResult]:
        """Take receipts in (from a webhook, a poll, a push, a fake) and wake their
        deliveries: the one door every receipt comes in by."""
        results = await self.store.record_receipts(receipts, self.clock.now())
        gone = [
            result
            for result in results
            if result.delivery_id is not None
            and not result.duplicate
            and result.receipt.code is not None
            and (provider := self._providers.get(result.receipt.provider)) is not None
            and result.receipt.code in provider.gone_on
        ]
        if gone:
            await self._gone_addresses(gone)
        woke = False
        for result in results:
            if not result.duplicate:
                self._guard.heard(result.receipt)
            if result.delivery_id is None:
                log.info(
                    "receipt %s from %s for a message not known (yet): kept a while",
                    result.receipt.status.value,
                    result.receipt.provider,
                    extra={"provider": result.receipt.provider},
                )
            elif log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "delivery %s: receipt %s from %s%s",
                    result.delivery_id,
                    result.receipt.status.value,
                    result.receipt.provider,
                    " (a duplicate)" if result.duplicate else "",
                    extra={
                        "delivery_id": result.delivery_id,
                        "provider": result.receipt.provider,
                        "status": result.receipt.status.value,
                        "attempt_id": result.receipt.attempt_id,
                        "provider_message_id": result.receipt.provider_message_id,
                    },
                )
            if result.delivery_id is not None and not result.duplicate:
                woke = True
                if self._listeners:
                    self._emit(
                        Event(
                            "receipt",
                            result.delivery_id,
                            self.clock.now(),
                            channel=_channel_of(self._providers, result.receipt.provider),
                            provider=result.receipt.provider,
                            status=result.receipt.status.value,
                            detail=result.receipt.error,
                            attempt_id=result.receipt.attempt_id,
                        )
                    )
        if woke:
            self._poke()
            self._poke_outbox()
        return results

    async def _gone_addresses(self, results: Sequence[ReceiptResult]) -> None:
        """A receipt whose code says the address is gone (a call's wrong number): the
        attempt's address is unusable on every channel its provider's `gone_on` names."""
        signals: list[Signal] = []
        for result in results:
            receipt = result.receipt
            code, provider = receipt.code or "", self._providers[receipt.provider]
            delivery = await self.store.get(result.delivery_id or "")
            attempt = (
                None
                if delivery is None
                else next(
                    (
                        a
                        for a in delivery.attempts
                        if (
                            a.provider == receipt.provider
                            and receipt.provider_message_id in (a.provider_message_id, a.id)
                        )
                        or a.id == receipt.attempt_id
                    ),
                    None,
                )
            )
            address = None
            if delivery is not None and attempt is not None:
                address = delivery.recipient.address(attempt.channel)
            if delivery is None or address is None:
                continue
            signals += [
                Signal(
                    kind=SignalKind.GONE,
                    channel=channel,
                    address=address,
                    provider=receipt.provider,
                    reason=code,
                    ts=receipt.ts,
                    recipient_id=delivery.recipient.id,
                )
                for channel in provider.gone_on[code]
            ]
        try:
            await self.record_signals(signals)
        except Exception:  # the receipt itself is recorded: the signal is the lesser loss
            log.warning("address signals from %d receipts were lost", len(results), exc_info=True)

    async def record_signals(self, signals: Sequence[Signal]) -> None:
        """Take providers' news about addresses in (gone, linked): remembered by a store
        that keeps addresses (`AddressBook`), and a `signal` event each. A link that came
        with a deep-link token counts only if the token verifies and never linked before
        (else a `link_refused` event: `forged`, `expired` or `replayed`); a link the store
        recorded is an `address_linked` event."""
        if not signals:
            return
        now = self.clock.now()
        taken: list[Signal] = []
        for signal in signals:
            if (
                signal.kind is SignalKind.LINKED
                and signal.token is not None
                and signal.recipient_id is None
            ):
                checked = self._checked_link(signal, now)
                if checked is None:
                    continue
                signal = checked
            taken.append(signal)
        if not taken:
            return
        store = self.store
        outcomes: list[SignalOutcome]
        if isinstance(store, AddressBook):
            outcomes = await store.record_signals(taken)
        else:
            log.info("%d address signals not kept: the store keeps no addresses", len(taken))
            outcomes = [SignalOutcome.UNCHANGED] * len(taken)
        for signal, outcome in zip(taken, outcomes, strict=True):
            if outcome is SignalOutcome.REPLAYED:
                log.info("a %s link opened again links nothing: it linked before", signal.channel)
        if not self._listeners:
            return
        for signal, outcome in zip(taken, outcomes, strict=True):
            if outcome is SignalOutcome.REPLAYED:
                self._refused(signal, "replayed", "the link was opened before: it links once")
                continue
            self._emit(
                Event(
                    "signal",
                    "",
                    signal.ts,
                    channel=signal.channel,
                    provider=signal.provider,
                    status=signal.kind.value,
                    detail=signal.reason,
                )
            )
            if signal.kind is SignalKind.LINKED and outcome is SignalOutcome.RECORDED:
                self._emit(
                    Event(
                        "address_linked",
                        "",
                        signal.ts,
                        channel=signal.channel,
                        provider=signal.provider,
                        status=signal.reason,
                        detail=signal.recipient_id,
                    )
                )

    async def take_in(self, inbound: Inbound) -> list[ReceiptResult]:
        """What a webhook or a provider's push brought: signals first, then receipts."""
        await self.record_signals(inbound.signals)
        return await self.record_receipts(inbound.receipts) if inbound.receipts else []

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

    def support_app(
        self,
        *,
        auth: Auth,
        reveal: tuple[Role, ...] = ("operator",),
        timezone: str = "UTC",
        secret: bytes | None = None,
        figures_for: float = 60.0,
    ) -> SupportApp:
        """The support page, an ASGI app to mount in the host's app (docs/support.md).

        `auth(request)` returns the role (`"agent"`, `"operator"`), a `Grant`, or None
        (401), or raises `AccessDenied` (403). `reveal`: the roles that see phone numbers
        and e-mail addresses in full; `figures_for`: seconds the operator's view keeps a
        period's figures. Needs the extra `support` (Jinja2)."""
        from cascade_notify.support import SupportApp

        return SupportApp(
            self,
            auth=auth,
            reveal=reveal,
            timezone=timezone,
            secret=secret,
            figures_for=figures_for,
        )

    def _resolve(self, delivery: Delivery) -> None:
        for future in self._waiters.pop(delivery.id, []):
            if not future.done():
                future.set_result(delivery.copy())


def _channel_of(providers: Mapping[str, Provider], name: str) -> str | None:
    provider = providers.get(name)
    return None if provider is None else provider.channel


def _noop() -> None:
    return None


def _fingerprint(recipient: Recipient, message: Message, policy: str) -> str:
    """A hash of what a send asked for: equal for the same recipient, message and policy
    whatever the order their fields were given in."""
    who = recipient.to_dict()
    who.pop("region", None)  # how the numbers were read, not who: they are E.164 by now
    canonical = json.dumps(
        [policy, who, message.to_dict()],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _check_same(stored: Delivery, given: Delivery) -> None:
    """An IdempotencyConflict when `given` reused the key of `stored` for another send."""
    if stored.fingerprint is not None and stored.fingerprint != given.fingerprint:
        assert given.idempotency_key is not None
        raise IdempotencyConflict(given.idempotency_key, stored.id, _differs(stored, given))


def _differs(stored: Delivery, given: Delivery) -> str:
    """What of a send differs from the delivery its idempotency key made, for people."""
    if stored.policy != given.policy:
        return f"policy ({stored.policy!r}, now {given.policy!r})"
    if stored.message.to_dict() != given.message.to_dict():
        return "message"
    return "recipient"


_CAN: dict[tuple[type, object], bool] = {}


def _can(store: Store, capability: object) -> bool:
    """`isinstance(store, capability)` for a store capability (a runtime protocol),
    remembered per store class: the protocol check walks the protocol's attributes each
    time, some 8 µs, which a `send` would pay for each capability it asks about."""
    key = (type(store), capability)
    found = _CAN.get(key)
    if found is None:
        found = _CAN[key] = isinstance(store, capability)  # type: ignore[arg-type]
    return found


async def _read(store: Store, reads: SendReads) -> SendFacts:
    """`reads` asked of `store` one lookup at a time (a store that cannot read them in
    its create, and `send_many`)."""
    if not reads:
        return SendFacts()
    known: Mapping[str, Signal] = {}
    unusable: Mapping[tuple[str, str], Signal] = {}
    if isinstance(store, AddressBook):
        if reads.known:
            known = await store.known(reads.recipient_id)
        if reads.addresses:
            unusable = await store.unusable(reads.addresses)
    history: Mapping[str, Seen] = {}
    if reads.history and isinstance(store, Learning):
        history = await store.history(reads.recipient_id)
    return SendFacts(known, unusable, history)


def _addresses_known(
    recipient: Recipient, missing: Sequence[str], facts: SendFacts
) -> tuple[Recipient, dict[str, str]]:
    """The recipient with the addresses the store knows of it filled in where it has
    none (`missing`), and the channels whose address is known gone: channel -> why."""
    gone: dict[str, Signal] = {}
    filled: dict[str, str] = {}
    for channel in missing:
        entry = facts.known.get(channel)
        if entry is not None:
            filled[channel] = entry.address
            if entry.kind is SignalKind.GONE:  # linked once, since blocked the bot
                gone[channel] = entry
    if filled:
        recipient = dataclasses.replace(recipient, **filled)  # type: ignore[arg-type]
    for (channel, _), signal in facts.unusable.items():
        if channel not in filled:
            gone[channel] = signal
    return recipient, {
        channel: f"the address is gone: {signal.reason} ({signal.provider}, "
        f"{signal.at:%Y-%m-%d %H:%M} UTC)"
        for channel, signal in gone.items()
    }


def _check_reachable(policy: Policy, recipient: Recipient, unusable: Mapping[str, str]) -> None:
    """A RecipientError when no step of `policy` could ever reach `recipient`: it names
    the channels the policy has and the addresses the recipient has."""
    why: list[str] = []
    for step in policy.steps:
        channel = step.channel
        if recipient.address(channel) is None:
            continue
        if channel in recipient.opted_out:
            why.append(f"{channel} opted out")
        elif channel in unusable:
            why.append(f"{channel}: {unusable[channel]}")
        else:
            return
    has = [c for c in (*CHANNEL_KINDS, *recipient.addresses) if recipient.address(c) is not None]
    channels = ", ".join(step.channel for step in policy.steps)
    addresses = ", ".join(has) or "none"
    reasons = f" ({'; '.join(why)})" if why else ""
    raise RecipientError(
        "",
        f"recipient {recipient.id!r} cannot be reached by policy {policy.name!r}: its steps "
        f"are on {channels}, and the recipient has addresses on {addresses}{reasons}; "
        "nothing was stored or sent",
    )


def _priority(value: Priority | str) -> Priority:
    try:
        return Priority(value)
    except ValueError:
        known = ", ".join(p.value for p in Priority)
        raise CascadeError(f"unknown priority {value!r}; use one of: {known}") from None


def _one_by_one(store: Store) -> bulk.CreateMany:
    """`create_many` for a store that has no batches of its own: one create each."""

    async def create_many(
        deliveries: Sequence[Delivery],
    ) -> list[tuple[Delivery, bool] | Exception]:
        return [await store.create(delivery) for delivery in deliveries]

    return create_many
