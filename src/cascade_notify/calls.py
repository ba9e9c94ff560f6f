"""`notifier.calls`: the call queue of `type: call_queue`, worked by people.

    for call in await notifier.calls.list():          # open and claimed, soonest due first
        ...
    call = await notifier.calls.claim("irina")        # the next call whose window began
    await notifier.calls.done(call.task_id, note="reached her")

Each outcome is also a receipt on the call's attempt, through the notifier's one door:
`done` is `delivered` (code `done`); `no_answer` is `failed` (code `no_answer`), or with
`again=True` a `sent` note and the call back in the queue; `wrong_number` is `failed`,
and the number is unusable on every phone channel from then on. Closing a call that has
ended already raises `CallNotOpen` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cascade_notify.errors import CascadeError
from cascade_notify.models import OPEN_CALL, CallStatus, QueuedCall, Receipt, ReceiptStatus
from cascade_notify.stores.base import CallQueue

if TYPE_CHECKING:
    from cascade_notify.notifier import Notifier


class CallNotFound(CascadeError, LookupError):
    """No queued call has that task id."""


class CallNotOpen(CascadeError):
    """The call has ended already (done, no answer, wrong number, cancelled): nothing was
    changed. `call` is the call as it stands."""

    def __init__(self, message: str, call: QueuedCall) -> None:
        super().__init__(message)
        self.call = call


class Calls:
    """The verbs of the call queue; `notifier.calls`."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    def _queue(self) -> CallQueue:
        store = self._notifier.store
        if not isinstance(store, CallQueue):
            raise CascadeError(f"the store {type(store).__name__} keeps no call queue")
        return store

    async def list(
        self, status: Sequence[CallStatus | str] | None = tuple(OPEN_CALL), *, limit: int = 100
    ) -> list[QueuedCall]:
        """Calls in these states (default: open and claimed; None: all), soonest due first."""
        states = None if status is None else [CallStatus(s) for s in status]
        return await self._queue().calls(states, limit=limit)

    async def claim(self, operator: str, task_id: str | None = None) -> QueuedCall | None:
        """Take the call `task_id` for `operator`, or the open call due soonest whose window
        has begun; None if there is none (or it is somebody else's)."""
        if not operator:
            raise CascadeError("name the operator who takes the call")
        return await self._queue().claim_call(operator, self._notifier.clock.now(), task_id)

    async def done(self, task_id: str, note: str | None = None) -> QueuedCall:
        """The customer was reached: the call's attempt is delivered."""
        return await self._close(task_id, CallStatus.DONE, note, ReceiptStatus.DELIVERED, "done")

    async def no_answer(
        self, task_id: str, note: str | None = None, *, again: bool = False
    ) -> QueuedCall:
        """Nobody answered: the attempt fails; with `again`, the call goes back in the
        queue and the step keeps waiting for its deadline."""
        if again:
            return await self._close(
                task_id, CallStatus.OPEN, note, ReceiptStatus.SENT, "no_answer"
            )
        return await self._close(
            task_id, CallStatus.NO_ANSWER, note, ReceiptStatus.FAILED, "no_answer"
        )

    async def wrong_number(self, task_id: str, note: str | None = None) -> QueuedCall:
        """The number is not the customer's: the attempt fails and the number is unusable
        on every phone channel from then on."""
        return await self._close(
            task_id, CallStatus.WRONG_NUMBER, note, ReceiptStatus.FAILED, "wrong_number"
        )

    async def _close(
        self,
        task_id: str,
        status: CallStatus,
        note: str | None,
        receipt: ReceiptStatus,
        code: str,
    ) -> QueuedCall:
        now = self._notifier.clock.now()
        call, changed = await self._queue().close_call(task_id, status, now, note)
        if call is None:
            raise CallNotFound(f"no queued call has task id {task_id!r}")
        if not changed:
            raise CallNotOpen(
                f"call {task_id} is {call.status.value} already; nothing changed", call
            )
        heard = Receipt(
            provider=call.provider,
            provider_message_id=task_id,
            attempt_id=task_id,
            status=receipt,
            ts=now,
            code=code,
            error=note if receipt is not ReceiptStatus.DELIVERED else None,
            receipt_id=f"{task_id}:{status.value}:{now:.3f}",
        )
        await self._notifier.record_receipts([heard])
        return call


__all__ = ["CallNotFound", "CallNotOpen", "Calls"]
