"""The public vocabulary: who, what, and what happened.

`Recipient` and `Message` are validated on construction and immutable.
`Delivery`, `Attempt` and `Receipt` are records of what happened; the store
owns them, and the copies a `Notifier` hands out are snapshots.
Times are kept as POSIX seconds (`*_ts`, cheap to store and compare) and shown
as aware `datetime`s (`*_at`).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from cascade_notify._text import CODE_LIMIT, ID_LIMIT, RECEIPT_ID_LIMIT, TEXT_LIMIT, plain, storable
from cascade_notify.errors import MessageError, RecipientError


class AddressKind(StrEnum):
    """How a channel names its addresses."""

    PHONE = "phone"  # E.164, validated and normalised with `phonenumbers`
    EMAIL = "email"
    ID = "id"  # an opaque id the provider gave (a chat id, a user id, the app's own id)


#: The channels the library knows by name, and the kind of address each takes: the one
#: table `Recipient`, the policy and the providers read. The set is open: any other
#: name works through `Recipient(addresses=...)` and a provider declaring it.
CHANNEL_KINDS: Final[Mapping[str, AddressKind]] = MappingProxyType(
    {
        "whatsapp": AddressKind.PHONE,
        "telegram": AddressKind.ID,
        "viber": AddressKind.ID,
        "max": AddressKind.ID,
        "vk": AddressKind.ID,
        "sms": AddressKind.PHONE,
        "email": AddressKind.EMAIL,
        "call": AddressKind.PHONE,
        "app": AddressKind.ID,
    }
)
CHANNELS: Final = tuple(CHANNEL_KINDS)
PHONE_CHANNELS: Final = frozenset(c for c, k in CHANNEL_KINDS.items() if k is AddressKind.PHONE)
_NAMED_CHANNELS: Final = CHANNELS
_MOVED: Final = ("max", "vk")
_CHANNEL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def new_id() -> str:
    """A 32-hex-digit id that sorts by creation time (friendly to B-tree indexes)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def _datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class DeliveryStatus(StrEnum):
    """Where a cascade stands. Everything but `pending` is final."""

    PENDING = "pending"
    DELIVERED = "delivered"
    EXHAUSTED = "exhausted"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self is not DeliveryStatus.PENDING


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
class Recipient:
    """Who to reach, with one address per channel.

    Phone numbers (`whatsapp`, `sms`, `call`) are validated and normalised to
    E.164; a number without a leading `+` is read in `region` (e.g. "RU").
    `addresses` holds any other channel (`max`, `vk`, a plugin's) by name.
    """

    id: str
    whatsapp: str | None = None
    telegram: str | None = None
    viber: str | None = None
    max: str | None = None
    vk: str | None = None
    sms: str | None = None
    email: str | None = None
    call: str | None = None
    app: str | None = None
    addresses: Mapping[str, str] = field(default_factory=dict)
    locale: str | None = None
    timezone: str | None = None
    opted_out: frozenset[str] = frozenset()
    region: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise RecipientError("id", "must be a non-empty string")
        _check_text(self.id, "id", ID_KEY_LIMIT, RecipientError)
        for name in ("locale", "region"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str):
                    raise RecipientError(name, f"must be a string, got {type(value).__name__}")
                _check_text(value, name, _SHORT_LIMIT, RecipientError)
        if isinstance(self.addresses, Mapping):
            # max and vk were given in `addresses` before they became named channels
            moved = {c: a for c, a in self.addresses.items() if c in _MOVED}
            for channel, address in moved.items():
                if getattr(self, channel) is None:
                    object.__setattr__(self, channel, address)
            if moved:
                rest = {c: a for c, a in self.addresses.items() if c not in _MOVED}
                object.__setattr__(self, "addresses", rest)
        for name, kind in CHANNEL_KINDS.items():
            value = getattr(self, name)
            if value is None or kind is AddressKind.EMAIL:
                continue
            if kind is AddressKind.PHONE:
                object.__setattr__(self, name, normalize_phone(value, name, self.region))
            else:
                if isinstance(value, int) and not isinstance(value, bool):
                    value = str(value)
                    object.__setattr__(self, name, value)
                if not isinstance(value, str) or not value.strip():
                    raise RecipientError(name, f"must be a non-empty string, got {value!r}")
                _check_text(value, name, ADDRESS_LIMIT, RecipientError)
        if self.email is not None and not (
            isinstance(self.email, str) and _EMAIL.match(self.email)
        ):
            raise RecipientError("email", f"{self.email!r} is not an email address")
        if self.email is not None:
            _check_text(self.email, "email", ADDRESS_LIMIT, RecipientError)
        extra: dict[str, str] = {}
        for channel, address in dict(self.addresses).items():
            if not isinstance(channel, str) or not _CHANNEL_NAME.match(channel):
                raise RecipientError("addresses", f"{channel!r} is not a channel name")
            if channel in _NAMED_CHANNELS:
                raise RecipientError(
                    f"addresses[{channel!r}]", f"use the {channel}= argument for this channel"
                )
            if not isinstance(address, str) or not address:
                raise RecipientError(f"addresses[{channel!r}]", "must be a non-empty string")
            _check_text(address, f"addresses[{channel!r}]", ADDRESS_LIMIT, RecipientError)
            extra[channel] = address
        object.__setattr__(self, "addresses", extra)
        if isinstance(self.opted_out, str):
            raise RecipientError("opted_out", "must be a collection of channel names, not a str")
        try:
            opted_out = frozenset(self.opted_out)
        except TypeError:
            raise RecipientError("opted_out", "must be a collection of channel names") from None
        for channel in opted_out:
            if not isinstance(channel, str):
                raise RecipientError("opted_out", f"{channel!r} is not a channel name")
            _check_text(channel, "opted_out", _SHORT_LIMIT, RecipientError)
        object.__setattr__(self, "opted_out", opted_out)
        if self.timezone is not None:
            if not isinstance(self.timezone, str):
                raise RecipientError("timezone", "must be an IANA time zone name")
            _check_text(self.timezone, "timezone", _SHORT_LIMIT, RecipientError)
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                raise RecipientError(
                    "timezone", f"{self.timezone!r} is not an IANA time zone"
                ) from None

    def address(self, channel: str) -> str | None:
        """The address on `channel`, or None."""
        if channel in _NAMED_CHANNELS:
            value: str | None = getattr(self, channel)
            return value
        return self.addresses.get(channel)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id}
        for name in (*_NAMED_CHANNELS, "locale", "timezone", "region"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.addresses:
            data["addresses"] = dict(self.addresses)
        if self.opted_out:
            data["opted_out"] = sorted(self.opted_out)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipient:
        values = dict(data)
        values["opted_out"] = frozenset(values.get("opted_out", ()))
        return cls(**values)

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> Recipient:
        """A recipient from `to_dict()` output that this library validated before it was
        stored: not validated again (phone number parsing is most of a store's read cost).
        Use `from_dict` for data from anywhere else."""
        recipient = object.__new__(cls)
        for name in _RECIPIENT_FIELDS:
            object.__setattr__(recipient, name, data.get(name))
        extra = dict(data.get("addresses", ()))
        for name in _MOVED:  # stored before these two became named channels
            if name in extra and data.get(name) is None:
                object.__setattr__(recipient, name, extra.pop(name))
        object.__setattr__(recipient, "addresses", extra)
        object.__setattr__(recipient, "opted_out", frozenset(data.get("opted_out", ())))
        return recipient


_RECIPIENT_FIELDS = (*_NAMED_CHANNELS, "id", "locale", "timezone", "region")


#: Longest recipient id, or idempotency key, taken (characters).
ID_KEY_LIMIT: Final = 256
#: Longest address on one channel.
ADDRESS_LIMIT: Final = 1024
_SHORT_LIMIT = 64  # a locale, region, time zone, category or channel name
_MAX_DEPTH = 32  # nesting of metadata and overrides
# an integral float this large is stored by PostgreSQL (jsonb: numeric) as its digits,
# which read back as an int that is not equal to it: kept as that int from the start
_EXACT_FLOAT = 2.0**53


def _refuse(error: type[RecipientError | MessageError], field_name: str, problem: str) -> Exception:
    if error is RecipientError:
        return RecipientError(field_name, problem)
    return MessageError(f"Message.{field_name}: {problem}", field=field_name.split("[")[0])


def _check_text(
    value: str,
    field_name: str,
    limit: int | None,
    error: type[RecipientError | MessageError],
) -> None:
    """Refuse text no store can hold as is (NUL, a lone surrogate), or over `limit`."""
    if limit is not None and len(value) > limit:
        raise _refuse(error, field_name, f"is {len(value)} characters; at most {limit}")
    if not plain(value):
        what = "a NUL character" if "\x00" in value else "a lone surrogate (not Unicode text)"
        raise _refuse(error, field_name, f"holds {what}")


def _plain_json(value: object, path: str, depth: int = 0) -> Any:
    """`value` as the plain JSON data every store keeps and gives back equal (tuples as
    lists, mappings as dicts); MessageError naming the place of anything else."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        _check_text(value, path, None, MessageError)
        return value
    if isinstance(value, int):
        if abs(value).bit_length() > 1000:  # Python prints at most 4300 digits
            raise _refuse(MessageError, path, "is an integer too large to store")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _refuse(MessageError, path, f"{value!r} is not a JSON number")
        if abs(value) >= _EXACT_FLOAT and value.is_integer():
            return int(value)
        return float(value)
    if depth >= _MAX_DEPTH:
        raise _refuse(MessageError, path, f"is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, Mapping):
        plain_map: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _refuse(MessageError, path, f"key {key!r} is not a string")
            _check_text(key, f"{path}[{key!r}]", None, MessageError)
            plain_map[key] = _plain_json(item, f"{path}[{key!r}]", depth + 1)
        return plain_map
    if isinstance(value, list | tuple):
        return [_plain_json(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise _refuse(
        MessageError, path, f"a {type(value).__name__} is not plain JSON (str, number, list, dict)"
    )


def check_idempotency_key(key: object) -> None:
    """Refuse an idempotency key no store can hold the same way: MessageError naming it."""
    if key is None:
        return
    if not isinstance(key, str) or not key:
        raise MessageError("idempotency_key: must be a non-empty string", field="idempotency_key")
    if len(key) > ID_KEY_LIMIT:
        raise MessageError(
            f"idempotency_key: is {len(key)} characters; at most {ID_KEY_LIMIT}",
            field="idempotency_key",
        )
    if not plain(key):
        raise MessageError(
            "idempotency_key: holds a NUL character or a lone surrogate", field="idempotency_key"
        )


def normalize_phone(value: object, field_name: str, region: str | None = None) -> str:
    """Return `value` as an E.164 number, or raise RecipientError naming the field."""
    if not isinstance(value, str) or not value.strip():
        raise RecipientError(field_name, f"must be a phone number string, got {value!r}")
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        hint = "" if region else " (write it in international form, +<country code>...)"
        raise RecipientError(
            field_name, f"{value!r} is not a phone number: {exc._msg}{hint}"
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise RecipientError(field_name, f"{value!r} is not a valid phone number")
    e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """What to say.

    `overrides` holds per-channel settings, e.g. `{"email": {"html": ...}}`,
    `{"whatsapp": {"template": "parcel_arrived", "parameters": [...]}}`, or a
    channel-specific `text`. `category` is `transactional` or `marketing` (or
    any name a policy's step `categories` lists).
    """

    text: str
    subject: str | None = None
    category: str = "transactional"
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise MessageError(
                f"Message.text: must be a string, got {type(self.text).__name__}", field="text"
            )
        if not isinstance(self.overrides, Mapping):
            raise MessageError("Message.overrides: must be a mapping", field="overrides")
        if not self.text.strip() and not any(
            isinstance(o, Mapping) and ("text" in o or "template" in o)
            for o in self.overrides.values()
        ):
            raise MessageError("Message.text: is empty", field="text")
        _check_text(self.text, "text", None, MessageError)
        if self.subject is not None:
            if not isinstance(self.subject, str):
                raise MessageError("Message.subject: must be a string or None", field="subject")
            _check_text(self.subject, "subject", None, MessageError)
        if not isinstance(self.category, str) or not self.category:
            raise MessageError("Message.category: must be a non-empty string", field="category")
        _check_text(self.category, "category", _SHORT_LIMIT, MessageError)
        for channel, override in self.overrides.items():
            if not isinstance(override, Mapping):
                raise MessageError(
                    f"Message.overrides[{channel!r}]: must be a mapping", field="overrides"
                )
        # what every store can hold and gives back equal: plain JSON, copied as it is stored
        object.__setattr__(self, "overrides", _plain_json(self.overrides, "overrides"))
        if not isinstance(self.metadata, Mapping):
            raise MessageError("Message.metadata: must be a mapping", field="metadata")
        object.__setattr__(self, "metadata", _plain_json(self.metadata, "metadata"))

    def text_for(self, channel: str) -> str:
        """The text to send on `channel`: its override if it has one."""
        override = self.overrides.get(channel)
        if override is not None and isinstance(override.get("text"), str):
            text: str = override["text"]
            return text
        return self.text

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"text": self.text, "category": self.category}
        if self.subject is not None:
            data["subject"] = self.subject
        if self.overrides:
            data["overrides"] = {k: dict(v) for k, v in self.overrides.items()}
        if self.metadata:
            data["metadata"] = dict(self.metadata)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        return cls(**data)

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> Message:
        """A message from `to_dict()` output that this library validated before it was
        stored: not validated again. Use `from_dict` for data from anywhere else."""
        message = object.__new__(cls)
        object.__setattr__(message, "text", data["text"])
        object.__setattr__(message, "subject", data.get("subject"))
        object.__setattr__(message, "category", data.get("category", "transactional"))
        object.__setattr__(message, "overrides", data.get("overrides", {}))
        object.__setattr__(message, "metadata", data.get("metadata", {}))
        return message


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

    def __post_init__(self) -> None:
        # every field but `provider` and `status` is the provider's text: made storable here
        # (see `_text`), so a receipt from anywhere can be recorded on any store
        if not math.isfinite(self.ts):
            raise ValueError(f"Receipt.ts: must be a finite number, got {self.ts!r}")
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
    #: The step's options per provider name (a WhatsApp template for this step, ...).
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)


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
    cost: float | None = None
    receipts: list[Receipt] = field(default_factory=list)

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
    """

    kind: SignalKind
    channel: str
    address: str
    provider: str
    reason: str
    ts: float
    recipient_id: str | None = None

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
        return self.status is not DeliveryStatus.PENDING

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
        )
