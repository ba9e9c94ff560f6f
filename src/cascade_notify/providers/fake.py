"""A fake provider for any channel, for tests and the demo.

It sends nothing: it records every call, answers the way its `behavior`
says, and reports receipts through the same ingestion path as a real
provider's webhook, on the injected clock. It reports only the receipts its
channel's real providers give (`CHANNEL_RECEIPTS`, or its `receipts:` setting),
so a policy that works with fakes asks nothing production cannot give.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import Counter
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal

from pydantic import Field

from cascade_notify._duration import Duration
from cascade_notify.errors import (
    PermanentError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.models import Receipt, ReceiptStatus, WaitFor
from cascade_notify.providers.base import (
    Provider,
    ProviderSettings,
    SendRequest,
    SendResult,
    WithdrawRequest,
)
from cascade_notify.providers.sms.pricing import SmsPricing

Behavior = Literal[
    "deliver",  # accepted, then a `delivered` receipt
    "read",  # accepted, then `delivered` and `read`
    "no_receipt",  # accepted, and never a word after
    "fail_receipt",  # accepted, then a `failed` receipt
    "fail",  # a permanent error at send
    "unreachable",  # the recipient is not on this channel
    "down",  # connection refused: a transient error, every time
    "transient",  # `failures` transient errors per delivery, then `deliver`
    "unknown",  # the request times out after the provider took it; `delivered` follows
]


# What a real provider on each channel says when the fake plays that part.
_UNREACHABLE = {
    "whatsapp": ("message undeliverable: not a WhatsApp user", "131026"),
    "telegram": ("Forbidden: bot was blocked by the user", "403"),
    "viber": ("receiver is not subscribed", "6"),
    "sms": ("the number is a landline or unreachable", "30006"),
    "email": ("mailbox unavailable", "550"),
}
_FAILED_RECEIPT = {
    "whatsapp": ("message undeliverable", "131026"),
    "viber": ("delivery failed", "failed"),
    "sms": ("undelivered: unknown destination handset", "30005"),
    "email": ("bounced: mailbox full", "552"),
}


_ALL: Final = frozenset(ReceiptStatus)
#: What the real providers of each channel report, so a policy that passes with fakes
#: passes in production: the Telegram Bot API, MAX and SMTP say nothing after the send
#: (SMTP: bounces, where set up), SMS gateways report delivery, VK reads only, WhatsApp
#: and Viber everything. Channels not listed (app, call, a plugin's) report everything.
CHANNEL_RECEIPTS: Final[Mapping[str, frozenset[ReceiptStatus]]] = MappingProxyType(
    {
        "telegram": frozenset({ReceiptStatus.SENT}),
        "max": frozenset(),
        "email": frozenset({ReceiptStatus.FAILED}),
        "sms": frozenset({ReceiptStatus.SENT, ReceiptStatus.DELIVERED, ReceiptStatus.FAILED}),
        "vk": frozenset({ReceiptStatus.READ}),
        "whatsapp": _ALL,
        "viber": _ALL,
    }
)
ReceiptName = Literal["accepted", "sent", "delivered", "read", "failed"]


class FakeSettings(SmsPricing):
    channel: str = Field(min_length=1, description="The channel the fake plays (any channel name).")
    behavior: Behavior = Field(
        default="deliver",
        description="How it answers every send: `deliver` (accepted, then `delivered`), `read` "
        "(then `read` too), `no_receipt`, `fail_receipt` (a `failed` receipt), "
        "`fail` (a permanent error), `unreachable` (the recipient is not on this "
        "channel), `down` (connection refused, every time), `transient` "
        "(`failures` transient errors per delivery, then `deliver`), `unknown` "
        "(the request times out after it was taken; `delivered` follows).",
    )
    failures: int = Field(
        default=1,
        ge=0,
        description="With `behavior: transient`: how many transient errors each delivery gets "
        "before it is accepted.",
    )
    receipt_delay: Duration = Field(
        default=0.0,
        description="How long after the send its receipts come (on the injected clock).",
    )
    latency: Duration = Field(
        default=0.0, description="How long each send takes (on the injected clock)."
    )
    retry_after: Duration | None = Field(
        default=None,
        description="The wait a `down` or `transient` error asks for (a Retry-After); `null`: "
        "none.",
    )
    cost: float | None = Field(
        default=None, description="The cost each accepted send reports; `null`: none."
    )
    overrides: dict[str, Behavior] = Field(
        default_factory=dict,
        description="A behavior per recipient id, over `behavior` (one customer blocked the bot).",
    )
    receipts: list[ReceiptName] | None = Field(
        default=None,
        description="The receipts it reports (`accepted`: none after the send); `null`: those "
        "the channel's real providers give. A step waiting for one it does not "
        "report is refused at load time.",
    )


def fake_receipts(settings: FakeSettings) -> frozenset[ReceiptStatus]:
    """The receipts a fake with these settings reports."""
    if settings.receipts is None:
        return CHANNEL_RECEIPTS.get(settings.channel, _ALL)
    return frozenset(ReceiptStatus(r) for r in settings.receipts if r != "accepted")


@dataclass(frozen=True, slots=True)
class FakeCall:
    """One call a fake received, and how it answered."""

    attempt_id: str
    delivery_id: str
    recipient_id: str
    address: str
    text: str
    behavior: Behavior
    outcome: str  # accepted, or the error class name
    provider_message_id: str | None
    ts: float


class FakeProvider(Provider):
    """`type: fake`. Behaves as `behavior` says, per recipient as `overrides` say."""

    type_name = "fake"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(ReceiptStatus)
    idempotent_sends = False
    withdraws = True
    Settings = FakeSettings
    settings: FakeSettings

    @classmethod
    def can_satisfy(cls, wait_for: WaitFor, settings: ProviderSettings | None = None) -> bool:
        """As the fake's receipts say: `delivered` needs a delivery receipt (a read alone,
        as on VK, does not pass for one at load time), `read` a read receipt."""
        if not isinstance(settings, FakeSettings):
            return super().can_satisfy(wait_for, settings)
        reports = fake_receipts(settings)
        if wait_for is WaitFor.DELIVERED:
            return ReceiptStatus.DELIVERED in reports
        if wait_for is WaitFor.READ:
            return ReceiptStatus.READ in reports
        return True

    def __init__(self, name: str, settings: ProviderSettings, **kwargs: object) -> None:
        super().__init__(name, settings, **kwargs)  # type: ignore[arg-type]
        self.behavior: Behavior = self.settings.behavior
        self.overrides: dict[str, Behavior] = dict(self.settings.overrides)
        self.calls: list[FakeCall] = []
        #: Provider message ids taken back by `withdraw()`, in order.
        self.withdrawn: list[str] = []
        self._ids = itertools.count(1)
        # unique per instance: two workers (or a restart) on one store must not reuse ids
        self._tag = os.urandom(3).hex()
        self._failures: Counter[str] = Counter()
        self.reports: frozenset[ReceiptStatus] = fake_receipts(self.settings)
        self._tasks: set[asyncio.Task[None]] = set()
        # receipts due at once, reported together on the next turn of the loop
        self._due: list[tuple[str, str, tuple[ReceiptStatus, ...]]] = []

    def _message_id(self, number: int) -> str:
        return f"{self.name}-{self._tag}-{number}"

    @property
    def next_message_id(self) -> str:
        """The id the next accepted message will get (to report on it before it is sent)."""
        return self._message_id(len([c for c in self.calls if c.provider_message_id]) + 1)

    @property
    def sent(self) -> list[FakeCall]:
        """The calls the provider accepted (or may have: `unknown`)."""
        return [c for c in self.calls if c.provider_message_id is not None]

    def sent_to(self, recipient_id: str) -> list[FakeCall]:
        return [c for c in self.sent if c.recipient_id == recipient_id]

    def set_behavior(
        self, behavior: Behavior, *, recipients: Mapping[str, Behavior] | None = None
    ) -> None:
        """Change how the fake answers from now on (an outage starts or ends)."""
        self.behavior = behavior
        if recipients is not None:
            self.overrides = dict(recipients)

    async def withdraw(self, request: WithdrawRequest) -> bool:
        """Record the withdrawal; True (a fake always still has the message)."""
        self.withdrawn.append(request.provider_message_id)
        return True

    async def send(self, request: SendRequest) -> SendResult:
        if self.settings.latency:
            await self.clock.sleep(self.settings.latency)
        behavior = self.overrides.get(request.recipient.id, self.behavior)
        message_id: str | None = None
        outcome = "accepted"
        try:
            if behavior == "fail":
                raise PermanentError("rejected by fake", provider=self.name, code="fake_fail")
            if behavior == "unreachable":
                text, code = _UNREACHABLE.get(
                    self.channel, ("recipient not on this channel", "unreachable")
                )
                raise UnreachableError(text, provider=self.name, code=code)
            if behavior == "down":
                raise TransientError(  # as the HTTP base reports a refused connection
                    "connection refused",
                    provider=self.name,
                    code="connect",
                    retry_after=self.settings.retry_after,
                )
            if (
                behavior == "transient"
                and self._failures[request.delivery_id] < self.settings.failures
            ):
                self._failures[request.delivery_id] += 1
                raise TransientError(
                    "temporarily unavailable",
                    provider=self.name,
                    code="fake_transient",
                    retry_after=self.settings.retry_after,
                )
            message_id = self._message_id(next(self._ids))
            self._schedule(message_id, request.attempt_id, behavior)
            if behavior == "unknown":
                raise UnknownOutcomeError(
                    "read timed out after the request was sent", provider=self.name
                )
            return SendResult(message_id, cost=self.settings.cost)
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self.calls.append(
                FakeCall(
                    attempt_id=request.attempt_id,
                    delivery_id=request.delivery_id,
                    recipient_id=request.recipient.id,
                    address=request.address,
                    text=request.text,
                    behavior=behavior,
                    outcome=outcome,
                    provider_message_id=message_id,
                    ts=self.clock.now(),
                )
            )

    def _schedule(self, message_id: str, attempt_id: str, behavior: Behavior) -> None:
        statuses: tuple[ReceiptStatus, ...]
        if behavior in ("deliver", "transient", "unknown"):
            statuses = (ReceiptStatus.DELIVERED,)
        elif behavior == "read":
            statuses = (ReceiptStatus.DELIVERED, ReceiptStatus.READ)
        elif behavior == "fail_receipt":
            statuses = (ReceiptStatus.FAILED,)
        else:
            return
        statuses = tuple(s for s in statuses if s in self.reports)
        if not statuses:
            return
        if self.settings.receipt_delay:
            self._start(self._report([(message_id, attempt_id, statuses)]))
            return
        # instant receipts: those of every send in this turn of the loop go in one batch,
        # one task and one store write, as a provider's webhook batches them
        if not self._due:
            self._start(self._report_due())
        self._due.append((message_id, attempt_id, statuses))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report_due(self) -> None:
        await asyncio.sleep(0)
        due, self._due = self._due, []
        await self._report(due)

    async def _report(self, due: list[tuple[str, str, tuple[ReceiptStatus, ...]]]) -> None:
        if self.settings.receipt_delay:
            await self.clock.sleep(self.settings.receipt_delay)
        now = self.clock.now()
        error, code = _FAILED_RECEIPT.get(self.channel, ("reported failed", "failed"))
        await self.emit(
            [
                Receipt(
                    provider=self.name,
                    provider_message_id=message_id,
                    status=status,
                    ts=now,
                    code=code if status is ReceiptStatus.FAILED else None,
                    error=error if status is ReceiptStatus.FAILED else None,
                    attempt_id=attempt_id,
                )
                for message_id, attempt_id, statuses in due
                for status in statuses
            ]
        )

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._due.clear()
