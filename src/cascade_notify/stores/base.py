"""The store protocol: where deliveries, attempts, receipts and timers live.

It is shaped like the engine's transitions, one call each:

- `create`: `send()` persists a new cascade (idempotent on its key);
- `claim`: a worker leases deliveries that are due (timer passed or poked);
- `commit`: the worker writes one transition, fenced by its lease token;
- `record_receipts`: a webhook or poll reports on messages; the delivery is poked;
- `cancel`: a user ends a cascade, fencing out any worker that holds it.

A lease token is the fence: `claim` bumps it, and `commit` with any other
token raises `LeaseLost` and writes nothing, so a worker paused past its lease
can never write over its successor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from cascade_notify.events import OutboxEvent
from cascade_notify.learned import Seen
from cascade_notify.models import (
    Attempt,
    CallStatus,
    Delivery,
    DeliveryStatus,
    QueuedCall,
    Receipt,
    Signal,
    SkippedStep,
)


@dataclass(slots=True)
class Claim:
    """A lease on one delivery: a snapshot of it and the fencing token."""

    delivery: Delivery
    token: int
    lease_until: float


@dataclass(slots=True, kw_only=True)
class Transition:
    """Everything one engine decision changes, written in one store call.

    `attempts` are upserted by id (receipts already stored for an attempt are
    kept and its status re-derived from them); `skipped` is appended;
    `wake_ts` replaces the delivery's timer (None: no timer). `release` ends
    the lease.
    """

    attempts: list[Attempt] = field(default_factory=list)
    skipped: list[SkippedStep] = field(default_factory=list)
    step: int | None = None
    status: DeliveryStatus | None = None
    channel: str | None = None
    finished_ts: float | None = None
    wake_ts: float | None = None
    release: bool = True
    #: Outcome webhooks this change means (`events:` in the policy), written to the
    #: store's outbox in the same transaction as the change.
    events: list[OutboxEvent] = field(default_factory=list)

    def merge(self, later: Transition) -> Transition:
        """This transition followed by `later`, as one write."""
        by_id = {a.id: a for a in self.attempts}
        for attempt in later.attempts:
            by_id[attempt.id] = attempt
        return Transition(
            attempts=list(by_id.values()),
            skipped=[*self.skipped, *later.skipped],
            step=later.step if later.step is not None else self.step,
            status=later.status if later.status is not None else self.status,
            channel=later.channel if later.channel is not None else self.channel,
            finished_ts=later.finished_ts if later.finished_ts is not None else self.finished_ts,
            wake_ts=later.wake_ts,
            release=later.release,
            events=[*self.events, *later.events],
        )


@dataclass(slots=True)
class OutboxItem:
    """An outbox event leased to one sender: the event, its place in its delivery's
    order, how often it was tried, and the fence (`token`) its `outbox_*` writes match."""

    event: OutboxEvent
    seq: int
    tries: int
    token: int


@dataclass(frozen=True, slots=True)
class ReceiptResult:
    """What recording one receipt did."""

    receipt: Receipt
    delivery_id: str | None  # None: no message of ours has that id (yet)
    duplicate: bool


def apply_transition(delivery: Delivery, transition: Transition, *, own: bool = False) -> None:
    """Apply `transition` to `delivery` in place: the one definition every store shares.

    `own`: the transition's attempts become the delivery's own objects instead of copies
    (the engine's working copy: nobody else holds them)."""
    for attempt in transition.attempts:
        _upsert(delivery.attempts, attempt, own)
    if transition.skipped:
        delivery.skipped.extend(transition.skipped)
    if transition.step is not None:
        delivery.step = transition.step
    if transition.status is not None:
        delivery.status = transition.status
        delivery.channel = transition.channel
        delivery.finished_ts = transition.finished_ts
    delivery.wake_ts = transition.wake_ts


def _upsert(attempts: list[Attempt], attempt: Attempt, own: bool) -> None:
    for index in range(len(attempts) - 1, -1, -1):
        old = attempts[index]
        if old.id == attempt.id:
            # the writer's copy carries the receipts it decided on; any others
            # arrived meanwhile and still count
            new = attempt if own else attempt.copy()
            if new.provider_message_id is None:  # learned from a receipt meanwhile
                new.provider_message_id = old.provider_message_id
            for receipt in old.receipts:
                new.absorb(receipt)
            attempts[index] = new
            return
    attempts.append(attempt if own else attempt.copy())


@runtime_checkable
class Store(Protocol):
    """What the engine and the notifier need from a store."""

    @property
    def shared(self) -> bool:
        """Whether other processes may change what it holds (a shared file or server):
        then a worker looks at it now and then for their work, besides its own timers."""
        ...

    async def open(self) -> None:
        """Connect, and check the schema version."""
        ...

    async def close(self) -> None: ...

    async def create(self, delivery: Delivery) -> tuple[Delivery, bool]:
        """Persist a new delivery, due at once; with a known idempotency key return
        the existing one instead. The bool says whether it was created."""
        ...

    async def get(self, delivery_id: str) -> Delivery | None:
        """A snapshot of the delivery, or None."""
        ...

    async def claim(self, now: float, *, limit: int, lease: float) -> list[Claim]:
        """Lease up to `limit` pending deliveries that are due (timer at or before `now`,
        poked by a receipt, or whose previous lease expired) for `lease` seconds."""
        ...

    async def commit(self, claim: Claim, transition: Transition) -> None:
        """Write `transition`; raise LeaseLost if the lease was taken over."""
        ...

    async def record_receipts(self, receipts: Sequence[Receipt], now: float) -> list[ReceiptResult]:
        """Attach each receipt to its attempt by (provider, provider message id) and poke
        the delivery. A receipt seen before is a duplicate and changes nothing. One for
        an unknown message is kept a while, in case the send's answer is still on its way."""
        ...

    async def cancel(self, delivery_id: str, now: float) -> Delivery | None:
        """End a pending delivery as cancelled (fencing out its worker); return it, or None."""
        ...

    async def next_wake(self) -> float | None:
        """The earliest time any pending delivery is due, or None if none is."""
        ...


class SignalOutcome(StrEnum):
    """What recording one signal did."""

    RECORDED = "recorded"  # the book changed
    UNCHANGED = "unchanged"  # a repeat, or older than what the book knows
    REPLAYED = "replayed"  # a link whose token linked before: nothing done


@runtime_checkable
class AddressBook(Protocol):
    """A store that remembers what providers learned about addresses (`Signal`s).

    A `gone` signal makes (channel, address) unusable, with its reason, until a later
    `linked` signal for the same address; a `linked` one records the recipient's address
    on that channel (replacing an older one). Later cascades skip an unusable address
    and fill an empty one from the linked addresses.
    """

    async def record_signals(self, signals: Sequence[Signal]) -> list[SignalOutcome]:
        """Remember each signal, in order; a repeat of one already known changes nothing.
        A `linked` signal with a `token` is recorded only if no signal with that token
        was before (the check and the record are one write); what each did is returned."""
        ...

    async def unusable(self, addresses: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Signal]:
        """For each (channel, address) given that is unusable now, the signal that made it so."""
        ...

    async def linked(self, recipient_id: str) -> dict[str, str]:
        """The addresses linked to `recipient_id`: channel -> address."""
        ...

    async def known(self, recipient_id: str) -> dict[str, Signal]:
        """What the book knows of `recipient_id`'s addresses, the latest per channel: a
        `linked` one, or a `gone` one (its address since blocked the bot, unsubscribed)."""
        ...

    async def forget(self, recipient_id: str) -> int:
        """Erase everything remembered about `recipient_id` (a deletion request), and
        the signals about its linked addresses; return how many entries went."""
        ...


@runtime_checkable
class Learning(Protocol):
    """A store that keeps each recipient's channel history for `order: learned`.

    It is taught inside the writes that learn something: `commit` of a transition that
    ends a learned-order delivery `delivered` (or finds an address unreachable), and
    `record_receipts` of a `delivered`, `read` or `failed` receipt for one; at most
    `learned.HISTORY_LIMIT` channels per recipient; `forget` erases it.
    """

    async def history(self, recipient_id: str) -> dict[str, Seen]:
        """What is known of `recipient_id`'s channels: channel -> `Seen` (one indexed read)."""
        ...


@dataclass(frozen=True, slots=True)
class SendReads:
    """What `send()` reads of a recipient before it writes the delivery: its known
    addresses (`AddressBook.known`) if `known`, the gone ones among `addresses`
    (`AddressBook.unusable`), its channel history (`Learning.history`) if `history`."""

    recipient_id: str
    known: bool = False
    addresses: tuple[tuple[str, str], ...] = ()
    history: bool = False

    def __bool__(self) -> bool:
        return self.known or bool(self.addresses) or self.history


@dataclass(frozen=True, slots=True)
class SendFacts:
    """What the store answered to `SendReads` (empty where it was not asked)."""

    known: Mapping[str, Signal] = field(default_factory=dict)
    unusable: Mapping[tuple[str, str], Signal] = field(default_factory=dict)
    history: Mapping[str, Seen] = field(default_factory=dict)


@runtime_checkable
class ReadingCreate(Protocol):
    """A store that reads what `send()` needs of a recipient in the same call as its
    `create` (on SQLite inside the write's group transaction, on PostgreSQL on the one
    connection of the insert), instead of separate lookups before it."""

    async def create_read(
        self, reads: SendReads, build: Callable[[SendFacts], Delivery]
    ) -> tuple[Delivery, bool]:
        """Read `reads`, make the delivery with `build(facts)` and `create` it: as
        `create`. An error `build` raises reaches the caller, and nothing is stored."""
        ...


@runtime_checkable
class CallQueue(Protocol):
    """A store that keeps call tasks for people to work through (`type: call_queue`).

    Calls are keyed by task id; `put_call` of a known one changes nothing. A call is
    worked once: `claim_call` takes an open one for an operator, `close_call` ends an
    open or claimed one; a final call stays as it ended.
    """

    async def put_call(self, call: QueuedCall) -> bool:
        """Queue `call`; False (and nothing changes) if its task id is known."""
        ...

    async def calls(
        self, status: Sequence[CallStatus] | None = None, *, limit: int = 100
    ) -> list[QueuedCall]:
        """Calls in these states (all: None), soonest due first, at most `limit`."""
        ...

    async def call(self, task_id: str) -> QueuedCall | None:
        """The call `task_id` as it stands (who took it, how it ended), or None."""
        ...

    async def claim_call(
        self, operator: str, now: float, task_id: str | None = None
    ) -> QueuedCall | None:
        """Give `operator` the call `task_id` if it is open (or theirs already), or else the
        open call due soonest whose window has begun; None if there is none."""
        ...

    async def close_call(
        self, task_id: str, status: CallStatus, now: float, note: str | None = None
    ) -> tuple[QueuedCall | None, bool]:
        """End an open or claimed call as `status` (or reopen it: `open`); the call as it
        stands and whether this changed it (None: no such call)."""
        ...


@runtime_checkable
class Outbox(Protocol):
    """A store that keeps outcome webhooks to post (`events:`): written with the change
    they tell of, in one transaction, and leased to a sender one delivery's head at a time.

    `outbox_claim` leases, for up to `limit` deliveries, the earliest unsent event, if it
    is due and not leased; while it is unsent no later event of that delivery is handed
    out, so a delivery's events go in order. `outbox_sent` and `outbox_retry` are fenced
    by the item's token: a sender whose lease ran out (and was taken over) changes nothing.
    """

    def outbox_kinds(self, kinds: frozenset[str]) -> None:
        """The kinds of event the store adds itself, for the writes that carry no
        `Transition`: `receipt` (record_receipts) and `finished` (cancel)."""
        ...

    async def outbox_claim(self, now: float, *, limit: int, lease: float) -> list[OutboxItem]:
        """Lease due head events of up to `limit` deliveries for `lease` seconds."""
        ...

    async def outbox_sent(self, items: Sequence[OutboxItem], now: float) -> list[bool]:
        """Mark the items posted, in one write (each delivery's next event becomes due);
        for each, whether it was (False: fenced out, another sender has it now)."""
        ...

    async def outbox_retry(self, item: OutboxItem, at: float) -> bool:
        """Release the item to be tried again at `at`, one try counted; False: fenced out."""
        ...

    async def outbox_next(self) -> float | None:
        """When the earliest unsent head event is due (or its lease ends); None: none."""
        ...
