"""The provider seam: one class per way of sending on one channel.

A provider knows its API and nothing of the engine, the store or the policy
file. It implements `send()` and, if it gets receipts by webhook, `verify()`
and `parse()` (plus `handshake()` for a GET challenge); if it can only be
asked, `poll()`. What it can do is declared as class data the policy
validator reads: `receipts`, `max_length`, `idempotent_sends`,
`poll_interval`, and its settings as a pydantic model.

Errors: `send()` raises `TransientError`, `PermanentError`,
`UnreachableError` or `UnknownOutcomeError` (see `cascade_notify.errors`);
anything else it raises is treated as an unknown outcome, never as "not sent".
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from cascade_notify._text import CODE_LIMIT, ID_LIMIT, TEXT_LIMIT, finite, storable
from cascade_notify.clock import Clock, SystemClock
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
)
from cascade_notify.models import Message, Receipt, ReceiptStatus, Recipient, WaitFor

log = logging.getLogger("cascade_notify.providers")

#: The longest `retry_after` a provider's answer is taken at (seconds): a day.
MAX_RETRY_AFTER = 86400.0

ReceiptSink = Callable[[Sequence[Receipt]], Awaitable[None]]


class ProviderSettings(BaseModel):
    """Base of every provider's settings; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Everything a provider needs for one call.

    `attempt_id` is unique per attempt and stable across a crash-and-resume of
    the same attempt: use it as the provider's idempotency key or callback tag
    where the API has one.
    """

    attempt_id: str
    delivery_id: str
    channel: str
    address: str
    recipient: Recipient
    message: Message

    @property
    def text(self) -> str:
        return self.message.text_for(self.channel)

    @property
    def overrides(self) -> Mapping[str, Any]:
        return self.message.overrides.get(self.channel, {})


@dataclass(frozen=True, slots=True)
class SendResult:
    """A provider accepted the message."""

    provider_message_id: str
    cost: float | None = None


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """An incoming HTTP request, framework-free. `body` is the raw bytes as received."""

    method: str
    url: str
    headers: Mapping[str, str]  # lower-cased names
    body: bytes = b""
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


class MalformedReceipts(ValueError):
    """Raised by `parse()` when some of a verified body's receipts are malformed and some
    are not: `receipts` holds the good ones, which are recorded; the request is still
    answered 400, the message saying what was wrong with the others."""

    def __init__(self, message: str, receipts: Sequence[Receipt]) -> None:
        self.receipts = list(receipts)
        super().__init__(message)


class Provider:
    """Base class of every provider.

    Subclasses set `type_name`, `channel` (or read it from settings),
    `receipts` and `Settings`, and implement `send()`.
    """

    type_name: ClassVar[str] = ""
    #: The channel this type sends on; `None` if the settings choose it.
    default_channel: ClassVar[str | None] = None
    #: The receipts this provider can report. `sent` means "accepted" only.
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset()
    #: Longest text the API takes, in characters; `None` for no limit.
    max_length: ClassVar[int | None] = None
    #: True when resending with the same attempt id cannot deliver twice.
    idempotent_sends: ClassVar[bool] = False
    #: Seconds between status polls while waiting for a receipt; `None`: no polling.
    poll_interval: ClassVar[float | None] = None
    #: True when the provider takes receipts by webhook.
    accepts_webhooks: ClassVar[bool] = False
    Settings: ClassVar[type[ProviderSettings]] = ProviderSettings

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
        self._sink: ReceiptSink | None = None

    @classmethod
    def can_satisfy(cls, wait_for: WaitFor, settings: ProviderSettings | None = None) -> bool:
        """Whether this provider can ever report what `wait_for` asks for."""
        if wait_for is WaitFor.ACCEPTED:
            return True
        if wait_for is WaitFor.DELIVERED:
            return bool(cls.receipts & {ReceiptStatus.DELIVERED, ReceiptStatus.READ})
        return ReceiptStatus.READ in cls.receipts

    def attach(self, sink: ReceiptSink) -> None:
        """Called by the notifier: where receipts this provider learns of go."""
        self._sink = sink

    async def emit(self, receipts: Sequence[Receipt]) -> None:
        """Hand receipts learned outside a webhook (a push, a callback) to the notifier."""
        if self._sink is None:
            raise RuntimeError(f"provider {self.name!r} is not attached to a running notifier")
        await self._sink(receipts)

    async def send(self, request: SendRequest) -> SendResult:
        raise NotImplementedError

    async def handshake(self, request: WebhookRequest) -> WebhookResponse | None:
        """Answer a subscription challenge (a GET), or None if this is not one."""
        return None

    def verify(self, request: WebhookRequest) -> bool:
        """Whether the request carries this provider's valid signature (constant-time)."""
        return False

    def parse(self, request: WebhookRequest) -> list[Receipt]:
        """Turn a verified webhook body into receipts. Raise ValueError if malformed, or
        MalformedReceipts carrying the good ones when only some of a batch are."""
        raise ValueError(f"provider {self.name!r} does not take webhooks")

    async def poll(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        """Ask the provider for the status of these messages."""
        return []

    async def aclose(self) -> None:
        """Release connections and background work."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self.channel}>"


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
        log.error("provider %s raised a bare ProviderError; outcome unknown", provider.name)
        return _storable_error(
            UnknownOutcomeError(_message(exc), provider=provider.name, code=exc.code)
        )
    except Exception as exc:
        log.exception("provider %s raised an unclassified error; outcome unknown", provider.name)
        return _storable_error(
            UnknownOutcomeError(f"{type(exc).__name__}: {exc}", provider=provider.name)
        )
    if not isinstance(result, SendResult):
        log.error(
            "provider %s returned %r, not a SendResult; outcome unknown", provider.name, result
        )
        return UnknownOutcomeError(
            f"send() returned {type(result).__name__}, not a SendResult", provider=provider.name
        )
    # the provider's message id and cost come from its API's answer: any text, any number
    message_id = storable(result.provider_message_id, ID_LIMIT)
    cost = finite(result.cost, low=-math.inf)
    if message_id is result.provider_message_id and cost == result.cost:
        return result
    return SendResult(message_id, cost)


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
