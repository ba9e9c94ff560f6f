"""`type: call_queue`: call tasks kept in the library's own store, for teams with no CRM.

`send()` puts the task (providers.md §10.4.1, the same JSON `call_webhook` posts) in the
store's call queue, keyed by the attempt id, so a resend changes nothing (idempotent
sends). People work through it with `notifier.calls` or `cascade-notify calls
list|claim|done|no-answer`; each outcome comes back as a receipt through the notifier's
one door. A later success elsewhere withdraws the task (it ends `cancelled`).

The provider holds no store of its own: the notifier hands it the store's queue when it
starts (a provider never imports the stores).
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from pydantic import Field

from cascade_notify.errors import PermanentError
from cascade_notify.models import CallStatus, QueuedCall, ReceiptStatus
from cascade_notify.providers.base import (
    Provider,
    ProviderSettings,
    SendRequest,
    SendResult,
    WithdrawRequest,
)
from cascade_notify.providers.call._task import GONE_ON, CallOverrides, build_task

_WHY = {
    "delivered_elsewhere": "delivered elsewhere",
    "expired": "the call's time ran out",
    "cancelled": "the delivery was cancelled",
}


class CallSink(Protocol):
    """What the provider needs of the store's call queue (`stores.base.CallQueue`)."""

    async def put_call(self, call: QueuedCall) -> bool: ...

    async def close_call(
        self, task_id: str, status: CallStatus, now: float, note: str | None = None
    ) -> tuple[QueuedCall | None, bool]: ...


class CallQueueSettings(ProviderSettings):
    """Settings of `type: call_queue`: none but the channel."""

    channel: str = Field(default="call", min_length=1, description="The channel the tasks are for.")


class CallQueueProvider(Provider):
    """`type: call_queue`: call tasks in the store, for people to work through."""

    type_name = "call_queue"
    default_channel = "call"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(
        {ReceiptStatus.SENT, ReceiptStatus.DELIVERED, ReceiptStatus.FAILED}
    )
    idempotent_sends = True
    withdraws = True
    withdraw_always = True
    gone_on = GONE_ON
    signals = True
    Settings = CallQueueSettings
    Overrides = CallOverrides

    _queue: CallSink | None = None

    def use_queue(self, queue: CallSink | None) -> None:
        """Called by the notifier at start: the store's call queue (None: it has none)."""
        self._queue = queue

    def _calls(self) -> CallSink:
        if self._queue is None:
            raise PermanentError(
                "the store keeps no call queue (use memory://, sqlite:// or postgresql://)",
                provider=self.name,
                code="no_queue",
                account=True,
            )
        return self._queue

    async def send(self, request: SendRequest) -> SendResult:
        now = self.clock.now()
        task = build_task(request, now)
        call = QueuedCall(
            task_id=task.task_id,
            provider=self.name,
            delivery_id=task.delivery_id,
            recipient_id=request.recipient.id,
            phone=task.phone,
            text=task.text,
            summary=task.summary,
            not_before=task.not_before,
            due_by=task.due_by,
            created_ts=now,
            task=task.payload(None),
        )
        await self._calls().put_call(call)
        return SendResult(task.task_id)

    async def withdraw(self, request: WithdrawRequest) -> bool:
        """End the queued call as cancelled; False if it had already ended."""
        why = _WHY.get(request.reason, request.reason)
        note = (
            f"cancelled: {why}"
            if request.delivered_on is None
            else (f"cancelled: delivered on {request.delivered_on}")
        )
        _, changed = await self._calls().close_call(
            request.attempt_id, CallStatus.CANCELLED, self.clock.now(), note
        )
        return changed


__all__ = ["CallQueueProvider", "CallQueueSettings", "CallSink"]
