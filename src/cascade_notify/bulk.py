"""Sends at a time and sends by the thousand: the `Send` record, what `send_many` returns,
and the pure parts of scheduling (when a scheduled send starts).

`Notifier.send(..., at=)` and `Notifier.send_many(...)` use these; the batching loop
is `send_batches`, over two callables of the notifier's (make a delivery of one item,
store a batch of them), so it holds no notifier state of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cascade_notify.errors import BatchItemError, CascadeError, ScheduleError, StoreError
from cascade_notify.models import Delivery, Message, Priority, Recipient
from cascade_notify.policy import Policy
from cascade_notify.rules import quiet_until, skip_reason

#: How many items `send_many` writes in one transaction unless told otherwise.
BATCH = 500


@dataclass(frozen=True, slots=True)
class Send:
    """One item of `send_many`: what `send` takes, as a record. A field left None takes
    the value `send_many` was given for all items (and then the policy's)."""

    recipient: Recipient
    message: Message
    idempotency_key: str | None = None
    policy: str | None = None
    at: datetime | None = None
    priority: Priority | str | None = None


@dataclass(frozen=True, slots=True)
class SendFailure:
    """An item that was not stored, by its index in the items (from 0), and why."""

    index: int
    error: CascadeError

    def __str__(self) -> str:
        return f"item {self.index}: {self.error}"


@dataclass(slots=True)
class SendManyResult:
    """What `send_many` did: `deliveries[i]` is item i's delivery (a new one, or the one
    its idempotency key already had), None where it failed; `failures` says why, in
    order. `stopped` is the store error that ended the run (items after the batch it
    refused were not read: `deliveries` has one entry per item read)."""

    deliveries: list[Delivery | None] = field(default_factory=list)
    failures: list[SendFailure] = field(default_factory=list)
    created: int = 0
    stopped: StoreError | None = None

    @property
    def ok(self) -> bool:
        """Every item read was stored, and the run read them all."""
        return not self.failures and self.stopped is None

    @property
    def stored(self) -> int:
        """How many items have a delivery (new or found by key)."""
        return len(self.deliveries) - len(self.failures)


def start_ts(at: datetime, now: float) -> float:
    """`at` as POSIX seconds, not before `now`; a naive or non-datetime `at` is refused."""
    if not isinstance(at, datetime):
        raise ScheduleError(f"at must be a datetime, not {type(at).__name__}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ScheduleError(
            f"at={at.isoformat()} has no time zone: give an aware datetime "
            "(datetime(..., tzinfo=UTC), or .astimezone())"
        )
    return max(at.timestamp(), now)


def quiet_start(policy: Policy, delivery: Delivery, start: float) -> float:
    """When a send scheduled for `start` starts under `policy`: at the end of the quiet
    hours of the step it would start on, if `start` is within them and the policy says
    `respect_quiet_hours`; else at `start`."""
    if not policy.respect_quiet_hours:
        return start
    for step in delivery.steps:
        if skip_reason(step, delivery, start) is None:
            quiet = quiet_until(step, delivery, start)
            return start if quiet is None else quiet[0]
    return start


def as_send(index: int, item: object) -> Send:
    """An item of `send_many` as a `Send`; anything else is a BatchItemError."""
    if isinstance(item, Send):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        recipient, message = item
        if isinstance(recipient, Recipient) and isinstance(message, Message):
            return Send(recipient, message)
        raise BatchItemError(
            index,
            f"a pair must be (Recipient, Message), not "
            f"({type(recipient).__name__}, {type(message).__name__})",
        )
    raise BatchItemError(
        index, f"expected a Send or a (recipient, message) pair, not {type(item).__name__}"
    )


Prepare = Callable[[Send], Awaitable[Delivery]]
CreateMany = Callable[[Sequence[Delivery]], Awaitable[list[tuple[Delivery, bool] | Exception]]]


async def send_batches(
    items: Iterable[object] | AsyncIterable[object],
    prepare: Prepare,
    create_many: CreateMany,
    *,
    batch: int = BATCH,
    stored: Callable[[Sequence[Delivery]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SendManyResult:
    """Make each item's delivery (`prepare`) and write them `batch` at a time
    (`create_many`, one transaction each); `stored(new)` hears of each batch's new
    deliveries, `progress(n)` of how many items were handled so far."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    result = SendManyResult()
    pending: list[tuple[int, Delivery]] = []

    async def take(index: int, item: object) -> bool:
        result.deliveries.append(None)
        try:
            pending.append((index, await prepare(as_send(index, item))))
        except CascadeError as exc:
            result.failures.append(SendFailure(index, exc))
        if len(pending) >= batch:
            return await flush()
        return True

    async def flush() -> bool:
        if not pending:
            if progress is not None:
                progress(len(result.deliveries))
            return True
        chunk = list(pending)
        pending.clear()
        try:
            answers = await create_many([delivery for _, delivery in chunk])
        except StoreError as exc:
            result.failures.extend(SendFailure(index, exc) for index, _ in chunk)
            result.stopped = exc
            return False
        new: list[Delivery] = []
        for (index, _), answer in zip(chunk, answers, strict=True):
            if isinstance(answer, Exception):
                error = answer if isinstance(answer, CascadeError) else StoreError(str(answer))
                result.failures.append(SendFailure(index, error))
                continue
            delivery, created = answer
            result.deliveries[index] = delivery
            if created:
                result.created += 1
                new.append(delivery)
        if new and stored is not None:
            stored(new)
        if progress is not None:
            progress(len(result.deliveries))
        return True

    index = 0
    if isinstance(items, AsyncIterable):
        async for item in items:
            if not await take(index, item):
                break
            index += 1
    else:
        for item in items:
            if not await take(index, item):
                break
            index += 1
    if result.stopped is None:
        await flush()
    result.failures.sort(key=lambda failure: failure.index)
    return result


__all__ = [
    "BATCH",
    "Send",
    "SendFailure",
    "SendManyResult",
    "as_send",
    "quiet_start",
    "send_batches",
    "start_ts",
]
