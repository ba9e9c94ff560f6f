"""The provider seam: one class per way of sending on one channel.

A provider knows its API and nothing of the engine, the store or the policy file
(docs/adding-a-provider.md has the whole contract and a checklist):

- `send(request)` makes one call; it returns a `SendResult` or raises one of
  `TransientError`, `PermanentError`, `UnreachableError`, `UnknownOutcomeError`
  (anything else it raises is taken as an unknown outcome, never as "not sent");
- `receive(request)` verifies and reads one incoming webhook and returns an
  `Inbound`: the receipts, the signals (an address gone or linked) and the answer
  the provider wants sent back; it raises `BadSignature` or `ValueError` (malformed);
- `poll(ids)` asks the provider about many messages at once, for APIs with a
  status call (at most `poll_batch` ids per call);
- `withdraw(request)` takes back a message a later channel's success made stale (a
  Telegram message deleted, a call task cancelled), for providers that declare
  `withdraws`;
- `start()` before the first send, `aclose()` after the last;
- `emit()` hands news learned outside a webhook (a push) to the notifier, which
  takes it through the same door as a webhook's.

What it can do is class data the policy validator reads: `receipts`,
`max_length`, `idempotent_sends`, `poll_interval`, `poll_batch`, `webhook_methods`,
`withdraws`, `withdraw_always`, `gone_on`, its `Settings` and its `Overrides` (both
pydantic models).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cascade_notify import _logmask
from cascade_notify._text import CODE_LIMIT, ID_LIMIT, TEXT_LIMIT, finite, storable
from cascade_notify.clock import Clock, SystemClock
from cascade_notify.errors import (
    MessageError,
    NotRunning,
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.models import (
    Attempt,
    Delivery,
    Message,
    Receipt,
    ReceiptStatus,
    Recipient,
    Signal,
    WaitFor,
)
from cascade_notify.providers._signing import BadSignature

log = _logmask.logger("cascade_notify.providers")

#: The longest `retry_after` a provider's answer is taken at (seconds): a day.
MAX_RETRY_AFTER = 86400.0


class ProviderSettings(BaseModel):
    """Base of every provider's settings; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderOverrides(BaseModel):
    """Base of a provider's typed `Message.overrides[channel]` (and a step's `options:`).

    `text` replaces the message text on this channel. A subclass adds the channel's own
    keys (a WhatsApp template, a Telegram parse mode); unknown keys are errors.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | None = Field(default=None, description="Replaces the message text on this channel.")


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Everything a provider needs for one call.

    `attempt_id` is unique per attempt and stable across a crash-and-resume of the
    same attempt: use it as the provider's idempotency key or callback tag where the
    API has one. `resend` is True when this call repeats an attempt whose outcome was
    unknown (only for providers that declare `idempotent_sends`). `deadline_ts` is
    when the step gives up waiting and the cascade moves on: an API with a validity
    period or TTL should stop delivering by then, so no stale copy lands on top of
    the next channel's. `options` are the step's options for this provider (from the
    policy), and `overrides` those merged with `Message.overrides[channel]` (the
    message wins), validated as the provider's `Overrides` model.
    """

    attempt_id: str
    delivery_id: str
    channel: str
    address: str
    recipient: Recipient
    message: Message
    deadline_ts: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    overrides: ProviderOverrides = field(default_factory=ProviderOverrides)
    resend: bool = False
    #: The delivery as it stands (attempts and skips so far, expiry), for providers that
    #: hand its history on: a call task tells the operator what failed before.
    delivery: Delivery | None = None

    @property
    def text(self) -> str:
        return self.overrides.text if self.overrides.text is not None else self.message.text


@dataclass(frozen=True, slots=True)
class SendResult:
    """A provider accepted the message."""

    provider_message_id: str
    cost: float | None = None


@dataclass(frozen=True, slots=True)
class WithdrawRequest:
    """One sent message to take back: `attempt_id` and `provider_message_id` name it;
    `reason` says why (`delivered_elsewhere`), `channel` where the success was."""

    attempt_id: str
    delivery_id: str
    provider_message_id: str
    address: str
    reason: str = "delivered_elsewhere"
    delivered_on: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """An incoming HTTP request, framework-free. `body` is the raw bytes as received."""

    method: str
    url: str
    headers: Mapping[str, str]  # lower-cased names; a repeated header joined by ", "
    body: bytes = b""
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, body: str, status: int = 200) -> WebhookResponse:
        """A plain-text answer (`ok`, `100`, a challenge)."""
        return cls(status, body.encode(), {"content-type": "text/plain; charset=utf-8"})


@dataclass(frozen=True, slots=True)
class Inbound:
    """What one verified webhook brought: receipts, signals, and the answer to give.

    `answer` None: the receipts endpoint answers its own JSON summary (200). A
    provider that needs a particular body (`ok`, `100`, a challenge, a confirmation
    code) sets it; it is sent once the receipts and signals are recorded.
    """

    receipts: Sequence[Receipt] = ()
    signals: Sequence[Signal] = ()
    answer: WebhookResponse | None = None


InboundSink = Callable[[Inbound], Awaitable[object]]
_EMPTY: dict[type[ProviderOverrides], ProviderOverrides] = {}


class MalformedReceipts(ValueError):
    """Raised by `parse()` when some of a verified body's receipts are malformed and some
    are not: `receipts` holds the good ones, which are recorded; the request is still
    answered 400, the message saying what was wrong with the others."""

    def __init__(self, message: str, receipts: Sequence[Receipt]) -> None:
        self.receipts = list(receipts)
        super().__init__(message)


class Provider:
    """Base class of every provider.

    Subclasses set `type_name`, `default_channel` (or a `channel` setting),
    `receipts` and `Settings`, and implement `send()`; those that take webhooks set
    `webhook_methods` and implement `receive()`; those with a status API implement
    `poll()` and set `poll_interval`.
    """

    type_name: ClassVar[str] = ""
    #: The channel this type sends on; `None` if the settings choose it.
    default_channel: ClassVar[str | None] = None
    #: The receipts this provider can report. `sent` means "accepted" only.
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset()
    #: Longest text the API takes, in characters; `None` for no limit.
    max_length: ClassVar[int | None] = None
    #: On sms: the most segments the gateway takes in one message (SMS.ru: 8); `None`.
    max_segments: ClassVar[int | None] = None
    #: True when resending with the same attempt id cannot deliver twice.
    idempotent_sends: ClassVar[bool] = False
    #: Seconds between status polls while waiting for a receipt; `None`: no polling.
    poll_interval: ClassVar[float | None] = None
    #: Most provider message ids one `poll()` call may ask about.
    poll_batch: ClassVar[int] = 1
    #: True when it takes `http=` (an httpx client or transport): the HTTP providers.
    takes_http: ClassVar[bool] = False
    #: True when it reports `Signal`s (an address gone or linked): then the notifier
    #: asks the store what it knows of the recipient's addresses at each send.
    signals: ClassVar[bool] = False
    #: The longest deep-link payload its bot takes, in characters: a provider that sets
    #: it makes links to its bot (`deep_link()`) and reports the payload customers open
    #: it with as a `linked` signal's `token`; None: it makes no links.
    link_payload: ClassVar[int | None] = None
    #: True when `withdraw()` can take a sent message back (delete it, cancel the task).
    withdraws: ClassVar[bool] = False
    #: True: its messages are withdrawn whenever another step succeeds, whatever the
    #: policy says (a call task nobody should act on); False: only under
    #: `withdraw_superseded: true`.
    withdraw_always: ClassVar[bool] = False
    #: A `failed` receipt's code -> the channels on which the attempt's address (the same
    #: phone number) is gone from then on: `{"wrong_number": ("sms", "whatsapp", ...)}`.
    gone_on: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: HTTP methods its webhook takes (GET for a subscription challenge); empty: none.
    webhook_methods: ClassVar[frozenset[str]] = frozenset()
    Settings: ClassVar[type[ProviderSettings]] = ProviderSettings
    Overrides: ClassVar[type[ProviderOverrides]] = ProviderOverrides

    def __init__(
        self, name: str, settings: ProviderSettings, *, clock: Clock | None = None
    ) -> None:
        self.name = name
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        channel = getattr(settings, "channel", None) or self.default_channel
        if channel is None:
            raise ValueError(f"provider {name!r}: no channel given")
        self.channel: str = channel
        self._sink: InboundSink | None = None
        # every SecretStr of the settings is masked in every log line from now on
        _logmask.register_secrets(_logmask.secrets_of(settings))

    @property
    def accepts_webhooks(self) -> bool:
        return bool(self.webhook_methods)

    @classmethod
    def can_satisfy(cls, wait_for: WaitFor, settings: ProviderSettings | None = None) -> bool:
        """Whether this provider can ever report what `wait_for` asks for."""
        if wait_for is WaitFor.ACCEPTED:
            return True
        if wait_for is WaitFor.DELIVERED:
            return bool(cls.receipts & {ReceiptStatus.DELIVERED, ReceiptStatus.READ})
        return ReceiptStatus.READ in cls.receipts

    @classmethod
    def check_overrides(
        cls, given: Mapping[str, Any], *, channel: str, where: str = "overrides"
    ) -> ProviderOverrides:
        """`given` as this type's `Overrides`; `MessageError` naming the channel and key."""
        if not given:
            empty = _EMPTY.get(cls.Overrides)
            if empty is None:
                empty = _EMPTY[cls.Overrides] = cls.Overrides()
            return empty
        try:
            return cls.Overrides.model_validate(dict(given))
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            key = ".".join(str(p) for p in error["loc"]) or "(all)"
            what = (
                f"unknown key for provider type {cls.type_name!r} "
                f"(allowed: {', '.join(cls.Overrides.model_fields)})"
                if error["type"] == "extra_forbidden"
                else error["msg"]
            )
            raise MessageError(f"{where}[{channel!r}].{key}: {what}") from None

    def attach(self, sink: InboundSink) -> None:
        """Called by the notifier: where news this provider learns of goes."""
        self._sink = sink

    async def emit(self, receipts: Sequence[Receipt] = (), signals: Sequence[Signal] = ()) -> None:
        """Hand receipts and signals learned outside a webhook (a push) to the notifier."""
        if self._sink is None:
            raise NotRunning(f"provider {self.name!r} is not attached to a running notifier")
        await self._sink(Inbound(receipts=receipts, signals=signals))

    def deep_link(self, payload: str) -> str:
        """The link that opens this provider's bot with `payload` (at most `link_payload`
        characters of `A-Z a-z 0-9 _ -`); ValueError naming the setting it lacks."""
        raise ValueError(f"provider {self.name!r} ({self.type_name}) makes no deep links")

    async def start(self) -> None:
        """Get ready to send (open a pool, log in, fetch a token); called once before
        the first send. A failure here is the notifier's start failing, with the reason."""

    async def send(self, request: SendRequest) -> SendResult:
        raise NotImplementedError

    async def receive(self, request: WebhookRequest) -> Inbound:
        """Verify and read one webhook request (`request.method` is in `webhook_methods`).

        Raise `BadSignature` (answered 401) before reading a body that does not verify,
        `ValueError` (answered 400) for a verified body that is malformed.
        """
        raise BadSignature(f"provider {self.name!r} takes no webhooks")

    async def withdraw(self, request: WithdrawRequest) -> bool:
        """Take a sent message back; True if withdrawn, False if the provider no longer
        had it. Raise a `ProviderError` if it could not be done."""
        raise NotImplementedError(f"provider {self.name!r} cannot withdraw messages")

    async def poll(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        """Ask the provider about these messages (at most `poll_batch`); their receipts."""
        return []

    async def aclose(self) -> None:
        """Release connections and background work."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self.channel}>"


def request_for(
    provider: Provider, delivery: Delivery, attempt: Attempt, deadline_ts: float, *, resend: bool
) -> SendRequest:
    """What `provider` is handed for `attempt` of `delivery`: the step's options for it
    with the message's overrides for the channel over them, as its typed `Overrides`
    (a `MessageError` if they do not fit)."""
    options = delivery.steps[attempt.step].options.get(provider.name, {})
    given = delivery.message.overrides.get(attempt.channel)
    overrides = provider.check_overrides(
        {**options, **given} if given else options, channel=attempt.channel
    )
    return SendRequest(
        attempt_id=attempt.id,
        delivery_id=delivery.id,
        channel=attempt.channel,
        address=delivery.recipient.address(attempt.channel) or "",
        recipient=delivery.recipient,
        message=delivery.message,
        deadline_ts=deadline_ts,
        options=options,
        overrides=overrides,
        resend=resend,
        delivery=delivery,
    )


async def send_classified(provider: Provider, request: SendRequest) -> SendResult | ProviderError:
    """Call `provider.send(request)`; return its result, or the error as one of ours.

    Never raises but for cancellation. A text over the provider's `max_length`
    fails without a call; an exception that is not a classified provider error
    is logged and taken as an unknown outcome: it is never assumed "not sent".
    What the answer carries from outside (error text and code, message id, cost,
    `retry_after`) comes back storable: bounded, NUL and lone surrogates escaped.
    """
    limit = provider.max_length
    if limit is not None and len(request.text) > limit:
        return PermanentError(
            f"text is {len(request.text)} characters; this provider takes at most {limit}",
            provider=provider.name,
            code="too_long",
        )
    try:
        result = await provider.send(request)
    except asyncio.CancelledError:
        raise
    except ProviderError as exc:
        if type(exc) is not ProviderError:
            return _storable_error(exc)
        log.error(
            "provider %s raised a bare ProviderError; outcome unknown", provider.name,
            extra=_fields(provider, request),
        )  # fmt: skip
        return _storable_error(
            UnknownOutcomeError(_message(exc), provider=provider.name, code=exc.code)
        )
    except Exception as exc:
        log.exception(
            "provider %s raised an unclassified error; outcome unknown", provider.name,
            extra=_fields(provider, request),
        )  # fmt: skip
        return _storable_error(
            UnknownOutcomeError(f"{type(exc).__name__}: {exc}", provider=provider.name)
        )
    if not isinstance(result, SendResult):
        log.error(
            "provider %s returned %r, not a SendResult; outcome unknown", provider.name, result,
            extra=_fields(provider, request),
        )  # fmt: skip
        return UnknownOutcomeError(
            f"send() returned {type(result).__name__}, not a SendResult", provider=provider.name
        )
    # the provider's message id and cost come from its API's answer: any text, any number
    message_id = storable(result.provider_message_id, ID_LIMIT)
    cost = finite(result.cost, low=-math.inf)
    if message_id is result.provider_message_id and cost == result.cost:
        return result
    return SendResult(message_id, cost)


async def send_parts(
    provider: Provider, request: SendRequest, parts: Sequence[str]
) -> SendResult | ProviderError:
    """Send `parts` (a text split to fit) one after the other, as one attempt: the last
    part's message id is the attempt's (its receipts decide the step) and the costs add up.

    A part that fails after others went out ends the attempt without a retry (a retry
    would send the earlier parts twice): as `UnreachableError` if it says so, else as a
    `PermanentError` with code `split_partial`, saying how many parts were sent."""
    if len(parts) == 1 and parts[0] == request.text:
        return await send_classified(provider, request)
    cost: float | None = None
    last: SendResult | None = None
    for number, part in enumerate(parts, 1):
        piece = replace(request, overrides=request.overrides.model_copy(update={"text": part}))
        result = await send_classified(provider, piece)
        if isinstance(result, ProviderError):
            if last is None or isinstance(result, UnreachableError):
                return result
            return PermanentError(
                f"part {number} of {len(parts)} failed after {number - 1} were sent: "
                f"{_message(result)}",
                provider=provider.name,
                code="split_partial",
            )
        last = result
        if result.cost is not None:
            cost = (cost or 0.0) + result.cost
    assert last is not None
    return SendResult(last.provider_message_id, cost)


def _fields(provider: Provider, request: SendRequest) -> dict[str, str]:
    return {
        "delivery_id": request.delivery_id,
        "channel": request.channel,
        "provider": provider.name,
        "attempt_id": request.attempt_id,
    }


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _storable_error(exc: ProviderError) -> ProviderError:
    """`exc` with the texts and delay it carries from the provider's answer made storable:
    an outcome the store cannot write would be sent again at every lease (see `_text`)."""
    exc.args = (storable(_message(exc), TEXT_LIMIT), *exc.args[1:])
    exc.code = storable(exc.code, CODE_LIMIT)
    if isinstance(exc, TransientError):
        exc.retry_after = finite(exc.retry_after, high=MAX_RETRY_AFTER)
    return exc
