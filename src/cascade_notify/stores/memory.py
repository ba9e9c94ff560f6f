"""The in-memory store: a real backend for tests and single-process use.

It keeps everything in this process, so a restart loses it; it implements
leases, fencing and timers exactly as the durable stores do, and passes the
same conformance tests.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from cascade_notify.errors import LeaseLost
from cascade_notify.events import OutboxEvent, cancelled_event, receipt_event
from cascade_notify.learned import Seen
from cascade_notify.models import (
    OPEN_ATTEMPT,
    AttemptStatus,
    CallStatus,
    Delivery,
    DeliveryStatus,
    QueuedCall,
    Receipt,
    Signal,
    SignalKind,
)
from cascade_notify.observe import compute
from cascade_notify.observe.types import DeliveryPage, DeliveryQuery, Dimension, FailureRow, Stats
from cascade_notify.resilience.shared import SharedTable
from cascade_notify.stores import _addresses, _calls, _history
from cascade_notify.stores.base import (
    Claim,
    OutboxItem,
    ReceiptResult,
    SignalOutcome,
    Transition,
    apply_transition,
)

#: Receipts for messages not (yet) known are kept this long, at most this many.
ORPHAN_TTL = 3600.0
ORPHAN_LIMIT = 10_000


@dataclass(slots=True)
class _Event:
    event: OutboxEvent
    seq: int
    next_ts: float
    tries: int = 0
    lease_until: float = 0.0
    token: int = 0


@dataclass(slots=True)
class _Row:
    delivery: Delivery
    token: int = 0
    lease_until: float = 0.0
    poked: bool = False


class MemoryStore:
    """`store: memory://`."""

    #: Whether other processes may change what this store holds (this process only).
    shared: ClassVar[bool] = False

    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._by_key: dict[str, str] = {}
        # (provider, provider message id) -> attempt id; attempt id -> delivery id
        self._by_message: dict[tuple[str, str], str] = {}
        self._by_attempt: dict[str, str] = {}
        self._orphans: OrderedDict[tuple[str, str], tuple[float, list[Receipt]]] = OrderedDict()
        # per priority rank (high first): timers, and deliveries poked (sent, receipts)
        self._timers: tuple[list[tuple[float, int, str]], ...] = ([], [], [])
        self._poked: tuple[deque[str], ...] = (deque(), deque(), deque())
        self._seq = itertools.count()
        self._shared = SharedTable()
        self._calls: dict[str, QueuedCall] = {}
        # the address book: (channel, address) -> entry; recipient id -> its entries' keys
        self._book: dict[tuple[str, str], _addresses.Entry] = {}
        self._by_recipient: dict[str, set[tuple[str, str]]] = {}
        # digests of the link tokens that linked -> when
        self._spent: dict[str, float] = {}
        # the outbox: delivery id -> its unsent events in order; how many each has had
        self._outbox: dict[str, deque[_Event]] = {}
        self._outbox_seq: dict[str, int] = {}
        self._outbox_kinds: frozenset[str] = frozenset()
        # the learned order's history: recipient id -> channel -> what is known
        self._history: dict[str, dict[str, Seen]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._rows)

    async def create(self, delivery: Delivery) -> tuple[Delivery, bool]:
        key = delivery.idempotency_key
        if key is not None and (existing := self._by_key.get(key)) is not None:
            return self._rows[existing].delivery.copy(), False
        # the caller's object is returned as the snapshot: the row holds a copy of its own
        scheduled = delivery.status is DeliveryStatus.SCHEDULED
        self._rows[delivery.id] = _Row(delivery.copy(), poked=not scheduled)
        if key is not None:
            self._by_key[key] = delivery.id
        rank = delivery.priority.rank
        if scheduled and delivery.wake_ts is not None:
            heapq.heappush(self._timers[rank], (delivery.wake_ts, next(self._seq), delivery.id))
        else:
            self._poked[rank].append(delivery.id)
        return delivery, True

    async def create_many(
        self, deliveries: Sequence[Delivery]
    ) -> list[tuple[Delivery, bool] | Exception]:
        return [await self.create(delivery) for delivery in deliveries]

    async def reschedule(self, delivery_id: str, start: float) -> Delivery | None:
        row = self._rows.get(delivery_id)
        if row is None:
            return None
        delivery = row.delivery
        if delivery.status is DeliveryStatus.SCHEDULED and delivery.wake_ts is not None:
            delivery.expires_ts += start - delivery.wake_ts
            delivery.wake_ts = start
            timers = self._timers[delivery.priority.rank]
            heapq.heappush(timers, (start, next(self._seq), delivery_id))
        return delivery.copy()

    async def get(self, delivery_id: str) -> Delivery | None:
        row = self._rows.get(delivery_id)
        return None if row is None else row.delivery.copy()

    def _due(self, row: _Row, now: float) -> bool:
        delivery = row.delivery
        if delivery.status is DeliveryStatus.SCHEDULED:
            return delivery.wake_ts is not None and delivery.wake_ts <= now
        if delivery.status is not DeliveryStatus.PENDING or row.lease_until > now:
            return False
        # a lease that ran out makes it due whatever else it waits for: its worker died
        # (or gave up) mid-transition, and the poke that brought it may be spent already
        return (
            row.poked
            or row.lease_until > 0
            or (delivery.wake_ts is not None and delivery.wake_ts <= now)
        )

    async def claim(self, now: float, *, limit: int, lease: float) -> list[Claim]:
        claims: list[Claim] = []
        picked: set[str] = set()

        def take(delivery_id: str) -> None:
            row = self._rows.get(delivery_id)
            if row is None or delivery_id in picked or not self._due(row, now):
                return
            picked.add(delivery_id)
            row.token += 1
            row.lease_until = now + lease
            row.poked = False
            row.delivery.status = DeliveryStatus.PENDING  # a scheduled one starts
            timers = self._timers[row.delivery.priority.rank]
            heapq.heappush(timers, (row.lease_until, next(self._seq), delivery_id))
            claims.append(Claim(row.delivery.copy(), row.token, row.lease_until))

        for poked, timers in zip(self._poked, self._timers, strict=True):
            while poked and len(claims) < limit:
                take(poked.popleft())
            while timers and timers[0][0] <= now and len(claims) < limit:
                take(heapq.heappop(timers)[2])
        return claims

    async def commit(self, claim: Claim, transition: Transition) -> None:
        row = self._rows.get(claim.delivery.id)
        if row is None or row.token != claim.token:
            raise LeaseLost(f"delivery {claim.delivery.id} is leased by another worker now")
        delivery = row.delivery
        if delivery.order is not None:
            _history.merge_into(self._history, _history.from_transition(delivery, transition))
        apply_transition(delivery, transition)
        if transition.events:
            self._keep_events(transition.events)
        for attempt in transition.attempts:
            self._by_attempt.setdefault(attempt.id, delivery.id)
        for attempt in delivery.attempts:
            if attempt.provider_message_id is not None:
                key = (attempt.provider, attempt.provider_message_id)
                if key not in self._by_message:
                    self._by_message[key] = attempt.id
                    self._by_attempt.setdefault(attempt.id, delivery.id)
                    if self._attach_orphans(key, delivery, attempt.id):
                        row.poked = True
        rank = delivery.priority.rank
        if transition.release:
            row.lease_until = 0.0
            if row.poked:
                self._poked[rank].append(delivery.id)
        if delivery.wake_ts is not None and delivery.status is DeliveryStatus.PENDING:
            heapq.heappush(self._timers[rank], (delivery.wake_ts, next(self._seq), delivery.id))

    def _attach_orphans(self, key: tuple[str, str], delivery: Delivery, attempt_id: str) -> bool:
        entry = self._orphans.pop(key, None)
        if entry is None:
            return False
        attempt = next(a for a in delivery.attempts if a.id == attempt_id)
        # a list, not a generator: every receipt must be absorbed, not just up to the first new
        return any([attempt.absorb(receipt) for receipt in entry[1]])  # noqa: C419

    async def record_receipts(self, receipts: Sequence[Receipt], now: float) -> list[ReceiptResult]:
        results: list[ReceiptResult] = []
        for receipt in receipts:
            key = (receipt.provider, receipt.provider_message_id)
            known = self._by_message.get(key)
            where = None if known is None else (self._by_attempt[known], known)
            if where is None and receipt.attempt_id is not None:
                where = self._adopt(key, receipt.attempt_id)
            if where is None:
                results.append(ReceiptResult(receipt, None, self._keep_orphan(key, receipt, now)))
                continue
            delivery_id, attempt_id = where
            row = self._rows.get(delivery_id)
            if row is None:
                results.append(ReceiptResult(receipt, None, False))
                continue
            attempt = next(a for a in row.delivery.attempts if a.id == attempt_id)
            fresh = attempt.absorb(receipt)
            if fresh and "receipt" in self._outbox_kinds:
                self._keep_events([receipt_event(receipt, delivery_id, attempt_id)])
            if fresh and row.delivery.order is not None:
                lesson = _history.from_receipt(
                    row.delivery.recipient.id, attempt.channel, receipt.status,
                    attempt.status, receipt.ts,
                )  # fmt: skip
                if lesson is not None:
                    _history.merge_into(self._history, [lesson])
            if fresh and row.delivery.status is DeliveryStatus.PENDING and not row.poked:
                row.poked = True
                if row.lease_until <= now:
                    self._poked[row.delivery.priority.rank].append(delivery_id)
            results.append(ReceiptResult(receipt, delivery_id, not fresh))
        return results

    def _adopt(self, key: tuple[str, str], attempt_id: str) -> tuple[str, str] | None:
        """Match a receipt by our own attempt id; learn the provider's message id from it."""
        delivery_id = self._by_attempt.get(attempt_id)
        row = self._rows.get(delivery_id) if delivery_id is not None else None
        if row is None:
            return None
        for attempt in row.delivery.attempts:
            if attempt.id == attempt_id and attempt.provider == key[0]:
                if attempt.provider_message_id is None:
                    attempt.provider_message_id = key[1]
                    self._by_message[key] = attempt_id
                return row.delivery.id, attempt_id
        return None

    def _keep_orphan(self, key: tuple[str, str], receipt: Receipt, now: float) -> bool:
        while self._orphans:
            oldest_key, (ts, _) = next(iter(self._orphans.items()))
            if ts > now - ORPHAN_TTL and len(self._orphans) < ORPHAN_LIMIT:
                break
            del self._orphans[oldest_key]
        ts, kept = self._orphans.setdefault(key, (now, []))
        if any(r.receipt_id == receipt.receipt_id for r in kept):
            return True
        kept.append(receipt)
        return False

    async def cancel(self, delivery_id: str, now: float) -> Delivery | None:
        row = self._rows.get(delivery_id)
        if row is None:
            return None
        delivery = row.delivery
        if not delivery.final:
            row.token += 1
            row.lease_until = 0.0
            closed = []
            for attempt in delivery.attempts:
                if attempt.status in OPEN_ATTEMPT:
                    attempt = attempt.copy()
                    attempt.status = AttemptStatus.ABANDONED
                    attempt.finished_ts = now
                    closed.append(attempt)
            apply_transition(
                delivery,
                Transition(attempts=closed, status=DeliveryStatus.CANCELLED, finished_ts=now),
            )
            if "finished" in self._outbox_kinds:
                self._keep_events([cancelled_event(delivery)])
        return delivery.copy()

    async def next_wake(self) -> float | None:
        if any(self._poked):
            return 0.0
        return min(
            (when for timers in self._timers if (when := self._first(timers)) is not None),
            default=None,
        )

    def _first(self, timers: list[tuple[float, int, str]]) -> float | None:
        """The earliest of `timers` still in force (those that are not are dropped)."""
        while timers:
            when, _, delivery_id = timers[0]
            row = self._rows.get(delivery_id)
            if row is not None and (
                (row.delivery.status is DeliveryStatus.SCHEDULED and row.delivery.wake_ts == when)
                or (
                    row.delivery.status is DeliveryStatus.PENDING
                    and (
                        row.lease_until == when
                        or (
                            row.lease_until == 0.0
                            and row.delivery.wake_ts is not None
                            and row.delivery.wake_ts <= when
                        )
                        or row.poked
                    )
                )
            ):
                return when
            heapq.heappop(timers)
        return None

    # Outbox: outcome webhooks to post

    def _keep_events(self, events: Sequence[OutboxEvent]) -> None:
        for event in events:
            seq = self._outbox_seq.get(event.delivery_id, 0) + 1
            self._outbox_seq[event.delivery_id] = seq
            self._outbox.setdefault(event.delivery_id, deque()).append(_Event(event, seq, event.ts))

    def outbox_kinds(self, kinds: frozenset[str]) -> None:
        self._outbox_kinds = kinds

    async def outbox_claim(self, now: float, *, limit: int, lease: float) -> list[OutboxItem]:
        items: list[OutboxItem] = []
        for queue in self._outbox.values():
            if len(items) >= limit:
                break
            head = queue[0]
            if head.next_ts <= now and head.lease_until <= now:
                head.token += 1
                head.lease_until = now + lease
                items.append(OutboxItem(head.event, head.seq, head.tries, head.token))
        return items

    def _head(self, item: OutboxItem) -> _Event | None:
        queue = self._outbox.get(item.event.delivery_id)
        if not queue or queue[0].seq != item.seq or queue[0].token != item.token:
            return None
        return queue[0]

    async def outbox_sent(self, items: Sequence[OutboxItem], now: float) -> list[bool]:
        done: list[bool] = []
        for item in items:
            done.append(self._head(item) is not None)
            if done[-1]:
                queue = self._outbox[item.event.delivery_id]
                queue.popleft()
                if not queue:
                    del self._outbox[item.event.delivery_id]
        return done

    async def outbox_retry(self, item: OutboxItem, at: float) -> bool:
        head = self._head(item)
        if head is None:
            return False
        head.tries += 1
        head.next_ts = at
        head.lease_until = 0.0
        return True

    async def outbox_next(self) -> float | None:
        return min(
            (max(q[0].next_ts, q[0].lease_until) for q in self._outbox.values()), default=None
        )

    # state the workers' guards share (cascade_notify.resilience.SharedState)

    async def shared_bump(
        self, key: str, add: float, *, floor: float, now: float, ttl: float
    ) -> float:
        return self._shared.bump(key, add, floor=floor, now=now, ttl=ttl)

    async def shared_get(self, prefix: str, now: float) -> dict[str, tuple[int, str]]:
        return await self._shared.shared_get(prefix, now)

    async def shared_put(
        self, key: str, value: str, *, version: int, now: float, ttl: float
    ) -> int | None:
        return await self._shared.shared_put(key, value, version=version, now=now, ttl=ttl)

    async def purge(self, older_than: float, now: float) -> int:
        """Forget deliveries final for at least `older_than` seconds, and orphan receipts
        past their time; return how many deliveries were forgotten."""
        cutoff = now - older_than
        gone = [
            row.delivery
            for row in self._rows.values()
            if row.delivery.final
            and row.delivery.finished_ts is not None
            and row.delivery.finished_ts <= cutoff
        ]
        for delivery in gone:
            del self._rows[delivery.id]
            if delivery.idempotency_key is not None:
                self._by_key.pop(delivery.idempotency_key, None)
            for attempt in delivery.attempts:
                if attempt.provider_message_id is not None:
                    key = (attempt.provider, attempt.provider_message_id)
                    if self._by_message.get(key) == attempt.id:
                        del self._by_message[key]
                self._by_attempt.pop(attempt.id, None)
        for key, (ts, _) in list(self._orphans.items()):
            if ts <= now - ORPHAN_TTL:
                del self._orphans[key]
        for spent, ts in list(self._spent.items()):
            if ts < now - _addresses.SPENT_TTL:
                del self._spent[spent]
        return len(gone)

    # Observable: the read-only views

    async def list_deliveries(
        self, query: DeliveryQuery, *, cursor: str | None = None, limit: int = 50
    ) -> DeliveryPage:
        """Deliveries matching `query`, newest first, `limit` a page after `cursor`."""
        return compute.page((row.delivery for row in self._rows.values()), query, cursor, limit)

    async def stats(self, since: float, until: float, by: Sequence[Dimension]) -> Stats:
        """Statistics of the deliveries created in `[since, until)`, grouped `by`."""
        return compute.stats((row.delivery for row in self._rows.values()), since, until, by)

    async def unfinished(self) -> dict[str, int]:
        """How many deliveries are not final, by status."""
        counts = {"scheduled": 0, "pending": 0}
        for row in self._rows.values():
            if not row.delivery.final:
                counts[row.delivery.status.value] = counts.get(row.delivery.status.value, 0) + 1
        return counts

    async def failures(self, since: float, until: float) -> list[FailureRow]:
        """Failed attempts of the deliveries created in `[since, until)`, by kind."""
        return compute.failures((row.delivery for row in self._rows.values()), since, until)

    # AddressBook

    async def record_signals(self, signals: Sequence[Signal]) -> list[SignalOutcome]:
        done: list[SignalOutcome] = []
        for signal in _addresses.checked(signals):
            done.append(self._record(signal))
        return done

    def _record(self, signal: Signal) -> SignalOutcome:
        if signal.token is not None:
            spent = _addresses.spent_key(signal.token)
            if spent in self._spent:
                return SignalOutcome.REPLAYED
            self._spent[spent] = signal.ts
        channel = signal.channel
        key = (channel, signal.address)
        links: list[tuple[str, float]] = []
        if signal.kind is SignalKind.LINKED:
            assert signal.recipient_id is not None
            links = [
                (other[1], entry.ts)
                for other in self._by_recipient.get(signal.recipient_id, ())
                if other[0] == channel
                and other != key
                and (entry := self._book[other]).state is SignalKind.LINKED
            ]
        outcome = _addresses.outcome(signal, self._book.get(key), links)
        if outcome is None:
            return SignalOutcome.UNCHANGED
        entry, ended = outcome
        for address in ended:
            self._drop((signal.channel, address))
        self._drop(key)
        self._book[key] = entry
        if entry.recipient_id is not None:
            self._by_recipient.setdefault(entry.recipient_id, set()).add(key)
        return SignalOutcome.RECORDED

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._book.pop(key, None)
        if entry is not None and entry.recipient_id is not None:
            keys = self._by_recipient[entry.recipient_id]
            keys.discard(key)
            if not keys:
                del self._by_recipient[entry.recipient_id]

    async def unusable(self, addresses: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Signal]:
        found: dict[tuple[str, str], Signal] = {}
        for key in _addresses.wanted(addresses):
            entry = self._book.get(key)
            if entry is not None and entry.state is SignalKind.GONE:
                found[key] = entry.signal(*key)
        return found

    async def linked(self, recipient_id: str) -> dict[str, str]:
        return {
            channel: address
            for channel, address in self._by_recipient.get(recipient_id, ())
            if self._book[(channel, address)].state is SignalKind.LINKED
        }

    async def known(self, recipient_id: str) -> dict[str, Signal]:
        entries = sorted(
            (self._book[key].ts, key) for key in self._by_recipient.get(recipient_id, ())
        )
        return {key[0]: self._book[key].signal(*key) for _, key in entries}

    async def forget(self, recipient_id: str) -> int:
        keys = list(self._by_recipient.get(recipient_id, ()))
        for key in keys:
            self._drop(key)
        return len(keys) + len(self._history.pop(recipient_id, {}))

    # Learning

    async def history(self, recipient_id: str) -> dict[str, Seen]:
        return dict(self._history.get(recipient_id, {}))

    # CallQueue (the rules in `stores._calls`)

    async def put_call(self, call: QueuedCall) -> bool:
        if call.task_id in self._calls:
            return False
        self._calls[call.task_id] = call.copy()
        return True

    async def calls(
        self, status: Sequence[CallStatus] | None = None, *, limit: int = 100
    ) -> list[QueuedCall]:
        states = _calls.wanted(status)
        found = [c for c in self._calls.values() if states is None or c.status.value in states]
        found.sort(key=lambda c: (c.due_by, c.created_ts, c.task_id))
        return [c.copy() for c in found[:limit]]

    async def call(self, task_id: str) -> QueuedCall | None:
        found = self._calls.get(task_id)
        return None if found is None else found.copy()

    async def claim_call(
        self, operator: str, now: float, task_id: str | None = None
    ) -> QueuedCall | None:
        if task_id is not None:
            call = self._calls.get(task_id)
            candidates = [] if call is None else [call]
        else:
            candidates = await self.calls([CallStatus.OPEN], limit=len(self._calls) or 1)
        for call in candidates:
            taken = _calls.claimed(call, operator, now, named=task_id is not None)
            if taken is not None:
                self._calls[call.task_id] = taken
                return taken.copy()
        return None

    async def close_call(
        self, task_id: str, status: CallStatus, now: float, note: str | None = None
    ) -> tuple[QueuedCall | None, bool]:
        call = self._calls.get(task_id)
        if call is None:
            return None, False
        after = _calls.closed(call, status, now, note)
        if after is None:
            return call.copy(), False
        self._calls[task_id] = after
        return after.copy(), True
