"""Records of what happened: statuses, `Receipt`, `Step`, `Attempt`, `Signal`,
`SkippedStep`, `Delivery`. The store owns them; a `Notifier` hands out snapshots."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal

from cascade_notify._text import CODE_LIMIT, ID_LIMIT, RECEIPT_ID_LIMIT, TEXT_LIMIT, storable
from cascade_notify.models.message import Message
from cascade_notify.models.recipient import Recipient


def new_id() -> str:
    """A 32-hex-digit id that sorts by creation time (friendly to B-tree indexes)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def _datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class DeliveryStatus(StrEnum):
    """Where a cascade stands. `scheduled` (sent with `at=`, not started yet) and `pending`
    (running) are not final; everything else is."""

    SCHEDULED = "scheduled"
    PENDING = "pending"
    DELIVERED = "delivered"
    EXHAUSTED = "exhausted"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self not in _OPEN_DELIVERY


_OPEN_DELIVERY: Final = frozenset({DeliveryStatus.SCHEDULED, DeliveryStatus.PENDING})


class Priority(StrEnum):
    """How soon a worker takes a delivery that is due: `high` ones first, then `normal`,
    then `bulk` (a one-time code never waits behind a mass mailing)."""

    HIGH = "high"
    NORMAL = "normal"
    BULK = "bulk"

    @property
    def rank(self) -> int:
        """0 for high, 1 for normal, 2 for bulk: the order claims take them in."""
        return _RANKS[self]

    @classmethod
    def of_rank(cls, rank: int) -> Priority:
        return _BY_RANK[rank]


_RANKS: Final = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.BULK: 2}
_BY_RANK: Final = {rank: priority for priority, rank in _RANKS.items()}


class AttemptStatus(StrEnum):
    """What became of one provider call."""

    SENDING = "sending"  # recorded before the request; still so after a crash mid-request
    ACCEPTED = "accepted"  # the provider took it; a receipt may follow
    UNKNOWN = "unknown"  # the request went out, the answer was lost
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"  # permanent error at send, or a `failed` receipt
    UNREACHABLE = "unreachable"
    TRANSIENT = "transient"  # a retryable error; a later attempt retries it
    TIMED_OUT = "timed_out"  # no receipt met the step's `wait_for` by its deadline
    ABANDONED = "abandoned"  # the delivery ended (cancelled, expired) while this was open
    WITHDRAWING = "withdrawing"  # superseded by a success elsewhere: being withdrawn
    WITHDRAWN = "withdrawn"  # superseded, and withdrawn at the provider (or already gone there)


OPEN_ATTEMPT: Final = frozenset(
    {AttemptStatus.SENDING, AttemptStatus.ACCEPTED, AttemptStatus.UNKNOWN}
)
_REACHED: Final = frozenset({AttemptStatus.DELIVERED, AttemptStatus.READ})


class ReceiptStatus(StrEnum):
    """A provider's report on one of its messages."""

    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


def status_after(status: AttemptStatus, receipt: ReceiptStatus) -> AttemptStatus:
    """An attempt's status once `receipt` is heard, whatever order receipts come in.

    `read` outranks `delivered` (a read message was delivered); a `failed`
    report never undoes a delivery already seen; `sent` settles an unknown
    outcome as accepted.
    """
    if receipt is ReceiptStatus.READ:
        return AttemptStatus.READ
    if receipt is ReceiptStatus.DELIVERED:
        return status if status is AttemptStatus.READ else AttemptStatus.DELIVERED
    if receipt is ReceiptStatus.FAILED:
        return status if status in _REACHED else AttemptStatus.FAILED
    if status in (AttemptStatus.SENDING, AttemptStatus.UNKNOWN):
        return AttemptStatus.ACCEPTED
    return status


class WaitFor(StrEnum):
    """What a step counts as success."""

    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    READ = "read"


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """A provider's status report for one of its messages.

    `receipt_id` is the report's identity for de-duplication: the webhook's
    own id where the provider gives one, else message id and status.
    `attempt_id` is our own attempt id where the provider echoes a tag we sent
    (WhatsApp's `biz_opaque_callback_data`, the app webhook's `message_id`): it
    finds the attempt even when the send's answer, and so the provider's
    message id, was lost.
    """

    provider: str
    provider_message_id: str
    status: ReceiptStatus
    ts: float
    code: str | None = None
    error: str | None = None
    receipt_id: str = ""
    attempt_id: str | None = None
    #: The price the provider reports for the message with this status (SMS.ru's
    #: `sms/status`); it becomes the attempt's `cost`, over any estimate.
    cost: float | None = None

    def __post_init__(self) -> None:
        # every field but `provider` and `status` is the provider's text: made storable here
        # (see `_text`), so a receipt from anywhere can be recorded on any store
        if not math.isfinite(self.ts):
            raise ValueError(f"Receipt.ts: must be a finite number, got {self.ts!r}")
        if self.cost is not None and not (math.isfinite(self.cost) and self.cost >= 0):
            object.__setattr__(self, "cost", None)  # the provider's number: never trusted
        message_id = storable(self.provider_message_id, ID_LIMIT)
        object.__setattr__(self, "provider_message_id", message_id)
        object.__setattr__(self, "code", storable(self.code, CODE_LIMIT))
        object.__setattr__(self, "error", storable(self.error, TEXT_LIMIT))
        object.__setattr__(self, "attempt_id", storable(self.attempt_id, ID_LIMIT))
        receipt_id = self.receipt_id or f"{message_id}:{self.status.value}"
        object.__setattr__(self, "receipt_id", storable(receipt_id, RECEIPT_ID_LIMIT))

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.ts, UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One resolved step of a cascade policy, as the engine runs it."""

    channel: str
    providers: tuple[str, ...]
    wait_for: WaitFor = WaitFor.DELIVERED
    timeout: float = 600.0
    retry_attempts: int = 3
    retry_initial: float = 1.0
    retry_max: float = 60.0
    quiet_hours: tuple[int, int] | None = None  # minutes after midnight: start, end
    #: True: a step reached within quiet hours waits for their end; False: it is skipped.
    quiet_wait: bool = False
    categories: frozenset[str] | None = None
    #: True: once another step succeeds, this step's messages that were sent but never
    #: confirmed are withdrawn where the provider can (call tasks always are).
    withdraw_superseded: bool = False
    #: The step's options per provider name (a WhatsApp template for this step, ...).
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    #: What a text longer than the step's limit does: `skip` the step (reason `too_long`),
    #: `truncate` it to the limit, or `split` it into several messages within the limit.
    on_too_long: str = "skip"
    #: On sms: the most segments a text may be billed as (the limit `on_too_long` keeps).
    max_segments: int | None = None
    #: Write Cyrillic in Latin letters first (on sms: GSM-7, up to 2.3x cheaper).
    transliterate: bool = False
    #: Under the policy's `order: learned`: this step stays where the policy puts it
    #: (an SMS or call fallback that must never be moved first).
    keep_place: bool = False


@dataclass(slots=True, kw_only=True)
class Attempt:
    """One provider call and everything heard about it since."""

    id: str
    delivery_id: str
    step: int
    channel: str
    provider: str
    status: AttemptStatus
    started_ts: float
    finished_ts: float | None = None
    deadline_ts: float | None = None
    provider_message_id: str | None = None
    error: str | None = None
    code: str | None = None
    retry_ts: float | None = None  # after a transient error: not before this time
    #: What the provider bills for it: segments x price on SMS, or the price it reported.
    cost: float | None = None
    receipts: list[Receipt] = field(default_factory=list)
    #: On the sms channel: the segments the text was billed as, and their encoding
    #: (`"GSM-7"` or `"UCS-2"`); None on other channels.
    segments: int | None = None
    encoding: str | None = None
    #: ISO 4217 code of `cost` (the provider's `currency` setting), None when not billed.
    currency: str | None = None

    @property
    def started_at(self) -> datetime:
        return datetime.fromtimestamp(self.started_ts, UTC)

    @property
    def finished_at(self) -> datetime | None:
        return _datetime(self.finished_ts)

    @property
    def deadline_at(self) -> datetime | None:
        return _datetime(self.deadline_ts)

    @property
    def retry_at(self) -> datetime | None:
        return _datetime(self.retry_ts)

    def absorb(self, receipt: Receipt) -> bool:
        """Add a receipt unless it is a duplicate, and move the status on; True if new."""
        for seen in self.receipts:
            if seen.receipt_id == receipt.receipt_id:
                return False
        self.receipts.append(receipt)
        self.status = status_after(self.status, receipt.status)
        if receipt.cost is not None:  # the price the gateway reports wins
            self.cost = receipt.cost
        return True

    def copy(self) -> Attempt:
        return Attempt(
            id=self.id,
            delivery_id=self.delivery_id,
            step=self.step,
            channel=self.channel,
            provider=self.provider,
            status=self.status,
            started_ts=self.started_ts,
            finished_ts=self.finished_ts,
            deadline_ts=self.deadline_ts,
            provider_message_id=self.provider_message_id,
            error=self.error,
            code=self.code,
            retry_ts=self.retry_ts,
            cost=self.cost,
            receipts=list(self.receipts),
            segments=self.segments,
            encoding=self.encoding,
            currency=self.currency,
        )


class SignalKind(StrEnum):
    """What a provider learned about an address, apart from any one message."""

    GONE = "gone"  # unusable on this channel from now on: blocked, unsubscribed, stopped
    LINKED = "linked"  # the customer linked this address to a recipient id (opened the bot)


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """A provider's news about an address: it is gone, or it was linked to a recipient.

    `reason` is the provider's word for it (`blocked`, `unsubscribed`, `bot_stopped`,
    `wrong_number`, `start`); `recipient_id` is set for `linked`, and for `gone` when
    the provider knows whose address it was.

    `token` is the deep-link payload a customer opened the bot with (`/start <token>`),
    as the provider read it: a provider leaves `recipient_id` to the notifier, which
    checks the token (`cascade_notify.linking`) and sets it; the store links only the
    first signal with a given token (a replay links nothing).
    """

    kind: SignalKind
    channel: str
    address: str
    provider: str
    reason: str
    ts: float
    recipient_id: str | None = None
    token: str | None = None

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.ts, UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedStep:
    """A step the cascade passed over, and why (`no_address`, `opted_out`, ...)."""

    step: int
    channel: str
    reason: str
    ts: float
    detail: str | None = None

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.ts, UTC)


#: The keys a route's `when` may hold, in the order they are kept and shown.
ROUTE_KEYS: Final = ("country", "region", "locale", "tags", "category", "channels")
#: How a delivery's policy was chosen (`Route.source`).
RouteSource = Literal["route", "default", "explicit"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """How a delivery's policy was chosen, and why.

    `source` is `route` (the policy file's `routes[index]` matched: `when` holds its
    conditions, key -> the values it takes, every one of which held), `default` (no
    route matched, or the file has none: its `default_policy`) or `explicit` (the
    caller named the policy: `send(..., policy=)`)."""

    source: RouteSource
    index: int | None = None
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def describe(self) -> str:
        """For people: `routes[2]: country RU or KZ; tags vip`,
        `default_policy: no route matched` or `the caller: send(policy=)`."""
        if self.source == "explicit":
            return "the caller: send(policy=)"
        if self.source == "default":
            return "default_policy: no route matched"
        said = "; ".join(f"{key} {' or '.join(values)}" for key, values in self.when)
        return f"routes[{self.index}]: {said or 'matches everything'}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"source": self.source}
        if self.index is not None:
            data["index"] = self.index
        if self.when:
            data["when"] = {key: list(values) for key, values in self.when}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Route:
        when = data.get("when") or {}
        index = data.get("index")
        # in ROUTE_KEYS order whatever the store kept (PostgreSQL's jsonb sorts keys)
        keys = sorted(when, key=lambda k: (ROUTE_KEYS.index(k) if k in ROUTE_KEYS else 99, k))
        return cls(
            source=data["source"],
            index=None if index is None else int(index),
            when=tuple((str(k), tuple(str(v) for v in when[k])) for k in keys),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    """How a delivery of a policy with `order: learned` ordered its steps, and why.

    `channels` is the order its steps run in; `moved` whether that differs from the
    policy's; `reasons` what the store knew of the recipient, per channel: (channel,
    `read` or `reached` or `failed`, when). A delivery with an `Order` teaches the
    recipient's history what came of it."""

    channels: tuple[str, ...]
    moved: bool = False
    reasons: tuple[tuple[str, str, float], ...] = ()

    def describe(self) -> str:
        """For people: `learned order: viber → whatsapp → sms (viber read 2026-12-01
        10:00 UTC)`, or `learned order: the policy's (...)`."""
        if not self.reasons:
            return "learned order: the policy's (nothing learned of this recipient yet)"
        why = "; ".join(self.reason(channel) or channel for channel, _, _ in self.reasons)
        if not self.moved:
            return f"learned order: the policy's ({why})"
        return f"learned order: {' → '.join(self.channels)} ({why})"

    def reason(self, channel: str) -> str | None:
        """What was known of `channel`, for people: `viber read 2026-12-01 10:00 UTC`;
        `whatsapp failed ... UTC, last until it succeeds`; None: nothing."""
        for name, what, ts in self.reasons:
            if name == channel:
                when = f"{datetime.fromtimestamp(ts, UTC):%Y-%m-%d %H:%M} UTC"
                tail = ", last until it succeeds" if what == "failed" else ""
                return f"{channel} {what} {when}{tail}"
        return None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"channels": list(self.channels), "moved": self.moved}
        if self.reasons:
            data["reasons"] = [list(reason) for reason in self.reasons]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Order:
        return cls(
            channels=tuple(str(c) for c in data.get("channels", ())),
            moved=bool(data.get("moved", False)),
            reasons=tuple((str(c), str(w), float(t)) for c, w, t in data.get("reasons", ())),
        )


#: The routes of a policy chosen by default, or by the caller: shared, never changed.
DEFAULT_ROUTE: Final = Route(source="default")
EXPLICIT_ROUTE: Final = Route(source="explicit")


@dataclass(slots=True, kw_only=True)
class Delivery:
    """The state of one cascade.

    `unusable` holds the channels whose address was known unusable when the delivery was
    made (the recipient blocked the bot, unsubscribed): channel -> a reason for people.
    """

    id: str
    policy: str
    recipient: Recipient
    message: Message
    steps: tuple[Step, ...]
    created_ts: float
    expires_ts: float
    status: DeliveryStatus = DeliveryStatus.PENDING
    channel: str | None = None
    step: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    skipped: list[SkippedStep] = field(default_factory=list)
    finished_ts: float | None = None
    wake_ts: float | None = None
    idempotency_key: str | None = None
    unusable: dict[str, str] = field(default_factory=dict)
    #: A hash of the recipient, message and policy it was sent with: the same
    #: idempotency key with another fingerprint is a conflict. None: made before the
    #: library kept one (or not by `send`), so not checked.
    fingerprint: str | None = None
    priority: Priority = Priority.NORMAL
    #: How its policy was chosen (a route of the policy file, its default, or the
    #: caller); None: made before the library recorded it, or not by `send`.
    route: Route | None = None
    #: How a policy with `order: learned` ordered the steps for this recipient, and why;
    #: None: the policy's order is fixed (such a delivery teaches no history).
    order: Order | None = None

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created_ts, UTC)

    @property
    def finished_at(self) -> datetime | None:
        return _datetime(self.finished_ts)

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.expires_ts, UTC)

    @property
    def final(self) -> bool:
        return self.status not in _OPEN_DELIVERY

    @property
    def scheduled_at(self) -> datetime | None:
        """When a scheduled delivery starts (None once it has started)."""
        if self.status is not DeliveryStatus.SCHEDULED:
            return None
        return _datetime(self.wake_ts)

    @property
    def cost(self) -> float:
        """What the cascade cost: the sum of its attempts' costs, 0 when nothing was billed
        (the attempts' `currency` says in what)."""
        return sum(a.cost for a in self.attempts if a.cost is not None)

    def copy(self) -> Delivery:
        """A snapshot that later changes in the store do not touch."""
        return Delivery(
            id=self.id,
            policy=self.policy,
            recipient=self.recipient,
            message=self.message,
            steps=self.steps,
            created_ts=self.created_ts,
            expires_ts=self.expires_ts,
            status=self.status,
            channel=self.channel,
            step=self.step,
            attempts=[a.copy() for a in self.attempts],
            skipped=list(self.skipped),
            finished_ts=self.finished_ts,
            wake_ts=self.wake_ts,
            idempotency_key=self.idempotency_key,
            unusable=dict(self.unusable),
            fingerprint=self.fingerprint,
            priority=self.priority,
            route=self.route,
            order=self.order,
        )
